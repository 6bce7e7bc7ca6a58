"""The CloudEvents 1.0 JSON envelope every Régie message travels in.

``type`` is ``fr.regie.<EventName>.v<version>``. Three extension attributes:
``notificationid`` (position of the event in its producer's log, increasing per key),
``sequence`` (version of the aggregate that emitted it) and ``partitionkey`` (the Kafka key).
"""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from events.dumpers import compile_dumper
from events.loaders import Rejected, compile_loader
from events.registry import REGISTRY, UnknownEventType

_fast_json: Callable[[bytes | str], Any] = json.loads
try:
    import orjson

    _fast_json = orjson.loads
except ImportError:  # the package vendored without orjson: the standard library's
    pass

SPECVERSION = "1.0"
TYPE_PATTERN = re.compile(r"^fr\.regie\.([A-Za-z]+)\.v([0-9]+)$")


class EnvelopeError(ValueError):
    """A message that is not a valid Régie event."""


class EnvelopeSchema(Schema):
    specversion = fields.String(required=True, validate=validate.Equal(SPECVERSION))
    id = fields.String(required=True, validate=validate.Length(min=1))
    source = fields.String(required=True, validate=validate.Length(min=1))
    type = fields.String(required=True, validate=validate.Regexp(TYPE_PATTERN))
    time = fields.AwareDateTime(required=True)
    subject = fields.String(required=True)
    datacontenttype = fields.String(required=True, validate=validate.Equal("application/json"))
    notificationid = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    sequence = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    partitionkey = fields.String(required=True, validate=validate.Length(min=1))
    data = fields.Dict(required=True)

    class Meta:
        unknown = "exclude"


_ENVELOPE = EnvelopeSchema()
# Built here, at import, so that a schema the fast loader cannot read fails loudly now.
_FAST_ENVELOPE = compile_loader(_ENVELOPE)
_FAST_DATA = {(event_type.name, version): compile_loader(event_type.schema(version))
              for event_type in REGISTRY for version in event_type.versions}
_FAST_DUMP = {(event_type.name, version): compile_dumper(event_type.schema(version))
              for event_type in REGISTRY for version in event_type.versions}
# What json.dumps(..., ensure_ascii=False, sort_keys=True) builds on each call, built once.
_WRITE_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode


def type_name(name: str, version: int) -> str:
    return f"fr.regie.{name}.v{version}"


@dataclass(frozen=True)
class Envelope:
    id: str
    source: str
    name: str
    version: int
    time: datetime
    subject: str
    key: str
    notification_id: int
    sequence: int
    # Deserialised by the schema of ``version`` (dates are ``date``, amounts ``int``).
    data: dict[str, Any]

    @property
    def type(self) -> str:
        return type_name(self.name, self.version)


def encode(
    name: str,
    data: dict[str, Any],
    *,
    id: str,
    source: str,
    time: datetime,
    subject: str,
    key: str,
    notification_id: int,
    sequence: int,
    version: int | None = None,
) -> bytes:
    """Serialise ``data`` (Python values) as the given event type, checking it first."""
    event_type = REGISTRY[name]
    version = event_type.latest if version is None else version
    schema = event_type.schema(version)
    dump = _FAST_DUMP.get((name, version))
    try:
        if dump is None:  # a version registered since import (tests do)
            raise Rejected
        wire_data = dump(data)
    except Rejected:  # a value of a type the fast dumper does not vouch for
        wire_data = schema.dump(data)
    errors: dict[str, Any] = {}
    load = _FAST_DATA.get((name, version))
    try:
        if load is None:  # a version registered since import (tests do)
            raise Rejected
        # What the loader accepts, marshmallow's validate finds nothing wrong in.
        load(wire_data)
    except Rejected:
        errors = schema.validate(wire_data)
    if errors:
        raise EnvelopeError(f"{name} v{version} data invalid: {errors}")
    message = {
        "specversion": SPECVERSION,
        "id": id,
        "source": source,
        "type": type_name(name, version),
        "time": time.isoformat(),
        "subject": subject,
        "datacontenttype": "application/json",
        "notificationid": notification_id,
        "sequence": sequence,
        "partitionkey": key,
        "data": wire_data,
    }
    return _WRITE_JSON(message).encode("utf-8")


def decode(raw: bytes | str, *, upcast: bool = True) -> Envelope:
    """Parse and validate a message; by default its data is upcast to the latest version."""
    try:
        return _decode(raw, upcast, fast=True)
    except Rejected:
        # The fast path vouches only for what it is sure of; the rest is read as it
        # always was (json and marshmallow), which accepts it or says what is wrong.
        return _decode(raw, upcast, fast=False)


def _decode(raw: bytes | str, upcast: bool, *, fast: bool) -> Envelope:
    """The fast path (``fast``: orjson and the compiled loaders) raises Rejected where the
    other (json and marshmallow) would answer otherwise or raise EnvelopeError.

    orjson reads what json reads, as json does, except integers past 64 bits (orjson
    gives a float, which no compiled loader accepts: Float fields are not compiled) and
    what orjson refuses (a BOM, NaN, lone surrogates, other encodings): Rejected both."""
    if fast:
        try:
            message = _fast_json(raw)
        except ValueError:
            raise Rejected from None
        if not isinstance(message, dict):
            raise Rejected
        env = _FAST_ENVELOPE(message)
    else:
        try:
            message = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise EnvelopeError(f"not JSON: {e}") from None
        if not isinstance(message, dict):
            raise EnvelopeError("not a JSON object")
        try:
            env = _ENVELOPE.load(message)
        except ValidationError as e:
            raise EnvelopeError(f"bad envelope: {e.messages}") from None
    match = TYPE_PATTERN.match(env["type"])
    assert match is not None
    name, version = match.group(1), int(match.group(2))
    try:
        event_type = REGISTRY[name]
        schema = event_type.schema(version)
    except UnknownEventType as e:
        if fast:
            raise Rejected from None
        raise EnvelopeError(str(e)) from None
    raw_data = env["data"]
    if upcast and version < event_type.latest:
        raw_data = event_type.upcast(raw_data, version)
        version = event_type.latest
        schema = event_type.schema(version)
    if fast:
        load = _FAST_DATA.get((name, version))
        if load is None:  # a version registered since import (tests do): marshmallow's
            raise Rejected
        data = load(raw_data)
    else:
        try:
            data = schema.load(raw_data)
        except ValidationError as e:
            raise EnvelopeError(f"bad {name} v{version} data: {e.messages}") from None
    return Envelope(
        id=env["id"],
        source=env["source"],
        name=name,
        version=version,
        time=env["time"],
        subject=env["subject"],
        key=env["partitionkey"],
        notification_id=env["notificationid"],
        sequence=env["sequence"],
        data=data,
    )
