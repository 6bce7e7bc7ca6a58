"""The payment page, in French like PayFiP's, server-rendered and usable with a keyboard.

Plain forms and real buttons only: every step works without JavaScript, each field has a
visible label, errors are listed at the top (role="alert") and point at their fields.
"""

from typing import Any

from flask import render_template_string
from markupsafe import Markup

from services.payfip_sim.model import SimPayment

LAYOUT = """<!doctype html>
<html lang="fr">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} – PayFiP.gouv.fr (simulateur)</title>
<style>
body { font-family: Marianne, Arial, sans-serif; margin: 0; color: #161616; background: #f6f6f6; }
header { background: #000091; color: #fff; padding: 1rem 2rem; }
header p { margin: 0; }
.marque { font-size: 1.5rem; font-weight: bold; }
main { max-width: 40rem; margin: 2rem auto; background: #fff; padding: 1.5rem 2rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .5rem 1rem; }
dt { font-weight: bold; }
dd { margin: 0; }
.champ { margin: 1rem 0; }
.champ label { display: block; font-weight: bold; margin-bottom: .25rem; }
.aide { display: block; color: #555; font-size: .9rem; }
.erreur { color: #ce0500; }
input { font-size: 1rem; padding: .4rem; border: 1px solid #666; }
input[aria-invalid="true"] { border: 2px solid #ce0500; }
button { font-size: 1rem; padding: .5rem 1rem; margin: .25rem .5rem .25rem 0; cursor: pointer;
  background: #000091; color: #fff; border: 2px solid #000091; }
button.secondaire { background: #fff; color: #000091; }
a:focus, input:focus, button:focus { outline: 3px solid #0a76f6; outline-offset: 2px; }
.lien-evitement { position: absolute; left: -999px; }
.lien-evitement:focus { left: 1rem; top: 1rem; background: #fff; color: #000091; padding: .5rem; }
</style>
</head>
<body>
<a class="lien-evitement" href="#contenu">Aller au contenu</a>
<header>
<p class="marque">PayFiP.gouv.fr</p>
<p>Paiement des services publics locaux – simulateur, aucun paiement réel</p>
</header>
<main id="contenu" tabindex="-1">
{{ content }}
</main>
</body>
</html>
"""

DEBT = """
<section aria-labelledby="titre-dette">
<h2 id="titre-dette">Informations sur la dette</h2>
<dl>
<dt>Référence de la dette</dt><dd>{{ p.refdet }}</dd>
{% if p.objet %}<dt>Objet</dt><dd>{{ p.objet }}</dd>{% endif %}
{% if p.exer %}<dt>Exercice</dt><dd>{{ p.exer }}</dd>{% endif %}
</dl>
<p><strong>Montant : {{ amount }}</strong></p>
</section>
"""

HOME = """
<h1>Payer votre dette en ligne</h1>
""" + DEBT + """
<form method="post" action="{{ url_for('payfip_sim.choose') }}">
<input type="hidden" name="idop" value="{{ p.idop }}">
<div class="champ">
<label for="mel">Adresse électronique</label>
<input id="mel" name="mel" type="email" value="{{ p.mel }}" readonly autocomplete="email"
 aria-describedby="mel-aide" size="40">
<span id="mel-aide" class="aide">Le justificatif de paiement sera envoyé à cette adresse.</span>
</div>
<p>Choisissez votre moyen de paiement :</p>
<button type="submit" name="choix" value="carte">Payer par carte bancaire</button>
<button type="submit" name="choix" value="prelevement">Payer par prélèvement</button>
<button type="submit" name="choix" value="annuler" class="secondaire">Annuler</button>
</form>
"""

ERRORS = """
{% if errors %}
<div role="alert" class="erreur">
<h2>Le formulaire contient {{ errors|length }} erreur{{ 's' if errors|length > 1 }}</h2>
<ul>{% for name, message in errors.items() %}
<li><a href="#{{ name }}">{{ message }}</a></li>{% endfor %}
</ul>
</div>
{% endif %}
"""


