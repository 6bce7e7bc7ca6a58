"""The AsyncAPI 3.0 document of the published events, built from this package.

Everything in it comes from the registry (event types and versions), the topics (keys,
ordering) and the marshmallow schemas (turned into JSON Schema by apispec), plus the golden
examples. ``docs/asyncapi.yaml`` is its output, checked in; a test regenerates it::

    python -m events.asyncapi > docs/asyncapi.yaml
    python -m events.asyncapi --json        # the same document as JSON

Each message is a whole Kafka record value: the CloudEvents envelope (schema
``CloudEvent``) whose ``type`` names one event version and whose ``data`` follows that
version's schema. A channel lists every version a reader may find in its topic (old
records stay); the ``send`` operation lists the versions Régie publishes today.
"""

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema

from events.envelope import EnvelopeSchema, type_name
from events.registry import REGISTRY, EventType
from events.topics import TOPICS, Topic

ASYNCAPI_VERSION = "3.0.0"
# The contract's own version: its minor goes up with each new event version or optional
# field. There is no major: a change that would break a reader is a new event name.
CONTRACT_VERSION = "1.3.0"
KAFKA_BINDING_VERSION = "0.5.0"
ENVELOPE = "CloudEvent"
EXAMPLES = Path(__file__).parent / "examples"


def channel_id(topic: str) -> str:
    """``billing.invoices`` -> ``billingInvoices``, ``audit.chain-heads`` -> ``auditChainHeads``."""
    first, *rest = re.split(r"[.-]", topic)
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def message_id(name: str, version: int) -> str:
    return f"{name}V{version}"


def _schema_name(schema: type[Schema] | Schema) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    return ENVELOPE if cls is EnvelopeSchema else cls.__name__


def _doc(obj: object) -> str | None:
    # The class's own docstring only: marshmallow schemas inherit theirs otherwise.
    doc = vars(type(obj) if not isinstance(obj, type) else obj).get("__doc__")
    return " ".join(doc.split()) if doc else None


def _json_schemas() -> dict[str, Any]:
    """components.schemas: the envelope and each event version's data, as JSON Schema."""
    spec = APISpec(
        title="-", version="-", openapi_version="3.1.0",
        plugins=[MarshmallowPlugin(schema_name_resolver=_schema_name)],
    )
    spec.components.schema(ENVELOPE, schema=EnvelopeSchema)
    for event_type in REGISTRY:
        for version in sorted(event_type.versions):
            cls = event_type.versions[version]
            if cls.__name__ not in spec.components.schemas:
                spec.components.schema(cls.__name__, schema=cls)
    schemas: dict[str, Any] = spec.to_dict()["components"]["schemas"]
    for name, cls in _schema_classes().items():
        if name in schemas and (doc := _doc(cls)):
            schemas[name] = {"description": doc, **schemas[name]}
    schemas[ENVELOPE] = {
        "description": (
            "CloudEvents 1.0, structured JSON mode. `type` is fr.regie.<Name>.v<N>; "
            "`id` is unique per `source` (deduplicate on it); `notificationid` is the "
            "event's position in its producer's log, increasing per key; `sequence` is "
            "the version of the aggregate that emitted it; `partitionkey` is the Kafka key. "
            "Attributes not listed here may appear later: ignore them."
        ),
        **schemas[ENVELOPE],
    }
    return dict(sorted(schemas.items()))


def _schema_classes() -> dict[str, type[Schema]]:
    """Every schema class reachable from the registry, nested ones included."""
    found: dict[str, type[Schema]] = {}

    def visit(cls: type[Schema]) -> None:
        if cls.__name__ in found:
            return
        found[cls.__name__] = cls
        for field in cls().fields.values():
            inner = getattr(field, "inner", field)
            nested = getattr(inner, "nested", None)
            if isinstance(nested, type) and issubclass(nested, Schema):
                visit(nested)

    for event_type in REGISTRY:
        for cls in event_type.versions.values():
            visit(cls)
    return found


