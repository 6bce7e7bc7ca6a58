"""A page of stored events read back at once (the relay's, the projections'): one look-up
of their families' keys, the same events as one by one, and a destroyed key opens nothing."""

from collections.abc import Iterable
from pathlib import Path

from services.billing.domain import Invoice
from services.bootstrap import billing_app
from services.common.privacy import ERASED, MemoryKeyStore, PrivateMapper
from services.common.privacy.sealing import domain_events
from tests.conftest import make_settings
from tests.factories import terms


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
