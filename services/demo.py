"""Demo data matching the seed procedure sheet, loaded over HTTP like any issuer would."""

from typing import Any

import requests

FAMILY = "famille-martin"

REGIES = [
    {"code": "SPORTS", "name": "Direction des sports", "numcli": "000001", "saisie": "T"},
    {"code": "CANTINE", "name": "Restauration scolaire", "numcli": "000002", "saisie": "T"},
]

INVOICES: list[dict[str, Any]] = [
    {
        "regie": "SPORTS",
        "number": "VAIC521041698401",
        "family_id": FAMILY,
        "payer_email": "famille.martin@example.org",
        "label": "Vacances sportives",
        "issued_on": "2025-02-26",
        "payable_until": "2030-12-31",
        "due_on": "2030-12-31",
        "lines": [{"label": "Vacances sportives février", "quantity": 1,
                   "unit_price_cents": 2500}],
        "amount_cents": 2500,
    },
    {
        "regie": "CANTINE",
        "number": "RS-2025-02-0001",
        "family_id": FAMILY,
        "payer_email": "famille.martin@example.org",
        "label": "Restauration scolaire février 2025",
        "issued_on": "2025-02-26",
        "payable_until": "2030-12-31",
        "due_on": "2030-12-31",
        "lines": [{"label": "Repas", "quantity": 4, "unit_price_cents": 250}],
        "amount_cents": 1000,
    },
]


def load(billing_url: str, issuer_token: str) -> None:
    headers = {"Authorization": f"Bearer {issuer_token}"}
    for regie in REGIES:
        r = requests.post(f"{billing_url}/regies", json=regie, headers=headers, timeout=10)
        r.raise_for_status()
    for invoice in INVOICES:
        r = requests.post(f"{billing_url}/invoices", json=invoice, headers=headers, timeout=10)
        r.raise_for_status()
