"""The child processes of a run, each started as ``python -m benchmarks --role NAME``.

The relay and the payment consumer are the `regie` commands themselves, with a timing hook
each: the relay's ``KafkaPublisher.publish`` is wrapped to note when the broker acknowledged
a message, and the consumer's payment app gets its to-pay store wrapped in a clock. These
are the only places where a benchmark reaches into the services.
"""

import json
import time
from collections.abc import Callable
from typing import Any

from benchmarks.harness import child_stop, exit_with_parent
from services.common.outbox import Outgoing
from services.common.settings import Settings
from services.payment.projections import Change, InvoiceRow, ToPayStore


class VisibilityClock:
    """The payment consumer's to-pay store, timestamping what each commit makes visible.

    ``apply`` returns once its transaction has committed, so the time taken right after it
    is the first instant a reader of to-pay can see those invoices (to within microseconds).
    Polling the read model from another process would add the polling period and compete
    for the 2 cores. time.monotonic() is CLOCK_MONOTONIC, one clock for every process here.
    """

    def __init__(self, inner: ToPayStore, out: Any) -> None:
        self.inner = inner
        self.out = out

    def apply(self, changes: list[Change], expected: int, position: int) -> bool:
        done = self.inner.apply(changes, expected, position)
        if done:
            now = time.monotonic()
            ids = [c.id for c in changes if isinstance(c, InvoiceRow)]
            if ids:
                self.out.write("".join(f"{i} {now!r}\n" for i in ids))
                self.out.flush()
        return done

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)



def role_relay(spec: dict[str, Any]) -> int:
    """`regie relay billing` itself, noting when the broker acknowledged each message."""
    from services import cli
    from services.common import relay

    exit_with_parent(spec["lifetime"])
    publish = relay.KafkaPublisher.publish
    with open(spec["out"], "a") as out:

        def timed_publish(self: Any, messages: list[Outgoing]) -> list[relay.Ack]:
            acks = publish(self, messages)  # returns once every message is acknowledged
            now = time.monotonic()
            out.write("".join(f"{json.loads(m.value)['subject']} {now!r}\n" for m in messages))
            out.flush()
            return acks

        setattr(relay.KafkaPublisher, "publish", timed_publish)  # noqa: B010
        return cli.main(["relay", "billing"])


def role_consume(spec: dict[str, Any]) -> int:
    """`regie consume payment` itself, its payment app's to-pay store wrapped in a clock."""
    import services.bootstrap
    from services import cli
    from services.payment.application import PaymentApp

    exit_with_parent(spec["lifetime"])
    make_app = services.bootstrap.payment_app
    with open(spec["out"], "a") as out:

        def timed_payment_app(settings: Settings | None = None) -> PaymentApp:
            app = make_app(settings)
            app.to_pay = VisibilityClock(app.to_pay, out)
            out.write(f"hooked {time.monotonic()!r}\n")
            out.flush()
            return app

        # cmd_consume imports payment_app from services.bootstrap when it runs.
        services.bootstrap.payment_app = timed_payment_app
        return cli.main(["consume", "payment"])


def role_plain_consume(spec: dict[str, Any]) -> int:
    """A plain kafka-python consumer: every partition of the topic from the start, no group.

    mode "block": poll(timeout_ms=100), the usual loop; mode "sleep": poll(0) and sleep the
    poll interval when nothing came, as TrackedConsumer does. Writes "partition offset time".
    """
    from kafka import KafkaConsumer, TopicPartition

    stop = child_stop(spec["lifetime"])
    consumer = KafkaConsumer(
        bootstrap_servers=spec["bootstrap"], group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        deadline = time.monotonic() + 30
        partitions = consumer.partitions_for_topic(spec["topic"])
        while not partitions and time.monotonic() < deadline and not stop.is_set():
            time.sleep(0.05)
            partitions = consumer.partitions_for_topic(spec["topic"])
        if not partitions:
            raise RuntimeError(f"topic {spec['topic']} has no partitions")
        consumer.assign([TopicPartition(spec["topic"], p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        with open(spec["out"], "a") as out:
            while not stop.is_set():
                if spec["mode"] == "block":
                    batches = consumer.poll(timeout_ms=100)
                else:
                    batches = consumer.poll(timeout_ms=0)
                now = time.monotonic()
                if batches:
                    out.write("".join(
                        f"{r.partition} {r.offset} {now!r}\n"
                        for records in batches.values() for r in records
                    ))
                    out.flush()
                elif spec["mode"] != "block":
                    stop.wait(spec["poll_interval"])
    finally:
        consumer.close()
    return 0


ROLES: dict[str, Callable[[dict[str, Any]], int]] = {
    "relay": role_relay,
    "consume": role_consume,
    "plain-consume": role_plain_consume,
}


