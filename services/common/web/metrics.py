"""What both APIs answer at GET /metrics, in Prometheus' text format.

Two kinds of figures. What is in the stored state (payments by status, dead letters, the
relay's and the consumer's lags) is read from the service's own database at scrape time,
so the work of every process shows, whichever did it (API, relay, consumer, reconciler).
What cannot be read back from the database, PayFiP call latency and errors and the
reconciler's troubles, is measured by the process that meets it (``ProcessMeters``); with
``PROMETHEUS_MULTIPROC_DIR`` set, each process writes its figures under that folder and
the payment API adds them all up (prometheus_client's multiprocess mode).

No label ever holds a family id, an e-mail or an idop: /metrics needs no token.
"""

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "ProcessMeters", "StoredState", "registry", "render"]

# PayFiP answers in well under a second when all is well; its own timeout is 15 s.
PAYFIP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)


class ProcessMeters:
    """Figures a process measures as it works; one per process, shared by what it runs."""

    def __init__(self) -> None:
        # Registered in no registry of prometheus_client's own: each API registers them in
        # its own, or reads them from the multiprocess folder.
        self.payfip_seconds = Histogram(
            "regie_payfip_call_seconds", "PayFiP SOAP calls, by operation, answered or not",
            ["operation"], buckets=PAYFIP_BUCKETS, registry=None)
        self.payfip_errors = Counter(
            "regie_payfip_errors", "PayFiP calls that failed, by operation and fault code "
            "(unreachable: no answer at all; P5: no result yet)",
            ["operation", "code"], registry=None)
        self.watch_errors = Counter(
            "regie_watch_errors", "payments under watch the reconciler could not settle in a "
            "pass (logged; tried again next pass)", registry=None)
        self.stuck_closed = Counter(
            "regie_stuck_payments_closed", "payments closed as failed because no PayFiP idop "
            "was recorded before their reservation ended", registry=None)
        for operation in ("creerPaiementSecurise", "recupererDetailPaiementSecurise"):
            # From 0, so that an alert on increase() sees PayFiP's first silence.
            self.payfip_errors.labels(operation=operation, code="unreachable")
        self._own = CollectorRegistry(auto_describe=True)
        for collector in self.collectors():
            self._own.register(collector)

    def collectors(self) -> list[Collector]:
        return [self.payfip_seconds, self.payfip_errors, self.watch_errors, self.stuck_closed]

    def payfip_call(self, operation: str, seconds: float, error_code: str | None) -> None:
        self.payfip_seconds.labels(operation=operation).observe(seconds)
        if error_code is not None:
            self.payfip_errors.labels(operation=operation, code=error_code).inc()

    def count(self, name: str) -> int:
        """This process's own count of a counter without labels, e.g. ``regie_watch_errors``."""
        return int(self._own.get_sample_value(f"{name}_total") or 0)


class StoredState(Collector):
    """Figures read from a service's own database at each scrape.

    ``app`` is a ServiceApplication (its notification log, positions and dead letters);
    ``relay`` names the topic its relay publishes to; ``more`` adds the service's own.
    """

    def __init__(self, app: Any, relay: str,
                 more: Callable[[], Iterable[Metric]] | None = None) -> None:
        self.app = app
        self.relay = relay
        self.more = more

    def collect(self) -> Iterator[Metric]:
        dead = GaugeMetricFamily(
            "regie_dead_letters", "consumed messages parked until an operator retries them")
        dead.add_metric([], self.app.dead_letters.count())
        yield dead
        positions = self.app.positions.all()
        recorded = self.app.recorder.max_notification_id() or 0
        relay = GaugeMetricFamily(
            "regie_relay_lag", "stored events the relay has not published yet", labels=["topic"])
        relay.add_metric([self.relay], max(recorded - positions.get(self.relay, 0), 0))
        yield relay
        consumer = GaugeMetricFamily(
            "regie_consumer_lag", "records of a consumed partition not applied yet, as of the "
            "consumer's last fetch", labels=["topic", "partition"])
        for name, highwater in sorted(positions.items()):
            if not name.endswith("#highwater"):
                continue
            place = name.removesuffix("#highwater")
            topic, _, partition = place.rpartition("@")
            consumer.add_metric([topic, partition], max(highwater - positions.get(place, 0), 0))
        yield consumer
        if self.more is not None:
            yield from self.more()


def registry(state: StoredState, meters: ProcessMeters | None = None,
             multiprocess_dir: str = "") -> CollectorRegistry:
    """One API's registry: its stored state, and the figures processes measured."""
    # Not described at registration: that would query the database before the first scrape.
    reg = CollectorRegistry(auto_describe=False)
    reg.register(state)
    if meters is not None:
        if multiprocess_dir:
            MultiProcessCollector(reg, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        else:
            for collector in meters.collectors():
                reg.register(collector)
    return reg


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
