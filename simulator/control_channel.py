"""The control channel itself (:mod:`simulator.control` says what it speaks): a Unix
socket of mode 0600 serving :class:`~simulator.control.SimParts`, one JSON object per line
each way, and the tester's client.

Example::

    channel = serve(Path("/tmp/bwc.sock"), recorder, hardware, clock, uploader)
    channel.start()
    with ControlClient(Path("/tmp/bwc.sock")) as c:
        print(c.send({"cmd": "status"})["status"]["state"])
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from agent.journal.sync_ledger import sync_counts
from device.clock import JumpingClock
from device.hardware import SimHardware
from simulator.control import REPLY_TIMEOUT, NetworkSwitch, SimParts
from simulator.control_commands import ControlError, Status, parse_command

if TYPE_CHECKING:
    from agent.recorder import Recorder
    from agent.sync import Uploader

MAX_LINE = 64 * 1024  # a command is small; a longer line is refused, not buffered
MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 107 bytes on Linux


# -- the channel: a Unix socket speaking JSON lines -------------------------------------------


def socket_path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a control socket, or None."""
    if len(os.fsencode(Path(path).absolute())) > MAX_SOCKET_PATH:
        return (
            f"control socket path {path} is longer than {MAX_SOCKET_PATH} bytes "
            "(a Unix socket limit): choose a shorter one"
        )
    return None


class ControlChannel:
    """Serves :class:`SimParts` on a Unix socket; one thread per connected client."""

    def __init__(self, path: Path, parts: SimParts, timeout: float = REPLY_TIMEOUT) -> None:
        if problem := socket_path_problem(path):
            raise ControlError(problem)
        self.path = Path(path)
        self.parts = parts
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._closed = threading.Event()

    def start(self) -> ControlChannel:
        """Listen, and bring the network up if the device starts online."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        sock.listen(8)
        self._sock = sock
        threading.Thread(target=self._accept, name="control", daemon=True).start()
        if self.parts.network is not None:
            self.parts.network.start()
        return self

    def close(self) -> None:
        self._closed.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        self.path.unlink(missing_ok=True)

    def handle(self, line: bytes) -> dict[str, Any]:
        """One request line → one reply."""
        try:
            cmd = parse_command(line)
        except ControlError as e:
            return {"ok": False, "error": str(e)}
        reply = self.parts.run(cmd, self.timeout)
        if isinstance(cmd, Status) and reply.get("ok"):
            reply["sync"] = sync_counts(self.parts.recorder.root)
        return reply

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            while not self._closed.is_set():
                try:
                    line = f.readline(MAX_LINE + 1)
                except OSError:
                    return
                if not line:
                    return
                if len(line) > MAX_LINE:
                    reply: dict[str, Any] = {"ok": False, "error": "line too long"}
                    _drain_line(f)
                elif not line.strip():
                    continue
                else:
                    reply = self.handle(line)
                try:
                    f.write(json.dumps(reply, ensure_ascii=False, default=str).encode() + b"\n")
                    f.flush()
                except OSError:
                    return


def _drain_line(f: Any) -> None:
    while True:
        rest = f.readline(MAX_LINE)
        if not rest or rest.endswith(b"\n"):
            return


class ControlClient:
    """The tester's end: ``send(command) -> reply``; thread-safe (one request at a time)."""

    def __init__(self, path: Path, connect_timeout: float = 10.0) -> None:
        deadline = time.monotonic() + connect_timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                break
            except OSError as e:
                sock.close()
                if time.monotonic() > deadline:
                    raise ControlError(f"control socket {path}: {e.strerror or e}") from None
                time.sleep(0.05)
        self._sock = sock
        self._file = sock.makefile("rwb")
        self._lock = threading.Lock()

    def send(
        self, command: Mapping[str, Any], timeout: float = REPLY_TIMEOUT + 5
    ) -> dict[str, Any]:
        line = json.dumps(dict(command), ensure_ascii=False).encode() + b"\n"
        return self.send_raw(line, timeout)

    def send_raw(self, line: bytes, timeout: float = REPLY_TIMEOUT + 5) -> dict[str, Any]:
        with self._lock:
            self._sock.settimeout(timeout)
            try:
                self._file.write(line)
                self._file.flush()
                answer = self._file.readline()
            except OSError as e:
                raise ControlError(f"control channel: {e.strerror or e}") from None
            if not answer:
                raise ControlError("control channel closed (the agent stopped)")
            reply: dict[str, Any] = json.loads(answer)
            return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
            self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def serve(
    path: Path,
    recorder: Recorder,
    hardware: SimHardware,
    clock: JumpingClock,
    uploader: Uploader | None,
    online: bool = True,
) -> ControlChannel:
    """What ``agent run --sim --control PATH`` calls before the recorder starts: the
    channel onto the recorder and its simulated hardware, not yet listening."""
    network = NetworkSwitch(uploader, online) if uploader is not None else None
    return ControlChannel(path, SimParts(recorder, hardware, clock, network))
