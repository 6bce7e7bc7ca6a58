"""Crypto-shredding: `regie forget` erases a family's personal data from both stores, their
exports and what is published again, and leaves amounts, totals and the chain as they were."""

import io
import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from events.formats import PARIS
from services import bootstrap, cli
from services.billing.integration import make_to_wire as billing_to_wire
from services.bootstrap import billing_app, payment_app
from services.common.errors import Conflict
from services.common.privacy import ERASED
from services.common.settings import Settings
from services.common.storage import chain
from services.common.storage.history import records, write
from services.payment.gateway import FakeGateway
from services.payment.integration import make_to_wire as payment_to_wire
from services.portal.accounts import Accounts, SqliteAccounts
from tests.conftest import pg_connect
from tests.factories import decoded, deliver, issued, relay_messages, terms, wire_messages
from tests.helpers import iid, request

SECRET = "martin.secret@example.org"
OTHER = "durand.kept@example.org"


def _raw_bytes(app: Any, settings: Settings, service: str) -> bytes:
    """Every byte the service's store holds: on SQLite its files (free pages and WAL
    included), on PostgreSQL every row of every table of its schema, as text."""
    if not settings.is_postgres():
        db = settings.var_dir / f"{service}.db"
        return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())
    schema = settings.schema(service)
    out = []
    with pg_connect() as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s",
                              (schema,)).fetchall()
        for (table,) in tables:
            for (row,) in conn.execute(f'SELECT t::text FROM "{schema}"."{table}" t'):
                out.append(row)
    return "\n".join(out).encode()


def _readable(raw: bytes, secret: bytes) -> bool:
    # In clear, or as PostgreSQL shows a bytea (hex).
    return secret in raw or secret.hex().encode() in raw


def _export(app: Any, service: str, family: str | None = None) -> str:
    out = io.StringIO()
    write(records(app, service, family=family), out, "csv")
    return out.getvalue()


