"""Production guards: a régie in production never pays through something that is not PayFiP.

A régie whose ``saisie`` is ``W`` takes real money. Its payments must go to DGFiP's PayFiP,
which answers over https on a public host only; the simulator (``make run``, compose, the
tests) answers over plain http on this machine or a private network. So the rule is about
the address alone, which no answer of the far side can fake: ``W`` with a PayFiP service
URL that is not https, or whose host is this machine, is refused.

Régies arrive over Kafka at any time, so the rule is checked twice: at start for the régies
already known (the payment API does not start), and on each payment request (a ``W`` régie
registered while the API runs gets no payment, an error is logged).
"""

import ipaddress
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from services.payment.gateway import Gateway, GatewayError, PaymentOrder, Result

log = logging.getLogger(__name__)

PRODUCTION = "W"
# The code a refused payment is recorded with, as PayFiP's own refusals are.
NOT_PAYFIP = "not-payfip"
LOCAL_NAMES = {"localhost", "localhost.localdomain"}


def _is_this_machine(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host in LOCAL_NAMES or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or address.is_unspecified
                or (mapped is not None and mapped.is_loopback))


def production_refusal(saisie: str, service_url: str) -> str | None:
    """Why a régie of this ``saisie`` must not be paid through ``service_url``; None if it may.

    Test (``T``) and activation (``X``) régies may use any PayFiP, the simulator included.
    """
    if saisie.strip() != PRODUCTION:
        return None
    parts = urlsplit(service_url.strip())
    if parts.scheme.lower() != "https":
        return f"PAYFIP_SERVICE_URL {service_url!r} is not https"
    if not parts.hostname or _is_this_machine(parts.hostname):
        return f"PAYFIP_SERVICE_URL {service_url!r} is this machine, not PayFiP"
    return None


class ProductionRefused(GatewayError):
    """A production régie's payment was not sent: the PayFiP configured is not PayFiP."""

    def __init__(self, numcli: str, reason: str) -> None:
        super().__init__(
            NOT_PAYFIP,
            f"the régie of numcli {numcli} is in production (saisie W) and {reason}: "
            "no payment is sent to it; set PAYFIP_SERVICE_URL to PayFiP's https endpoint",
        )


def check_at_start(saisies: Mapping[str, str], service_url: str) -> None:
    """Refuse to start when a known régie in production would be paid through ``service_url``.

    ``saisies`` maps each régie's code to its saisie. Raises RuntimeError naming them all.
    """
    refused = {
        code: reason for code, saisie in sorted(saisies.items())
        if (reason := production_refusal(saisie, service_url)) is not None
    }
    if refused:
        message = "production régies without PayFiP: " + "; ".join(
            f"{code}: {reason}" for code, reason in refused.items())
        log.error("%s", message)
        raise RuntimeError(message)


def guarded(gateway: Gateway, service_url: str, saisies: Mapping[str, str]) -> "GuardedGateway":
    """The payment API's PayFiP: checked at start against the régies known (``saisies``),
    then on each payment request."""
    check_at_start(saisies, service_url)
    return GuardedGateway(gateway, service_url)


class GuardedGateway:
    """Any Gateway that refuses, before any call, an order of a production régie when the
    service URL is not PayFiP's (a régie registered while the service runs)."""

    def __init__(self, gateway: Gateway, service_url: str) -> None:
        self.gateway = gateway
        self.service_url = service_url

    def create(self, order: PaymentOrder) -> tuple[str, dict[str, Any]]:
        reason = production_refusal(order.saisie, self.service_url)
        if reason is not None:
            refused = ProductionRefused(order.numcli, reason)
            log.error("payment refused: %s", refused.message)
            raise refused
        return self.gateway.create(order)

    def result(self, idop: str) -> Result:
        return self.gateway.result(idop)

    def payment_url(self, idop: str) -> str:
        return self.gateway.payment_url(idop)
