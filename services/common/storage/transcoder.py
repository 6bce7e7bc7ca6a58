"""Event state to JSON bytes: eventsourcing's format, written by orjson when it can be.

eventsourcing's ``JSONTranscoder`` writes compact UTF-8 JSON with the standard library,
calling back into Python for each value of a registered type (dates, datetimes) to write
it as ``{"_type_": name, "_data_": value}``; that was a fifth of a batch issue's time.
``FastJSONTranscoder`` has orjson write the very same bytes, with the same call-backs.

The stored bytes are what the hash chain covers: they must not change by a byte. orjson
writes some values otherwise than the standard library (floats, UUIDs, enums, dataclasses,
subclasses of str or int), so a state is given to orjson only when every value in it is
of a type both write alike: str, int, bool, None, dict, list, tuple, and the registered
types orjson hands back to the call-back (dates and datetimes). Anything else, and
whatever orjson refuses (integers beyond 64 bits, keys that are not strings, lone
surrogates, an unregistered type), goes through the library's encoder as before.

Reading is the library's, but for a replay (``reader``), which reads millions of states:
orjson parses them and the registered values are made from their ``{"_type_", "_data_"}``
dicts by a walk in Python, rather than by the library's hook, called once per dict. orjson
reads some JSON otherwise than the standard library (integers beyond 64 bits as floats) or
refuses it (NaN, lone surrogates): a state holding a float, or one orjson refuses, goes
through the library's decoder, and so does one whose registered value fails to read (the
library then says why).
"""

from collections.abc import Callable
from datetime import date, datetime, time
from typing import Any

import orjson
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Transcoding

from services.common.storage.persistence import DateAsISO

_CONTAINERS = frozenset({dict, list, tuple})
_PLAIN = frozenset({str, int, bool, type(None)})
# With OPT_PASSTHROUGH_DATETIME orjson gives these to ``default`` instead of writing them.
_PASSED_THROUGH = frozenset({date, datetime, time})
# What the replay's reader looks into: containers, and floats, which orjson may have read
# from an integer beyond 64 bits.
_WALKED = frozenset({dict, list, float})
_DICT = {dict}


class _Unlike(Exception):
    """orjson may have read this state otherwise than the standard library."""


class FastJSONTranscoder(JSONTranscoder):
    def __init__(self) -> None:
        super().__init__()
        self._scalars = _PLAIN
        self._allowed = _PLAIN | _CONTAINERS
        self._writers: dict[type, tuple[str, Callable[[Any], Any]]] = {}

    def register(self, transcoding: Transcoding) -> None:
        super().register(transcoding)
        passed = frozenset(self.types) & _PASSED_THROUGH
        self._scalars = _PLAIN | passed
        self._allowed = self._scalars | _CONTAINERS
        # The ISO transcodings' encode is the type's own isoformat: called directly, it
        # saves a Python call per value.
        encode = transcoding.encode
        if type(transcoding).encode in (DatetimeAsISO.encode, DateAsISO.encode):
            encode = getattr(transcoding.type, "isoformat")  # noqa: B009 (type is only "type")
        self._writers[transcoding.type] = (transcoding.name, encode)

    def _default(self, o: Any) -> dict[str, Any]:
        try:
            name, encode = self._writers[type(o)]
        except KeyError:
            # orjson gives up, and the library's encoder says what is wrong.
            raise TypeError from None
        return {"_type_": name, "_data_": encode(o)}

    def encode(self, obj: Any) -> bytes:
        if self._alike(obj):
            try:
                return orjson.dumps(obj, default=self._default,
                                    option=orjson.OPT_PASSTHROUGH_DATETIME)
            except orjson.JSONEncodeError:
                pass
        return super().encode(obj)

    def reader(self) -> Callable[[bytes], Any]:
        """``decode``, read by orjson where it reads alike (see above)."""
        library = self.decode
        makers: dict[str, Callable[[Any], Any]] = {}
        for name, transcoding in self.names.items():
            makers[name] = transcoding.decode
            # Called directly, the type's own fromisoformat saves a Python call per value.
            if type(transcoding).decode in (DatetimeAsISO.decode, DateAsISO.decode):
                makers[name] = getattr(transcoding.type, "fromisoformat")  # noqa: B009

        def walk(value: Any) -> Any:
            """``value`` with its transcoded dicts made into their values, innermost
            first as the library's hook does; raises _Unlike at a float."""
            t = type(value)
            if t is dict:
                # One pass in C tells the many dicts that hold no container or float.
                if not _WALKED.isdisjoint(map(type, value.values())):
                    for k, v in value.items():
                        if type(v) in _WALKED:
                            # Most are a registered value of text: made here, not walked.
                            if (type(v) is dict and len(v) == 2
                                    and type(v.get("_data_")) is str and "_type_" in v):
                                value[k] = makers[v["_type_"]](v["_data_"])
                            else:
                                value[k] = walk(v)
                if len(value) == 2 and "_type_" in value and "_data_" in value:
                    return makers[value["_type_"]](value["_data_"])
                return value
            if t is list:
                kinds = set(map(type, value))
                if _WALKED.isdisjoint(kinds):
                    return value
                # A list of dicts of plain values (an invoice's lines) is left as it is.
                if kinds == _DICT and all(
                        _WALKED.isdisjoint(map(type, v.values())) and "_type_" not in v
                        for v in value):
                    return value
                return [walk(v) if type(v) in _WALKED else v for v in value]
            if t is float:
                raise _Unlike
            return value

        def read(data: bytes) -> Any:
            try:
                return walk(orjson.loads(data))
            except Exception:
                return library(data)

        return read

    def _alike(self, obj: Any) -> bool:
        """Whether orjson writes ``obj`` as the standard library does (see above)."""
        t = type(obj)
        if t not in _CONTAINERS:
            return t in self._scalars
        values = obj.values() if t is dict else obj
        # One pass in C over the types of a level; only nested containers are walked.
        kinds = set(map(type, values))
        if not kinds <= self._allowed:
            return False
        if kinds.isdisjoint(_CONTAINERS):
            return True
        return all(self._alike(v) for v in values if type(v) in _CONTAINERS)
