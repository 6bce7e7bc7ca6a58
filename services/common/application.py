"""What both services' eventsourcing applications share."""

from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.persistence import (
    JSONTranscoder,
    Mapper,
    ProcessRecorder,
    Recording,
    Tracking,
    Transcoder,
)

from services.common.messaging.deadletters import DeadLetters, MemoryDeadLetters, SqlDeadLetters
from services.common.messaging.positions import MemoryPositions, Positions, SqlPositions
from services.common.privacy import KeyStore, MemoryKeyStore, PrivateMapper, SqlKeyStore
from services.common.storage.chain import Chained
from services.common.storage.persistence import SqlStore, register_transcodings
from services.common.storage.transcoder import FastJSONTranscoder

M = TypeVar("M")


def collect(processing: ProcessingEvent[UUID], *aggregates: Any) -> None:
    """``processing.collect_events(*aggregates)`` for objects known to be aggregates.

    ``collect_events`` asks of each object whether it is an event or has events to
    collect, with ``isinstance`` against runtime-checkable Protocols, which is slow on
    Python 3.11 (a sixth of billing's batch issue, an eighth of the payment consumer's
    CPU). For an aggregate it then does this, which is all that is left here.
    """
    for aggregate in aggregates:
        processing.events.extend(aggregate.collect_events())
        processing.aggregates[aggregate.id] = aggregate


class ServiceApplication(Application[UUID]):
    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        # Beside the events, like the read models: made with the store's tables.
        self.dead_letters: DeadLetters = (
            MemoryDeadLetters() if self.in_memory() else SqlDeadLetters(SqlStore(self))
        )
        # Where its relay and its consumer got to: /metrics reads their lags from here.
        self.positions: Positions = (
            MemoryPositions() if self.in_memory() else SqlPositions(SqlStore(self))
        )
        # The families' data keys, in the same database but never in an event: destroying
        # one erases that family's personal fields from the whole history.
        self.keys: KeyStore = (
            MemoryKeyStore() if self.in_memory() else SqlKeyStore(SqlStore(self))
        )
        mapper: Any = self.mapper
        mapper.keys = self.keys

    def forget(self, family_id: str, reason: str) -> bool:
        """Erase the family's personal data: destroy its key, then record it (the record,
        published, tells subscribers to erase their copies). True if a key was destroyed.

        The key goes first: should recording fail, the data is erased all the same and
        running it again records it.
        """
        had = self.keys.destroy(family_id, reason)
        self.save(self.erasure(family_id, reason))
        return had

    def erasure(self, family_id: str, reason: str) -> Any:
        """The service's record of an erasure (an aggregate of its domain)."""
        raise NotImplementedError

    def in_memory(self) -> bool:
        return self.env.get("PERSISTENCE_MODULE", "eventsourcing.popo") == "eventsourcing.popo"

    def construct_transcoder(self) -> Transcoder:
        # The library's JSON, byte for byte, written by orjson where it can be.
        transcoder = FastJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def construct_mapper(self) -> Mapper[UUID]:
        return PrivateMapper(transcoder=self.construct_transcoder())

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        if not isinstance(self.mapper, PrivateMapper):
            return super()._record(processing_event)
        with self.mapper.prepared(processing_event.events):
            return super()._record(processing_event)

    def _store_new(self, processing_event: ProcessingEvent[UUID]) -> Sequence[int] | None:
        """``_record`` for events nothing hears of but the store: the rows it writes, and
        no ``Recording`` (with its ``Notification``) per event, which eventsourcing builds
        for ``_notify``, a no-op here, and which was a tenth of a batch's time. The events
        are mapped and inserted as ``EventStore.put`` does, so the stored rows are the same
        (tests/integration/test_batch_rows.py compares them). Returns the notification ids
        the committed events got, in their order, when the recorder gives them."""
        if type(self)._notify is not Application._notify:
            self._notify(self._record(processing_event))
            return None
        events = processing_event.events
        mapper = self.mapper
        with mapper.prepared(events) if isinstance(mapper, PrivateMapper) else nullcontext():
            ids = self.recorder.insert_events(
                list(map(mapper.to_stored_event, events)), tracking=processing_event.tracking,
                **processing_event.saved_kwargs)
        if self.repository.cache and not self.repository.fastforward:
            for aggregate_id, aggregate in processing_event.aggregates.items():
                self.repository.cache.put(aggregate_id, aggregate)
        return ids

    def construct_recorder(self) -> ProcessRecorder:
        # Events made from a consumed message are recorded in one transaction with the
        # message's position, so a redelivered message is recognised and changes nothing.
        recorder = self.factory.process_recorder()
        if isinstance(recorder, Chained):
            # Kept outside the database, so that whoever can write the tables cannot
            # recompute the chain after changing them.
            recorder.chain_key = (self.env.get("REGIE_CHAIN_KEY") or "").encode()
        return recorder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_transcodings(transcoder)

    def _unrecorded(self, batch: list[tuple[M, Tracking]], moved: dict[str, int]
                    ) -> Iterator[M]:
        """The messages of a poll this store has not recorded yet, in order. ``moved``
        gets, per subject, the notification id of its last message handed out: the
        poll's tracking records."""
        recorded = self._tracked({t.application_name for _, t in batch})
        for message, tracking in batch:
            name = tracking.application_name
            last = moved.get(name, recorded.get(name))
            if last is not None and last >= tracking.notification_id:
                continue
            yield message
            moved[name] = tracking.notification_id

    def _record_poll(self, processing: ProcessingEvent[UUID], moved: dict[str, int]
                     ) -> Sequence[int] | None:
        """Record a poll's events with its tracking records, in one transaction; as
        ``_store_new``, without the ``Recording`` per event that nothing here reads.
        Returns the events' notification ids, as ``_store_new``."""
        if moved:
            processing.saved_kwargs["trackings"] = [
                Tracking(name, nid) for name, nid in moved.items()]
            return self._store_new(processing)
        return None

    def _tracked(self, names: set[str]) -> dict[str, int]:
        """The last notification id recorded for each of ``names`` that has one."""
        recorder: Any = self.recorder
        # eventsourcing names the table differently on PostgreSQL and SQLite.
        table = getattr(recorder, "tracking_table_name", "tracking")
        rows = SqlStore(self).rows_by_keys(
            f"SELECT application_name, MAX(notification_id) AS n FROM {{schema}}{table} "
            "WHERE application_name IN ({keys}) GROUP BY application_name", names)
        return {r["application_name"]: int(r["n"]) for r in rows}

    def already_applied(self, tracking: Tracking) -> bool:
        recorder: Any = self.recorder
        last = recorder.max_tracking_id(tracking.application_name)
        return last is not None and last >= tracking.notification_id
