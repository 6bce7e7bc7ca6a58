"""A page of stored events read back at once (the relay's, the projections'): one look-up
of their families' keys, the same events as one by one (the library's Mapper), and a
destroyed key opens nothing."""

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import MapperDeserialisationError, StoredEvent
from eventsourcing.utils import get_topic

from services.billing.domain import Invoice
from services.bootstrap import billing_app, payment_app
from services.common.privacy import ERASED, MemoryKeyStore, PrivateMapper
from services.common.privacy.sealing import domain_events
from tests.conftest import make_settings
from tests.factories import terms
from tests.fixtures.make_stores import HERE
from tests.fixtures.make_stores import settings as stores


class CountedKeys(MemoryKeyStore):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def key(self, family_id: str) -> bytes | None:
        self.lookups += 1
        return super().key(family_id)

    def keys(self, family_ids: Iterable[str]) -> dict[str, bytes]:
        self.lookups += 1
        return super().keys(family_ids)


def test_a_page_asks_for_its_keys_once_and_reads_as_one_by_one(tmp_path: Path) -> None:
    mapper = billing_app(make_settings("memory", tmp_path)).mapper
    assert isinstance(mapper, PrivateMapper)
    keys = mapper.keys = CountedKeys()
    stored = [mapper.to_stored_event(e) for i in range(30)
              for e in Invoice.issue(terms(f"F-{i}", family=f"fam-{i % 7}",
                                           payer_email=f"p{i}@example.org")).collect_events()]
    assert keys.destroy("fam-3", "test")
    keys.lookups = 0

    page = domain_events(mapper, stored)
    assert keys.lookups == 1
    one_by_one = [mapper.to_domain_event(s) for s in stored]
    assert keys.lookups == 1 + len(stored)
    assert [vars(e) for e in page] == [vars(e) for e in one_by_one]
    assert {e.payer_email for e in page if e.family_id == "fam-3"} == {ERASED}
    assert page[1].payer_email == "p1@example.org"


def strict(events: list[Any]) -> list[tuple[type, str]]:
    """Each event's class and state, values' types included (a date is not its text)."""
    return [(type(e), repr(sorted(vars(e).items()))) for e in events]


@pytest.mark.parametrize("service", ["billing", "payment"])
def test_a_page_of_the_kept_stores_reads_as_the_library_reads_each_event(
        tmp_path: Path, service: str) -> None:
    """The page's reader (orjson and a walk) gives the very events of eventsourcing's
    Mapper, every stored type and version of both services, older ones upcast."""
    shutil.copy(HERE / f"{service}.db", tmp_path / f"{service}.db")
    app = (billing_app if service == "billing" else payment_app)(stores(tmp_path))
    try:
        stored = app.recorder.select_notifications(0, 100_000, inclusive_of_start=False)
        mapper = app.mapper
        assert isinstance(mapper, PrivateMapper)
        assert stored
        assert strict(domain_events(mapper, stored)) == strict(
            [mapper.to_domain_event(s) for s in stored])
    finally:
        app.close()


class Noted:
    """A stored event class at its second version, v1 states upcast on reading."""

    class_version = 2
    originator_id: UUID

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["note"] = "from v1"


def test_an_older_version_is_upcast_as_the_library_upcasts_it(tmp_path: Path) -> None:
    mapper = billing_app(make_settings("memory", tmp_path)).mapper
    assert isinstance(mapper, PrivateMapper)
    old = StoredEvent(uuid4(), 3, get_topic(Noted), b'{"x": {"_type_": "date_iso", "_data_": '
                                                    b'"2025-03-01"}}')
    page = domain_events(mapper, [old])
    assert strict(page) == strict([mapper.to_domain_event(old)])
    assert vars(page[0])["note"] == "from v1"


def test_a_state_the_reader_cannot_vouch_for_reads_as_the_library_reads_it(
        tmp_path: Path) -> None:
    """Read the library's way: a float (orjson may read a big integer otherwise), and the
    library's error for bytes that are not JSON."""
    mapper = billing_app(make_settings("memory", tmp_path)).mapper
    assert isinstance(mapper, PrivateMapper)
    event = Invoice.issue(terms("F-1")).collect_events()[0]
    good = mapper.to_stored_event(event)
    state = json.loads(good.state)
    state["amount_cents"] = 2.5
    floated = StoredEvent(good.originator_id, good.originator_version, good.topic,
                          json.dumps(state).encode())
    assert strict(domain_events(mapper, [floated])) == strict([mapper.to_domain_event(floated)])
    broken = StoredEvent(good.originator_id, good.originator_version, good.topic, b"{nope")
    with pytest.raises(MapperDeserialisationError) as page:
        domain_events(mapper, [broken])
    with pytest.raises(MapperDeserialisationError) as one:
        mapper.to_domain_event(broken)
    assert str(page.value) == str(one.value)
