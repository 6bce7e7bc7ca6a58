"""PayFiP's browser return on the payment API: an idop alone reads only the status."""

from pathlib import Path

import pytest

from services.payment.web import create_app
from tests.conftest import make_settings
from tests.helpers import request, setup


def test_an_idop_alone_reads_only_the_status(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Idops travel in URLs and on Kafka: whoever holds one learns no family, amount or
    invoice from it. The portal's payer token still reads the payment."""
    monkeypatch.delenv("PORTAL_RETURN_URL", raising=False)
    _, payment = setup(make_settings("memory", tmp_path))
    p = request(payment, "S-1", "S-2")
    client = create_app(payment=payment,
                        tokens={"pay": "payer", "aud": "auditor"}).test_client()

    back = client.get(f"/payfip/return?idop={p.idop}")
    assert back.status_code == 200
    assert back.get_json() == {"status": "requested"}
    for token in ("pay", "aud"):
        full = client.get(f"/payfip/return?idop={p.idop}",
                          headers={"Authorization": f"Bearer {token}"}).get_json()
        assert (full["id"], full["family_id"], full["amount_cents"]) == (str(p.id), "fam-1",
                                                                         3750)
    assert client.get(f"/payfip/return?idop={p.idop}",
                      headers={"Authorization": "Bearer forged"}).status_code == 401
