# ruff: noqa: E501  (HTML lines are kept whole: a tag split over two lines reads worse)
"""The portal's pages and assets, kept in Python so that any install of the package has them.

Jinja templates (a DictLoader), one small style sheet and one small script: every page works
without the script, which only keeps a selection's total and a pending payment up to date.
"""

BASE = """<!doctype html>
<html lang="fr">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}{% endblock %} – Espace famille</title>
<link rel="stylesheet" href="{{ url_for('asset', name='portal.css') }}">
<script src="{{ url_for('asset', name='portal.js') }}" defer></script>
</head>
<body>
<a class="evitement" href="#contenu">Aller au contenu</a>
<header class="entete">
<div class="entete-haut">
<p class="marque"><a href="{{ url_for('home') }}">Espace famille</a></p>
{% if account %}
<div class="compte">
<p class="qui">{{ account.email }}</p>
<form method="post" action="{{ url_for('logout') }}">
<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
<button type="submit" class="lien">Se déconnecter</button>
</form>
</div>
{% endif %}
</div>
{% if account %}
<nav aria-label="Menu principal" class="menu-principal">
<ul>
<li><a href="{{ url_for('home') }}"{% if section == 'accueil' %} aria-current="page"{% endif %}>Accueil</a></li>
<li><a href="{{ url_for('billing') }}"{% if section == 'facturation' %} aria-current="page"{% endif %}>Facturation</a></li>
</ul>
</nav>
{% endif %}
</header>
<div class="page{% if account %} avec-menu{% endif %}">
<main id="contenu" tabindex="-1">
{% if crumbs %}
<nav aria-label="Fil d'Ariane" class="ariane">
<ol>
{% for label, href in crumbs %}
<li>{% if href %}<a href="{{ href }}">{{ label }}</a>{% else %}<span aria-current="page">{{ label }}</span>{% endif %}</li>
{% endfor %}
</ol>
</nav>
{% endif %}
{% with messages = get_flashed_messages(with_categories=true) %}
{% for category, message in messages %}
<p class="message message-{{ category }}" role="{{ 'alert' if category == 'erreur' else 'status' }}">{{ message }}</p>
{% endfor %}
{% endwith %}
{% block content %}{% endblock %}
</main>
{% if account %}
<aside class="menu-droite" aria-label="Mon espace">
<section aria-labelledby="menu-factures">
<h2 id="menu-factures">Factures</h2>
<p>Payer mes factures et historique de mes précédentes factures.</p>
<ul>
<li><a href="{{ url_for('billing') }}">Payer mes factures</a></li>
<li><a href="{{ url_for('history') }}">Consulter l'historique de mes factures</a></li>
</ul>
</section>
</aside>
{% endif %}
</div>
<footer class="pied">
<p>Les paiements en ligne passent par PayFiP, le service de paiement de la Direction générale
des Finances publiques.</p>
</footer>
</body>
</html>
"""

STEPS = """
<ol class="etapes">
<li{% if step == 1 %} aria-current="step"{% endif %}><span class="etape">Étape 1/2</span> Récapitulatif</li>
<li{% if step == 2 %} aria-current="step"{% endif %}><span class="etape">Étape 2/2</span> Retour du paiement</li>
</ol>
"""

LOGIN = """{% extends "base.html" %}
{% block title %}Connexion{% endblock %}
{% block content %}
<h1>Connexion à votre espace famille</h1>
{% if error %}<p class="message message-erreur" role="alert" id="erreur-connexion">{{ error }}</p>{% endif %}
<form method="post" action="{{ url_for('login', suivant=next_url) if next_url else url_for('login') }}" class="formulaire">
<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
<div class="champ">
<label for="email">Adresse électronique</label>
<input id="email" name="email" type="email" required autocomplete="username" value="{{ email }}"
{% if error %} aria-invalid="true" aria-describedby="erreur-connexion"{% endif %}>
</div>
<div class="champ">
<label for="password">Mot de passe</label>
<input id="password" name="password" type="password" required autocomplete="current-password"
{% if error %} aria-invalid="true" aria-describedby="erreur-connexion"{% endif %}>
</div>
<button type="submit">Se connecter</button>
</form>
<p>Pas encore de compte, ou mot de passe oublié ? Le service famille de votre commune vous
envoie un lien pour choisir votre mot de passe.</p>
{% endblock %}
"""

