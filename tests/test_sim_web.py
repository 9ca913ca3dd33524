"""``unbroken sim panel``: the page, driven in Debian's Chromium by Playwright.

The panel runs in this process (one body recorder and one interview room, syncing if
Mosquitto is installed). A Node script (tests/browser/panel.mjs, playwright-core) opens
it, presses record, sees the LED and the preview change, and closes the session with
press-and-confirm; then the device's own chain must hold that session's open and close:
the page really pressed the pin. Another (tests/browser/room.mjs) closes the room's door,
sees the panel ask for the key, turns the key to start and to stop, and sees the RECORDING
lamp and the picture-in-picture follow; then the room's chain must hold a session opened
by the door with segments on every track (and, with sync, the panel's messages went
through the broker). A third (tests/browser/controls.mjs) presses each tester's switch of
the body recorder (microphone, storage, clock, battery, network, power cut and on) and
sees it on the page; then the chain must hold each as an interruption of that session.

Needs node, /usr/bin/chromium and ``npm ci`` in tests/browser (``make pytest`` does all
three): missing, the browser test is skipped, or fails under CI=true.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from common.archive.device_directory import load_chain
from common.settings import Session
from evidence.entries import Assignment, Event
from evidence.seal import Entry, Moment, Sealer
from evidence.session_bodies import CaseCommand, Interruption, Marker, SessionClose, SessionOpen
from simulator.control_commands import BatteryCmd, ClockJump, MicrophoneCmd, NetworkCmd, StorageCmd
from simulator.fleet import Fleet
from simulator.journal_view import summarize, summary_of
from simulator.live_room import LiveRoom
from simulator.tester_buttons import TESTER_COMMANDS, ActionError, button_command
from simulator.web import STATIC, PanelServer, mosquitto_available
from tests.fixtures.config import small_config

BROWSER_DIR = Path(__file__).parent / "browser"
CHROMIUM = Path("/usr/bin/chromium")
AT = Moment(1_773_451_800.0, 1.0, True)


def _browser_or_skip() -> str:
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node")
    if not CHROMIUM.exists():
        missing.append(str(CHROMIUM))
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("playwright-core (npm ci in tests/browser)")
    if missing:
        message = f"browser test needs {', '.join(missing)}: run `make pytest`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    assert node
    return node


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _node(node: str, script: str, url: str, outdir: Path) -> dict[str, Any]:
    result = subprocess.run(
        [node, str(BROWSER_DIR / script), url, str(outdir)],
        cwd=BROWSER_DIR,
        capture_output=True,
        text=True,
        timeout=90,
    )
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"]
    return report


@pytest.mark.slow
def test_panel_in_chromium(tmp_path: Path) -> None:
    node = _browser_or_skip()
    sync = mosquitto_available()
    # No badge configured: the fleet assigns each body recorder its officer.
    config = small_config(prebuffer_seconds=2).model_copy(update={"session": Session()})
    with Fleet(tmp_path / "fleet", 1, config, sync=sync, rooms=1) as fleet:
        live, room = fleet.devices
        assert isinstance(room, LiveRoom)
        with PanelServer(fleet) as server:
            report = _node(node, "panel.mjs", server.url, tmp_path)
            room_report = _node(node, "room.mjs", server.url, tmp_path)
            controls = _node(node, "controls.mjs", server.url, tmp_path)
            view, room_view = json.loads(_get(server.url + "api/fleet")[1])["devices"]
    assert report["device"] == controls["device"] == live.id
    assert (tmp_path / "panel.png").stat().st_size > 10_000
    assert (tmp_path / "controls-off.png").stat().st_size > 10_000
    assert view["sync"]["enabled"] is sync and view["sync"]["segments_sealed"] > 0
    assert controls["network"] is sync
    # The page pressed the pin: the device sealed the session's open and close.
    entries = [e for _, e in load_chain(live.root) if isinstance(e, Entry)]
    kinds = [(e.kind, e.session) for e in entries]
    assert ("session_open", report["session"]) in kinds
    assert ("session_close", report["session"]) in kinds
    assert kinds[-1][0] == "shutdown"  # stopped cleanly
    # The officer: agency-signed with sync, from the settings without; on each session.
    assert [e.body["badges"] for e in entries if e.kind == "session_open"] == [["340201"]] * 2
    assert any(e.kind == "assignment" for e in entries) is sync
    # The tester's switches, as the chain recorded them in the controls' session.
    causes = [
        (e.body["cause"], e.body["detail"])
        for e in entries
        if e.kind == "interruption" and e.session == controls["session"]
    ]
    assert [c for c, _ in causes] == [
        "microphone",
        "storage_full",
        "clock_jump",
        "clock_jump",
        "power_loss",
    ], causes
    assert causes[2][1].startswith("+3600") and causes[3][1].startswith("-3600")
    assert kinds.count(("session_close", controls["session"])) == 1  # resumed after the cut

    # The room: the door opened the session the key confirmed, on every track.
    assert room_report["device"] == room.id and sorted(room_report["tracks"]) == [
        "pip",
        "room",
        "subject",
    ]
    entries = [e for _, e in load_chain(room.root) if isinstance(e, Entry)]
    session = room_report["session"]
    (opened,) = [e for e in entries if e.kind == "session_open" and e.session == session]
    assert opened.body["trigger"] == "door"
    assert opened.body["tracks"] == ["subject", "room", "pip"]
    (closed,) = [e for e in entries if e.kind == "session_close" and e.session == session]
    assert closed.body["trigger"] == "key"
    tracks = {e.body["track"] for e in entries if e.kind == "segment" and e.session == session}
    assert tracks == {"subject", "room", "pip"}
    assert entries[-1].kind == "shutdown"
    assert (tmp_path / "room-recording.png").stat().st_size > 10_000
    assert room_view["sync"]["segments_sealed"] > 0 and room_view["room"]["lamp"] is False
    if sync:  # the panel spoke through the broker, and saw the controller's state
        assert opened.body["room"] == room_view["room"]["id"] == "101"
        assert room_view["room"]["panel"]["via"] == "broker"
        seen = [s for s in room.panel.seen if s in ("confirm", "recording", "idle")]
        assert seen[-3:] == ["confirm", "recording", "idle"]


def test_panel_endpoints(tmp_path: Path) -> None:
    """The JSON, the picture and the actions, without a browser (no sync: quick)."""
    with (
        Fleet(tmp_path / "fleet", 2, small_config(prebuffer_seconds=2), sync=False) as fleet,
        PanelServer(fleet) as server,
    ):
        status, page = _get(server.url)
        assert status == 200 and b"/static/app.js" in page
        for name in ("app.js", "style.css"):
            assert _get(server.url + "static/" + name)[0] == 200
        assert _get(server.url + "static/../web.py")[0] == 404
        fleet_view = json.loads(_get(server.url + "api/fleet")[1])
        assert fleet_view["sync"] is False and len(fleet_view["devices"]) == 2
        d = fleet_view["devices"][0]
        assert d["led"] == {"pin": False, "indicator": "off"}
        assert d["badges"] == ["012345"]  # the configured officer
        assert {"battery", "storage", "gps", "events", "sync", "clock"} <= d.keys()
        assert [e["kind"] for e in d["events"]][-2:] == ["config", "boot"]
        status, jpeg = _get(server.url + d["preview"].lstrip("/"))
        assert status == 200 and jpeg[:2] == b"\xff\xd8"
        assert _post(server.url + f"api/devices/{d['id']}/no-such")[0] == 400
        assert _post(server.url + "api/devices/nobody/record")[0] == 404
        for action in ("gps-lost", "camera-fault"):
            assert _post(server.url + f"api/devices/{d['id']}/{action}")[0] == 200
        live = fleet.device(d["id"])
        assert live is not None
        _wait(lambda: live.snapshot["gps"]["jammed"])  # applied on the device's thread
        view = live.view()
        assert view["gps"]["fix"] is False and view["camera_fault"] is True
        # Open, then press and confirm from two requests at once: two presses, not one.
        other = fleet.devices[1]
        assert _post(server.url + f"api/devices/{other.id}/record")[0] == 200
        _wait(lambda: other.snapshot["status"]["session"] is not None)
        with ThreadPoolExecutor(2) as pool:
            url = server.url + f"api/devices/{other.id}/record"
            assert [s for s, _ in pool.map(_post, [url, url])] == [200, 200]
        _wait(lambda: other.snapshot["status"]["session"] is None)
        assert not other.dev.led()


def test_room_endpoints(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A room without sync: its tracks' pictures, the panel straight into the recorder, a
    fault on one camera, and no case system."""
    config = small_config(prebuffer_seconds=2)
    with (
        Fleet(tmp_path / "fleet", 0, config, sync=False, rooms=1) as fleet,
        PanelServer(fleet) as server,
    ):
        (d,) = json.loads(_get(server.url + "api/fleet")[1])["devices"]
        (room,) = fleet.rooms
        assert d["kind"] == "room" and d["id"] == room.id
        r = d["room"]
        assert r["main_track"] == "pip" and r["tracks"] == ["subject", "room", "pip"]
        assert r["case_system"] is False and r["panel"]["via"] == "direct"
        for track, url in d["previews"].items():
            status, jpeg = _get(server.url + url.lstrip("/"))
            assert status == 200 and jpeg[:2] == b"\xff\xd8", track
        assert _get(server.url + f"devices/{room.id}/tracks/main.jpg")[0] == 404
        act = server.url + f"api/devices/{room.id}/"
        assert _post(act + "record")[0] == 400  # a room has no record button
        status, reply = _post(act + "open-session")
        assert status == 409 and "no case system" in json.loads(reply)["error"]
        # The old name still answers, for one release, with a note.
        with caplog.at_level(logging.WARNING, logger="simulator.web"):
            status, reply = _post(act + "case-open")
        assert status == 409 and "open-session" in json.loads(reply)["deprecated"]
        assert "case-open is now open-session" in caplog.text  # and in the server's log
        assert _post(act + "camera-fault")[0] == 400  # which camera?
        assert _post(act + "camera-fault?camera=nope")[0] == 400
        assert _post(act + "door-close")[0] == 200
        _wait(lambda: room.view()["room"]["panel_state"] == "confirm")
        assert _post(act + "key-start")[0] == 200
        _wait(lambda: room.view()["room"]["lamp"] and room.view()["session"] is not None)
        assert _post(act + "camera-fault?camera=subject")[0] == 200
        _wait(lambda: set(room.view()["interrupted"]) != set())
        view = room.view()
        assert [c["fault"] for c in view["room"]["cameras"]] == [True, False]
        assert view["room"]["panel_state"] == "recording"  # the room camera goes on
        assert _post(act + "camera-ok?camera=subject")[0] == 200
        assert _post(act + "key-stop")[0] == 200
        _wait(lambda: room.view()["session"] is None and not room.view()["room"]["lamp"])


