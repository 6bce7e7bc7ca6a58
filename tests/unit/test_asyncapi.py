"""The AsyncAPI document: up to date, well formed, valid AsyncAPI 3.0, true to the schemas.

It is also where the versioning policy is enforced: every new version of an event is a
superset of the one before (same fields, same schemas, nothing required dropped), every old
version has an upcaster, and every golden example is valid against its message payload.
"""

import copy
import hashlib
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError

import events
from events import REGISTRY, TOPICS, decode, encode
from events.asyncapi import ENVELOPE, build, channel_id, message_id, to_yaml

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "asyncapi.yaml"
EXAMPLES = Path(events.__file__).parent / "examples"
OFFICIAL_SCHEMA = Path(events.__file__).parent / "vendor" / "asyncapi-3.0.0.json"
OFFICIAL_SHA256 = "d4571a420e6ffb7fcc7066c95a6db1202f299a3c51daa103d0706bf30f95e626"
REGENERATE = "run `.venv/bin/python -m events.asyncapi > docs/asyncapi.yaml` and commit it"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build()


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"not a local reference: {ref}"
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def payload_validator(document: dict[str, Any], mid: str) -> Draft7Validator:
    """Validates a whole record value against message ``mid``'s payload, refs and all."""
    schema = {"$ref": f"#/components/messages/{mid}/payload",
              "components": document["components"]}
    return Draft7Validator(schema, format_checker=Draft7Validator.FORMAT_CHECKER)


def golden_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*/v*.json"))


# --- the committed file -----------------------------------------------------------------


def test_committed_document_is_up_to_date(document: dict[str, Any]) -> None:
    assert COMMITTED.exists(), REGENERATE
    assert COMMITTED.read_text(encoding="utf-8") == to_yaml(document), REGENERATE


def test_the_documented_command_writes_it() -> None:
    out = subprocess.run([sys.executable, "-m", "events.asyncapi"], cwd=ROOT,
                         capture_output=True, check=True, timeout=60).stdout
    assert out.decode("utf-8") == COMMITTED.read_text(encoding="utf-8"), REGENERATE
    as_json = subprocess.run([sys.executable, "-m", "events.asyncapi", "--json"], cwd=ROOT,
                             capture_output=True, check=True, timeout=60).stdout
    assert json.loads(as_json) == yaml.safe_load(out)


# --- structure ----------------------------------------------------------------------------


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    found = list(refs(document))
    assert len(found) > 50
    for ref in found:
        resolve(document, ref)