def _golden(name: str, version: int) -> Any:
    path = EXAMPLES / name / f"v{version}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _message(event_type: EventType, version: int, topic: Topic) -> dict[str, Any]:
    schema_cls = event_type.versions[version]
    latest = version == event_type.latest
    description = _doc(schema_cls) or f"{event_type.name}, version {version}."
    if not latest:
        description += (
            f" Superseded by v{event_type.latest}: no longer published, but older records "
            f"in the topic still carry it; events.decode() upcasts it to "
            f"v{event_type.latest}."
        )
    message: dict[str, Any] = {
        "name": type_name(event_type.name, version),
        "title": f"{event_type.name} v{version}",
        "summary": f"{event_type.name}, version {version}, on {topic.name}.",
        "description": description,
        "contentType": "application/json",
        "payload": {
            "allOf": [
                {"$ref": f"#/components/schemas/{ENVELOPE}"},
                {
                    "type": "object",
                    "properties": {
                        "type": {"const": type_name(event_type.name, version)},
                        "data": {"$ref": f"#/components/schemas/{schema_cls.__name__}"},
                    },
                },
            ]
        },
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": topic.key},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }
    golden = _golden(event_type.name, version)
    if golden is not None:
        message["examples"] = [
            {"name": "golden", "summary": "The golden example the tests check.",
             "payload": golden}
        ]
    return message


def build() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document, as plain JSON-ready values."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic in TOPICS.values():
        cid = channel_id(topic.name)
        types = [REGISTRY[name] for name in topic.event_types]
        channel_messages: dict[str, Any] = {}
        for event_type in types:
            assert topic.name in (event_type.topic, *event_type.also_on), event_type
            for version in sorted(event_type.versions):
                mid = message_id(event_type.name, version)
                messages[mid] = _message(event_type, version, topic)
                channel_messages[mid] = {"$ref": f"#/components/messages/{mid}"}
        channels[cid] = {
            "address": topic.name,
            "title": topic.name,
            "description": (
                f"Published by the {topic.producer} service. Key: {topic.key}. "
                f"Ordering: {topic.ordering}. Delivery is at least once: deduplicate on "
                "the envelope's `id`. A deployment may prefix the topic name "
                "(setting KAFKA_TOPIC_PREFIX, empty by default)."
            ),
            "messages": channel_messages,
            "bindings": {
                "kafka": {"topic": topic.name, "bindingVersion": KAFKA_BINDING_VERSION}
            },
        }
        operations[f"send{cid[:1].upper()}{cid[1:]}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{cid}"},
            "title": f"Publish on {topic.name}",
            "summary": f"The {topic.producer} relay publishes these events, keyed by "
                       f"{topic.key}.",
            "description": (
                "Only the latest version of each event is published; the channel also "
                "lists the older versions a reader may find in the topic's history."
            ),
            "messages": [
                {"$ref": f"#/channels/{cid}/messages/{message_id(t.name, t.latest)}"}
                for t in types
            ],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Régie public events",
            "version": CONTRACT_VERSION,
            "description": (
                "The events Régie publishes on Kafka, as CloudEvents 1.0 JSON. Generated "
                "from the `events` package (`python -m events.asyncapi`); how to subscribe, "
                "the delivery guarantees and the versioning policy are in "
                "docs/subscribers.md."
            ),
            "license": {"name": "AGPL-3.0-or-later"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "compose": {
                "host": "kafka:9092",
                "protocol": "kafka",
                "description": "The Apache Kafka of docker-compose.yml, inside its network. "
                               "Other deployments: their KAFKA_BOOTSTRAP_SERVERS.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": _json_schemas(), "messages": messages},
    }


def to_yaml(document: dict[str, Any]) -> str:
    import yaml  # a development dependency: the services serve the document as JSON

    header = "# Generated by `python -m events.asyncapi > docs/asyncapi.yaml`: do not edit.\n"
    return header + yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m events.asyncapi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="JSON instead of YAML")
    args = parser.parse_args(argv)
    document = build()
    if args.json:
        text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    else:
        text = to_yaml(document)
    sys.stdout.buffer.write(text.encode("utf-8"))


if __name__ == "__main__":
    main()
