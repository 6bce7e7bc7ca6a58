"""Every setting Régie reads, from the environment, in one place.

The docker-compose test checks that each variable the compose file sets is listed in
``SETTINGS``, so a new setting must be declared here to be usable.
"""

import os
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

# name -> (default, meaning)
SETTINGS: dict[str, tuple[str, str]] = {
    "REGIE_VAR_DIR": ("var", "folder for SQLite files, the embedded broker's data and dev tokens"),
    "PERSISTENCE_MODULE": (
        "eventsourcing.sqlite",
        "eventsourcing.sqlite (embedded) or eventsourcing.postgres",
    ),
    "POSTGRES_DBNAME": ("regie", "PostgreSQL database"),
    "POSTGRES_HOST": ("127.0.0.1", "PostgreSQL host"),
    "POSTGRES_PORT": ("5432", "PostgreSQL port"),
    "POSTGRES_USER": ("postgres", "PostgreSQL user"),
    "POSTGRES_PASSWORD": ("", "PostgreSQL password"),
    "REGIE_SCHEMA_PREFIX": ("", "prefix of each service's PostgreSQL schema (tests isolate runs)"),
    "KAFKA_BOOTSTRAP_SERVERS": ("127.0.0.1:9092", "Kafka bootstrap servers"),
    "KAFKA_BROKER": (
        "noida",
        "broker `regie run` starts at KAFKA_BOOTSTRAP_SERVERS: noida, tansu, or external "
        "(none: Apache Kafka, whose empty fetches the consumers wait in)",
    ),
    "KAFKA_PARTITIONS": ("6", "partitions of each topic the relays create"),
    "KAFKA_TOPIC_PREFIX": ("", "prefix of topic and group names (tests isolate runs)"),
    "KAFKA_SESSION_TIMEOUT_MS": ("", "consumer session timeout; default by broker kind"),
    "REGIE_CONSUMER_COUNT": (
        "1",
        "how many `regie consume SERVICE` processes share the topic's partitions (each its "
        "own REGIE_CONSUMER_INDEX)",
    ),
    "REGIE_CONSUMER_INDEX": (
        "0",
        "this consumer's place among REGIE_CONSUMER_COUNT, from 0: it reads partition p "
        "when p % REGIE_CONSUMER_COUNT is this index",
    ),
    "REGIE_TOKENS": (
        "",
        "comma-separated token:role pairs (roles: issuer reader auditor operator payer "
        "cashier), for each API whose own setting below is empty",
    ),
    "BILLING_TOKENS": ("", "the billing API's token:role pairs; empty: REGIE_TOKENS"),
    "PAYMENT_TOKENS": ("", "the payment API's token:role pairs; empty: REGIE_TOKENS"),
    "REGIE_MAX_BODY_BYTES": (
        str(16 * 1024 * 1024),
        "largest request body the APIs, the portal and the simulator read (413 above it)",
    ),
    "BILLING_PORT": ("8001", "billing API port"),
    "PAYMENT_PORT": ("8002", "payment API port"),
    "BILLING_URL": ("http://127.0.0.1:8001", "billing API base URL"),
    "PAYMENT_URL": ("http://127.0.0.1:8002", "payment API base URL"),
    "PAYFIP_SERVICE_URL": (
        "http://127.0.0.1:8003/tpa/services/securite",
        "PayFiP's SOAP endpoint (https://www.payfip.gouv.fr/tpa/services/securite in production)",
    ),
    "PAYFIP_PAYMENT_URL": (
        "http://127.0.0.1:8003/tpa/paiementws.web",
        "PayFiP's payment page (https://www.payfip.gouv.fr/tpa/paiementws.web in production)",
    ),
    "PAYFIP_TIMEOUT": ("15", "seconds to wait for a PayFiP answer"),
    "PAYMENT_PUBLIC_URL": (
        "http://127.0.0.1:8002",
        "the payment API as PayFiP and browsers reach it (notification and return URLs)",
    ),
    "PAYMENT_NOTIFICATION_URL": (
        "",
        "where PayFiP posts its notification, when not PAYMENT_PUBLIC_URL/payfip/notification",
    ),
    "PAYFIP_SIM_ENABLED": (
        "", "1 lets the PayFiP simulator start (make run, the tests, compose's dev profile)"
    ),
    "PAYFIP_SIM_PORT": ("8003", "PayFiP simulator port"),
    "PAYFIP_SIM_UNKNOWN_NUMCLI": ("999999", "comma-separated numcli the simulator says T2 to"),
    "PAYFIP_SIM_NOTIFY_TIMEOUT": ("5", "seconds the simulator waits for urlnotif to answer"),
    "PAYFIP_SIM_PUBLIC_URL": (
        "", "base URL written into the simulator's WSDL; default: the URL it was reached at"
    ),
    "PAYFIP_RESERVATION_MINUTES": (
        "20",
        "minutes a payment keeps its invoices reserved (PayFiP's idop lives 15); fractions allowed",
    ),
    "PAYFIP_PENDING_MINUTES": (
        "120",
        "minutes of PayFiP's P5 (in progress) before a payment is called expired; fractions "
        "allowed",
    ),
    "REGIE_RECONCILE_INTERVAL": ("60", "seconds between two reconciler passes over PayFiP"),
    "PORTAL_PORT": ("8000", "families' portal port"),
    "PORTAL_SECRET_KEY": (
        "",
        "signs the portal's session cookies and CSRF tokens; empty: a random key kept in "
        "portal-secret.key beside PORTAL_ACCOUNTS_DB",
    ),
    "PORTAL_PAYMENT_URL": (
        "http://127.0.0.1:8002", "payment API base URL, as the portal reaches it"
    ),
    "PORTAL_PAYMENT_TOKEN": ("", "a payer token of the payment API"),
    "PORTAL_ACCOUNTS_DB": ("var/portal.db", "SQLite file of the families' accounts"),
    "PORTAL_PUBLIC_URL": (
        "http://127.0.0.1:8000",
        "the portal as browsers reach it (links in e-mails; https makes cookies Secure)",
    ),
    "PORTAL_SESSION_IDLE_MINUTES": ("30", "minutes without a request that end a portal session"),
    "PORTAL_RETURN_URL": (
        "",
        "when set, the payment API sends PayFiP's browser return on to this portal page",
    ),
    "BACKOFFICE_PORT": ("8004", "the régisseur's back office (the desk) port"),
    "BACKOFFICE_SECRET_KEY": (
        "",
        "signs the back office's session cookies and CSRF tokens; empty: a random key kept "
        "in backoffice-secret.key beside BACKOFFICE_ACCOUNTS_DB",
    ),
    "BACKOFFICE_TOKEN": (
        "", "a cashier token of both APIs (in REGIE_TOKENS, or in BILLING_TOKENS and "
            "PAYMENT_TOKENS alike)",
    ),
    "BACKOFFICE_BILLING_URL": (
        "http://127.0.0.1:8001", "billing API base URL, as the back office reaches it"
    ),
    "BACKOFFICE_PAYMENT_URL": (
        "http://127.0.0.1:8002", "payment API base URL, as the back office reaches it"
    ),
    "BACKOFFICE_ACCOUNTS_DB": ("var/backoffice.db", "SQLite file of the staff's accounts"),
    "BACKOFFICE_PUBLIC_URL": (
        "http://127.0.0.1:8004",
        "the back office as browsers reach it (one-time links; https makes cookies Secure)",
    ),
    "BACKOFFICE_SESSION_IDLE_MINUTES": (
        "30", "minutes without a request that end a back-office session"
    ),
    "REGIE_START_TIMEOUT": (
        "60", "seconds `regie run` waits for its parts to answer before it stops them all"
    ),
    "REGIE_POLL_INTERVAL": ("0.1", "seconds between two polls of a relay or projection"),
    "REGIE_COLLECTIVITE": (
        "Collectivité territoriale",
        "the municipality's name, at the head of every document (invoice, certificate, "
        "receipt, journal)",
    ),
    "REGIE_LOG_LEVEL": ("INFO", "log level"),
    "PROMETHEUS_MULTIPROC_DIR": (
        "",
        "folder shared by the payment API and the reconciler for their PayFiP call metrics "
        "(prometheus_client's multiprocess mode); empty: each process counts its own",
    ),
    "REGIE_CHAIN_KEY": (
        "",
        "HMAC key of the event hash chain, kept outside the database; empty: plain SHA-256",
    ),
    "REGIE_HEADS_INTERVAL": ("60", "seconds between two chain heads a relay publishes"),
    "REMIND_DAYS_BEFORE": (
        "7", "days before an invoice's online-payment deadline its payer is e-mailed a reminder"
    ),
    "REGIE_SCHEDULER_INTERVAL": ("86400", "seconds between two passes of `regie scheduler`"),
    "SMTP_HOST": ("127.0.0.1", "SMTP server the reminders go through"),
    "SMTP_PORT": ("8025", "SMTP server's port (8025: the local catcher of `make run`)"),
    "SMTP_FROM": ("regie@localhost", "sender address of the reminders"),
    "SMTP_USER": ("", "SMTP login; empty: no authentication"),
    "SMTP_PASSWORD": ("", "SMTP password"),
    "SMTP_STARTTLS": ("", "1: STARTTLS before logging in (required with SMTP_USER off localhost)"),
    "SMTP_TIMEOUT": ("30", "seconds to wait for the SMTP server"),
}

