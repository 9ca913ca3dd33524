"""The devices of a scenario run, as the runner drives them.

- :class:`ProcessDevice` (real time, the default): a real ``unbroken agent run --sim``
  process per device, syncing through the real broker to the real store, driven through
  its control channel (:mod:`simulator.control`); a power cut is SIGKILL.
- :class:`InProcessDevice` (``--fast``): a :class:`~simulator.device.SimDevice` in the
  runner's process on a :class:`~device.clock.SimClock` stepped as fast as the encoder
  goes, driven by the same commands (no network, no processes).

Both keep the device clock's offset from real time by scenario second (``offsets``), so
that the report can put device-clock readings on the scenario's time axis.

A process's output (its log on stderr, what it prints) goes to its log file, every line
with the time (UTC) it was written or, if it came without one, read (:class:`LogPipe`).

Example::

    dev = ProcessDevice("bwc-1", data, sockets / "bwc-1.sock", logs / "bwc-1.log")
    dev.boot(t=0.0, offset_hours=0.0, online=True)
    dev.command({"cmd": "press"})
    dev.power_cut(t=12.0)
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Protocol, cast

from common.settings import DeviceConfig
from device.clock import SimClock
from simulator.control import Pending, SimParts
from simulator.control_channel import ControlClient
from simulator.control_commands import ControlError, parse_command
from simulator.powercut import agent_command, cut

BOOT_TIMEOUT = 90.0  # seconds an agent process may take to start (20 at once on 2 cores)
_STAMPED = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")  # the CLI's log lines


def stamp(at: float | None = None) -> str:
    """A time (default now) as the logs write it: UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if at is None else at))


class LogPipe:
    """Copies a process's output into a log file line by line, on its own thread; a line
    without a time (what the process prints) gets the time it was read."""

    def __init__(self, source: Any, log: Path, first: bytes = b"") -> None:
        self.source = source
        self.log = log
        self.first = first  # what was read from the source already
        self.thread = threading.Thread(target=self._copy, daemon=True)

    def start(self) -> LogPipe:
        self.thread.start()
        return self

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def _copy(self) -> None:
        with open(self.log, "ab") as log:
            if self.first:
                log.write(stamped(self.first))
                log.flush()
            for line in self.source:
                log.write(stamped(line))
                log.flush()


def stamped(line: bytes) -> bytes:
    return line if _STAMPED.match(line) else stamp().encode() + b" " + line


class DeviceDriver(Protocol):
    id: str
    data: Path
    offset: float  # seconds, now
    offsets: list[tuple[float, float]]
    kills: list[tuple[float, float]]
    online: bool

    @property
    def running(self) -> bool: ...

    def boot(self, t: float, offset_hours: float | None, online: bool | None) -> None: ...

    def command(self, cmd: dict[str, Any]) -> dict[str, Any]: ...

    def signed_command(self, data: bytes) -> Pending: ...

    def power_cut(self, t: float) -> None: ...

    def power_off(self) -> None: ...

    def note_jump(self, t: float, seconds: float) -> None: ...

    def close(self) -> None: ...


class _Clocked:
    id: str
    offset: float
    offsets: list[tuple[float, float]]

    def _set_offset(self, t: float, offset: float) -> None:
        self.offset = offset
        if self.offsets and abs(self.offsets[-1][1] - offset) < 1e-9:
            return
        self.offsets.append((t, offset))

    def note_jump(self, t: float, seconds: float) -> None:
        self._set_offset(t, self.offset + seconds)