ACTIVATE = """{% extends "base.html" %}
{% block title %}Choisir mon mot de passe{% endblock %}
{% block content %}
<h1>Choisir mon mot de passe</h1>
<p>Compte : <strong>{{ email }}</strong></p>
{% if error %}<p class="message message-erreur" role="alert" id="erreur-mdp">{{ error }}</p>{% endif %}
<form method="post" class="formulaire">
<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
<input type="text" name="username" value="{{ email }}" autocomplete="username" hidden>
<div class="champ">
<label for="password">Nouveau mot de passe</label>
<input id="password" name="password" type="password" required autocomplete="new-password"
 minlength="{{ minimum }}" aria-describedby="aide-mdp{% if error %} erreur-mdp{% endif %}"{% if error %} aria-invalid="true"{% endif %}>
<span id="aide-mdp" class="aide">Au moins {{ minimum }} caractères.</span>
</div>
<div class="champ">
<label for="confirmation">Confirmez le mot de passe</label>
<input id="confirmation" name="confirmation" type="password" required autocomplete="new-password"
 minlength="{{ minimum }}"{% if error %} aria-invalid="true" aria-describedby="erreur-mdp"{% endif %}>
</div>
<button type="submit">Enregistrer mon mot de passe</button>
</form>
{% endblock %}
"""

HOME = """{% extends "base.html" %}
{% block title %}Accueil{% endblock %}
{% block content %}
<h1>Bienvenue sur votre espace famille</h1>
<p>Depuis cet espace, vous payez en ligne les factures des services de la commune
(restauration scolaire, accueils de loisirs, vacances sportives…) et retrouvez l'historique
de vos factures.</p>
<p>Pour payer, choisissez « Payer mes factures » dans le menu Factures.</p>
{% endblock %}
"""

BILLING = """{% extends "base.html" %}
{% block title %}Facturation{% endblock %}
{% block content %}
<h1>Facturation</h1>
<h2>Factures</h2>
<ul class="tuiles">
<li><a class="tuile" href="{{ url_for('to_pay') }}">Factures à payer
<span class="detail">{{ count_text }}</span></a></li>
<li><a class="tuile" href="{{ url_for('history') }}">Historique des factures
<span class="detail">Toutes vos factures et leur paiement</span></a></li>
</ul>
{% endblock %}
"""

TO_PAY = """{% extends "base.html" %}
{% block title %}Factures à payer{% endblock %}
{% block content %}
<h1>Factures à payer</h1>
{% if regies %}
<p class="note">Chaque service se paie séparément : si vous avez des factures de plusieurs
services, vous les payez en plusieurs fois.</p>
<ul class="regies">
{% for r in regies %}
<li class="regie">
<section aria-labelledby="regie-{{ r.code }}">
<h2 id="regie-{{ r.code }}">{{ r.name }}</h2>
<p class="nombre">{{ r.count_text }}</p>
<p class="total">TOTAL <strong>{{ r.total }}</strong></p>
<a class="bouton" href="{{ url_for('summary', regie=r.code) }}">Payer<span class="invisible"> les factures de {{ r.name }}</span></a>
</section>
</li>
{% endfor %}
</ul>
{% else %}
<p>Vous n'avez aucune facture à payer.</p>
{% endif %}
<p><a href="{{ url_for('history') }}">Consulter l'historique de mes factures</a></p>
{% endblock %}
"""

