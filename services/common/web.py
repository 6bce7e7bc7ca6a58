"""The Flask side both APIs share: the OpenAPI document, error bodies, health, metrics."""

from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify
from flask_smorest import Api
from prometheus_client import CollectorRegistry

from events.asyncapi import build as asyncapi_document
from services.common import metrics as prometheus
from services.common.errors import Conflict, DomainError, NotFound, Unavailable


def error_body(code: int, status: str, field: str, message: str) -> dict[str, Any]:
    """The body of every 4xx: each offending field and why, as flask-smorest does it."""
    return {"code": code, "status": status, "errors": {"json": {field: [message]}}}


def create_flask(
    name: str, title: str, dead_letters: Callable[[], int] | None = None,
    metrics: CollectorRegistry | None = None,
) -> tuple[Flask, Api]:
    """``dead_letters``, for a service that consumes a topic: how many messages are parked;
    ``metrics``, what GET /metrics answers."""
    app = Flask(name)
    app.config.update(
        API_TITLE=title,
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        JSON_SORT_KEYS=False,
    )
    # JSON is UTF-8: names such as "Régie" go out as they are, not as \u escapes.
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    api = Api(app, spec_kwargs={"info": {"description": "Régie " + title}})
    api.spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer"}
    )
    api.spec.options["security"] = [{"bearer": []}]

    @app.errorhandler(NotFound)
    def not_found(e: NotFound) -> Any:
        return jsonify(error_body(404, "Not Found", e.field, e.message)), 404

    @app.errorhandler(Conflict)
    def conflict(e: Conflict) -> Any:
        return jsonify(error_body(409, "Conflict", e.field, e.message)), 409

    @app.errorhandler(DomainError)
    def refused(e: DomainError) -> Any:
        return jsonify(error_body(422, "Unprocessable Entity", e.field, e.message)), 422

    @app.errorhandler(Unavailable)
    def unavailable(e: Unavailable) -> Any:
        return jsonify(error_body(502, "Bad Gateway", "payfip", e.message)), 502

    # The published event contract, for subscribers generating their clients.
    app.add_url_rule("/asyncapi.json", "asyncapi", asyncapi_document)

    @app.get("/health")
    def health() -> Any:
        if dead_letters is None:
            return {"status": "ok"}
        # Still "ok": the service answers; parked messages are for an operator to retry.
        return {"status": "ok", "dead_letters": dead_letters()}

    if metrics is not None:
        # Like /health: no token (no personal data in it), and outside the OpenAPI document.
        @app.get("/metrics")
        def scrape() -> Any:
            return Response(prometheus.render(metrics), mimetype=None,
                            content_type=prometheus.CONTENT_TYPE_LATEST)

    return app, api
