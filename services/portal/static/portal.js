(function () {
  "use strict";
  function euros(cents) {
    var whole = String(Math.floor(cents / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, "\u202f");
    var rest = String(cents % 100).padStart(2, "0");
    return whole + "," + rest + "\u00a0€";
  }
  var form = document.querySelector("form[data-selection]");
  var out = document.getElementById("total-selection");
  if (form && out) {
    form.addEventListener("change", function () {
      var cents = 0;
      form.querySelectorAll("input[name=invoice_ids]:checked").forEach(function (box) {
        cents += parseInt(box.getAttribute("data-cents"), 10) || 0;
      });
      out.textContent = euros(cents);
    });
  }
  var waiting = document.querySelector("[data-etat-url]");
  if (waiting) {
    var url = waiting.getAttribute("data-etat-url");
    var tries = 0;
    var poll = function () {
      tries += 1;
      fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.json() : {final: false}; })
        .then(function (state) {
          if (state.final) { window.location.reload(); }
          else if (tries < 300) { window.setTimeout(poll, 2000); }
        })
        .catch(function () { if (tries < 300) { window.setTimeout(poll, 4000); } });
    };
    window.setTimeout(poll, 2000);
  }
})();
