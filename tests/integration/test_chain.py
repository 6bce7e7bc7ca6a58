"""Tamper evidence: the hash chain catches a hand-made change to the stored history."""

import base64
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from services.billing.domain import Invoice
from services.bootstrap import billing_app, payment_app
from services.common.settings import Settings
from services.common.storage.chain import (
    ChainKeyMissing,
    Head,
    check_heads,
    head,
    keyed_from,
    verify,
)
from services.common.storage.history import import_into, records
from services.common.storage.persistence import SqlStore
from tests.conftest import drop_schemas, make_settings
from tests.factories import open_regies, terms
from tests.helpers import events_table, recompute, rewrite_an_amount, tamper


def history(settings: Settings) -> Any:
    billing = billing_app(settings)
    open_regies(billing)
    billing.issue_batch([terms(f"H-{i}", family=f"fam-{i % 3}") for i in range(30)])
    for i in range(5):
        billing.issue_invoice(terms(f"S-{i}"))
    return billing


def test_an_untouched_history_verifies(store_settings: Settings) -> None:
    billing = history(store_settings)
    assert verify(billing, page=7) == (billing.recorder.max_notification_id(), None)


@pytest.mark.parametrize(
    ("change", "position", "kind"),
    [
        # An amount edited by hand in one stored event.
        ("UPDATE {events} SET state = ? WHERE {nid} = ?", 12, "altered"),
        ("DELETE FROM {events} WHERE {nid} = ?", 20, "missing"),
    ],
)
def test_a_changed_history_fails_at_the_right_place(
    store_settings: Settings, change: str, position: int, kind: str
) -> None:
    billing = history(store_settings)
    if change.startswith("UPDATE"):
        state = billing.recorder.select_notifications(position, 1)[0].state
        tamper(billing, change, state.replace(b"2500", b"2400"), position)
    else:
        tamper(billing, change, position)
    checked, broken = verify(billing, page=7)
    assert broken is not None and (broken.position, broken.kind) == (position, kind)
    assert checked == position - 1
    assert str(position) in str(broken)


def test_two_swapped_events_are_caught(store_settings: Settings) -> None:
    billing = history(store_settings)
    a, b = billing.recorder.select_notifications(8, 2)
    assert a.state != b.state
    tamper(billing, "UPDATE {events} SET state = ? WHERE {nid} = ?", b.state, a.id)
    tamper(billing, "UPDATE {events} SET state = ? WHERE {nid} = ?", a.state, b.id)
    checked, broken = verify(billing)
    assert broken is not None and (broken.position, broken.kind) == (a.id, "altered")
    assert checked == a.id - 1


def test_an_event_slipped_in_by_hand_is_caught(store_settings: Settings) -> None:
    billing = history(store_settings)
    last = billing.recorder.select_notifications(1, 1)[0]
    store = SqlStore(billing)
    with store.transaction() as c:
        # A new row at the end of the log, with a fresh notification id but no chain entry.
        c.execute(
            f"INSERT INTO {events_table(store)} (originator_id, originator_version, topic, "
            "state) VALUES (?, ?, ?, ?)",
            (last.originator_id if store.postgres else last.originator_id.hex, 99, last.topic,
             last.state),
        )
    checked, broken = verify(billing)
    assert broken is not None and broken.kind == "unchained"
    assert broken.position == billing.recorder.max_notification_id()
    assert checked == broken.position - 1