class ProcessDevice(_Clocked):
    """One agent process on simulated hardware, and its control channel."""

    def __init__(self, device_id: str, data: Path, sock: Path, log: Path) -> None:
        self.id = device_id
        self.data = data
        self.sock = sock
        self.log = log
        self.offset = 0.0
        self.offsets: list[tuple[float, float]] = []
        self.kills: list[tuple[float, float]] = []
        self.online = True
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: ControlClient | None = None
        self.stderr: LogPipe | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self, t: float, offset_hours: float | None, online: bool | None) -> None:
        """Start the agent process (not waiting for it: see :meth:`wait_ready`)."""
        if self.running:
            raise ControlError(f"{self.id} is already running")
        if offset_hours is not None:
            self._set_offset(t, offset_hours * 3600)
        elif not self.offsets:
            self._set_offset(t, 0.0)
        if online is not None:
            self.online = online
        options = ["--control", str(self.sock), "--clock-offset", repr(self.offset)]
        cmd, env = agent_command(self.data, *options, *([] if self.online else ["--offline"]))
        env.pop("JOURNAL_STREAM", None)  # its log is a file here, not journald: with times
        self.log.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.proc = proc
        self.stderr = LogPipe(proc.stderr, self.log).start()

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Until the agent says it records (after any recovery); then connect."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, left))
            if not ready:
                proc.kill()
                raise ControlError(f"{self.id}: the agent did not start within {timeout:g} s")
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
        if not line.startswith(b"recording:"):
            proc.wait(timeout=10)
            if self.stderr is not None:
                self.stderr.join(timeout=10)  # all it said is in the log
            tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
            raise ControlError(f"{self.id}: the agent did not start: " + " | ".join(tail))
        LogPipe(proc.stdout, self.log, first=line).start()
        self.client = ControlClient(self.sock)

    def boot(self, t: float, offset_hours: float | None, online: bool | None) -> None:
        self.launch(t, offset_hours, online)
        self.wait_ready()

    def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        client = self.client
        if client is None or not self.running:
            return {"ok": False, "cmd": cmd.get("cmd"), "error": f"{self.id} is off"}
        try:
            reply = client.send(cmd)
        except ControlError as e:
            return {"ok": False, "cmd": cmd.get("cmd"), "error": str(e)}
        if reply.get("ok") and cmd.get("cmd") == "network":
            self.online = bool(cmd["up"])
        return reply

    def signed_command(self, data: bytes) -> Pending:
        """Not this way: an agent process gets the case system's commands over MQTT, from
        the scenario's site (the in-process driver takes them here)."""
        raise ControlError(f"{self.id}: send signed commands through the broker")

    def power_cut(self, t: float) -> None:
        """SIGKILL, as a pulled battery: nothing is flushed."""
        if self.proc is None or not self.running:
            raise ControlError(f"{self.id} is already off")
        at = cut(cast("subprocess.Popen[str]", self.proc))  # it only signals and waits
        self.kills.append((t, at + self.offset))
        self._disconnect()

    def power_off(self) -> None:
        """SIGTERM: the agent closes an open session and shuts down cleanly."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._disconnect()

    def _disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def close(self) -> None:
        self.power_off()


class InProcessDevice(_Clocked):
    """A SimDevice stepped by the runner on simulated time (``--fast``)."""

    def __init__(self, device_id: str, data: Path, config: DeviceConfig, wall0: float) -> None:
        from simulator.device import SimDevice

        self.id = device_id
        self.data = data
        self.config = config
        self.wall0 = wall0
        self.offset = 0.0
        self.offsets: list[tuple[float, float]] = []
        self.kills: list[tuple[float, float]] = []
        self.online = False
        self.dev: SimDevice | None = None
        self.parts: SimParts | None = None
        self.frames = 0  # frame intervals of scenario time gone by
        self.pending: list[Pending] = []  # replies whose status may still change

    @property
    def fps(self) -> int:
        return self.config.recording.fps

    @property
    def t(self) -> float:
        return self.frames / self.fps

    @property
    def running(self) -> bool:
        return self.dev is not None and not self.dev.recorder.powered_off

    def boot(self, t: float, offset_hours: float | None, online: bool | None) -> None:
        from simulator.device import SimDevice, sim_factory

        if self.running:
            raise ControlError(f"{self.id} is already running")
        self._retire()
        if offset_hours is not None:
            self._set_offset(t, offset_hours * 3600)
        elif not self.offsets:
            self._set_offset(t, 0.0)
        clock = SimClock(wall_start=self.wall0 + self.offset + t)
        # The battery holds its charge until a scenario drains it.
        factory = sim_factory(battery_drain_per_hour=0)
        dev = SimDevice(self.data, self.config, clock=clock, factory=factory)
        self.parts = SimParts(dev.recorder, dev.hardware, clock)
        dev.start()
        self.dev = dev

    def advance_to(self, t: float) -> None:
        """Record (or, switched off, let time pass) up to scenario second ``t``."""
        target = round(t * self.fps)
        n = target - self.frames
        if n <= 0:
            return
        if self.dev is not None:  # a dead device's clock just moves
            self.dev.frame_loop(on_frame=self._after_frame).run(frames=n)
        self.frames = target

    def _after_frame(self, _n: int) -> None:
        """After each frame: replies whose effect the device has now noticed are final
        (:meth:`~simulator.control.SimParts.took_effect`)."""
        if self.parts is not None and self.pending:
            parts = self.parts
            self.pending = [
                p for p in self.pending if not (p.done.is_set() and parts.took_effect(p))
            ]

    def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Queued for the device's next frame; the reply arrives with it, final once its
        ``pending`` is settled (the frames the device needs to notice it have run)."""
        if self.parts is None or not self.running:
            return {"ok": False, "cmd": cmd.get("cmd"), "error": f"{self.id} is off"}
        try:
            parsed = parse_command(cmd)
        except ControlError as e:
            return {"ok": False, "cmd": cmd.get("cmd"), "error": str(e)}
        if parsed.cmd == "status":  # the runner's thread is the recording thread here
            return {"ok": True, "cmd": "status", "status": self.parts.status()}
        pending = self.parts.submit(parsed)
        self.pending.append(pending)
        return {"ok": True, "cmd": parsed.cmd, "queued": True, "pending": pending}

    def signed_command(self, data: bytes) -> Pending:
        """An agency-signed command, applied at the next frame as if it came over MQTT."""
        if self.dev is None or self.parts is None or not self.running:
            raise ControlError(f"{self.id} is off")
        rec, parts = self.dev.recorder, self.parts
        pending = Pending("signed command")

        def apply() -> None:
            entry = rec.apply_command(data)  # refusals are logged, never raised
            reply = {"ok": entry is not None, "status": parts.status()}
            pending.finish(reply if entry else {**reply, "error": rec.last_error or "refused"})

        rec.post(apply)
        return pending

    def power_cut(self, t: float) -> None:
        raise ControlError("a power cut needs real time (an agent process to kill)")

    def power_off(self) -> None:
        if self.dev is not None:
            self.dev.stop()
            self._after_frame(0)  # off: nothing more will be noticed

    def _retire(self) -> None:
        if self.dev is not None:
            with contextlib.suppress(Exception):
                self.dev.stop()
            self.dev = None

    def close(self) -> None:
        self._retire()