SUMMARY = """{% extends "base.html" %}
{% block title %}Récapitulatif – {{ regie_name }}{% endblock %}
{% block content %}
""" + STEPS + """
<h1>Récapitulatif</h1>
{% if error %}<p class="message message-erreur" role="alert" id="erreur-selection">{{ error }}</p>{% endif %}
{% for p in resumable %}
<section class="reprise" aria-labelledby="reprise-{{ p.id }}">
<h2 id="reprise-{{ p.id }}">Paiement commencé sur PayFiP</h2>
<p>Vous avez commencé sur PayFiP le paiement de {{ p.amount }} (factures {{ p.numbers }}) sans le terminer. Vous pouvez le reprendre jusqu'au {{ p.resume_until }}.</p>
<p><a class="bouton" href="{{ p.redirect_url }}">Reprendre le paiement sur PayFiP</a></p>
</section>
{% endfor %}
<form method="post" action="{{ url_for('pay', regie=regie) }}" data-selection>
<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
<fieldset{% if error %} aria-describedby="erreur-selection"{% endif %}>
<legend><span class="legende">{{ regie_name }}</span>
<span class="aide">Cochez la ou les factures à payer.</span></legend>
<ul class="factures">
{% for i in invoices %}
<li class="facture{% if not i.payable %} facture-bloquee{% endif %}">
{% if i.payable %}
<input type="checkbox" id="facture-{{ i.id }}" name="invoice_ids" value="{{ i.id }}"
 data-cents="{{ i.amount_due_cents }}"{% if i.checked %} checked{% endif %}{% if i.minimum %} aria-describedby="minimum-{{ i.id }}"{% endif %}>
<label for="facture-{{ i.id }}">
{% else %}
<div class="libelle">
{% endif %}
<span class="emise">Émise le {{ i.issued }}</span>
<span class="objet">{{ i.label }} n° {{ i.number }}</span>
<span class="du">À payer <strong>{{ i.due }}</strong></span>
{% if i.payable %}</label>{% else %}</div>{% endif %}
<p class="total-facture">Total de la facture {{ i.total }}</p>
{% if not i.payable %}<p class="raison">{{ i.reason }}</p>{% endif %}
{% if i.minimum %}<p class="minimum" id="minimum-{{ i.id }}">{{ i.minimum }}</p>{% endif %}
</li>
{% endfor %}
</ul>
</fieldset>
<p class="selection">Total de la sélection :
<output id="total-selection" aria-live="polite">{{ selected_total }}</output></p>
<p class="info">Vous serez dirigé vers PayFiP, le service de paiement de la Direction générale
des Finances publiques, pour payer par carte bancaire ou par prélèvement. Le justificatif sera
envoyé à {{ account.email }}.</p>
<div class="actions">
<a class="bouton secondaire" href="{{ url_for('to_pay') }}">Annuler</a>
<button type="submit"{% if not any_payable %} disabled{% endif %}>Payer</button>
</div>
</form>
{% endblock %}
"""

RETURN = """{% extends "base.html" %}
{% block title %}Retour du paiement{% endblock %}
{% block content %}
""" + STEPS + """
<h1>Retour du paiement</h1>
<div class="resultat resultat-{{ status }}" role="status"{% if pending %} data-etat-url="{{ state_url }}"{% endif %}>
<h2>{{ heading }}</h2>
<p class="etat">État du paiement : <strong>{{ word }}</strong></p>
<p>{{ message }}</p>
{% if pending %}<p><a href="{{ here }}">Actualiser la page</a></p>{% endif %}
</div>
<dl class="details">
{% if regie_name %}<dt>Service</dt><dd>{{ regie_name }}</dd>{% endif %}
<dt>Montant</dt><dd>{{ amount }}</dd>
<dt>Factures</dt><dd>{{ numbers }}</dd>
<dt>Référence du paiement</dt><dd>{{ refdet }}</dd>
{% if paid_at %}<dt>{{ paid_at_label }}</dt><dd>{{ paid_at }}</dd>{% endif %}
{% if means %}<dt>Moyen de paiement</dt><dd>{{ means }}</dd>{% endif %}
{% if numauto %}<dt>Numéro d'autorisation</dt><dd>{{ numauto }}</dd>{% endif %}
</dl>
<ul class="suite">
<li><a href="{{ url_for('history') }}">Consulter l'historique de mes factures</a></li>
<li><a href="{{ url_for('to_pay') }}">Factures à payer</a></li>
</ul>
{% endblock %}
"""

HISTORY = """{% extends "base.html" %}
{% block title %}Historique des factures{% endblock %}
{% block content %}
<h1>Historique des factures</h1>
{% if rows %}
<table class="historique">
<caption>Toutes vos factures, des plus récentes aux plus anciennes</caption>
<thead>
<tr><th scope="col">Service</th><th scope="col">Facture</th><th scope="col">Émise le</th>
<th scope="col">Montant</th><th scope="col">État</th><th scope="col">Paiement</th></tr>
</thead>
<tbody>
{% for r in rows %}
<tr>
<td data-titre="Service">{{ r.regie_name }}</td>
<th scope="row" data-titre="Facture">{{ r.label }} n° {{ r.number }}</th>
<td data-titre="Émise le">{{ r.issued }}</td>
<td data-titre="Montant">{{ r.total }}</td>
<td data-titre="État" class="etat-facture">{{ r.status }}</td>
<td data-titre="Paiement" class="paiement">{{ r.payment or "—" }}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p>Vous n'avez encore aucune facture.</p>
{% endif %}
{% endblock %}
"""

