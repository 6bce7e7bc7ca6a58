"""Both APIs fuzzed from their own /openapi.json: no 5xx, every answer as documented.

Schemathesis generates requests from each operation's documented parameters and bodies,
valid ones and wrong ones, sends them with an operator token (allowed everywhere), and
checks every answer: no server error, a status code the document lists, the documented
content type and headers, and a body that matches its schema. The stores hold régies,
invoices and a payment, and each operation is also fuzzed with their identifiers in its
path, so that the requests reach more than "not found". The number of examples is bounded
and the generation derandomized: a run is short and repeats itself.
"""

from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.billing.domain import Invoice
from services.billing.web import create_app as create_billing
from services.common.settings import Settings
from services.payment.gateway import FakeGateway
from services.payment.web import create_app as create_payment
from tests.factories import deliver, issued, terms, wire_messages

TOKEN = "fuzz-operator"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
# What the document promises. Not "schema-valid data is accepted": a valid-looking invoice
# whose lines do not add up, or a payment for an unknown régie, is refused by the trade's
# rules with a documented 4xx.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
EXAMPLES = 30  # per operation, generation mode and set of path parameters
# No shrinking: a failure is reported as found (with a curl line to replay it), so a run
# that finds one stays as short as one that does not.
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.reuse, Phase.generate])


def operations(app: Flask) -> list[Any]:
    """The operations ``app``'s /openapi.json documents; one it cannot read fails here."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]


def fuzz(app: Flask, known: dict[str, str]) -> dict[str, str]:
    """Each operation of ``app``'s document that failed, with what failed. ``known`` gives
    identifiers that exist, used for the path parameters of the same name."""
    failures: dict[str, str] = {}
    for operation in operations(app):
        names = {p.name for p in operation.path_parameters}
        runs: list[tuple[GenerationMode, dict[str, str]]] = [(mode, {}) for mode in GenerationMode]
        if names and names <= set(known):
            runs.append((GenerationMode.POSITIVE, {name: known[name] for name in names}))
        for mode, path in runs:

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path))
            def call(case: Any) -> None:
                case.call_and_validate(headers=HEADERS, checks=CHECKS)

            try:
                call()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as e:
                failures[f"{operation.label} ({mode.value}, {path or 'generated'})"] = str(e)
    return failures


@pytest.fixture
def stores(tmp_path: Any) -> dict[str, Any]:
    """Billing and payment in memory: two régies, invoices, one payment in progress."""
    store = Settings(var_dir=tmp_path / "var", tokens="", persistence="eventsourcing.popo")
    billing, payment = issued(store, terms("S-1"), terms("S-2"), terms("C-1", regie="CANTINE"),
                              gateway=FakeGateway())
    deliver(payment, wire_messages(billing))
    invoice = str(Invoice.create_id("SPORTS", "S-1"))
    paying = payment.request_payment(
        family_id="fam-1", regie="SPORTS", invoice_ids=[invoice],
        email="parent@example.org")
    known = {"invoice_id": str(Invoice.create_id("SPORTS", "S-2")), "regie": "SPORTS",
             "family_id": "fam-1", "payment_id": str(paying.id)}
    return {"store": store, "billing": billing, "payment": payment, "known": known}


def test_billing_api(stores: dict[str, Any]) -> None:
    app = create_billing(stores["billing"], tokens={TOKEN: "operator"},
                         settings=stores["store"])
    assert fuzz(app, stores["known"]) == {}
    assert len(operations(app)) >= 8


def test_payment_api(stores: dict[str, Any]) -> None:
    app = create_payment(stores["payment"], tokens={TOKEN: "operator"}, settings=stores["store"])
    assert fuzz(app, stores["known"]) == {}
    assert len(operations(app)) >= 9


def test_the_fuzzing_reports_what_the_document_does_not_say() -> None:
    """The harness itself: an answer off its schema, a 5xx, are reported by operation."""
    from flask.views import MethodView
    from flask_smorest import Api, Blueprint
    from marshmallow import Schema, fields

    class Count(Schema):
        n = fields.Integer(required=True)

    class Query(Schema):
        fail = fields.Boolean(load_default=False)

    app = Flask(__name__)
    app.config.update(API_TITLE="t", API_VERSION="1", OPENAPI_VERSION="3.0.3",
                      OPENAPI_URL_PREFIX="/")
    api = Api(app)
    blp = Blueprint("t", __name__)

    @blp.route("/wrong")
    class Wrong(MethodView):
        @blp.response(200, Count)
        def get(self) -> Any:
            return {}  # the document says "n" is always there

    @blp.route("/crash")
    class Crash(MethodView):
        @blp.arguments(Query, location="query")
        @blp.response(200, Count)
        def get(self, query: dict[str, Any]) -> Any:
            if query["fail"]:
                raise RuntimeError("boom")
            return {"n": 1}

    api.register_blueprint(blp)
    found = fuzz(app, {})
    assert {"GET /wrong (positive, generated)", "GET /crash (positive, generated)"} <= set(found)
    assert "Response violates schema" in found["GET /wrong (positive, generated)"]
    assert "boom" in found["GET /crash (positive, generated)"]
