"""Stored events' personal fields, sealed with their family's key (AES-GCM).

An event class names its personal fields in ``personal_fields`` and its family in
``family_id``. ``PrivateMapper`` seals those fields as the event is stored and opens them
as it is read; a field whose key was destroyed reads ``ERASED``. The stored bytes hold
only the sealed text, so the hash chain over them is the same before and after.
"""

import base64
import os
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import (
    Mapper,
    MapperDeserialisationError,
    StoredEvent,
    Transcoder,
    find_id_convertor,
)
from eventsourcing.utils import get_topic, resolve_topic

from services.common.privacy.keys import KeyStore
from services.common.storage.transcoder import FastJSONTranscoder

ERASED = "[effacé]"
PREFIX = "pd1:"
NONCE_BYTES = 12


def seal(key: bytes | AESGCM, family_id: str, value: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    cipher = key if isinstance(key, AESGCM) else AESGCM(key)
    # The family id as associated data: a sealed value moved to another family fails.
    sealed = cipher.encrypt(nonce, value.encode(), family_id.encode())
    return PREFIX + base64.b64encode(nonce + sealed).decode()


def open_sealed(key: bytes | None, family_id: str, value: str) -> str:
    if key is None:
        return ERASED
    raw = base64.b64decode(value[len(PREFIX):])
    try:
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                   family_id.encode()).decode()
    except InvalidTag:
        # Sealed with a key since destroyed: the family was forgotten, then came back.
        return ERASED


_personal_fields: dict[type, tuple[str, ...]] = {}


def personal_fields(cls: type) -> tuple[str, ...]:
    try:
        return _personal_fields[cls]
    except KeyError:
        found = _personal_fields[cls] = tuple(getattr(cls, "personal_fields", ()))
        return found


class PrivateMapper(Mapper[Any]):
    def __init__(self, transcoder: Transcoder, keys: KeyStore | None = None) -> None:
        super().__init__(transcoder=transcoder)
        # Given once the application's store exists (the mapper is made before it).
        self.keys: KeyStore | None = keys
        # The keys of the events being recorded now, fetched at once (see prepared()), and
        # their ciphers, made once per family in a batch rather than once per event.
        self._batch: dict[str, bytes] = {}
        self._ciphers: dict[str, AESGCM] = {}
        self._reader: Callable[[bytes], Any] | None = None

    def _keys(self) -> KeyStore:
        if self.keys is None:
            raise RuntimeError("the mapper has no key store")
        return self.keys

    @contextmanager
    def prepared(self, events: Iterable[Any]) -> Iterator[None]:
        """The keys of these events' families fetched (or made) in one go, for storing
        them: one query per batch rather than one per event. Only for writing: reading
        asks the store at each read (of an event, or of a page of them), so a key
        destroyed meanwhile is never used to open."""
        families = {str(vars(e)["family_id"]) for e in events if personal_fields(type(e))}
        self._batch = self._keys().keys_or_new(families) if families else {}
        try:
            yield
        finally:
            self._batch = {}
            self._ciphers = {}

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        fields = personal_fields(type(domain_event))
        if not fields:
            return super().to_stored_event(domain_event)
        state = dict(vars(domain_event))
        family = str(state["family_id"])
        cipher = self._ciphers.get(family)
        if cipher is None:
            cipher = AESGCM(self._batch.get(family) or self._keys().key_or_new(family))
            if family in self._batch:
                self._ciphers[family] = cipher
        for name in fields:
            if isinstance(state.get(name), str) and not state[name].startswith(PREFIX):
                state[name] = seal(cipher, family, state[name])
        # The rest is eventsourcing's Mapper.to_stored_event, on the state copied above
        # rather than on a sealed copy of the event (which it would copy again).
        cls = type(domain_event)
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        class_version = getattr(cls, "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        stored_state = self.transcoder.encode(state)
        if self.compressor:
            stored_state = self.compressor.compress(stored_state)
        if self.cipher:
            stored_state = self.cipher.encrypt(stored_state)
        return StoredEvent(originator_id=originator_id, originator_version=originator_version,
                           topic=get_topic(cls), state=stored_state)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        event = super().to_domain_event(stored_event)
        if personal_fields(type(event)):
            self._open(event, None)
        return event

    def to_domain_events(self, stored_events: Iterable[StoredEvent]) -> list[Any]:
        """Many stored events read back, their families' keys asked of the store in one
        query rather than one per event (the relay's and the projections' pages). As for
        one event, the keys are those in the store when the page is read: one destroyed
        before opens nothing."""
        events = [self._page_event(stored) for stored in stored_events]
        private = [e for e in events if personal_fields(type(e))]
        if private:
            keys = self._keys().keys({str(vars(e)["family_id"]) for e in private})
            for event in private:
                self._open(event, keys)
        return events

    def _page_event(self, stored: StoredEvent) -> Any:
        """``Mapper.to_domain_event``, its state read by the transcoder's reader (orjson
        and a walk, the replay's) rather than by the library's hook once per dict: a third
        of what the relay spent per event reading its page. What the reader cannot vouch
        for it reads the library's way, and a state that does not read fails as there."""
        read = self._reader
        if read is None:
            transcoder = self.transcoder
            read = self._reader = (transcoder.reader()
                                   if isinstance(transcoder, FastJSONTranscoder)
                                   else transcoder.decode)
        cls = resolve_topic(stored.topic)
        data = stored.state
        try:
            if self.cipher:
                data = self.cipher.decrypt(data)
            if self.compressor:
                data = self.compressor.decompress(data)
            state: dict[str, Any] = read(data)
        except Exception as e:
            # The library's words, so that a page and one event fail alike.
            raise MapperDeserialisationError(
                f"Failed to deserialise state of stored event with topic '{stored.topic}', "
                f"originator_id '{stored.originator_id}' and originator_version "
                f"{stored.originator_version}: {e}") from e
        convert = find_id_convertor(cls, cast(Hashable, type(stored.originator_id)))
        state["originator_id"] = convert(stored.originator_id)
        state["originator_version"] = stored.originator_version
        class_version = getattr(cls, "class_version", 1)
        version = state.pop("class_version", 1)
        while version < class_version:
            getattr(cls, f"upcast_v{version}_v{version + 1}")(state)
            version += 1
        event = object.__new__(cls)
        object.__setattr__(event, "__dict__", state)
        return event

    def _open(self, event: Any, keys: dict[str, bytes] | None) -> None:
        """Open the event's personal fields with ``keys`` (the store's, when None)."""
        state = vars(event)
        family = str(state["family_id"])
        store = self._keys()
        for name in personal_fields(type(event)):
            value = state.get(name)
            if not isinstance(value, str):
                continue
            if value.startswith(PREFIX):
                key = store.key(family) if keys is None else keys.get(family)
                state[name] = open_sealed(key, family, value)
            elif store.forgotten(family):
                # Stored in clear before sealing existed: these bytes stay in the store
                # (erasing them would break the chain), but nothing shows them any more.
                state[name] = ERASED


def domain_events(mapper: Mapper[Any], stored_events: Sequence[StoredEvent]) -> list[Any]:
    """``stored_events`` read back, in one go where the mapper can (``PrivateMapper``)."""
    if isinstance(mapper, PrivateMapper):
        return mapper.to_domain_events(stored_events)
    return [mapper.to_domain_event(s) for s in stored_events]
