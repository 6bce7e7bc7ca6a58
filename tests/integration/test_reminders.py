"""`regie remind` and `regie scheduler` against a real SMTP server (aiosmtpd), on SQLite and
PostgreSQL: what reaches the server, once, and only for invoices still to pay online."""

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from events.formats import PARIS
from services import cli
from services.billing.application import BillingApp
from services.billing.domain import Invoice
from services.common.messaging.broker import free_port
from services.common.settings import Settings
from services.payment.application import PaymentApp
from services.payment.domain import CounterTerms
from tests.factories import deliver, issued, terms, wire_messages

PORTAL = "https://familles.example.org/"


@dataclass
class Inbox:
    """What the SMTP server received, as (envelope recipients, parsed message)."""

    messages: list[tuple[list[str], EmailMessage]] = field(default_factory=list)
    delay: float = 0.0  # seconds each message takes to be accepted

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for rcpt, m in self.messages if rcpt == [address]]


class Smtp:
    """A real SMTP server on one port, which may be stopped and started again."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self) -> None:
        # A Controller's event loop does not outlive its stop: a new one each time.
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Smtp]:
    server = Smtp(free_port())
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(server.port))
    monkeypatch.setenv("SMTP_FROM", "regie@ville.example.org")
    monkeypatch.setenv("PORTAL_PUBLIC_URL", PORTAL)
    server.start()
    yield server
    server.stop()


def iid(number: str) -> str:
    return str(Invoice.create_id("SPORTS", number))


def setup(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> tuple[BillingApp, PaymentApp]:
    """Invoices around today's reminder window, of two families; `regie` finds the stores."""
    today = datetime.now(PARIS).date()

    def until(days: int, number: str, **more: Any) -> Any:
        deadline = today + timedelta(days=days)
        return terms(number, payable_until=deadline, due_on=deadline + timedelta(days=10),
                     issued_on=date(2025, 1, 1), **more)

    billing, payment = issued(
        settings,
        until(7, "S-1"),
        until(3, "S-2", family="fam-2", payer_email="autre@example.org", unit=4000),
        until(8, "S-3"),  # not yet
        until(-1, "S-4"),  # too late to pay online
        until(5, "S-5"),  # paid at the counter
        until(5, "S-6"),  # cancelled
        until(5, "S-7"),  # transferred
    )
    billing.cancel_invoice(Invoice.create_id("SPORTS", "S-6"), "doublon")
    billing.transfer_invoice(Invoice.create_id("SPORTS", "S-7"), "titre 42")
    deliver(payment, wire_messages(billing))
    payment.receive_at_counter(CounterTerms(
        regie="SPORTS", family_id="fam-1", means="cash", amount_cents=2500, reference=None,
        received_on=today, invoice_ids=(iid("S-5"),)), by="cashier")
    # `regie` reads the same stores from its environment.
    for name, value in (
            ("REGIE_VAR_DIR", settings.var_dir), ("PERSISTENCE_MODULE", settings.persistence),
            ("POSTGRES_DBNAME", settings.postgres_dbname),
            ("POSTGRES_HOST", settings.postgres_host), ("POSTGRES_PORT", settings.postgres_port),
            ("POSTGRES_USER", settings.postgres_user),
            ("REGIE_SCHEMA_PREFIX", settings.schema_prefix)):
        monkeypatch.setenv(name, str(value))
    return billing, payment


def numbers(smtp: Smtp) -> list[str]:
    return sorted(str(m["Subject"]).split("n° ")[1].split(" ")[0]
                  for _, m in smtp.inbox.messages)


def test_regie_remind_twice_mails_each_due_invoice_once(
        store_settings: Settings, smtp: Smtp, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    setup(store_settings, monkeypatch)
    assert cli.main(["remind"]) == 0
    assert "reminders: 2 sent, 0 not sent" in capsys.readouterr().out
    assert cli.main(["remind"]) == 0
    assert "reminders: 0 sent, 0 not sent" in capsys.readouterr().out
    assert numbers(smtp) == ["S-1", "S-2"]

    [mine] = smtp.inbox.to("parent@example.org")
    deadline = (datetime.now(PARIS).date() + timedelta(days=7)).strftime("%d/%m/%Y")
    assert mine["From"] == "regie@ville.example.org"
    assert mine["To"] == "parent@example.org"
    assert mine["Subject"] == f"Rappel : facture n° S-1 à payer en ligne d'ici le {deadline}"
    text = mine.get_body(("plain",))
    html = mine.get_body(("html",))
    assert text is not None and html is not None
    for body in (text.get_content(), html.get_content()):
        for part in ("S-1", "Vacances sportives", "25,00\u00a0€", deadline, PORTAL,
                     "Direction des sports"):
            assert part in body, (part, body)
        # Nothing of the other family's invoice, nor of the family's other invoices.
        for other in ("S-2", "40,00", "autre@example.org", "S-3", "S-5"):
            assert other not in body
    [theirs] = smtp.inbox.to("autre@example.org")
    assert "S-2" in theirs.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_two_scheduler_passes_mail_once(
        store_settings: Settings, smtp: Smtp, monkeypatch: pytest.MonkeyPatch) -> None:
    setup(store_settings, monkeypatch)
    assert cli.main(["scheduler", "--once"]) == 0
    assert cli.main(["scheduler", "--once"]) == 0
    assert cli.main(["remind"]) == 0
    assert numbers(smtp) == ["S-1", "S-2"]


def test_two_passes_at_once_mail_each_invoice_once(
        store_settings: Settings, smtp: Smtp, monkeypatch: pytest.MonkeyPatch) -> None:
    setup(store_settings, monkeypatch)
    smtp.inbox.delay = 0.5  # a slow server: the second pass starts while the first sends
    codes: list[int] = []
    passes = [threading.Thread(target=lambda: codes.append(cli.main(["remind"])))
              for _ in range(2)]
    for each in passes:
        each.start()
    for each in passes:
        each.join(timeout=60)
    assert codes == [0, 0]
    assert numbers(smtp) == ["S-1", "S-2"]


def test_a_mail_server_down_is_logged_and_the_next_pass_sends(
        store_settings: Settings, smtp: Smtp, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    setup(store_settings, monkeypatch)
    smtp.stop()
    assert cli.main(["remind"]) == 1
    assert "reminders: 0 sent, 2 not sent" in capsys.readouterr().out
    assert "reminder of invoice S-1 not sent" in caplog.text
    smtp.start()
    assert cli.main(["remind"]) == 0
    assert numbers(smtp) == ["S-1", "S-2"]


def test_a_bad_number_of_days_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main(["remind", "--days-before", "-2"])
    assert exit.value.code == 2
    assert "--days-before: '-2' is not a number of days" in capsys.readouterr().err
