"""Parts of the system run in threads of the test process, each stoppable by name."""

import threading
from collections.abc import Callable
from typing import Any


class Threads:
    """Each part a daemon thread running ``target(stop, *args)`` until its ``stop`` is set."""

    def __init__(self) -> None:
        self.threads: dict[str, tuple[threading.Thread, threading.Event]] = {}

    def run(self, name: str, target: Callable[..., Any], *args: Any) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=target, args=(stop, *args), daemon=True)
        thread.start()
        self.threads[name] = (thread, stop)

    def stop(self, name: str) -> None:
        thread, stop = self.threads.pop(name)
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()

    def stop_all(self) -> None:
        for name in list(self.threads):
            self.stop(name)
