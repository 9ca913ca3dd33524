"""``DATA/status.json``: what the running agent says about itself, rewritten about once a
second from the frame loop, so ``unbroken agent status`` (another process) can show an
admin the live state without touching the recorder.

Example::

    status = StatusFile(root, recorder, hardware, clock, uploader)
    status.maybe_write(time.monotonic())   # at most once per ``every`` seconds
    read_status(root)                      # the last snapshot, or None
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.files import write_atomic
from evidence.messages import Backlog

if TYPE_CHECKING:
    from agent.recorder import Recorder
    from agent.sync import Uploader
    from device.clock import Clock
    from device.hardware import Hardware

STATUS = "status.json"


class StatusFile:
    def __init__(
        self,
        root: Path,
        recorder: Recorder,
        hardware: Hardware,
        clock: Clock,
        uploader: Uploader | None = None,
        backlog: Callable[[], Backlog] | None = None,
        every: float = 1.0,
    ) -> None:
        self.root = root
        self.recorder = recorder
        self.hardware = hardware
        self.clock = clock
        self.uploader = uploader
        self.backlog = backlog
        self.every = every
        self._last: float | None = None
        self._backlog: Backlog | None = None
        self._backlog_at: float | None = None

    def maybe_write(self, now: float) -> bool:
        if self._last is not None and now - self._last < self.every:
            return False
        self._last = now
        # A status file that cannot be written must not cost a frame: the next try is in
        # a second, and the recorder reports a full disk on its own.
        try:
            write_atomic(self.root / STATUS, json.dumps(self.snapshot(now)).encode() + b"\n")
        except OSError:
            return False
        return True

    def snapshot(self, now: float) -> dict[str, Any]:
        hw = self.hardware
        usage = hw.storage.usage() if hw.storage is not None else None
        gnss = hw.gnss.state()
        age = gnss.age(self.clock.monotonic())
        fix = gnss.last_fix
        doc: dict[str, Any] = {
            **self.recorder.status(),
            "pid": os.getpid(),
            "written_at": time.time(),
            "clock": {"wall": self.clock.wall(), "synced": self.clock.synced()},
            "storage": None if usage is None else {"free": usage.free, "total": usage.total},
            "battery": None
            if hw.battery is None
            else {
                "percent": round(hw.battery.percent(), 1),
                "external_power": hw.battery.external_power(),
            },
            "gnss": {
                "fix": gnss.has_fix,
                "age": None if age is None else round(age, 1),
                "lat": None if fix is None else fix.lat,
                "lon": None if fix is None else fix.lon,
            },
        }
        if self.uploader is not None:
            doc["sync"] = {
                "connected": self.uploader.connected.is_set(),
                "deadline": self.uploader.deadline_level,
                "backlog": backlog.model_dump() if (backlog := self._backlog_now(now)) else None,
                # "<code>: <text>" while the store refuses this device (revoked, quota,
                # store_full): agent status says so as an error, never as "ok".
                "store_refusal": self.uploader.store_refusal,
            }
        return doc

    def _backlog_now(self, now: float) -> Backlog | None:
        """The journal's backlog, asked for every 5 s (a query, not a per-frame cost)."""
        if self.backlog is None:
            return None
        if self._backlog_at is None or now - self._backlog_at >= 5.0:
            self._backlog_at = now
            with contextlib.suppress(Exception):  # a busy journal: keep the last figure
                self._backlog = self.backlog()
        return self._backlog


def read_status(root: Path) -> dict[str, Any] | None:
    """The last snapshot a running (or stopped) agent wrote, None if there is none."""
    try:
        doc = json.loads((root / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
