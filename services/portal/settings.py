"""The portal's settings, read from the environment (declared in services.common.settings)."""

from dataclasses import dataclass, field

from services.common.settings import SETTINGS
from services.common.settings import get as get_setting

# Declared with every other setting, in services.common.settings.
PORTAL_SETTINGS = {name: value for name, value in SETTINGS.items() if name.startswith("PORTAL_")}


def get(name: str) -> str:
    """A portal setting from the environment, or its default; a KeyError for any other."""
    if name not in PORTAL_SETTINGS:
        raise KeyError(name)
    return get_setting(name)


@dataclass(frozen=True)
class PortalSettings:
    port: int = field(default_factory=lambda: int(get("PORTAL_PORT")))
    secret_key: str = field(default_factory=lambda: get("PORTAL_SECRET_KEY"))
    payment_url: str = field(default_factory=lambda: get("PORTAL_PAYMENT_URL").rstrip("/"))
    payment_token: str = field(default_factory=lambda: get("PORTAL_PAYMENT_TOKEN"))
    accounts_db: str = field(default_factory=lambda: get("PORTAL_ACCOUNTS_DB"))
    public_url: str = field(default_factory=lambda: get("PORTAL_PUBLIC_URL").rstrip("/"))
    session_idle_minutes: float = field(
        default_factory=lambda: float(get("PORTAL_SESSION_IDLE_MINUTES")))
    # The payment API's own setting, read here too: its answers give when a reservation
    # ends, not when the payment began, and PayFiP's page lives 15 minutes from then.
    reservation_minutes: float = field(
        default_factory=lambda: float(get_setting("PAYFIP_RESERVATION_MINUTES")))

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")