def test_tester_controls(tmp_path: Path) -> None:
    """Every tester's button on a body recorder, from the API, as the chain records it:
    the officer's badge, a microphone fault, storage filled and freed, a clock jump, the
    battery, a power cut and a flat battery with the session resumed after each (no sync:
    no network)."""
    config = small_config(prebuffer_seconds=0).model_copy(update={"session": Session()})
    with (
        Fleet(tmp_path / "fleet", 1, config, sync=False) as fleet,
        PanelServer(fleet) as server,
    ):
        (live,) = fleet.devices
        act = server.url + f"api/devices/{live.id}/"
        assert live.view()["badges"] == ["340201"]  # no badge configured: one each
        assert _post(act + "record")[0] == 200
        _wait(lambda: live.view()["state"] == "recording")
        session = live.view()["session"]

        def gaps() -> list[str]:
            return list(live.view()["interrupted"])

        for fault, ok, cause in [
            ("microphone-fault", "microphone-ok", "microphone"),
            ("storage-fill", "storage-free", "storage_full"),
        ]:
            assert _post(act + fault)[0] == 200
            _wait(lambda c=cause: c in gaps())  # type: ignore[misc]
            assert _post(act + ok)[0] == 200
            _wait(lambda c=cause: c not in gaps())  # type: ignore[misc]
        assert live.view()["microphone_fault"] is False
        _wait(lambda: live.view()["storage"]["filled"] is False)

        wall = live.view()["clock"]["wall"]
        assert _post(act + "clock-jump?seconds=3600")[0] == 200
        _wait(lambda: live.view()["clock"]["wall"] > wall + 3000)
        assert _post(act + "battery?percent=50")[0] == 200
        _wait(lambda: abs(live.view()["battery"]["percent"] - 50) < 1)
        assert _post(act + "battery?external=true")[0] == 200
        _wait(lambda: live.view()["battery"]["external"] is True)
        for bad in ("battery?percent=150", "battery", "clock-jump?seconds=soon"):
            status, reply = _post(act + bad)
            assert status == 400 and json.loads(reply)["error"], bad
        status, reply = _post(act + "network-down")
        assert status == 409 and "does not sync" in json.loads(reply)["error"]

        assert _post(act + "power-cut")[0] == 200
        view = live.view()
        assert view["state"] == "off" and view["power_cut"] and not view["led"]["pin"]
        assert view["events"][0]["kind"] != "shutdown"  # nothing was closed ...
        assert view["session"] == session  # ... the session is open on the disk
        for refused in ("power-cut", "record", "microphone-fault"):
            assert _post(act + refused)[0] == 409, refused
        assert _post(act + "power-on")[0] == 200
        _wait(lambda: live.view()["state"] == "recording")
        assert live.view()["session"] == session  # the same session, resumed
        assert _post(act + "power-on")[0] == 409
        # A flat battery: the device seals and shuts down; power on boots it again.
        assert _post(act + "battery?percent=2&external=false")[0] == 200
        _wait(lambda: live.view()["state"] == "off")
        assert live.view()["power_cut"] is False
        assert _post(act + "power-on")[0] == 200
        _wait(lambda: live.view()["state"] == "recording")
        assert live.view()["session"] == session
        assert _post(act + "record")[0] == 200
        assert _post(act + "record")[0] == 200  # press and confirm: closed
        _wait(lambda: live.view()["session"] is None)
    entries = [e for _, e in load_chain(live.root) if isinstance(e, Entry)]
    (opened,) = [e for e in entries if e.kind == "session_open"]
    assert opened.body["badges"] == ["340201"]
    causes = [e.body["cause"] for e in entries if e.kind == "interruption"]
    assert causes == ["microphone", "storage_full", "clock_jump", "power_loss", "battery"]
    kinds = [e.kind for e in entries]
    assert kinds.count("session_close") == 1 and kinds.count("boot") == 3
    shutdowns = [e.body["reason"] for e in entries if e.kind == "shutdown"]
    assert shutdowns == ["battery", "stop"]  # none at the cut
    assert kinds[-1] == "shutdown"


