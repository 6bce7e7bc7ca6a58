"""Composition root: real adapters built from the settings."""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.billing.application import BillingApp
from services.common.mail import SmtpMailer
from services.common.messaging.positions import Positions
from services.common.settings import Settings
from services.common.storage.chain import store_env
from services.common.storage.persistence import commit_without_sync, log_sync, schema_lock
from services.common.web.auth import ROLES, format_tokens, make_dev_tokens, parse_tokens
from services.common.web.metrics import ProcessMeters
from services.payment.application import PayFiP, PaymentApp, ReturnUrls, utc_now
from services.payment.domain import Watch

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from flask import Flask

    from services.common.messaging.consumer import TrackedConsumer
    from services.common.messaging.ports import Publisher, Subscriber
    from services.common.messaging.relay import Heads, Relay
    from services.common.messaging.wakeup import Wakeup
    from services.payment.gateway import Gateway
    from services.payment.payfip import PayFiPGateway


def billing_app(settings: Settings | None = None) -> BillingApp:
    settings = settings or Settings()
    with schema_lock(settings, "billing"):
        return BillingApp(env=store_env(settings, "billing"))


def payment_app(settings: Settings | None = None, *, gateway: "Gateway | None" = None,
                urls: ReturnUrls | None = None,
                clock: "Callable[[], datetime] | None" = None) -> PaymentApp:
    """The payment application; with a ``gateway`` (the real PayFiP, or a test's fake) it
    also pays through PayFiP, calling it back at ``urls`` (else the settings') and dating
    its payments by ``clock`` (else the time now)."""
    from services.payment.gateway import MeasuredGateway
    from services.payment.guards import GuardedGateway

    settings = settings or Settings()
    meters = ProcessMeters()
    payfip = None
    if gateway is not None:
        # Every PayFiP call of this process is timed, and its failures counted by code; a
        # production régie is refused a PayFiP that is not PayFiP (payment_api also
        # refuses to start then), and that refusal never reaches PayFiP to be counted.
        payfip = PayFiP(
            GuardedGateway(MeasuredGateway(gateway, meters), settings.payfip_service_url),
            urls or return_urls(settings), clock or utc_now)
    with schema_lock(settings, "payment"):
        return PaymentApp(
            env=store_env(settings, "payment"),
            watch=Watch.of_minutes(settings.payfip_reservation_minutes,
                                   settings.payfip_pending_minutes),
            meters=meters, payfip=payfip, collectivite=settings.collectivite,
        )


def positions(settings: Settings, service: str, app: Any) -> Positions:
    """The service's positions table, made with its other tables (see ServiceApplication)."""
    return app.positions  # type: ignore[no-any-return]


def dev_tokens_file(settings: Settings) -> Path:
    return settings.var_dir / "dev-tokens"


def load_tokens(service: str, settings: Settings | None = None) -> dict[str, str]:
    """One API's tokens: its own setting, else REGIE_TOKENS, else the development tokens
    `make run` wrote under var/."""
    settings = settings or Settings()
    spec, setting = settings.tokens_of(service)
    if spec:
        return parse_tokens(spec, setting)
    path = dev_tokens_file(settings)
    if path.exists():
        return parse_tokens(path.read_text().strip(), str(path))
    return {}


def ensure_dev_tokens(settings: Settings) -> dict[str, str]:
    """Development tokens, made once and kept under var/ so a second run finds them.

    A file written before a role existed gets a token for that role added, so the parts
    that need it (the portal's payer) start with the tokens printed before.
    """
    if settings.tokens:
        return parse_tokens(settings.tokens)
    path = dev_tokens_file(settings)
    tokens = parse_tokens(path.read_text().strip(), str(path)) if path.exists() else {}
    missing = tuple(role for role in ROLES if role not in tokens.values())
    if missing:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        tokens |= make_dev_tokens(missing)
        path.write_text(format_tokens(tokens) + "\n")
        os.chmod(path, 0o600)
    return tokens


def payfip_gateway(settings: Settings | None = None) -> "PayFiPGateway":
    from services.payment.payfip import PayFiPGateway

    settings = settings or Settings()
    return PayFiPGateway(settings.payfip_service_url, settings.payfip_payment_url,
                         settings.payfip_timeout)


def mailer(settings: Settings | None = None) -> SmtpMailer:
    """The SMTP server of SMTP_* (the local catcher of `regie run` by default)."""
    settings = settings or Settings()
    return SmtpMailer(host=settings.smtp_host, port=settings.smtp_port,
                      sender=settings.smtp_from, user=settings.smtp_user,
                      password=settings.smtp_password, starttls=settings.smtp_starttls,
                      timeout=settings.smtp_timeout)


def return_urls(settings: Settings | None = None) -> ReturnUrls:
    """The browser comes back on the public address; PayFiP's server may use another."""
    settings = settings or Settings()
    base = settings.payment_public_url.rstrip("/")
    return ReturnUrls(
        notification=settings.payment_notification_url or f"{base}/payfip/notification",
        browser_return=f"{base}/payfip/return",
    )


def billing_api(settings: Settings | None = None) -> "Flask":
    """The billing API as gunicorn starts it: `services.bootstrap:billing_api()`."""
    # Imported here: the relays, consumers and tools that use this module need no Flask.
    from services.billing.web import create_app

    settings = settings or Settings()
    return create_app(billing_app(settings), load_tokens("billing", settings), settings)