ERROR = """{% extends "base.html" %}
{% block title %}{{ heading }}{% endblock %}
{% block content %}
<h1>{{ heading }}</h1>
<p>{{ message }}</p>
<p><a href="{{ url_for('home') }}">Retour à l'accueil</a></p>
{% endblock %}
"""

TEMPLATES = {
    "base.html": BASE,
    "login.html": LOGIN,
    "activate.html": ACTIVATE,
    "home.html": HOME,
    "billing.html": BILLING,
    "to_pay.html": TO_PAY,
    "summary.html": SUMMARY,
    "return.html": RETURN,
    "history.html": HISTORY,
    "error.html": ERROR,
}

CSS = """
*, *::before, *::after { box-sizing: border-box; }
body { margin: 0; font-family: Marianne, Arial, sans-serif; font-size: 1rem; line-height: 1.5;
  color: #161616; background: #f6f6f6; }
a { color: #000091; }
a:focus, button:focus, input:focus, main:focus-visible { outline: 3px solid #0a76f6;
  outline-offset: 2px; }
main:focus { outline: none; }
.evitement { position: absolute; left: -9999px; }
.evitement:focus { left: 1rem; top: 1rem; z-index: 10; background: #fff; padding: .5rem; }
.invisible { position: absolute; width: 1px; height: 1px; overflow: hidden;
  clip: rect(0 0 0 0); white-space: nowrap; }
.entete { background: #000091; color: #fff; }
.entete a, .entete .lien { color: #fff; }
.entete-haut { display: flex; flex-wrap: wrap; justify-content: space-between; align-items: center;
  gap: .5rem; padding: .75rem 1rem; }
.marque { margin: 0; font-size: 1.4rem; font-weight: bold; }
.marque a { text-decoration: none; }
.compte { display: flex; flex-wrap: wrap; align-items: center; gap: .75rem; }
.compte p, .compte form { margin: 0; }
.menu-principal ul { list-style: none; margin: 0; padding: 0 1rem; display: flex; flex-wrap: wrap;
  gap: 0 1.5rem; }
.menu-principal a { display: inline-block; padding: .5rem 0; text-transform: uppercase;
  font-weight: bold; text-decoration: none; border-bottom: 3px solid transparent; }
.menu-principal a[aria-current="page"] { border-bottom-color: #fff; }
.page { max-width: 72rem; margin: 0 auto; padding: 1rem; display: grid; gap: 1.5rem; }
@media (min-width: 50rem) {
  .page.avec-menu { grid-template-columns: 1fr 18rem; }
}
main, .menu-droite { background: #fff; padding: 1rem 1.25rem; min-width: 0; }
.menu-droite h2 { font-size: 1.15rem; margin-top: 0; }
.menu-droite ul { padding-left: 1.1rem; }
.ariane ol { list-style: none; padding: 0; margin: 0 0 1rem; display: flex; flex-wrap: wrap;
  font-size: .9rem; }
.ariane li + li::before { content: ">"; margin: 0 .5rem; color: #555; }
.etapes { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: .5rem 2rem;
  color: #555; }
.etapes li { border-bottom: 4px solid #ddd; padding-bottom: .25rem; }
.etapes li[aria-current="step"] { color: #000091; border-bottom-color: #000091;
  font-weight: bold; }
.etape { display: block; font-size: .85rem; }
.message { padding: .75rem 1rem; border-left: 5px solid #000091; background: #eef; }
.message-erreur { border-left-color: #ce0500; background: #fee; color: #8a0300; }
.formulaire { max-width: 28rem; }
.champ { margin: 1rem 0; }
.champ label { display: block; font-weight: bold; margin-bottom: .25rem; }
.aide { display: block; color: #555; font-size: .9rem; font-weight: normal; }
input[type=email], input[type=password], input[type=text] { width: 100%; font-size: 1rem;
  padding: .5rem; border: 1px solid #666; }
input[aria-invalid="true"] { border: 2px solid #ce0500; }
button, .bouton { display: inline-block; font-size: 1rem; padding: .6rem 1.2rem;
  background: #000091; color: #fff; border: 2px solid #000091; text-decoration: none;
  cursor: pointer; text-transform: uppercase; font-weight: bold; }
button[disabled] { background: #777; border-color: #777; cursor: not-allowed; }
.bouton.secondaire { background: #fff; color: #000091; }
button.lien { background: none; border: 0; padding: 0; text-transform: none; font-weight: normal;
  text-decoration: underline; }
.tuiles { list-style: none; padding: 0; display: grid; gap: 1rem; }
@media (min-width: 40rem) { .tuiles { grid-template-columns: 1fr 1fr; } }
.tuile { display: block; padding: 1.25rem; border: 2px solid #000091; font-weight: bold;
  font-size: 1.15rem; text-decoration: none; }
.tuile .detail { display: block; font-weight: normal; font-size: .95rem; color: #333; }
.regies { list-style: none; padding: 0; }
.regie section { border: 1px solid #ccc; padding: 1rem; margin-bottom: 1rem; display: grid;
  gap: .25rem 1rem; align-items: center; }
@media (min-width: 40rem) { .regie section { grid-template-columns: 1fr auto auto; } }
.regie h2, .regie p { margin: 0; }
.regie h2 { font-size: 1.2rem; grid-column: 1; }
.regie .nombre { grid-column: 1; }
.regie .total strong { font-size: 1.3rem; }
.note { background: #fff8e0; padding: .75rem 1rem; border-left: 5px solid #b36b00; }
fieldset { border: 1px solid #ccc; padding: 1rem; margin: 0 0 1rem; }
legend { padding: 0 .25rem; }
.legende { font-size: 1.2rem; font-weight: bold; display: block; }
.factures { list-style: none; padding: 0; margin: 0; }
.facture { display: grid; grid-template-columns: auto 1fr; gap: .25rem .75rem;
  padding: .75rem 0; border-top: 1px solid #ddd; }
.facture input { width: 1.4rem; height: 1.4rem; margin: .2rem 0 0; }
.facture label, .facture .libelle { display: flex; flex-wrap: wrap; gap: .25rem 1.5rem; }
.facture-bloquee .libelle { grid-column: 1 / -1; }
.facture .total-facture, .facture .raison, .facture .minimum { grid-column: 2; margin: 0;
  color: #333; }
.facture-bloquee .total-facture, .facture-bloquee .raison { grid-column: 1 / -1; }
.raison { color: #8a0300 !important; }
.selection { font-size: 1.15rem; font-weight: bold; }
.reprise { border-left: 5px solid #000091; background: #eef; padding: .75rem 1rem;
  margin-bottom: 1rem; }
.reprise h2 { font-size: 1.15rem; margin-top: 0; }
.actions { display: flex; flex-wrap: wrap; gap: .75rem; }
.resultat { padding: 1rem; border-left: 6px solid #555; background: #f2f2f2; }
.resultat h2 { margin-top: 0; }
.resultat-confirmed { border-left-color: #18753c; background: #e6f4ea; }
.resultat-refused, .resultat-expired, .resultat-failed { border-left-color: #ce0500;
  background: #fee; }
.resultat-abandoned { border-left-color: #b36b00; background: #fff8e0; }
.details { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
.details dt { font-weight: bold; }
.details dd { margin: 0; overflow-wrap: anywhere; }
.historique { width: 100%; border-collapse: collapse; }
.historique caption { text-align: left; padding: .5rem 0; color: #333; }
.historique th, .historique td { text-align: left; padding: .5rem; border-bottom: 1px solid #ddd;
  vertical-align: top; }
.historique tbody th { font-weight: normal; }
@media (max-width: 45rem) {
  .historique thead { position: absolute; left: -9999px; }
  .historique tr, .historique th, .historique td { display: block; }
  .historique tr { border: 1px solid #ccc; margin-bottom: .75rem; }
  .historique tbody th::before, .historique td::before { content: attr(data-titre) " : ";
    font-weight: bold; }
}
.pied { max-width: 72rem; margin: 0 auto; padding: 1rem; color: #333; font-size: .9rem; }
"""

JS = """
(function () {
  "use strict";
  function euros(cents) {
    var whole = String(Math.floor(cents / 100)).replace(/\\B(?=(\\d{3})+(?!\\d))/g, "\\u202f");
    var rest = String(cents % 100).padStart(2, "0");
    return whole + "," + rest + "\\u00a0€";
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
"""

ASSETS = {
    "portal.css": (CSS, "text/css; charset=utf-8"),
    "portal.js": (JS, "text/javascript; charset=utf-8"),
}