def test_regie_verify_reports_and_exits_non_zero(
    store_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services import bootstrap, cli

    billing = history(store_settings)
    monkeypatch.setattr(bootstrap, "billing_app", lambda: billing_app(store_settings))
    assert cli.main(["verify", "billing"]) == 0
    assert "chain intact" in capsys.readouterr().out
    monkeypatch.setattr(bootstrap, "payment_app", lambda: payment_app(store_settings))
    assert cli.main(["verify"]) == 0  # both services
    out = capsys.readouterr().out
    assert "billing: " in out and "payment: 0 events, chain intact" in out
    assert cli.main(["verify", "ledger"]) == 1
    assert "unknown service ledger" in capsys.readouterr().err
    tamper(billing, "DELETE FROM {events} WHERE {nid} = ?", 3)
    assert cli.main(["verify", "billing"]) == 1
    assert "event 3 is missing" in capsys.readouterr().out


# --- Against heads kept outside the database -------------------------------------------
# Each of these changes leaves a chain that verifies on its own: only heads published
# before the change, or the key, show it.


def anchored_history(settings: Settings) -> tuple[Any, list[Head]]:
    """A billing history, with the head taken (as a relay publishes it) every few events."""
    billing = billing_app(settings)
    open_regies(billing)
    heads = []
    for start in range(0, 30, 10):
        billing.issue_batch([terms(f"H-{i}", family=f"fam-{i % 3}")
                             for i in range(start, start + 10)])
        found = head(billing, "billing")
        assert found is not None
        heads.append(found)
    return billing, heads


def test_a_history_that_kept_its_heads_reaches_them(store_settings: Settings) -> None:
    billing, heads = anchored_history(store_settings)
    assert check_heads(billing, heads + heads[:1]) == (3, None)  # repeats count once


def test_a_truncated_tail_is_caught_against_heads(store_settings: Settings) -> None:
    billing, heads = anchored_history(store_settings)
    cut = heads[1].notification_id - 3
    tamper(billing, "DELETE FROM {events} WHERE {nid} > ?", cut)
    tamper(billing, "DELETE FROM {schema}event_chain WHERE notification_id > ?", cut)
    assert verify(billing) == (cut, None)  # alone, the chain sees nothing
    reached, unreached = check_heads(billing, heads)
    assert reached == 1 and unreached is not None
    assert unreached.head == heads[1] and unreached.stored is None
    assert f"event {heads[1].notification_id}" in str(unreached)
    assert f"ends at event {cut}" in str(unreached)


def test_a_rewritten_and_recomputed_history_is_caught_against_heads(
    store_settings: Settings,
) -> None:
    billing, heads = anchored_history(store_settings)
    position = heads[0].notification_id + 4  # after the first head, before the second
    rewrite_an_amount(billing, position)
    recompute(billing)
    assert verify(billing)[1] is None
    reached, unreached = check_heads(billing, heads)
    assert reached == 1 and unreached is not None and unreached.head == heads[1]
    assert unreached.stored is not None and unreached.stored != heads[1].hash
    assert "rewritten" in str(unreached)


def test_an_edited_export_imported_elsewhere_is_caught_against_heads(
    store_settings: Settings, tmp_path: Path,
) -> None:
    billing, heads = anchored_history(store_settings)
    position = heads[1].notification_id + 2
    rows = list(records(billing, "billing"))
    edited = rows[position - 1]
    assert edited["position"] == position
    state = base64.b64decode(edited["state"])
    edited["state"] = base64.b64encode(state.replace(b"2500", b"2400")).decode()
    other = make_settings("postgres" if store_settings.is_postgres() else "sqlite",
                          tmp_path / "other")
    try:
        copy = billing_app(other)
        assert import_into(copy, rows) == len(rows)
        assert verify(copy)[1] is None
        reached, unreached = check_heads(copy, heads)
        assert reached == 2 and unreached is not None and unreached.head == heads[2]
    finally:
        if other.is_postgres():
            drop_schemas(other.schema_prefix)


def test_with_a_key_a_recomputed_chain_no_longer_verifies(store_settings: Settings) -> None:
    keyed = dataclasses.replace(store_settings, chain_key="kept-in-a-vault")
    billing, _ = anchored_history(keyed)
    assert keyed_from(billing) == 1
    assert verify(billing) == (billing.recorder.max_notification_id(), None)
    position = 12
    rewrite_an_amount(billing, position)
    recompute(billing)  # without the key
    checked, broken = verify(billing)
    assert broken is not None and (broken.position, broken.kind) == (1, "altered")
    assert checked == 0
    # And the wrong key does not verify an untouched keyed chain either.
    wrong = billing_app(dataclasses.replace(store_settings, chain_key="another"))
    assert verify(wrong)[1] is not None


def test_a_store_chained_without_a_key_and_given_one_later_still_verifies(
    store_settings: Settings,
) -> None:
    billing = history(store_settings)  # no key: plain SHA-256
    before = billing.recorder.max_notification_id()
    assert keyed_from(billing) is None
    keyed = billing_app(dataclasses.replace(store_settings, chain_key="from-now-on"))
    for i in range(3):
        keyed.issue_invoice(terms(f"K-{i}"))
    assert keyed_from(keyed) == before + 1
    assert verify(keyed) == (before + 3, None)
    # The keyed part cannot be checked, nor extended, without the key.
    plain = billing_app(store_settings)
    with pytest.raises(ChainKeyMissing, match=f"keyed from event {before + 1}"):
        verify(plain)
    with pytest.raises(ChainKeyMissing):
        plain.issue_invoice(terms("P-1"))
    assert verify(keyed) == (before + 3, None)
    # Recomputing the keyed part without the key is caught at its first keyed event.
    rewrite_an_amount(keyed, before + 2)
    recompute(keyed)
    checked, broken = verify(keyed)
    assert broken is not None and broken.position == before + 1 and checked == before


def test_regie_verify_without_the_key_of_a_keyed_chain_says_so(
    store_settings: Settings, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from services import bootstrap, cli

    keyed = dataclasses.replace(store_settings, chain_key="kept-in-a-vault")
    open_regies(billing_app(keyed))
    monkeypatch.setattr(bootstrap, "billing_app", lambda: billing_app(store_settings))
    assert cli.main(["verify", "billing"]) == 1
    assert "keyed from event 1: set REGIE_CHAIN_KEY" in capsys.readouterr().err
    monkeypatch.setattr(bootstrap, "billing_app", lambda: billing_app(keyed))
    assert cli.main(["verify", "billing"]) == 0
    # Said, so that a chain stripped of its key and recomputed plain does not pass unseen.
    assert "billing: 2 events, chain intact (keyed from event 1)" in capsys.readouterr().out
    monkeypatch.setattr(bootstrap, "billing_app", lambda: billing_app(
        dataclasses.replace(store_settings, var_dir=store_settings.var_dir / "new",
                            schema_prefix=store_settings.schema_prefix + "n",
                            chain_key="kept-in-a-vault")))
    assert cli.main(["verify", "billing"]) == 0
    assert "billing: 0 events, chain intact (no event keyed yet)" in capsys.readouterr().out


def test_a_batch_gets_the_ids_of_its_rows_in_order(store_settings: Settings) -> None:
    billing = billing_app(store_settings)
    open_regies(billing)
    first = billing.save(*(Invoice.issue(terms(f"A-{i}")) for i in range(3)))
    recordings = billing.save(*(Invoice.issue(terms(f"B-{i}")) for i in range(40)))
    stored = billing.recorder.select_notifications(first[-1].notification.id + 1, 100)
    assert [(r.notification.id, r.domain_event.originator_id) for r in recordings] == [
        (n.id, n.originator_id) for n in stored]
    assert verify(billing) == (billing.recorder.max_notification_id(), None)
