"""Running a real Mosquitto for the simulator, the demo and the tests.

Example::

    with Mosquitto(conf_dir / "mosquitto.conf", port) as broker:
        ...                                  # TLS on 127.0.0.1:port until the block ends
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise BrokerError(
        "mosquitto is not installed: run `make test` (it installs it with apt) "
        "or `apt install mosquitto`"
    )


class Mosquitto:
    """A mosquitto process on a configuration file; started, waited for, stopped."""

    def __init__(self, conf: Path, port: int, log: Path | None = None) -> None:
        self.conf, self.port = conf, port
        self.log = log or conf.with_name("mosquitto.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Mosquitto:
        out = open(self.log, "ab")  # noqa: SIM115  (the child owns it)
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited ({self.proc.returncode}): {self.log_text()[-800:]}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def reload(self, timeout: float = 5.0) -> None:
        """SIGHUP: re-read the ACL, certificates and CRL (after an enrolment or a
        revocation); returns once Mosquitto says it did."""
        if not self.proc:
            return
        before = self.log_text().count("Reloading config")
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.log_text().count("Reloading config") <= before:
            if time.monotonic() > deadline:
                raise BrokerError(f"mosquitto did not reload within {timeout} s")
            time.sleep(0.05)
        time.sleep(0.2)  # the log line comes first; give the reload itself a moment

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