def _field(name: str, label: str, help_text: str, attrs: str) -> str:
    return (
        '<div class="champ">'
        f'<label for="{name}">{label}</label>'
        f'<input id="{name}" name="{name}" type="text" required {attrs}'
        f' value="{{{{ values.get("{name}", "") }}}}"'
        f' aria-describedby="{name}-aide{{% if "{name}" in errors %}} {name}-erreur{{% endif %}}"'
        f'{{% if "{name}" in errors %}} aria-invalid="true"{{% endif %}}>'
        f'<span id="{name}-aide" class="aide">{help_text}</span>'
        f'{{% if "{name}" in errors %}}<span id="{name}-erreur" class="erreur">'
        f'{{{{ errors["{name}"] }}}}</span>{{% endif %}}'
        "</div>"
    )


CARD = """
<h1>Paiement par carte bancaire</h1>
<p><strong>Montant : {{ amount }}</strong> – référence {{ p.refdet }}</p>
""" + ERRORS + """
<form method="post" action="{{ url_for('payfip_sim.card') }}" novalidate>
<input type="hidden" name="idop" value="{{ p.idop }}">
""" + _field(
    "numero", "Numéro de carte",
    "De 12 à 19 chiffres. Simulateur : un numéro finissant par un chiffre pair est accepté, "
    "par un chiffre impair refusé.",
    'inputmode="numeric" autocomplete="cc-number" size="24"',
) + _field(
    "expiration", "Date d'expiration (MM/AA)", "Par exemple 12/30.",
    'autocomplete="cc-exp" size="6"',
) + _field(
    "cvv", "Cryptogramme visuel", "Les 3 chiffres au dos de la carte.",
    'inputmode="numeric" autocomplete="cc-csc" size="4"',
) + """
<button type="submit" name="action" value="valider">Valider</button>
<button type="submit" name="action" value="annuler" class="secondaire">Annuler</button>
</form>
"""

DEBIT = """
<h1>Paiement par prélèvement unique</h1>
<p><strong>Montant : {{ amount }}</strong> – référence {{ p.refdet }}</p>
""" + ERRORS + """
<form method="post" action="{{ url_for('payfip_sim.debit') }}" novalidate>
<input type="hidden" name="idop" value="{{ p.idop }}">
""" + _field(
    "titulaire", "Titulaire du compte", "Nom et prénom, comme sur le relevé d'identité bancaire.",
    'autocomplete="name" size="40"',
) + _field(
    "iban", "IBAN",
    "Par exemple FR76 3000 6000 0112 3456 7890 188. Simulateur : un IBAN finissant par un "
    "chiffre pair est prélevé, par un chiffre impair refusé.",
    'autocomplete="off" size="40"',
) + """
<button type="submit" name="action" value="valider">Valider</button>
<button type="submit" name="action" value="annuler" class="secondaire">Annuler</button>
</form>
"""

REFUSALS = {
    "unknown": (
        "Opération inconnue",
        "Cette opération de paiement est inconnue ou n'est plus disponible. "
        "Retournez sur le site de votre collectivité pour recommencer.",
    ),
    "decided": (
        "Paiement déjà traité",
        "Ce paiement a déjà été traité : il ne peut pas être payé une seconde fois.",
    ),
    "expired": (
        "Délai dépassé",
        "Le délai de 15 minutes pour effectuer ce paiement est expiré. "
        "Retournez sur le site de votre collectivité pour recommencer.",
    ),
}
REFUSAL = """
<h1>{{ heading }}</h1>
<p role="alert">{{ message }}</p>
"""


def format_amount(cents: int) -> str:
    euros, rest = divmod(cents, 100)
    return f"{euros:,}".replace(",", " ") + f",{rest:02d} €"


def _page(title: str, body: str, **context: Any) -> str:
    content = render_template_string(body, **context)
    return render_template_string(LAYOUT, title=title, content=Markup(content))


def home(payment: SimPayment) -> str:
    return _page("Paiement", HOME, p=payment, amount=format_amount(payment.amount_cents))


def card(payment: SimPayment, values: dict[str, str] | None = None,
         errors: dict[str, str] | None = None) -> str:
    return _page("Paiement par carte bancaire", CARD, p=payment,
                 amount=format_amount(payment.amount_cents), values=values or {},
                 errors=errors or {})


def debit(payment: SimPayment, values: dict[str, str] | None = None,
          errors: dict[str, str] | None = None) -> str:
    return _page("Paiement par prélèvement", DEBIT, p=payment,
                 amount=format_amount(payment.amount_cents), values=values or {},
                 errors=errors or {})


def refusal(reason: str) -> str:
    heading, message = REFUSALS[reason]
    return _page(heading, REFUSAL, heading=heading, message=message)
