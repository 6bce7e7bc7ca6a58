"""The Flask side both APIs share: the OpenAPI document, error bodies, health, limits,
metrics."""

from collections.abc import Callable
from typing import Any

import flask_smorest
from flask import Flask, Request, Response, jsonify, request
from flask_smorest import Api, abort
from prometheus_client import CollectorRegistry
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge

from events.asyncapi import build as asyncapi_document
from services.common.errors import Conflict, DomainError, NotFound, Unavailable
from services.common.settings import max_body_bytes
from services.common.web import metrics as prometheus


def error_body(code: int, status: str, field: str, message: str,
               location: str = "json") -> dict[str, Any]:
    """The body of every 4xx: each offending field and why, as flask-smorest does it."""
    return {"code": code, "status": status, "errors": {location: {field: [message]}}}


class BodyParser(FlaskParser):
    """webargs' parser, strict about what a JSON route is sent.

    webargs reads a body of another type as no body at all, which answered 422 "missing"
    for every field. (A document nested too deeply for the decoder's stack raises
    RecursionError: the app answers 400 for it.)
    """

    def _raw_load_json(self, req: Request) -> Any:
        if not is_json_request(req):
            if req.content_length or req.get_data(cache=True):
                abort(415, errors={"headers": {"Content-Type": [
                    f"{req.mimetype or 'no type'} is not accepted: send application/json"]}})
            return core.missing
        return core.parse_json(req.get_data(cache=True))


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's, reading request bodies with ``BodyParser``."""

    ARGUMENTS_PARSER = BodyParser()


# PayFiP and load balancers call these without a token.
PUBLIC: dict[str, Any] = {"security": []}


def create_flask(
    name: str, title: str, dead_letters: Callable[[], int] | None = None,
    metrics: CollectorRegistry | None = None,
) -> tuple[Flask, Api]:
    """``dead_letters``, for a service that consumes a topic: how many messages are parked;
    ``metrics``, what GET /metrics answers."""
    app = Flask(name)
    app.config.update(
        MAX_CONTENT_LENGTH=max_body_bytes(),
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

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(e: RequestEntityTooLarge) -> Any:
        limit = app.config["MAX_CONTENT_LENGTH"]
        return jsonify(error_body(413, "Payload Too Large", "_schema",
                                  f"the body is larger than {limit} bytes", "body")), 413

    @app.errorhandler(RecursionError)
    def nested_too_deeply(e: RecursionError) -> Any:
        # Only a request body nests deep enough: json.loads of it, or what walks it after.
        return jsonify(error_body(400, "Bad Request", "_schema",
                                  "the JSON document is nested too deeply")), 400

    @app.errorhandler(MethodNotAllowed)
    def wrong_method(e: MethodNotAllowed) -> Any:
        allowed = sorted(e.valid_methods or ())
        body = error_body(405, "Method Not Allowed", "method",
                          f"{request.method} is not allowed here; allowed: {', '.join(allowed)}",
                          "request")
        return jsonify(body), 405, {"Allow": ", ".join(allowed)}

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

    health_rule = next(r for r in app.url_map.iter_rules() if r.endpoint == "health")
    api.spec.path(rule=health_rule, operations={"get": {
        **PUBLIC, "summary": "whether the service answers, and its parked messages",
        "responses": {"200": {"description": "status ok, and dead_letters for a consumer"}},
    }})

    if metrics is not None:
        # Like /health: no token (no personal data in it), and outside the OpenAPI document.
        @app.get("/metrics")
        def scrape() -> Any:
            return Response(prometheus.render(metrics), mimetype=None,
                            content_type=prometheus.CONTENT_TYPE_LATEST)

    return app, api
