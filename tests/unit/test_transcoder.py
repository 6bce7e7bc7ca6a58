"""The stored state's bytes do not depend on which JSON writer wrote them."""

from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

import orjson
import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    UUIDAsHex,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.storage.persistence import register_transcodings
from services.common.storage.transcoder import FastJSONTranscoder


def registered(transcoder: JSONTranscoder) -> JSONTranscoder:
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    register_transcodings(transcoder)
    return transcoder


LIBRARY = registered(JSONTranscoder())
FAST = FastJSONTranscoder()
registered(FAST)


class Colour(Enum):
    RED = "red"


class Label(str):
    pass


scalars = st.one_of(
    st.text(), st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False),
    st.dates(), st.datetimes(timezones=st.one_of(st.none(), st.just(UTC),
                                                 st.just(timezone(timedelta(hours=2))))),
    st.uuids(), st.decimals(allow_nan=False, allow_infinity=False),
    st.integers(min_value=2**63, max_value=2**70), st.just(Colour.RED), st.just(Label("x")),
    st.times(),
)
states = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=8), inner, max_size=5),
                            st.dictionaries(st.integers(), inner, max_size=2)),
    max_leaves=12,
)


def outcome(transcoder: JSONTranscoder, state: Any) -> bytes | type[BaseException]:
    try:
        return transcoder.encode(state)
    except Exception as e:
        return type(e)


@settings(max_examples=400)
@given(states)
def test_any_state_is_written_as_the_library_writes_it(state: Any) -> None:
    assert outcome(FAST, state) == outcome(LIBRARY, state)


def issued_state() -> dict[str, Any]:
    return {
        "timestamp": datetime(2026, 12, 2, 1, 2, 3, 456789, tzinfo=UTC),
        "originator_topic": "services.billing.domain:Invoice",
        "regie": "SPORTS", "number": "F-1", "family_id": "fam-1",
        "payer_email": "pd1:c2VhbGVk", "label": "Séjour \"été\"\n\t\u2028 \x00",
        "issued_on": date(2025, 2, 26), "payable_until": date(2030, 12, 31),
        "due_on": date(2030, 12, 31),
        "lines": [{"label": "Séjour", "quantity": 1, "unit_price_cents": 2500}],
        "amount_cents": 2500,
    }


def test_an_invoice_state_is_written_by_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = LIBRARY.encode(issued_state())
    monkeypatch.setattr(JSONTranscoder, "encode", lambda self, obj: pytest.fail("fell back"))
    assert FAST.encode(issued_state()) == expected


@pytest.mark.parametrize("value", [
    1.5, 1e-7, UUID(int=7), Decimal("10.10"), 2**64, Colour.RED, Label("x"), time(1, 2), "\ud800",
])
def test_values_orjson_writes_otherwise_go_to_the_library(value: Any) -> None:
    state = {**issued_state(), "extra": [{"deep": value}]}
    assert outcome(FAST, state) == outcome(LIBRARY, state)


def test_what_is_written_reads_back_as_it_was() -> None:
    assert LIBRARY.decode(FAST.encode(issued_state())) == issued_state()
    assert orjson.loads(FAST.encode(issued_state()))["issued_on"] == {
        "_type_": "date_iso", "_data_": "2025-02-26"}


# Reading: the replay's decoder gives what the library's gives, to the type of each value.

READ = FAST.reader()


def read_outcome(read: Any, data: bytes) -> str:
    try:
        return repr(read(data))
    except Exception as e:
        return type(e).__name__


@settings(max_examples=400)
@given(states)
def test_any_stored_state_reads_as_the_library_reads_it(state: Any) -> None:
    try:
        data = LIBRARY.encode(state)
    except Exception:
        return
    assert read_outcome(READ, data) == read_outcome(LIBRARY.decode, data)


@pytest.mark.parametrize("data", [
    # Values orjson reads otherwise (or refuses) and the library reads: to the library.
    b'{"n": 18446744073709551616}', b'{"n": -9223372036854775809}', b'{"n": [NaN]}',
    b'{"n": Infinity}', b'{"n": 1e400}', b'{"s": "\\ud800"}', b'{"n": 1.0}', b'{"n": 1E2}',
    # Transcoded values, nested, unknown, or not quite transcoded.
    b'{"t": {"_type_": "date_iso", "_data_": "2025-02-26"}}',
    b'{"t": [{"x": {"_type_": "datetime_iso", "_data_": "2025-02-26T10:00:00+00:00"}}]}',
    b'{"t": {"_type_": "uuid_hex", "_data_": "' + b"0" * 32 + b'"}}',
    b'{"t": {"_type_": "decimal_str", "_data_": "10.10"}}',
    b'{"t": {"_type_": "unknown", "_data_": "x"}}',
    b'{"t": {"_type_": "date_iso", "_data_": 3}}',
    b'{"t": {"_type_": "date_iso", "_data_": "2025-02-26", "more": 1}}',
    b'{"t": {"_type_": "date_iso"}}', b'{"t": {"_data_": "x", "y": 1}}',
    b'{"t": {"_type_": "date_iso", "_data_": {"_type_": "date_iso", "_data_": "2025-02-26"}}}',
    b'{"_type_": "date_iso", "_data_": "2025-02-26"}',
    b'{"a": 1, "a": 2}', b'[1, "x", null, true]', b'"x"', b'not json', b'\xff',
])
def test_odd_stored_states_read_as_the_library_reads_them(data: bytes) -> None:
    assert read_outcome(READ, data) == read_outcome(LIBRARY.decode, data)


def test_a_stored_state_is_read_by_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    data = FAST.encode(issued_state())
    monkeypatch.setattr(JSONTranscoder, "decode", lambda self, data: pytest.fail("fell back"))
    assert read_outcome(READ, data) == repr(issued_state())
