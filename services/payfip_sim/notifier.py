"""PayFiP's server-to-server call to ``urlnotif``, and the ways tests can make it misbehave.

Each call runs in its own thread so the browser's redirect never waits for the payment
service; failures are logged and recorded, never raised, as PayFiP would not retry either.
"""

import logging
import threading
from datetime import UTC, datetime
from typing import Any

import requests

from services.payfip_sim.model import SimConfig, SimPayment

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        # A reset cancels delayed calls of the previous test instead of letting them land
        # in the next one.
        self._cancel = threading.Event()

    def notify(self, payment: SimPayment, config: SimConfig) -> None:
        mode = config.notification
        if mode == "drop":
            self._record(payment, config, attempt=1, sent=False)
            return
        attempts = 2 if mode == "duplicate" else 1
        delay = config.delay_seconds if mode == "delay" else 0.0
        with self._lock:
            cancel = self._cancel
        for attempt in range(1, attempts + 1):
            record = self._record(payment, config, attempt=attempt, sent=True, delay=delay)
            threading.Thread(
                target=self._send, args=(record, payment, config.notification_field, delay,
                                         cancel),
                name=f"payfip-notify-{payment.idop[:8]}", daemon=True,
            ).start()

    def _record(
        self, payment: SimPayment, config: SimConfig, attempt: int, sent: bool,
        delay: float = 0.0,
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "idop": payment.idop,
            "url": payment.urlnotif,
            "field": config.notification_field,
            "mode": config.notification,
            "attempt": attempt,
            "delay_seconds": delay,
            "sent": sent,
            "status": None,
            "error": None,
            "scheduled_at": datetime.now(UTC).isoformat(),
            "sent_at": None,
            "done": not sent,
        }
        with self._lock:
            self._records.append(record)
        return record

    def _send(
        self, record: dict[str, Any], payment: SimPayment, field: str, delay: float,
        cancel: threading.Event,
    ) -> None:
        if delay and cancel.wait(delay):
            self._update(record, error="cancelled by reset", sent=False)
            return
        self._update(record, sent_at=datetime.now(UTC).isoformat())
        try:
            answer = requests.post(
                payment.urlnotif, data={field: payment.idop}, timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as e:
            log.warning("notification of %s to %s failed: %s", payment.idop, payment.urlnotif, e)
            self._update(record, error=str(e))
            return
        if answer.status_code >= 400:
            log.warning("notification of %s to %s answered %s", payment.idop,
                        payment.urlnotif, answer.status_code)
        self._update(record, status=answer.status_code)

    def _update(self, record: dict[str, Any], **changes: Any) -> None:
        with self._lock:
            record.update(changes)
            if "status" in changes or "error" in changes:
                record["done"] = True

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._records]

    def reset(self) -> None:
        with self._lock:
            self._cancel.set()
            self._cancel = threading.Event()
            self._records.clear()
