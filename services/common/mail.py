"""Sending e-mail: the port, a fake that records, and SMTP (the standard library's).

The services speak of a ``Letter`` (to whom, subject, plain text and HTML) and a
``Mailer`` that sends it or raises ``MailError``; what SMTP needs stays in ``SmtpMailer``.
"""

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol


@dataclass(frozen=True)
class Letter:
    to: str
    subject: str
    text: str
    html: str


class MailError(Exception):
    """The letter could not be handed to the mail server: nothing was sent."""


class Mailer(Protocol):
    def send(self, letter: Letter) -> None:
        """Hand the letter over for delivery, or raise MailError."""


@dataclass
class FakeMailer:
    """Records what it is given; ``failing`` makes every send fail as a down server would."""

    sent: list[Letter] = field(default_factory=list)
    failing: bool = False

    def send(self, letter: Letter) -> None:
        if self.failing:
            raise MailError("the fake mail server is down")
        self.sent.append(letter)


@dataclass(frozen=True)
class SmtpMailer:
    host: str
    port: int
    sender: str
    user: str = ""
    password: str = field(default="", repr=False)
    starttls: bool = False
    timeout: float = 30.0

    def message(self, letter: Letter) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = letter.to
        message["Subject"] = letter.subject
        message["Date"] = formatdate(localtime=True)
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        message.set_content(letter.text)
        message.add_alternative(letter.html, subtype="html")
        return message

    def send(self, letter: Letter) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.user:
                    smtp.login(self.user, self.password)
                smtp.send_message(self.message(letter))
        except (OSError, smtplib.SMTPException) as e:
            # OSError covers a refused connection and a timeout; SMTPException every refusal
            # the server answers (a rejected recipient included, since we send to one).
            raise MailError(f"{self.host}:{self.port}: {e}") from e
