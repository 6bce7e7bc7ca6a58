"""The mail catcher of `make run` keeps what the SMTP side sends as .eml files."""

from email import message_from_bytes, policy
from pathlib import Path

from services.common import mail_catcher
from services.common.mail import Letter, SmtpMailer
from services.common.messaging.broker import free_port


def test_a_letter_sent_over_smtp_is_kept_as_an_eml_file(tmp_path: Path) -> None:
    port = free_port()
    catcher = mail_catcher.start(tmp_path / "mail", "127.0.0.1", port)
    try:
        SmtpMailer("127.0.0.1", port, "regie@ville.example.org").send(Letter(
            to="parent@example.org", subject="Rappel : facture n° S-1",
            text="Bonjour, 25,00 €", html="<p>Bonjour, 25,00 €</p>"))
    finally:
        catcher.stop()
    [kept] = list((tmp_path / "mail").iterdir())
    assert kept.suffix == ".eml"
    message = message_from_bytes(kept.read_bytes(), policy=policy.default)
    assert message["To"] == "parent@example.org"
    assert message["Subject"] == "Rappel : facture n° S-1"
    assert "25,00 €" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "<p>Bonjour" in message.get_body(("html",)).get_content()  # type: ignore[union-attr]
