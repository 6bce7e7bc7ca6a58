"""The back office's settings, read from the environment (declared in services.common.settings)."""

from dataclasses import dataclass, field

from services.common.settings import SETTINGS
from services.common.settings import get as get_setting

# Declared with every other setting, in services.common.settings.
BACKOFFICE_SETTINGS = {name: value for name, value in SETTINGS.items()
                       if name.startswith("BACKOFFICE_")}


def get(name: str) -> str:
    """A back-office setting from the environment, or its default; a KeyError for any other."""
    if name not in BACKOFFICE_SETTINGS:
        raise KeyError(name)
    return get_setting(name)


@dataclass(frozen=True)
class BackofficeSettings:
    port: int = field(default_factory=lambda: int(get("BACKOFFICE_PORT")))
    secret_key: str = field(default_factory=lambda: get("BACKOFFICE_SECRET_KEY"))
    token: str = field(default_factory=lambda: get("BACKOFFICE_TOKEN"))
    billing_url: str = field(default_factory=lambda: get("BACKOFFICE_BILLING_URL").rstrip("/"))
    payment_url: str = field(default_factory=lambda: get("BACKOFFICE_PAYMENT_URL").rstrip("/"))
    accounts_db: str = field(default_factory=lambda: get("BACKOFFICE_ACCOUNTS_DB"))
    public_url: str = field(default_factory=lambda: get("BACKOFFICE_PUBLIC_URL").rstrip("/"))
    session_idle_minutes: float = field(
        default_factory=lambda: float(get("BACKOFFICE_SESSION_IDLE_MINUTES")))

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")