def test_one_channel_per_topic_with_every_version_it_may_carry(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    channels = document["channels"]
    assert {c["address"] for c in channels.values()} == set(TOPICS)
    for name, topic in TOPICS.items():
        channel = channels[channel_id(name)]
        assert channel["address"] == name
        assert channel["bindings"]["kafka"]["topic"] == name
        assert topic.key in channel["description"] and topic.ordering in channel["description"]
        want = {message_id(t.name, v) for t in REGISTRY
                if name in (t.topic, *t.also_on) for v in t.versions}
        assert set(channel["messages"]) == want
        for mid, ref in channel["messages"].items():
            assert ref == {"$ref": f"#/components/messages/{mid}"}
    assert set(document["components"]["messages"]) == {
        message_id(t.name, v) for t in REGISTRY for v in t.versions
    }
    assert {"InvoiceIssuedV1", "InvoiceIssuedV2"} <= set(channels["billingInvoices"]["messages"])


def test_one_send_operation_per_topic_with_the_latest_versions(document: dict[str, Any]) -> None:
    operations = document["operations"]
    assert len(operations) == len(TOPICS)
    for operation in operations.values():
        assert operation["action"] == "send"
        channel = resolve(document, operation["channel"]["$ref"])
        topic = channel["address"]
        want = [
            f"{operation['channel']['$ref']}/messages/{message_id(t.name, t.latest)}"
            for t in (REGISTRY[n] for n in TOPICS[topic].event_types)
        ]
        assert [m["$ref"] for m in operation["messages"]] == want
    sent = [m["$ref"] for m in operations["sendBillingInvoices"]["messages"]]
    assert "#/channels/billingInvoices/messages/InvoiceIssuedV2" in sent
    assert "#/channels/billingInvoices/messages/InvoiceIssuedV1" not in sent


def test_each_message_is_the_envelope_with_its_type_and_data(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    envelope = schemas[ENVELOPE]
    assert set(envelope["required"]) == {
        "specversion", "id", "source", "type", "time", "subject", "datacontenttype",
        "notificationid", "sequence", "partitionkey", "data",
    }
    assert envelope["properties"]["specversion"] == {"type": "string", "enum": ["1.0"]}
    for event_type in REGISTRY:
        for version, cls in event_type.versions.items():
            message = document["components"]["messages"][message_id(event_type.name, version)]
            assert message["name"] == f"fr.regie.{event_type.name}.v{version}"
            assert message["contentType"] == "application/json"
            assert message["bindings"]["kafka"]["key"]["type"] == "string"
            base, specific = message["payload"]["allOf"]
            assert base == {"$ref": f"#/components/schemas/{ENVELOPE}"}
            assert specific["properties"]["type"] == {"const": message["name"]}
            data = resolve(document, specific["properties"]["data"]["$ref"])
            assert set(data["properties"]) == set(cls().fields)
            assert set(data["required"]) == {n for n, f in cls().fields.items() if f.required}
            assert message["examples"][0]["payload"]["type"] == message["name"]


# --- the official AsyncAPI 3.0.0 JSON Schema ---------------------------------------------


@pytest.fixture(scope="module")
def official() -> Draft7Validator:
    raw = OFFICIAL_SCHEMA.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == OFFICIAL_SHA256, "see events/vendor/README.md"
    schema = json.loads(raw)
    assert schema["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def test_valid_against_the_official_asyncapi_3_schema(official: Draft7Validator) -> None:
    committed = yaml.safe_load(COMMITTED.read_text(encoding="utf-8"))
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in official.iter_errors(committed)]
    assert errors == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d.update(asyncapi="3.0"),
        lambda d: d["operations"]["sendBillingInvoices"].update(action="publish"),
        lambda d: d["channels"]["billingInvoices"]["bindings"]["kafka"].update(partitions="6"),
        lambda d: d["components"]["schemas"][ENVELOPE].update(type="objet"),
        lambda d: d["components"]["messages"]["InvoiceIssuedV2"].update(payload=3),
        lambda d: d["info"].pop("title"),
    ],
)
def test_the_official_schema_does_refuse_broken_documents(
    official: Draft7Validator, document: dict[str, Any], break_it: Any
) -> None:
    broken = copy.deepcopy(document)
    break_it(broken)
    assert list(official.iter_errors(broken)), "a broken document passed: validation is void"


# --- the payload schemas against the golden messages -----------------------------------


