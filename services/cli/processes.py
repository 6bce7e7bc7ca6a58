"""The `regie` commands that run for as long as they are let: the whole system, the
embedded broker, the relays, the consumers and the reconciler. Each stops on SIGTERM or
SIGINT."""

import argparse
import logging
import signal
import threading
from pathlib import Path

from services.common.settings import Settings


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def cmd_run(args: argparse.Namespace) -> int:
    from services.run import run

    return run(load_demo=not args.no_demo)


def cmd_broker(args: argparse.Namespace) -> int:
    from services.common.messaging import broker

    settings = Settings()
    kind = args.kind or settings.kafka_broker
    port = args.port or int(settings.kafka_bootstrap.rsplit(":", 1)[-1])
    data_dir = Path(args.data_dir or settings.var_dir / f"kafka-{kind}")
    proc = broker.start(kind, port, data_dir, settings.var_dir / f"kafka-{kind}.log")
    print(f"{kind} broker on 127.0.0.1:{port} (pid {proc.pid})", flush=True)
    stop = _stop_on_signals()
    while not stop.is_set() and proc.poll() is None:
        stop.wait(0.5)
    if proc.poll() is None:
        proc.terminate()
        proc.wait()
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from services.bootstrap import relay

    settings = Settings()
    running = relay(args.service, settings)
    logging.getLogger(__name__).info("relaying %s events to %s", args.service, running.name)
    running.run_forever(_stop_on_signals(), settings.poll_interval)
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    # Looked up in services.bootstrap at run time: the benchmarks swap its payment_app.
    from services.bootstrap import consumer

    running = consumer(args.service, Settings())
    index, count = running.share
    logging.getLogger(__name__).info("%s consuming %s (partitions p %% %d == %d)",
                                     args.service, running.topic, count, index)
    running.run_forever(_stop_on_signals())
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from services.bootstrap import payfip_gateway, payment_app

    settings = Settings()
    # Its PayFiP calls are timed and counted like the API's; with PROMETHEUS_MULTIPROC_DIR
    # shared with the payment API, its /metrics shows them.
    app = payment_app(settings, gateway=payfip_gateway(settings))
    every = args.every if args.every is not None else settings.reconcile_interval
    if args.once:
        app.refresh()
        watched = len(app.to_pay.watched_payments())
        settled = app.reconcile()
        print(f"one pass: asked PayFiP about {watched} payment(s) under watch; "
              f"{settled} closed")
        return 0
    stop = _stop_on_signals()
    log = logging.getLogger(__name__)
    log.info("asking PayFiP about payments under watch every %.1fs", every)
    while True:
        try:
            app.refresh()
            settled = app.reconcile()
        except Exception:
            # The database or the read model failed for the whole pass: the next pass
            # tries again; a reconciler that stops would leave payments unwatched.
            log.exception("reconciliation pass failed; next one in %.1fs", every)
            settled = 0
        if settled:
            log.info("closed %d payment(s) under watch", settled)
        if stop.wait(every):
            return 0
