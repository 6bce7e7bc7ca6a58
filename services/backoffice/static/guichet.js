(function () {
  "use strict";
  // The content security policy allows no inline script: the print button is wired here.
  document.querySelectorAll("[data-imprimer]").forEach(function (button) {
    button.addEventListener("click", function () { window.print(); });
  });
})();