SERVICES = ("billing", "payment")

# What `regie settings` hides and docker-compose hands only to the containers that use it.
SECRET_PATTERNS = ("*_TOKEN*", "*_KEY", "*_PASSWORD", "*_SECRET*")


def is_secret(name: str) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in SECRET_PATTERNS)


def get(name: str) -> str:
    default, _ = SETTINGS[name]
    return os.environ.get(name, default)


def max_body_bytes() -> int:
    """Flask's MAX_CONTENT_LENGTH for every app: a larger body is refused, never read."""
    return int(get("REGIE_MAX_BODY_BYTES"))


@dataclass(frozen=True)
class Settings:
    var_dir: Path = field(default_factory=lambda: Path(get("REGIE_VAR_DIR")))
    persistence: str = field(default_factory=lambda: get("PERSISTENCE_MODULE"))
    postgres_dbname: str = field(default_factory=lambda: get("POSTGRES_DBNAME"))
    postgres_host: str = field(default_factory=lambda: get("POSTGRES_HOST"))
    postgres_port: str = field(default_factory=lambda: get("POSTGRES_PORT"))
    postgres_user: str = field(default_factory=lambda: get("POSTGRES_USER"))
    postgres_password: str = field(default_factory=lambda: get("POSTGRES_PASSWORD"))
    schema_prefix: str = field(default_factory=lambda: get("REGIE_SCHEMA_PREFIX"))
    kafka_bootstrap: str = field(default_factory=lambda: get("KAFKA_BOOTSTRAP_SERVERS"))
    kafka_broker: str = field(default_factory=lambda: get("KAFKA_BROKER"))
    kafka_partitions: int = field(default_factory=lambda: int(get("KAFKA_PARTITIONS")))
    topic_prefix: str = field(default_factory=lambda: get("KAFKA_TOPIC_PREFIX"))
    kafka_session_timeout_ms: str = field(
        default_factory=lambda: get("KAFKA_SESSION_TIMEOUT_MS")
    )
    # Kept as given and checked by consumer_share(): only the consumers need them, and a
    # bad value must stop them with a clear message, not every other command.
    consumer_index: str = field(default_factory=lambda: get("REGIE_CONSUMER_INDEX"))
    consumer_count: str = field(default_factory=lambda: get("REGIE_CONSUMER_COUNT"))
    tokens: str = field(default_factory=lambda: get("REGIE_TOKENS"))
    billing_tokens: str = field(default_factory=lambda: get("BILLING_TOKENS"))
    payment_tokens: str = field(default_factory=lambda: get("PAYMENT_TOKENS"))
    poll_interval: float = field(default_factory=lambda: float(get("REGIE_POLL_INTERVAL")))
    payfip_service_url: str = field(default_factory=lambda: get("PAYFIP_SERVICE_URL"))
    payfip_payment_url: str = field(default_factory=lambda: get("PAYFIP_PAYMENT_URL"))
    payfip_timeout: float = field(default_factory=lambda: float(get("PAYFIP_TIMEOUT")))
    payment_public_url: str = field(default_factory=lambda: get("PAYMENT_PUBLIC_URL"))
    payment_notification_url: str = field(
        default_factory=lambda: get("PAYMENT_NOTIFICATION_URL")
    )
    portal_return_url: str = field(default_factory=lambda: get("PORTAL_RETURN_URL"))
    portal_accounts_db: str = field(default_factory=lambda: get("PORTAL_ACCOUNTS_DB"))
    reconcile_interval: float = field(
        default_factory=lambda: float(get("REGIE_RECONCILE_INTERVAL"))
    )
    log_level: str = field(default_factory=lambda: get("REGIE_LOG_LEVEL"))
    start_timeout: float = field(default_factory=lambda: float(get("REGIE_START_TIMEOUT")))
    billing_port: str = field(default_factory=lambda: get("BILLING_PORT"))
    payment_port: str = field(default_factory=lambda: get("PAYMENT_PORT"))
    payfip_sim_port: str = field(default_factory=lambda: get("PAYFIP_SIM_PORT"))
    portal_port: str = field(default_factory=lambda: get("PORTAL_PORT"))
    backoffice_port: str = field(default_factory=lambda: get("BACKOFFICE_PORT"))
    collectivite: str = field(default_factory=lambda: get("REGIE_COLLECTIVITE"))
    payfip_reservation_minutes: float = field(
        default_factory=lambda: float(get("PAYFIP_RESERVATION_MINUTES"))
    )
    payfip_pending_minutes: float = field(
        default_factory=lambda: float(get("PAYFIP_PENDING_MINUTES"))
    )
    metrics_dir: str = field(default_factory=lambda: get("PROMETHEUS_MULTIPROC_DIR"))
    chain_key: str = field(default_factory=lambda: get("REGIE_CHAIN_KEY"), repr=False)
    heads_interval: float = field(default_factory=lambda: float(get("REGIE_HEADS_INTERVAL")))
    remind_days_before: int = field(default_factory=lambda: int(get("REMIND_DAYS_BEFORE")))
    scheduler_interval: float = field(
        default_factory=lambda: float(get("REGIE_SCHEDULER_INTERVAL"))
    )
    portal_public_url: str = field(default_factory=lambda: get("PORTAL_PUBLIC_URL"))
    smtp_host: str = field(default_factory=lambda: get("SMTP_HOST"))
    smtp_port: int = field(default_factory=lambda: int(get("SMTP_PORT")))
    smtp_from: str = field(default_factory=lambda: get("SMTP_FROM"))
    smtp_user: str = field(default_factory=lambda: get("SMTP_USER"))
    smtp_password: str = field(default_factory=lambda: get("SMTP_PASSWORD"), repr=False)
    smtp_starttls: bool = field(default_factory=lambda: get("SMTP_STARTTLS") == "1")
    smtp_timeout: float = field(default_factory=lambda: float(get("SMTP_TIMEOUT")))

    def tokens_of(self, service: str) -> tuple[str, str]:
        """The token:role pairs one API accepts, and the setting they come from."""
        own = {"billing": self.billing_tokens, "payment": self.payment_tokens}[service]
        return (own, f"{service.upper()}_TOKENS") if own else (self.tokens, "REGIE_TOKENS")

    def consumer_share(self) -> tuple[int, int]:
        """(index, count): this consumer reads the partitions p with p % count == index.

        Raises ValueError naming the setting when either is not a whole number, the count
        is below 1 or the index is outside [0, count).
        """
        values = {}
        for name, raw in (("REGIE_CONSUMER_INDEX", self.consumer_index),
                          ("REGIE_CONSUMER_COUNT", self.consumer_count)):
            try:
                values[name] = int(str(raw).strip())
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a whole number") from None
        index, count = values["REGIE_CONSUMER_INDEX"], values["REGIE_CONSUMER_COUNT"]
        if count < 1:
            raise ValueError(f"REGIE_CONSUMER_COUNT={count} must be at least 1")
        if not 0 <= index < count:
            raise ValueError(f"REGIE_CONSUMER_INDEX={index} must be from 0 to "
                             f"{count - 1} (REGIE_CONSUMER_COUNT={count})")
        return index, count

    def topic(self, name: str) -> str:
        return self.topic_prefix + name

    def session_timeout_ms(self) -> int:
        if self.kafka_session_timeout_ms:
            return int(self.kafka_session_timeout_ms)
        # Tansu answers a join only after about half the session timeout; noida-db and
        # Apache Kafka refuse anything under 6 s.
        return 2000 if self.kafka_broker == "tansu" else 6000

    def broker_holds_fetches(self) -> bool:
        """Does the broker hold an empty fetch until records come (fetch.max.wait.ms)?

        Apache Kafka does, so a consumer can wait in its poll. noida-db answers at once,
        and so, for safety, is Tansu taken to: a consumer waiting in its poll would fetch
        again and again, spinning a core.
        """
        return self.kafka_broker == "external"

    def is_postgres(self) -> bool:
        return self.persistence == "eventsourcing.postgres"

    def schema(self, service: str) -> str:
        return f"{self.schema_prefix}{service}"
