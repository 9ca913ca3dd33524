"""Running as a systemd service: readiness, status and the watchdog (``Type=notify``).

systemd passes ``NOTIFY_SOCKET`` (a Unix datagram socket) and, with ``WatchdogSec=``,
``WATCHDOG_USEC``. The frame loop pings the watchdog; a loop that stalls stops pinging and
systemd kills and restarts the agent, which then recovers like after a power cut (the stall
is an interruption in the chain). Outside systemd every call does nothing.

Example::

    notifier = ServiceNotifier.from_environment()
    notifier.ready("recording: buffering")
    while running:
        step()
        notifier.alive(monotonic())       # pings at most twice per watchdog interval
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping


class ServiceNotifier:
    def __init__(self, address: str | None, watchdog_seconds: float | None) -> None:
        self.address = address
        self.watchdog_seconds = watchdog_seconds
        self._last_ping: float | None = None
        self._sock: socket.socket | None = None

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> ServiceNotifier:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        seconds = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and mine else None
        return cls(address, seconds)

    @property
    def active(self) -> bool:
        return self.address is not None

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        self._send(f"STATUS={text}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def alive(self, now: float) -> bool:
        """Ping the watchdog if half its interval has passed since the last ping."""
        if self.watchdog_seconds is None:
            return False
        if self._last_ping is not None and now - self._last_ping < self.watchdog_seconds / 2:
            return False
        self._last_ping = now
        self._send("WATCHDOG=1")
        return True

    def _send(self, message: str) -> None:
        if self.address is None:
            return
        address = self.address
        if address.startswith("@"):  # an abstract socket
            address = "\0" + address[1:]
        with contextlib.suppress(OSError):  # a lost notification must not stop recording
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), address)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
