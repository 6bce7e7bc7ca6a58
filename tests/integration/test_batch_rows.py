"""A batch stores, row for row and byte for byte, what issuing its invoices one by one
stores: the same events, the same sealed e-mails, the same hash chain.

``issue_batch`` takes its own way to the store (no ``save``, no ``Recording`` per event),
so the rows it writes are compared here with those of the ordinary path. The clock and
the random bytes (the families' keys, the nonces) are fixed so that both runs draw the
same ones.
"""

from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest

from services.billing.application import BillingApp
from services.billing.domain import Line
from services.bootstrap import billing_app
from services.common.settings import Settings
from services.common.storage import chain
from services.common.storage.persistence import SqlStore
from tests.conftest import drop_schemas, make_settings
from tests.factories import open_regies, terms
from tests.helpers import fixed_bytes_and_clock

AT = datetime(2025, 2, 26, 9, 30, 12, 345678, tzinfo=UTC)


def items() -> list[Any]:
    made = [terms(f"R-{i}", family=f"fam-{i % 4}", unit=100 + i) for i in range(12)]
    made.append(replace(terms("R-lines", family="fam-9", quantity=2, unit=150),
                        lines=(Line("Séjour", 2, 150), Line("Repas « midi »", 3, 0)),
                        payer_email="Zoë.Müller@example.org"))
    return made


def stored(settings: Settings, issue: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    fixed_bytes_and_clock(monkeypatch, AT)
    billing = billing_app(settings)
    try:
        open_regies(billing)
        # Made beforehand in one order: both runs give each family the same key.
        billing.keys.keys_or_new(sorted({t.family_id for t in items()}))
        issue(billing)
        store = SqlStore(billing)
        events = store.stored_events(0, 1000)
        links = [(r["notification_id"], r["hash"]) for r in store.fetchall(
            f"SELECT notification_id, hash FROM {{schema}}{chain.TABLE} ORDER BY notification_id")]
        assert chain.verify(billing) == (len(events), None)
        return events, links
    finally:
        billing.close()
        monkeypatch.undo()


def one_by_one(billing: BillingApp) -> None:
    for t in items():
        assert billing.issue_invoice(t).created


def in_a_batch(billing: BillingApp) -> None:
    assert all(getattr(r, "created", False) for r in billing.issue_batch(items()))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_batch_stores_the_rows_that_issuing_one_by_one_stores(
        backend: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    runs = []
    for name, issue in (("single", one_by_one), ("batch", in_a_batch)):
        settings = make_settings(backend, tmp_path / name)
        if backend == "postgres":
            request.addfinalizer(partial(drop_schemas, settings.schema_prefix))
        runs.append(stored(settings, issue, monkeypatch))
    (single_events, single_links), (batch_events, batch_links) = runs
    assert len(batch_events) == 2 + len(items())
    for one, other in zip(single_events, batch_events, strict=True):
        assert one == other
    assert single_links == batch_links
    # The e-mails are sealed, not in clear.
    assert not any(b"example.org" in row.state for row in batch_events)