def test_forget_erases_a_family_everywhere_and_keeps_every_amount(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    billing, payment = issued(
        store_settings,
        terms("F-1", family="fam-1", payer_email=SECRET, unit=2500),
        terms("F-2", family="fam-1", payer_email=SECRET, regie="CANTINE", unit=1000),
        terms("G-1", family="fam-2", payer_email=OTHER, unit=4000),
        gateway=FakeGateway(),
    )
    deliver(payment, wire_messages(billing))
    paying = request(payment, "F-1")
    assert paying.email == "parent@example.org"
    payment.refresh()
    totals = payment.to_pay.snapshot()
    fam1_key = billing.keys.key("fam-1")
    pay_key = payment.keys.key("fam-1")
    assert fam1_key is not None and pay_key is not None

    # Sealed from the start: the stores never hold the address in clear.
    for app, service in ((billing, "billing"), (payment, "payment")):
        assert not _readable(_raw_bytes(app, store_settings, service), SECRET.encode())
    assert SECRET in _export(billing, "billing")

    monkeypatch.setattr(bootstrap, "billing_app", lambda: billing_app(store_settings))
    monkeypatch.setattr(bootstrap, "payment_app", lambda: payment_app(store_settings))
    accounts_db = store_settings.var_dir / "portal.db"
    Accounts(SqliteAccounts(accounts_db)).create("fam-1", SECRET)
    monkeypatch.setenv("PORTAL_ACCOUNTS_DB", str(accounts_db))
    assert payment.payer_email(iid("F-1")) == SECRET
    assert cli.main(["forget", "--family", "fam-1", "--reason", "demande RGPD"]) == 0
    assert "fam-1: forgotten (billing, payment, portal account)" in capsys.readouterr().out
    assert Accounts(SqliteAccounts(accounts_db)).get(SECRET) is None
    assert not any(_readable(p.read_bytes(), SECRET.encode())
                   for p in accounts_db.parent.glob("portal.db*"))

    billing, payment = billing_app(store_settings), payment_app(store_settings)
    for app, service, key in ((billing, "billing", fam1_key), (payment, "payment", pay_key)):
        raw = _raw_bytes(app, store_settings, service)
        # Neither the address nor the key that would open its sealed copy is left.
        assert not _readable(raw, SECRET.encode())
        assert not _readable(raw, key)
        assert app.keys.key("fam-1") is None
        assert chain.verify(app)[1] is None
        export = _export(app, service)
        assert SECRET not in export
    assert ERASED in _export(billing, "billing", family="fam-1")
    assert OTHER in _export(billing, "billing", family="fam-2")
    invoice = billing.get_invoice(billing_invoice_id("F-1"))
    assert (invoice.payer_email, invoice.amount_cents, invoice.number) == (ERASED, 2500, "F-1")
    assert payment.repository.get(paying.id).email == ERASED
    # Nobody to remind any more; the other family still is.
    assert payment.payer_email(iid("F-1")) is None
    assert payment.payer_email(iid("G-1")) == OTHER

    # Published again from the start (a broker that lost everything): nothing personal
    # of fam-1, fam-2 as it was, and the erasure itself on both topics.
    sent = decoded(wire_messages(billing))
    issued_fam1 = [m.data for m in sent if m.name == "InvoiceIssued"
                   and m.data["family_id"] == "fam-1"]
    assert {(d["payer_email"], d["payer"]["email"]) for d in issued_fam1} == {(ERASED, ERASED)}
    assert [m.data["payer_email"] for m in sent if m.name == "InvoiceIssued"
            and m.data["family_id"] == "fam-2"] == [OTHER]
    assert [m.key for m in sent if m.name == "FamilyForgotten"] == ["fam-1"]
    published = decoded(relay_messages(payment, payment_to_wire(payment, "payment.payments")))
    assert [m.key for m in published if m.name == "FamilyForgotten"] == ["fam-1"]
    assert all(SECRET not in json.dumps(m.data, default=str) for m in sent + published)

    # The same totals to the cent, from the history rebuilt.
    assert cli.main(["replay", "all", "--quiet"]) == 0
    rebuilt = payment_app(store_settings)
    assert rebuilt.to_pay.snapshot() == totals
    assert cli.main(["verify"]) == 0
    # Payment's consumer takes billing's FamilyForgotten without parking it.
    assert deliver(rebuilt, [(0, v) for _, v in billing_relay_tail(billing)]) >= 0
    assert rebuilt.dead_letters.all() == []


def billing_invoice_id(number: str, regie: str = "SPORTS") -> Any:
    from services.billing.domain import Invoice

    return Invoice.create_id(regie, number)


def billing_relay_tail(billing: Any) -> list[tuple[int, bytes]]:
    return [(p, v) for p, v in relay_messages(billing, billing_to_wire(billing,
                                                                       "billing.invoices"))
            if b"FamilyForgotten" in v]


def test_a_family_forgotten_then_invoiced_again_gets_a_new_key(store_settings: Settings) -> None:
    billing, _ = issued(store_settings, terms("F-1", family="fam-1", payer_email=SECRET))
    billing.forget("fam-1", "demande")
    billing.issue_invoice(terms("F-2", family="fam-1", payer_email=OTHER))
    again = billing_app(store_settings)
    assert again.get_invoice(billing_invoice_id("F-1")).payer_email == ERASED
    assert again.get_invoice(billing_invoice_id("F-2")).payer_email == OTHER
    # The issuer sending the erased invoice again: its payer reads [effacé] now.
    with pytest.raises(Conflict):
        again.issue_invoice(terms("F-1", family="fam-1", payer_email=SECRET))


def test_retention_lists_then_forgets_the_families_inactive_and_owing_nothing(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    billing, payment = issued(
        store_settings,
        terms("F-1", family="fam-done", payer_email=SECRET),
        terms("G-1", family="fam-owing", payer_email=OTHER),
    )
    billing.cancel_invoice(billing_invoice_id("F-1"), "doublon")
    deliver(payment, wire_messages(billing))
    monkeypatch.setattr(bootstrap, "billing_app", lambda: billing_app(store_settings))
    monkeypatch.setattr(bootstrap, "payment_app", lambda: payment_app(store_settings))
    monkeypatch.setenv("PORTAL_ACCOUNTS_DB", str(store_settings.var_dir / "portal.db"))
    # Days as an operator types them: Paris time.
    today_in_paris = datetime.now(PARIS).date()
    tomorrow = (today_in_paris + timedelta(days=1)).isoformat()
    today = today_in_paris.isoformat()

    # Everything happened today: nothing is inactive since before today.
    assert cli.main(["forget", "--inactive-before", today, "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("0 families")

    assert cli.main(["forget", "--inactive-before", tomorrow, "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "fam-done"
    assert billing_app(store_settings).get_invoice(
        billing_invoice_id("F-1")).payer_email == SECRET

    assert cli.main(["forget", "--inactive-before", tomorrow]) == 0
    assert "fam-done: forgotten" in capsys.readouterr().out
    again = billing_app(store_settings)
    assert again.get_invoice(billing_invoice_id("F-1")).payer_email == ERASED
    assert again.get_invoice(billing_invoice_id("G-1")).payer_email == OTHER
    # Forgotten already: not listed again.
    assert cli.main(["forget", "--inactive-before", tomorrow, "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("0 families")


def test_forget_needs_one_family_or_a_date(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["forget"]) != 0
    assert "--family" in capsys.readouterr().err


def test_forget_refuses_a_family_no_service_knows(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    billing, _ = issued(store_settings, terms("F-1", family="fam-1"))
    monkeypatch.setenv("PORTAL_ACCOUNTS_DB", str(store_settings.var_dir / "portal.db"))
    monkeypatch.setattr(bootstrap, "billing_app", lambda: billing_app(store_settings))
    monkeypatch.setattr(bootstrap, "payment_app", lambda: payment_app(store_settings))
    assert cli.main(["forget", "--family", "fam-l"]) == 1
    assert "no family 'fam-l'" in capsys.readouterr().err
    assert [n.topic for n in billing.recorder.select_notifications(0, 100)
            if "Erasure" in n.topic] == []
    # Forgetting twice is harmless: the second finds the family forgotten.
    assert cli.main(["forget", "--family", "fam-1"]) == 0
    assert cli.main(["forget", "--family", "fam-1"]) == 0


def test_events_stored_in_clear_before_sealing_read_erased_after_forget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The kept stores of an earlier version hold fam-1's address in clear: forgetting the
    family shows [effacé] everywhere and keeps the chain, but cannot erase those bytes
    (docs/privacy.md says so)."""
    from tests.fixtures.make_stores import HERE

    var = tmp_path / "var"
    var.mkdir()
    for name in ("billing.db", "payment.db"):
        shutil.copy(HERE / name, var / name)
    monkeypatch.setenv("REGIE_VAR_DIR", str(var))
    monkeypatch.setenv("PERSISTENCE_MODULE", "eventsourcing.sqlite")
    monkeypatch.setenv("PORTAL_ACCOUNTS_DB", str(var / "portal.db"))
    legacy = b"parent@example.org"
    assert legacy in (var / "billing.db").read_bytes()

    assert cli.main(["forget", "--family", "fam-1"]) == 0
    assert cli.main(["verify"]) == 0
    capsys.readouterr()
    for service, app in (("billing", billing_app()), ("payment", payment_app())):
        export = _export(app, service, family="fam-1")
        assert "parent@example.org" not in export and ERASED in export
    sent = decoded(wire_messages(billing_app()))
    assert {m.data["payer_email"] for m in sent if m.name == "InvoiceIssued"} == {ERASED}
    # What the chain covers stays as it was stored.
    assert legacy in b"".join(p.read_bytes() for p in var.glob("billing.db*"))


def test_a_batch_of_new_families_gets_its_keys_in_a_few_queries(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    billing = billing_app(store_settings)
    keys: Any = billing.keys
    keys.key_or_new("fam-known")
    queries: list[str] = []
    values = keys.store.values

    def counted(*args: Any) -> Any:
        queries.append(args[0])
        return values(*args)

    monkeypatch.setattr(keys.store, "values", counted)
    families = [f"fam-{i}" for i in range(600)] + ["fam-known"]
    got = keys.keys_or_new(families)
    # A page of 500 to look them up, the same to read the new ones back.
    assert len(queries) == 4
    monkeypatch.undo()
    assert got == {family: keys.key(family) for family in families}
    assert len(set(got.values())) == len(families)


def test_on_postgresql_the_families_of_a_key_look_up_go_as_one_array(
        store_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # A statement of 500 placeholders was parsed anew by psycopg at each chunk of a batch
    # (too long for its cache): a quarter of a batch's time on PostgreSQL. SQLite has no
    # arrays: it takes them as placeholders, 500 at most a statement.
    billing = billing_app(store_settings)
    keys: Any = billing.keys
    made = keys.keys_or_new([f"fam-{i}" for i in range(700)])
    sent: list[tuple[str, tuple[Any, ...]]] = []
    values = keys.store.values

    def counted(statement: str, params: tuple[Any, ...] = ()) -> Any:
        sent.append((statement, params))
        return values(statement, params)

    monkeypatch.setattr(keys.store, "values", counted)
    assert keys.keys([f"fam-{i}" for i in range(3)]) == {
        f"fam-{i}": made[f"fam-{i}"] for i in range(3)}
    assert keys.keys_or_new([f"fam-{i}" for i in range(700)]) == made
    if store_settings.is_postgres():
        assert len({statement for statement, _ in sent}) == 1
        assert all(len(params) == 1 for _, params in sent)
    else:
        assert [len(params) for _, params in sent] == [3, 500, 200]