def _wait(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_button_commands() -> None:
    """Each tester's button is a control channel command; its figures come from the query
    (text) or a JSON body, and a wrong one is refused with the command's reason."""
    assert button_command("microphone-fault", {}) == MicrophoneCmd(cmd="microphone", ok=False)
    assert button_command("storage-fill", {}) == StorageCmd(cmd="storage", free_bytes=0)
    assert button_command("storage-free", {}).free_bytes is None  # type: ignore[union-attr]
    assert button_command("clock-jump", {"seconds": "-3600"}) == ClockJump(
        cmd="clock_jump", seconds=-3600
    )
    assert button_command("battery", {"percent": "20", "external": "false", "x": "1"}) == (
        BatteryCmd(cmd="battery", percent=20, external=False)
    )
    assert button_command("network-up", {}) == NetworkCmd(cmd="network", up=True)
    with pytest.raises(ActionError, match="percent"):
        button_command("battery", {"percent": "150"})
    with pytest.raises(ActionError, match="give percent"):
        button_command("battery", {})
    with pytest.raises(KeyError):
        button_command("jump", {})


def test_the_page_names_only_actions_the_api_has() -> None:
    """A button whose action the server does not know would do nothing but log a 400."""
    page = (STATIC / "index.html").read_text() + (STATIC / "app.js").read_text()
    named = set(re.findall(r'data-action="([a-z-]+)"', page))
    named |= set(re.findall(r'\["([a-z]+-[a-z-]+)"', page))  # the toggles' actions
    body = set(TESTER_COMMANDS) | {"record", "marker", "power-cut", "power-on"}
    room = {"door-close", "door-open", "key-start", "key-stop", "open-session"}
    room |= {"close-session", "explain", "camera-fault", "camera-ok"}
    assert {"microphone-fault", "storage-free", "network-down", "power-on"} <= named
    assert named <= body | room, named - body - room


def test_summaries() -> None:
    assert summarize(SessionClose(3, {})) == "3 segments"
    assert summarize(Marker("credential_shown", "", {})) == "credential_shown"
    assert summarize(Interruption("g1", "camera", ["video"], AT)) == "camera"
    case = CaseCommand("C-1", None, "n1", 1.0, "agency")
    opened = SessionOpen("interview", ["340102"], 0.0, ["main"], True, "101", "door", case)
    assert summarize(opened) == "by door, interview (340102), case C-1"
    assert summarize(SessionClose(6, {"main": 6}, "key")) == "6 segments, by key"
    assert summarize(Event.case_named(case)) == "case C-1"
    assert summarize(Event("gnss_lost")) == "gnss_lost"
    room = Assignment("assign", [], None, None, "101", "n2", 1.0, "agency", 2.0)
    assert summarize(room) == "room 101"


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("session_close", {"segments": "3"}),
        ("marker", {"note": "no type"}),
        ("interruption", {"cause": "camera", "detail": ""}),
        ("event", {"type": "case", "case": "C-1"}),
        ("assignment", {"badges": [], "room": "101"}),
        ("segment", {"index": 1, "end": "later"}),
    ],
)
def test_an_entry_that_does_not_read_is_summed_up_as_such(kind: str, body: dict[str, Any]) -> None:
    entry = Sealer(nacl.signing.SigningKey.generate(), "bwc-1", None).seal(kind, body, AT)
    line = summary_of(entry)
    assert line.startswith("unreadable: entry 1: ") and kind.split("_")[0] in line
