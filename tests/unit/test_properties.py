"""Property: whatever the history, rebuilt read models equal the live ones, and the state
as of any past instant equals the state that was live then."""

import time
from datetime import UTC, date, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.billing.domain import Conflict, Invoice
from services.bootstrap import billing_app, payment_app
from services.common.errors import DomainError
from services.payment import domain
from services.payment.gateway import FakeGateway
from services.payment.projections import MemoryToPayStore, catch_up
from tests.conftest import make_settings
from tests.factories import URLS, deliver, open_regies, terms, wire_messages
from tests.helpers import to_billing

NUMBERS = [f"N-{i}" for i in range(6)]
commands = st.lists(
    st.tuples(
        st.sampled_from(["issue", "cancel", "transfer", "pay", "refuse", "abandon",
                         "counter", "credit", "refund"]),
        st.sampled_from(NUMBERS),
        st.sampled_from(["fam-a", "fam-b"]),
        st.integers(min_value=50, max_value=5000),
    ),
    min_size=1, max_size=25,
)


def run(ops: list[tuple[str, str, str, int]], tmp: Any) -> None:
    s = make_settings("memory", tmp)
    gateway = FakeGateway()
    # PayFiP's clock is the time now: the snapshots below are dated by it.
    billing, payment = billing_app(s), payment_app(s, gateway=gateway, urls=URLS)
    open_regies(billing)
    moments: list[tuple[datetime, dict[str, Any]]] = []
    for op, number, family, cents in ops:
        invoice_id = Invoice.create_id("SPORTS", number)
        try:
            if op == "issue":
                billing.issue_invoice(terms(number, family=family, unit=cents))
            elif op == "cancel":
                billing.cancel_invoice(invoice_id, "annulée")
            elif op == "transfer":
                billing.transfer_invoice(invoice_id, "T-1")
            elif op == "credit":
                billing.credit_invoice(invoice_id, cents, "avoir", by="issuer")
            elif op == "counter":
                # Part payments, overpayments (credit), and billing hearing of them.
                deliver(payment, wire_messages(billing))
                payment.receive_at_counter(domain.CounterTerms(
                    regie="SPORTS", family_id=family, means="cash", amount_cents=cents,
                    reference=None, received_on=date(2025, 3, 3), invoice_ids=None),
                    by="cashier")
                to_billing(billing, payment)
            elif op == "refund":
                payment.ask_credit_refund(family, "SPORTS", None, by="cashier")
            else:
                deliver(payment, wire_messages(billing))
                owner = payment._get(invoice_id)  # whose invoice it is, if any
                p = payment.request_payment(
                    owner.family_id if owner else family, "SPORTS", [str(invoice_id)],
                    "parent@example.org")
                gateway.decide(p.idop, {"pay": "P", "refuse": "R", "abandon": "A"}[op])  # type: ignore[arg-type]
                payment.settle_from_payfip(p.idop)  # type: ignore[arg-type]
        except (DomainError, Conflict):
            pass  # refused commands store nothing; the property is about what was stored
        deliver(payment, wire_messages(billing))
        time.sleep(0.002)
        moments.append((datetime.now(UTC), payment.to_pay.snapshot()))
        for fam in ("fam-a", "fam-b"):
            # The totals kept per family and régie are what the open invoices add up to.
            assert payment.to_pay.totals(fam) == [
                {"regie": e["code"], "count": e["count"], "total_cents": e["total_cents"]}
                for e in domain.summarise(payment.to_pay.open_lines(fam), {})]
        time.sleep(0.002)

    rebuilt = MemoryToPayStore()
    catch_up(payment, rebuilt, batch_size=3)
    assert rebuilt.snapshot() == payment.to_pay.snapshot()
    for when, live in moments:
        past = MemoryToPayStore()
        catch_up(payment, past, until=when)
        assert past.snapshot() == live


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=commands)
def test_rebuilt_and_as_of_equal_live(ops: list[tuple[str, str, str, int]], tmp_path: Any) -> None:
    run(ops, tmp_path)
