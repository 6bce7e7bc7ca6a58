"""The PayFiP simulator served for real, for the tests that speak to it over HTTP."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from werkzeug.serving import make_server

from services.payfip_sim.app import create_app
from services.payfip_sim.model import SimSettings

SERVICE_PATH = "/tpa/services/securite"
PAGE_PATH = "/tpa/paiementws.web"


@contextmanager
def served_sim(settings: SimSettings) -> Iterator[str]:
    """The simulator on a free port of 127.0.0.1, answering from a thread: its base URL."""
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield url
    finally:
        requests.post(f"{url}/_sim/reset", timeout=5)  # wakes a request sleeping in "timeout"
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
