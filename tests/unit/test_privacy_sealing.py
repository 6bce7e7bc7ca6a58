"""Sealing personal fields with a family's key, on the in-memory key store."""

from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import Mapper

from services.billing.domain import Invoice
from services.bootstrap import billing_app
from services.common.privacy import (
    ERASED,
    MemoryKeyStore,
    PrivateMapper,
    open_sealed,
    seal,
)
from tests.conftest import make_settings
from tests.factories import terms


def test_a_sealed_value_opens_only_with_its_key_and_for_its_family() -> None:
    keys = MemoryKeyStore()
    key = keys.key_or_new("fam-1")
    sealed = seal(key, "fam-1", "parent@example.org")
    assert "parent" not in sealed and sealed != seal(key, "fam-1", "parent@example.org")
    assert open_sealed(key, "fam-1", sealed) == "parent@example.org"
    # Moved onto another family's event, it does not open.
    assert open_sealed(key, "fam-2", sealed) == ERASED
    assert open_sealed(keys.key_or_new("fam-2"), "fam-1", sealed) == ERASED
    assert open_sealed(None, "fam-1", sealed) == ERASED


def test_the_mapper_stores_only_the_sealed_field_and_reads_erased_once_forgotten(
        tmp_path: Path) -> None:
    mapper = billing_app(make_settings("memory", tmp_path)).mapper
    assert isinstance(mapper, PrivateMapper)
    [issued] = Invoice.issue(terms("F-1", payer_email="parent@example.org")).collect_events()
    stored = mapper.to_stored_event(issued)
    assert b"parent@example.org" not in stored.state and b"2500" in stored.state
    assert mapper.to_domain_event(stored).payer_email == "parent@example.org"
    assert mapper.keys is not None and mapper.keys.destroy("fam-1", "test")
    again = mapper.to_domain_event(stored)
    assert (again.payer_email, again.amount_cents, again.number) == (ERASED, 2500, "F-1")


def test_the_mapper_stores_what_eventsourcing_stores_but_the_sealed_field(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = billing_app(make_settings("memory", tmp_path))
    mapper = app.mapper
    assert isinstance(mapper, PrivateMapper) and mapper.keys is not None
    monkeypatch.setattr("services.common.privacy.sealing.os.urandom", lambda n: b"\x01" * n)
    [issued] = Invoice.issue(terms("F-1", payer_email="parent@example.org")).collect_events()
    sealed_email = seal(mapper.keys.key_or_new("fam-1"), "fam-1", "parent@example.org")
    presealed = object.__new__(type(issued))
    object.__setattr__(presealed, "__dict__", {**vars(issued), "payer_email": sealed_email})
    library: Mapper[Any] = Mapper(transcoder=app.construct_transcoder())
    assert mapper.to_stored_event(issued) == library.to_stored_event(presealed)