def payment_api(settings: Settings | None = None, *, app: PaymentApp | None = None
                ) -> "Flask":
    """The payment API as gunicorn starts it: `services.bootstrap:payment_api()`. A caller
    may bring the application (a test's, on the fake PayFiP). It does not start while a
    known régie in production would be paid through something that is not PayFiP."""
    from services.payment.guards import check_at_start
    from services.payment.web import create_app

    settings = settings or Settings()
    app = app if app is not None else payment_app(settings, gateway=payfip_gateway(settings))
    check_at_start(app.regie_saisies(), settings.payfip_service_url)
    return create_app(app, load_tokens("payment", settings), settings=settings)


def relay_heads(service: str, settings: Settings | None = None,
                publisher: "Publisher | None" = None) -> "Heads":
    """Where a service's relay publishes its chain heads: audit.chain-heads."""
    from events import AUDIT_CHAIN_HEADS
    from services.common.messaging.kafka import KafkaPublisher
    from services.common.messaging.relay import Heads

    settings = settings or Settings()
    topic = settings.topic(AUDIT_CHAIN_HEADS.name)
    return Heads(publisher or KafkaPublisher(settings, topic), topic, service,
                 settings.heads_interval)


def relay_wakeup(settings: Settings, app: Any) -> "Wakeup":
    """What tells a relay of a commit in its service's store: LISTEN on PostgreSQL,
    inotify on an SQLite file, nothing on the in-memory store (the poll alone)."""
    from services.common.messaging.wakeup import ListenWakeup, Sleep, file_wakeup

    if settings.is_postgres():
        import psycopg

        def connect() -> "psycopg.Connection[Any]":
            return psycopg.connect(
                dbname=settings.postgres_dbname, host=settings.postgres_host,
                port=settings.postgres_port, user=settings.postgres_user,
                password=settings.postgres_password or None, autocommit=True,
                connect_timeout=10,
            )

        return ListenWakeup(connect, app.recorder.channel_name).start()
    if settings.persistence == "eventsourcing.sqlite":
        return file_wakeup(Path(app.recorder.datastore.pool.db_name))
    return Sleep()


def relay(service: str, settings: Settings | None = None, *, app: Any = None,
          publisher: "Publisher | None" = None, heads: "Heads | None" = None,
          wakeup: "Wakeup | None" = None) -> "Relay":
    """`regie relay SERVICE`: billing's events to billing.invoices, payment's to
    payment.payments. A caller may bring the service's application, the publisher of its
    events or of its chain heads, or what wakes it on a commit (a benchmark, a test); the
    rest comes from the settings.

    The application's SQLite commits are not synced one by one (``commit_without_sync``):
    one given must serve this relay alone, never an API that acknowledges writes."""
    from events import BILLING_INVOICES, PAYMENT_PAYMENTS
    from services.billing import integration as billing_integration
    from services.common.messaging.kafka import KafkaPublisher
    from services.common.messaging.relay import Relay
    from services.payment import integration as payment_integration

    settings = settings or Settings()
    if service == "billing":
        app = app if app is not None else billing_app(settings)
        topic = settings.topic(BILLING_INVOICES.name)
        to_wire = billing_integration.make_to_wire(app, topic)
    else:
        app = app if app is not None else payment_app(settings)
        topic = settings.topic(PAYMENT_PAYMENTS.name)
        to_wire = payment_integration.make_to_wire(app, topic)
    # Its own writes (its position, the end offsets it reached) are hints, and it syncs
    # the log before each publish.
    commit_without_sync(app)
    return Relay(app, to_wire, publisher or KafkaPublisher(settings, topic),
                 positions(settings, service, app), name=topic,
                 heads=heads or relay_heads(service, settings),
                 wakeup=wakeup if wakeup is not None else relay_wakeup(settings, app),
                 sync=log_sync(app))


def consumer(service: str, settings: Settings | None = None, *, app: Any = None,
             subscribe: "Callable[[], Subscriber] | None" = None) -> "TrackedConsumer":
    """`regie consume SERVICE`: payment reads billing.invoices, billing reads
    payment.payments. A caller may bring the application (a benchmark wraps its to-pay
    store in a clock) or what reads the topic (a test's in-memory broker); the rest comes
    from the settings, REGIE_CONSUMER_INDEX / REGIE_CONSUMER_COUNT (its share of the
    topic's partitions) included.

    The application's SQLite commits are not synced one by one (``commit_without_sync``):
    one given must serve this consumer alone, never an API that acknowledges writes."""
    from events import BILLING_INVOICES, PAYMENT_PAYMENTS
    from services.common.messaging.consumer import TrackedConsumer

    settings = settings or Settings()
    # Checked before anything connects: a bad share stops the process with its reason.
    share = settings.consumer_share()
    if service == "payment":
        payment = app if app is not None else payment_app(settings)
        commit_without_sync(payment)
        return TrackedConsumer(
            settings, settings.topic(BILLING_INVOICES.name), payment.apply_billing_event,
            positions(settings, "payment", payment), on_idle=payment.refresh,
            dead_letters=payment.dead_letters, subscribe=subscribe,
            handle_batch=payment.apply_billing_events, share=share,
        )
    billing = app if app is not None else billing_app(settings)
    commit_without_sync(billing)
    return TrackedConsumer(
        settings, settings.topic(PAYMENT_PAYMENTS.name), billing.apply_payment_event,
        positions(settings, "billing", billing), dead_letters=billing.dead_letters,
        subscribe=subscribe, handle_batch=billing.apply_payment_events, share=share,
    )
