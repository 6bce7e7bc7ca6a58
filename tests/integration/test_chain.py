"""Tamper evidence: the hash chain catches a hand-made change to the stored history."""

from typing import Any

import pytest

from services.bootstrap import billing_app, payment_app
from services.common.chain import verify
from services.common.persistence import SqlStore
from services.common.settings import Settings
from tests.factories import open_regies, terms


def history(settings: Settings) -> Any:
    billing = billing_app(settings)
    open_regies(billing)
    billing.issue_batch([terms(f"H-{i}", family=f"fam-{i % 3}") for i in range(30)])
    for i in range(5):
        billing.issue_invoice(terms(f"S-{i}"))
    return billing


def events_table(store: SqlStore) -> str:
    return "{schema}billing_events" if store.postgres else "stored_events"


def tamper(billing: Any, statement: str, *params: Any) -> None:
    store = SqlStore(billing)
    # SQLite numbers its events by rowid, PostgreSQL by a notification_id column.
    statement = statement.replace("{events}", events_table(store))
    statement = statement.replace("{nid}", "notification_id" if store.postgres else "rowid")
    with store.transaction() as c:
        c.execute(statement, params)


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
