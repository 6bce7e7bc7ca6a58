"""PayFiP's SOAP 1.1 wire format: reading requests, writing answers and faults, the WSDL.

The answers copy what PayFiP's JAX-WS server writes: an ``S:`` envelope, the response
element in the service namespace, and ``<return>`` / fault ``<detail>`` children without a
namespace. Faults carry no default namespace on purpose: zeep looks ``faultstring`` up with
the fault element's own prefixes, so a default namespace there would hide it.
"""

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from importlib import resources
from xml.sax.saxutils import escape

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
SERVICE_NS = (
    "http://securite.service.tpa.cp.finances.gouv.fr/services/mas_securite/"
    "contrat_paiement_securise/PaiementSecuriseService"
)
FONCTIONNELLE = "fr.gouv.finances.cp.tpa.webservice.exceptions.FonctionnelleErreur"
TECH_INDISPONIBILITE = "fr.gouv.finances.cp.tpa.webservice.exceptions.TechIndisponibiliteErreur"
ENDPOINT_PATH = "/tpa/services/securite"
PAYFIP_ADDRESS = "https://www.payfip.gouv.fr/tpa/services/securite"
SCHEMAS = {
    "1": "PaiementSecuriseService_schema1.xsd",
    "2": "PaiementSecuriseService_schema2.xsd",
    "3": "PaiementSecuriseService_schema3.xsd",
}


class SoapClientError(Exception):
    """A request that is not a SOAP call of this service (answered as a Client fault)."""


def parse_request(body: bytes) -> tuple[str, dict[str, str | None]]:
    """The operation's local name and the unqualified children of its ``<arg0>``.

    Only unqualified children count, as for PayFiP: a field sent in a namespace, or with
    another case (``idop`` for ``idOp``), is simply absent.
    """
    try:
        # The stdlib parser refuses external entities, and expat >= 2.4 caps expansion.
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise SoapClientError(f"Couldn't create SOAP message due to exception: {e}") from e
    if root.tag == f"{{{SOAP12_ENV}}}Envelope":
        raise SoapClientError("SOAP 1.2 envelope sent to a SOAP 1.1 endpoint")
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise SoapClientError(f"Not a SOAP envelope: {root.tag}")
    body_el = root.find(f"{{{SOAP_ENV}}}Body")
    if body_el is None or len(body_el) == 0:
        raise SoapClientError("Empty SOAP body")
    call = body_el[0]
    if not call.tag.startswith(f"{{{SERVICE_NS}}}"):
        raise SoapClientError(f"Cannot find dispatch method for {call.tag}")
    operation = call.tag.split("}", 1)[1]
    arg0 = call.find("arg0")
    fields: dict[str, str | None] = {}
    if arg0 is not None:
        for child in arg0:
            if not child.tag.startswith("{"):
                fields[child.tag] = child.text or ""
    return operation, fields


def _envelope(body: str) -> bytes:
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f'<S:Envelope xmlns:S="{SOAP_ENV}"><S:Body>{body}</S:Body></S:Envelope>'
    ).encode()


def _children(values: Sequence[tuple[str, str | None]]) -> str:
    # JAX-WS leaves null fields out rather than writing empty elements.
    return "".join(
        f"<{name}>{escape(value)}</{name}>" for name, value in values if value is not None
    )


def response(operation: str, values: Sequence[tuple[str, str | None]]) -> bytes:
    return _envelope(
        f'<ns2:{operation}Response xmlns:ns2="{SERVICE_NS}">'
        f"<return>{_children(values)}</return></ns2:{operation}Response>"
    )


def _fault(faultcode: str, faultstring: str, detail: str = "") -> bytes:
    return _envelope(
        "<S:Fault>"
        f"<faultcode>{faultcode}</faultcode><faultstring>{escape(faultstring)}</faultstring>"
        f"{detail}</S:Fault>"
    )


def business_fault(code: str, libelle: str, severite: int = 2) -> bytes:
    """A FonctionnelleErreur, which eopayment turns into ``PayFiPError(code, message)``."""
    values = [("code", code), ("descriptif", libelle), ("libelle", libelle),
              ("severite", str(severite))]
    detail = (
        f'<detail><ns2:FonctionnelleErreur xmlns:ns2="{SERVICE_NS}">'
        f"{_children(values)}</ns2:FonctionnelleErreur></detail>"
    )
    return _fault("S:Server", FONCTIONNELLE, detail)


def unavailable_fault() -> bytes:
    """A technical fault: eopayment raises ``PayFiPError('unknown', faultstring)``."""
    values = [("code", "999"), ("descriptif", "Service momentanément indisponible."),
              ("libelle", "Service indisponible."), ("severite", "3")]
    detail = (
        f'<detail><ns2:TechIndisponibiliteErreur xmlns:ns2="{SERVICE_NS}">'
        f"{_children(values)}</ns2:TechIndisponibiliteErreur></detail>"
    )
    return _fault("S:Server", TECH_INDISPONIBILITE, detail)


def client_fault(message: str) -> bytes:
    return _fault("S:Client", message)


def _resource(name: str) -> str:
    # eopayment ships the WSDL and its XSDs because PayFiP's published ones do not resolve.
    return (resources.files("eopayment") / "resource" / name).read_text(encoding="utf-8")


def wsdl(endpoint: str) -> str:
    """eopayment's bundled WSDL, aimed at ``endpoint`` and with fetchable schemas."""
    text = _resource("PaiementSecuriseService.wsdl").replace(PAYFIP_ADDRESS, endpoint)
    return _link_schemas(text, endpoint)


def schema(number: str, endpoint: str) -> str | None:
    name = SCHEMAS.get(number)
    if name is None:
        return None
    return _link_schemas(_resource(name), endpoint)


def _link_schemas(text: str, endpoint: str) -> str:
    # Relative schemaLocations would resolve next to the endpoint, not under it; JAX-WS
    # publishes them as ?xsd=N, and so do we.
    by_name = {name: number for number, name in SCHEMAS.items()}
    return re.sub(
        r'schemaLocation="([^"]+)"',
        lambda m: f'schemaLocation="{endpoint}?xsd={by_name[m.group(1)]}"'
        if m.group(1) in by_name else m.group(0),
        text,
    )
