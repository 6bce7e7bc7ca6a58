"""A local SMTP server for `regie run`: each message it receives is kept as a file.

``python -m services.common.mail_catcher`` listens on SMTP_HOST:SMTP_PORT and writes every
message to REGIE_VAR_DIR/mail/ as an .eml file (any mail program opens one), so that the
reminders of a development run can be read and none reaches a real mailbox. It needs
aiosmtpd, a development dependency that `make run`'s install brings.
"""

import signal
import threading
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

from services.common.settings import Settings


class KeepAsFiles:
    """aiosmtpd's handler: one .eml file per message, written whole or not at all."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid4().hex[:8]}.eml"
        partial = self.folder / f".{name}.part"
        partial.write_bytes(envelope.original_content or envelope.content)
        # A reader listing the folder never sees a message half written.
        partial.rename(self.folder / name)
        return "250 Message kept"


def start(folder: Path, host: str, port: int) -> Any:
    """The catcher, listening; ``stop()`` it."""
    from aiosmtpd.controller import Controller

    controller = Controller(KeepAsFiles(folder), hostname=host, port=port)
    controller.start()
    return controller


def main() -> int:
    settings = Settings()
    folder = settings.var_dir / "mail"
    controller = start(folder, settings.smtp_host, settings.smtp_port)
    print(f"mail catcher on {settings.smtp_host}:{settings.smtp_port}, keeping messages "
          f"in {folder}/", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1):
        pass
    controller.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
