"""What both services' eventsourcing applications share."""

from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, ProcessRecorder, Tracking

from services.common.persistence import register_transcodings


class ServiceApplication(Application[UUID]):
    def construct_recorder(self) -> ProcessRecorder:
        # Events made from a consumed message are recorded in one transaction with the
        # message's position, so a redelivered message is recognised and changes nothing.
        return self.factory.process_recorder()

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        register_transcodings(transcoder)

    def already_applied(self, tracking: Tracking) -> bool:
        recorder: Any = self.recorder
        last = recorder.max_tracking_id(tracking.application_name)
        return last is not None and last >= tracking.notification_id
