"""What a store worker says about each device, in lines an admin can run a fleet with: when
it comes online or goes offline, its first message since, a refusal (once, until the device
sends something the store accepts), and its receipts summed per batch and session — never
a line per message. Pure: it returns the lines, :class:`store.ingest.Ingest` logs them.

Example::

    news = DeviceNews()
    news.status("bwc-1", online=True)    # "bwc-1 is online"
    news.message("bwc-1", "segment")     # "bwc-1: first message since it came online (segment)"
    news.message("bwc-1", "segment")     # None
    receipt_lines([("bwc-1", "s-1"), ("bwc-1", "s-1")])
    # -> ["receipted 2 segments of session s-1 from bwc-1"]
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable


class DeviceNews:
    """Per device, what was already told (in memory: a worker that starts again says it
    again, once)."""

    def __init__(self) -> None:
        self._online: dict[str, bool] = {}
        self._heard: set[str] = set()  # devices that sent something since they came online
        self._refused: dict[str, set[str]] = {}  # per device, the refusal codes told

    def status(self, device: str, online: bool) -> str | None:
        """A status message: a line when the device's online state changed."""
        if self._online.get(device) == online:
            return None
        self._online[device] = online
        if not online:
            self._heard.discard(device)  # its next message is news again
            return f"{device} is offline"
        return f"{device} is online"

    def message(self, device: str, kind: str) -> str | None:
        """Any message: a line for the first one since the device came online (or since
        this worker started)."""
        if device in self._heard:
            return None
        self._heard.add(device)
        return f"{device}: first message since it came online ({kind})"

    def refused(self, device: str, code: str) -> int:
        """The level to log a refusal at: WARNING the first time this device is refused
        for ``code``, DEBUG while it keeps sending what is refused for the same reason."""
        told = self._refused.setdefault(device, set())
        if code in told:
            return logging.DEBUG
        told.add(code)
        return logging.WARNING

    def accepted(self, device: str) -> None:
        """The store took something of the device's: a new refusal is news again."""
        self._refused.pop(device, None)


def receipt_lines(receipts: Iterable[tuple[str, str | None]]) -> list[str]:
    """One line per device and session for the receipts of one batch."""
    counts = Counter(receipts)
    return [
        f"receipted {n} segment{'s' if n != 1 else ''} "
        + (f"of session {session}" if session else "outside any session")
        + f" from {device}"
        for (device, session), n in sorted(
            counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
        )
    ]
