"""The payment domain on its own: no database, no PayFiP, no broker."""

import json
from typing import Any

from eventsourcing.persistence import StoredEvent

from services.payment import domain
from services.payment.application import PaymentApp

ANSWER = {"resultrans": "P", "numauto": "000001-tip"}


def started(amount_cents: int = 2500) -> domain.Payment:
    return domain.Payment(
        family_id="fam-1", regie="SPORTS", numcli="000001", saisie="T",
        email="parent@example.org", refdet="SPORTS2503011000AB12CD", exer="2025",
        objet="Factures S 1",
        allocations=[{"invoice_id": "i-1", "number": "S-1", "amount_cents": amount_cents}],
        amount_cents=amount_cents,
    )


def stored_without(app: PaymentApp, event: Any, *names: str) -> StoredEvent:
    """``event`` as an earlier version stored it: without the fields ``names``."""
    stored = app.mapper.to_stored_event(event)
    state = json.loads(stored.state)
    for name in names:
        state.pop(name, None)
    return StoredEvent(stored.originator_id, stored.originator_version, stored.topic,
                       json.dumps(state).encode())


def test_a_confirmation_stored_before_late_existed_reads_as_not_late() -> None:
    app = PaymentApp()
    payment = started()
    payment.requested(idop="idop-1", answer={"idOp": "idop-1"})
    payment.confirmed(resultrans="P", numauto="000001-tip", paid_at="2025-02-26T14:30:00+01:00",
                      answer=ANSWER, allocations=payment.allocations, refunds=[], late=True)
    confirmed = payment.collect_events()[-1]
    old = stored_without(app, confirmed, "late", "class_version")
    read = app.mapper.to_domain_event(old)
    assert isinstance(read, domain.Payment.Confirmed)
    assert read.late is False
    # One stored before the version was counted, but with the field, keeps what it says.
    kept = app.mapper.to_domain_event(stored_without(app, confirmed, "class_version"))
    assert isinstance(kept, domain.Payment.Confirmed) and kept.late is True
