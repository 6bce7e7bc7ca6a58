"""The PayFiP gateway on eopayment's SOAP client (zeep, with the WSDL and XSDs bundled)."""

import logging
from typing import TYPE_CHECKING, Any

from services.payment.gateway import UNREACHABLE, GatewayError, PaymentOrder, Result

if TYPE_CHECKING:
    from eopayment.payfip_ws import PayFiP

log = logging.getLogger(__name__)

BINDING = (
    "{http://securite.service.tpa.cp.finances.gouv.fr/services/mas_securite/"
    "contrat_paiement_securise/PaiementSecuriseService}PaiementSecuriseServicePortBinding"
)
# eopayment's codes for "no PayFiP answer at all", as opposed to a PayFiP fault.
TRANSPORT_ERRORS = {"SOAP error", "HTTP error", "Unexpected error", "unknown", "inconnu"}


def aim(payfip: "PayFiP", service_url: str) -> "PayFiP":
    """Send eopayment's PayFiP calls to ``service_url``.

    eopayment 3.15 stores its ``service_url`` argument and never uses it: zeep posts to the
    soap:address of the bundled WSDL, www.payfip.gouv.fr. zeep aims a WSDL elsewhere with
    ``create_service(binding, address)``; ``PayFiP._perform`` calls ``self.client.service``,
    and zeep's ``Client.service`` (no setter) returns ``_default_service`` once it is set.
    """
    client = payfip.client  # built from the bundled WSDL: no network needed
    client._default_service = client.create_service(BINDING, service_url)
    return payfip


def _plain(answer: Any) -> dict[str, Any]:
    """A zeep answer as plain JSON-able data, to be kept as it came."""
    from zeep.helpers import serialize_object

    data = serialize_object(answer)  # type: ignore[no-untyped-call]
    if not isinstance(data, dict):
        return {"value": str(data)}
    return {k: (v if isinstance(v, str | int | None) else str(v)) for k, v in data.items()}


class PayFiPGateway:
    def __init__(self, service_url: str, payment_url: str, timeout: float = 15.0) -> None:
        from eopayment.payfip_ws import PayFiP

        self.payfip = aim(PayFiP(), service_url)
        self.payment_url_base = payment_url
        self.timeout = timeout

    def _call(self, method: str, **kwargs: Any) -> Any:
        from eopayment.payfip_ws import PayFiPError

        try:
            return getattr(self.payfip, method)(timeout=self.timeout, **kwargs)
        except PayFiPError as e:
            code = str(e.code)
            if code in TRANSPORT_ERRORS:
                raise GatewayError(UNREACHABLE, f"{code}: {e.message}") from None
            raise GatewayError(code, str(e.message)) from None

    def create(self, order: PaymentOrder) -> tuple[str, dict[str, Any]]:
        answer = self._call(
            "get_idop", numcli=order.numcli, saisie=order.saisie, exer=order.exer,
            refdet=order.refdet, montant=str(order.amount_cents), mel=order.email,
            url_notification=order.urlnotif, url_redirect=order.urlredirect,
            objet=order.objet or None,
        )
        idop = str(answer)
        return idop, {"idOp": idop}

    def result(self, idop: str) -> Result:
        answer = self._call("get_info_paiement", idop=idop)
        raw = _plain(answer)
        # PayFiP repeats the payer's e-mail: the answer is stored and logged as it is,
        # and the address is erasable only where it is sealed (the payment's start).
        raw.pop("mel", None)
        return Result(
            resultrans=str(raw.get("resultrans") or ""),
            numauto=str(raw.get("numauto") or ""),
            dattrans=str(raw.get("dattrans") or ""),
            heurtrans=str(raw.get("heurtrans") or ""),
            amount_cents=int(raw.get("montant") or 0),
            raw=raw,
        )

    def payment_url(self, idop: str) -> str:
        return f"{self.payment_url_base}?idop={idop}"