@pytest.mark.parametrize("path", golden_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_example_is_valid_against_its_payload_schema(
    document: dict[str, Any], path: Path
) -> None:
    mid = message_id(path.parent.name, int(path.stem[1:]))
    golden = json.loads(path.read_text(encoding="utf-8"))
    payload_validator(document, mid).validate(golden)
    assert document["components"]["messages"][mid]["examples"][0]["payload"] == golden


def test_a_version_is_refused_as_another(document: dict[str, Any]) -> None:
    v1 = json.loads((EXAMPLES / "InvoiceIssued" / "v1.json").read_text(encoding="utf-8"))
    with pytest.raises(ValidationError):
        payload_validator(document, "InvoiceIssuedV2").validate(v1)  # no payer, type v1
    v2 = json.loads((EXAMPLES / "InvoiceIssued" / "v2.json").read_text(encoding="utf-8"))
    with pytest.raises(ValidationError):
        payload_validator(document, "InvoiceIssuedV1").validate(v2)  # type v2


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m["data"].update(amount_cents="25.00"),
        lambda m: m["data"].pop("family_id"),
        lambda m: m["data"]["payer"].pop("email"),
        lambda m: m["data"].update(regie="SPORTS DIRECTION"),
        lambda m: m["data"].update(issued_on="26/02/2025"),
        lambda m: m.update(notificationid=0),
        lambda m: m.update(specversion="0.3"),
    ],
)
def test_the_payload_schema_refuses_what_decode_refuses(
    document: dict[str, Any], mutate: Any
) -> None:
    message = json.loads((EXAMPLES / "InvoiceIssued" / "v2.json").read_text(encoding="utf-8"))
    mutate(message)
    with pytest.raises(events.EnvelopeError):
        decode(json.dumps(message))
    with pytest.raises(ValidationError):
        payload_validator(document, "InvoiceIssuedV2").validate(message)


# --- the versioning policy -----------------------------------------------------------------


def test_every_new_version_is_a_superset_of_the_one_before(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    checked = 0
    for event_type in REGISTRY:
        versions = sorted(event_type.versions)
        assert versions == list(range(1, len(versions) + 1)), event_type.name
        for old, new in itertools.pairwise(versions):
            before = schemas[event_type.versions[old].__name__]
            after = schemas[event_type.versions[new].__name__]
            for field, spec in before["properties"].items():
                assert after["properties"].get(field) == spec, (
                    f"{event_type.name} v{new} changes {field}: a v{old} reader would break; "
                    "that is a new event name, not a new version"
                )
            assert set(before["required"]) <= set(after["required"])
            assert old in event_type.upcasters, f"{event_type.name} v{old} has no upcaster"
            checked += 1
    assert checked >= 1  # InvoiceIssued v1 -> v2


@pytest.mark.parametrize("path", golden_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_golden_upcasts_to_a_valid_latest_message(
    document: dict[str, Any], path: Path
) -> None:
    message = decode(path.read_bytes())  # upcast to the latest version
    event_type = REGISTRY[message.name]
    assert message.version == event_type.latest
    again = encode(
        message.name, message.data, id=message.id, source=message.source, time=message.time,
        subject=message.subject, key=message.key, notification_id=message.notification_id,
        sequence=message.sequence,
    )
    payload_validator(document, message_id(message.name, event_type.latest)).validate(
        json.loads(again)
    )


def test_invoice_issued_v1_upcasts_to_v2_with_its_payer() -> None:
    v1 = (EXAMPLES / "InvoiceIssued" / "v1.json").read_text(encoding="utf-8")
    v2 = (EXAMPLES / "InvoiceIssued" / "v2.json").read_text(encoding="utf-8")
    as_is = decode(v1, upcast=False)
    assert (as_is.version, "payer" in as_is.data) == (1, False)
    upcast = decode(v1)
    assert upcast.version == 2
    assert upcast.data == decode(v2).data
    assert upcast.data["payer"] == {"family_id": "famille-martin",
                                    "email": "famille.martin@example.org"}


def test_v2_refuses_a_payer_that_contradicts_the_flat_fields() -> None:
    message = json.loads((EXAMPLES / "InvoiceIssued" / "v2.json").read_text(encoding="utf-8"))
    message["data"]["payer"]["email"] = "someone.else@example.org"
    with pytest.raises(events.EnvelopeError, match="payer"):
        decode(json.dumps(message))
    data = decode((EXAMPLES / "InvoiceIssued" / "v2.json").read_bytes()).data
    with pytest.raises(events.EnvelopeError, match="payer"):
        encode("InvoiceIssued", {**data, "payer": {**data["payer"], "family_id": "x"}},
               id="x", source="/s", time=decode(json.dumps(message), upcast=False).time,
               subject="s", key="k", notification_id=1, sequence=1)
