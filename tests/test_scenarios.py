"""Scenarios: the file format and its errors, the expectations as pure decisions, the
control channel into a recording device, and shipped scenarios run end to end through
``unbroken sim run`` (a failing expectation makes the exit code non-zero).

The other shipped scenarios (device dying, remote duty, twenty devices, power cuts) run
with ``make scenarios``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.recording_settings import Recording
from common.settings import DeviceConfig
from evidence.session_bodies import Marker
from simulator.control import SimParts, settle_frames
from simulator.control_channel import ControlChannel, ControlClient
from simulator.control_commands import ControlError, StorageCmd, parse_command
from simulator.device import SimDevice, shipped_route, sim_factory
from simulator.scenario_checks import check
from simulator.scenario_drivers import InProcessDevice, stamp, stamped
from simulator.scenario_facts import (
    CutFact,
    DeviceFacts,
    GapFact,
    MarkerFact,
    RunFacts,
    Sample,
    SegmentFact,
    SessionFact,
    scenario_time,
)
from simulator.scenario_model import Scenario, ScenarioError, load_scenario, needs_real_time
from unbroken.cli import main

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"  # how the logs write the time
SHIPPED = Path(__file__).resolve().parent.parent / "simulator" / "scenarios"
NAMED = (  # the six the regulation asks for, and power cuts
    "routine-stop",
    "device-fault-voice",
    "device-dies-statement",
    "remote-duty-docking",
    "interview-room-camera-failure",
    "fleet-20-sync",
    "power-cuts",
)

MINIMAL = """
name = "t"
duration = 10
[[devices]]
id = "bwc-1"
[[expect]]
check = "chain_verifies"
"""


def _load(tmp_path: Path, text: str) -> Scenario:
    path = tmp_path / "s.toml"
    path.write_text(text, encoding="utf-8")
    return load_scenario(path)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ScenarioError) as e:
        _load(tmp_path, text)
    return str(e.value)


# -- the file format ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMED)
def test_every_shipped_scenario_loads(name: str) -> None:
    s = load_scenario(SHIPPED / f"{name}.toml")
    assert s.name == name and s.expect


def test_shipped_fleet_is_twenty_devices() -> None:
    fleet = load_scenario(SHIPPED / "fleet-20-sync.toml").fleet()
    assert [d.id for d in fleet][:2] == ["bwc-fleet-01", "bwc-fleet-02"] and len(fleet) == 20


def test_scenario_errors_name_what_is_wrong(tmp_path: Path) -> None:
    assert "not valid TOML" in _error(tmp_path, "name = ")
    msg = _error(tmp_path, MINIMAL + "\n[[timeline]]\nat = 1\ndo = 'jump'\n")
    assert "timeline[0] (jump at 1 s): unknown step 'jump'; one of: press, hold" in msg
    msg = _error(tmp_path, MINIMAL + "\n[[timeline]]\nat = -1\ndo = 'press'\n")
    assert "timeline[0].at" in msg and "greater than or equal to 0" in msg
    msg = _error(tmp_path, MINIMAL + "\n[[timeline]]\nat = 11\ndo = 'press'\n")
    assert "after the end" in msg
    msg = _error(tmp_path, MINIMAL + "\n[[timeline]]\nat = 1\ndo = 'press'\ndevice = 'bwc-9'\n")
    assert "matches no device" in msg
    msg = _error(tmp_path, MINIMAL + "\n[[timeline]]\nat = 1\ndo = 'camera'\ntrack = 'subject'\n")
    assert "has no camera 'subject'" in msg
    msg = _error(tmp_path, MINIMAL + "\n[[timeline]]\nat = 1\ndo = 'door'\nstate = 'closed'\n")
    assert "for room controllers" in msg
    msg = _error(
        tmp_path,
        MINIMAL + "\n[[timeline]]\nat = 1\ndo = 'statement'\nreason = 'x'\nofficers = ['1']\n",
    )
    assert "not in [[officers]]" in msg
    msg = _error(tmp_path, MINIMAL + "\n[[expect]]\ncheck = 'chain_verifes'\n")
    assert "expect[1]" in msg and "'chain_verifies'" in msg
    msg = _error(tmp_path, MINIMAL + "\nfoo = 1\n")
    assert "foo" in msg and "Extra inputs are not permitted" in msg
    msg = _error(tmp_path, MINIMAL.replace('id = "bwc-1"', 'id = "bwc"\ncount = 3'))
    assert "{n}" in msg
    msg = _error(
        tmp_path,
        MINIMAL.replace('id = "bwc-1"', 'id = "bwc-1"\nsettings = {recording = {fps = 0}}'),
    )
    assert "recording.fps" in msg
    msg = _error(tmp_path, MINIMAL.replace('id = "bwc-1"', 'id = "r"\nkind = "room"'))
    assert "needs room" in msg
    assert "expect" in _error(tmp_path, 'name = "t"\nduration = 1\n[[devices]]\nid = "a"\n')


def test_fast_mode_is_refused_with_reasons(tmp_path: Path) -> None:
    s = _load(
        tmp_path,
        MINIMAL
        + "\n[[timeline]]\nat = 1\ndo = 'power_cut'\n[[expect]]\ncheck = 'uploaded_within_24h'\n",
    )
    why = needs_real_time(s)
    assert any("power_cut" in w for w in why) and any("uploaded_within_24h" in w for w in why)
    assert needs_real_time(load_scenario(SHIPPED / "device-fault-voice.toml")) == []


def test_a_step_is_the_control_command_a_tester_would_send(tmp_path: Path) -> None:
    s = _load(tmp_path, MINIMAL + "\n[[timeline]]\nat = 1\ndo = 'storage'\n")
    assert s.timeline[0].command == StorageCmd(cmd="storage", free_bytes=None)
    assert s.timeline[0].text() == "storage: space freed"
    step = "\n[[timeline]]\nat = 2\ndo = 'marker'\ntype = 'credential_shown'\nnote = 'x'\n"
    s = _load(tmp_path, MINIMAL + step)
    sent = s.timeline[0].command.model_dump(mode="json")
    assert parse_command(sent) == s.timeline[0].command  # what the device is sent, it takes
    assert sent == {"cmd": "marker", "type": "credential_shown", "note": "x"}


def test_a_step_the_device_would_refuse_is_refused_when_the_scenario_loads(
    tmp_path: Path,
) -> None:
    long_note = "x" * 300
    msg = _error(
        tmp_path, MINIMAL + f"\n[[timeline]]\nat = 4\ndo = 'marker'\nnote = '{long_note}'\n"
    )
    assert (
        f"timeline[0].note (marker at 4 s): String should have at most {Marker.NOTE_CHARS} "
        "characters"
    ) in msg, msg
    # the device itself refuses such a note too, from the same owner
    with pytest.raises(ValueError, match="more than 200"):
        Marker.new("credential_shown", long_note, {})
    room = MINIMAL.replace('id = "bwc-1"', 'id = "r-1"\nkind = "room"\nroom = "101"')
    msg = _error(tmp_path, room + "\n[[timeline]]\nat = 1\ndo = 'press'\n")
    assert "timeline[0] (press at 1 s): r-1 is a room controller: it has no buttons" in msg
    case = f"\n[[timeline]]\nat = 1\ndo = 'case_open'\ncase = 'A-1'\nperson = '{long_note}'\n"
    assert "timeline[0].person (case_open at 1 s): String should have at most 100" in _error(
        tmp_path, room + case
    )
    msg = _error(tmp_path, MINIMAL + "\n[[timeline]]\nat = 1\ndo = 'battery'\n")
    assert "timeline[0] (battery at 1 s): give percent, drain_per_hour or external" in msg
    msg = _error(tmp_path, MINIMAL + "\n[[timeline]]\nat = 1\ndo = 'walk'\nroute = 'no.nmea'\n")
    assert "timeline[0] (walk at 1 s): route " in msg and "no.nmea: no such file" in msg


# -- time ------------------------------------------------------------------------------------------


def test_scenario_time_follows_offsets_and_jumps() -> None:
    wall0 = 1_000_000.0
    assert scenario_time(wall0 + 5, [], wall0) == 5
    day = -22 * 3600.0
    # booted 22 h behind, then at 16 s booted again with the right time
    offsets = [(0.0, day), (16.0, 0.0)]
    assert scenario_time(wall0 + day + 3, offsets, wall0) == pytest.approx(3)
    assert scenario_time(wall0 + 20, offsets, wall0) == pytest.approx(20)
    assert scenario_time(wall0 + day - 1, offsets, wall0) == pytest.approx(-1)  # pre-boot
    # a forward jump of an hour at 14 s: readings inside the jumped-over hour go to 14 s
    jump = [(0.0, 0.0), (14.0, 3600.0)]
    assert scenario_time(wall0 + 3600 + 15, jump, wall0) == pytest.approx(15)
    assert scenario_time(wall0 + 100, jump, wall0) == pytest.approx(14)


# -- expectations (pure) -------------------------------------------------------------------------


def _facts(**devices: DeviceFacts) -> RunFacts:
    f = RunFacts("t", "fast", 30, 31, 0.0)
    f.devices = dict(devices)
    return f


def _seg(i: int, stored_after: float | None = 1.0, track: str = "main") -> SegmentFact:
    end_wall = 100.0 + 2 * i
    return SegmentFact(
        "s1",
        track,
        i,
        2.0 * i,
        2.0 * i + 2,
        end_wall,
        2.0 * i + 2,
        stored_at=None if stored_after is None else end_wall + stored_after,
    )


def _gap(cause: str = "camera", explanation: str | None = "voice") -> GapFact:
    return GapFact("g", "s1", cause, 5.0, 7.0, 2.0, explanation=explanation)


def _dev(**kw: object) -> DeviceFacts:
    d = DeviceFacts("bwc-1", "body", ["main"])
    d.sessions = [SessionFact("s1", 1.0, 20.0, tracks={"main": 3})]
    d.segments = [_seg(i) for i in range(3)]
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def _check(text: str, facts: RunFacts) -> tuple[bool, str]:
    s = load_scenario_text(text)
    o = check(s.expect[-1], facts)
    return o.ok, o.detail


def load_scenario_text(expect: str) -> Scenario:
    import tomllib

    data = tomllib.loads(MINIMAL + "\n" + expect)
    return Scenario.model_validate(data)


def test_chain_verifies_and_strict() -> None:
    text = "[[expect]]\ncheck = 'chain_verifies'"
    assert _check(text, _facts(a=_dev()))[0]
    unexplained = _dev(gaps=[_gap(explanation=None)])
    assert _check(text, _facts(a=unexplained))[0]
    ok, why = _check(text + "\nstrict = true", _facts(a=unexplained))
    assert not ok and "camera at 5.0 s (2.0 s): UNEXPLAINED" in why
    at_the_store = _dev(gaps=[GapFact("g", "s1", "battery", 5, 9, 4, explanation="written")])
    assert _check(text + "\nstrict = true", _facts(a=at_the_store))[0]
    broken = {"code": "hash_mismatch", "where": "segments/s1/000001.mp4", "message": "x"}
    ok, why = _check(text, _facts(a=_dev(problems=[broken])))
    assert not ok and "hash_mismatch" in why


def test_gap_explained() -> None:
    text = "[[expect]]\ncheck = 'gap_explained'\nhow = 'voice'\ncause = 'camera'"
    assert _check(text, _facts(a=_dev(gaps=[_gap()])))[0]
    ok, why = _check(text, _facts(a=_dev(gaps=[_gap(explanation=None)])))
    assert not ok and "UNEXPLAINED" in why
    ok, why = _check(text, _facts(a=_dev(gaps=[_gap(explanation="written")])))
    assert not ok and "written" in why
    ok, why = _check(text, _facts(a=_dev()))
    assert not ok and "at least 1 camera gap" in why, "a gap expected must have happened"
    assert _check(
        text.replace("'voice'", "'any'"), _facts(a=_dev(gaps=[_gap("camera", "written")]))
    )[0]
    at_the_store = GapFact(
        "g", "s1", "battery", 5, None, None, explanation="written", where="store"
    )
    ok, why = _check(
        "[[expect]]\ncheck = 'gap_explained'\nhow = 'written'", _facts(a=_dev(gaps=[at_the_store]))
    )
    assert ok and "at the agency" in why


def test_uploaded_within_24h() -> None:
    text = "[[expect]]\ncheck = 'uploaded_within_24h'"
    assert _check(text, _facts(a=_dev()))[0]
    ok, why = _check(text, _facts(a=_dev(segments=[_seg(0), _seg(1, None)])))
    assert not ok and "1 of 2 segments without a receipt" in why
    ok, why = _check(text, _facts(a=_dev(segments=[_seg(0, 25 * 3600.0)])))
    assert not ok and "25.0 h after recording" in why
    ok, why = _check(text, _facts(a=_dev(segments=[_seg(0, 22 * 3600.0)])))
    assert ok and "22.0 h" in why
    assert not _check(text, _facts(a=_dev(segments=[])))[0], "nothing recorded is no pass"


def test_footage_lost() -> None:
    text = "[[expect]]\ncheck = 'footage_lost_max_seconds'\nseconds = 1.0"
    cut = CutFact(6.5, 106.5, "s1", 0.6)
    assert _check(text, _facts(a=_dev(cuts=[cut])))[0]
    ok, why = _check(text, _facts(a=_dev(cuts=[CutFact(6.5, 106.5, "s1", 1.6)])))
    assert not ok and "lost 1.60 s" in why
    ok, why = _check(text, _facts(a=_dev(cuts=[CutFact(6.5, 106.5, None)])))
    assert not ok and "nothing to judge" in why
    ok, why = _check(
        text, _facts(a=_dev(cuts=[cut], cut_problems=["session s1: 1 power cut(s) but 0 gap"]))
    )
    assert not ok and "power cut" in why


def test_all_tracks_present() -> None:
    text = "[[expect]]\ncheck = 'all_tracks_present'"
    room = DeviceFacts("room-1", "room", ["subject", "room", "pip"])
    room.sessions = [SessionFact("s1", 1, 9, tracks={"subject": 4, "room": 4, "pip": 4})]
    assert _check(text, _facts(a=room))[0]
    room.sessions = [SessionFact("s1", 1, 9, tracks={"subject": 4, "room": 4})]
    ok, why = _check(text, _facts(a=room))
    assert not ok and "no segment on pip" in why
    room.sessions = [SessionFact("s1", 1, 9, tracks={"subject": 3, "room": 4, "pip": 4})]
    ok, why = _check(text, _facts(a=room))
    assert not ok and "tracks differ" in why


def test_silent_continuous_sessions_deadline_markers() -> None:
    silent = {"code": "silent_gap", "where": "session s1", "message": "no recording from"}
    ok, why = _check("[[expect]]\ncheck = 'no_silent_gap'", _facts(a=_dev(problems=[silent])))
    assert not ok and "no recording" in why
    assert _check("[[expect]]\ncheck = 'no_silent_gap'", _facts(a=_dev(gaps=[_gap()])))[0]
    assert not _check("[[expect]]\ncheck = 'no_silent_gap'", _facts(a=_dev(sessions=[])))[0]
    assert not _check("[[expect]]\ncheck = 'continuous'", _facts(a=_dev(gaps=[_gap()])))[0]
    assert _check("[[expect]]\ncheck = 'continuous'", _facts(a=_dev()))[0]
    assert _check("[[expect]]\ncheck = 'sessions'\ncount = 1", _facts(a=_dev()))[0]
    still_open = _dev(sessions=[SessionFact("s1", 1.0, None)])
    ok, why = _check("[[expect]]\ncheck = 'sessions'\ncount = 1", _facts(a=still_open))
    assert not ok and "never closed" in why
    assert not _check("[[expect]]\ncheck = 'sessions'\ncount = 2", _facts(a=_dev()))[0]
    seen = _dev(
        samples=[Sample(1, "buffering", deadline="ok"), Sample(2, "buffering", deadline="urgent")]
    )
    text = "[[expect]]\ncheck = 'deadline_seen'\nlevel = 'urgent'"
    assert _check(text, _facts(a=seen))[0]
    ok, why = _check(text.replace("urgent", "overdue"), _facts(a=seen))
    assert not ok and "only 'urgent'" in why
    text = "[[expect]]\ncheck = 'markers'\ntype = 'credential_shown'"
    assert not _check(text, _facts(a=_dev()))[0]
    marked = _dev(markers=[MarkerFact(3, "credential_shown", "", "s1")])
    assert _check(text, _facts(a=marked))[0]


def test_expectations_match_devices_by_pattern() -> None:
    good, bad = _dev(), _dev(gaps=[_gap()])
    bad.id = "bwc-2"
    facts = _facts(**{"bwc-1": good, "bwc-2": bad})
    s = load_scenario_text("[[expect]]\ncheck = 'continuous'\ndevices = 'bwc-1'")
    assert check(s.expect[-1], facts).ok
    s = load_scenario_text("[[expect]]\ncheck = 'continuous'")
    o = check(s.expect[-1], facts)
    assert not o.ok and "bwc-2" in o.detail


def test_report_draws_each_device(tmp_path: Path) -> None:
    import xml.dom.minidom

    from simulator.run_summary import format_text
    from simulator.timeline_picture import COLOURS
    from simulator.timeline_report import render_html

    scenario = load_scenario_text("[[expect]]\ncheck = 'continuous'")
    d = _dev(
        gaps=[
            _gap(explanation=None),
            GapFact("w", "s1", "battery", 8, None, None, [], [], "written"),
        ],
        samples=[Sample(0, "buffering", network=False), Sample(1, "recording", network=True)],
        markers=[MarkerFact(3, "credential_shown", "", "s1")],
        cuts=[CutFact(6.5, 106.5, "s1", 0.5)],
    )
    d.segments.append(_seg(3, None))
    facts = _facts(**{"bwc-1": d})
    outcomes = [check(scenario.expect[-1], facts)]
    page = render_html(scenario, facts, outcomes)
    svg = page[page.index("<svg") : page.index("</svg>") + 6]
    root = xml.dom.minidom.parseString(svg).documentElement
    assert root.getAttribute("width") == "1000" and root.getAttribute("data-device") == "bwc-1"
    fills = {r.getAttribute("fill") for r in root.getElementsByTagName("rect")}
    for colour in ("unexplained", "written", "segment", "recording", "offline", "session"):
        assert COLOURS[colour] in fills, colour
    assert "url(#hatch-segment)" in fills, "a segment without a receipt is hatched"
    text = format_text(scenario, facts, outcomes)
    assert (
        "FAIL  continuous" in text
        and "power cut at 6.5 s (in a session): footage lost 0.50" in text
    )


# -- the control channel ---------------------------------------------------------------------------


def test_control_commands_parse_with_clear_errors() -> None:
    assert parse_command(b'{"cmd": "camera", "track": "main", "ok": false}').cmd == "camera"
    for line, message in [
        (b"nonsense", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"x": 1}', 'no "cmd" field'),
        (b'{"cmd": "jump"}', "unknown command 'jump'"),
        (b'{"cmd": "battery"}', "give percent, drain_per_hour or external"),
        (b'{"cmd": "battery", "percent": 140}', "percent: Input should be less than"),
        (b'{"cmd": "press", "extra": 1}', "extra: Extra inputs are not permitted"),
        (b'{"cmd": "panel", "door": "ajar"}', "door"),
        (b'{"cmd": "storage", "free_bytes": -1}', "free_bytes: Input should be greater"),
        (b'{"cmd": "marker", "note": "%s"}' % (b"x" * 201), "note: String should have at most 200"),
    ]:
        with pytest.raises(ControlError, match=message):
            parse_command(line)


@pytest.fixture
def stepping(tmp_path: Path) -> Iterator[tuple[SimDevice, SimParts]]:
    """A simulated body recorder stepping in real time on a thread, with controllable
    hardware under it."""
    config = DeviceConfig(recording=Recording(width=320, height=180, fps=10, prebuffer_seconds=0))
    dev = SimDevice(tmp_path / "d", config, realtime=True, factory=sim_factory(0))
    parts = SimParts(dev.recorder, dev.hardware, dev.clock)
    dev.start()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            dev.run(0.1)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield dev, parts
    stop.set()
    t.join(timeout=10)
    dev.stop()


@pytest.mark.slow
def test_control_channel_drives_a_recording_device(
    stepping: tuple[SimDevice, SimParts], tmp_path: Path
) -> None:
    import tempfile

    dev, parts = stepping
    sock = Path(tempfile.mkdtemp(prefix="ubt-", dir="/tmp")) / "c.sock"
    channel = ControlChannel(sock, parts).start()
    try:
        with ControlClient(sock) as c:
            r = c.send({"cmd": "press"})
            assert r["ok"] and r["status"]["state"] == "recording", r
            sid = r["status"]["session"]
            r = c.send({"cmd": "marker", "type": "credential_shown", "note": "showed it"})
            assert r["ok"] and r["seq"] > 0
            # malformed or refused: an error reply, and recording goes on
            assert "not JSON" in c.send_raw(b"{oops\n")["error"]
            assert "unknown command" in c.send({"cmd": "explode"})["error"]
            r = c.send({"cmd": "camera", "track": "subject", "ok": False})
            assert not r["ok"] and "no camera 'subject'" in r["error"]
            r = c.send({"cmd": "network", "up": False})
            assert not r["ok"] and "does not sync" in r["error"]
            r = c.send({"cmd": "panel", "door": "closed"})
            assert not r["ok"] and "serves no room" in r["error"]
            # the reply tells the state once the device noticed: the gap is open
            r = c.send({"cmd": "camera", "ok": False})
            assert r["ok"] and r["status"]["interrupted"] == ["camera"], r
            assert r["status"]["sim"]["cameras_failed"] == ["main"]
            r = c.send({"cmd": "camera", "ok": True})
            assert r["ok"] and r["status"]["interrupted"] == [], r
            r = c.send({"cmd": "storage", "free_bytes": 1000})  # noticed within a second
            assert r["ok"] and r["status"]["interrupted"] == ["storage_full"], r
            r = c.send({"cmd": "storage", "free_bytes": None})
            assert r["ok"] and r["status"]["interrupted"] == [], r
            assert c.send({"cmd": "battery", "percent": 50, "drain_per_hour": 10})["ok"]
            r = c.send({"cmd": "status"})
            assert 49 < r["status"]["sim"]["battery"] <= 50 and "sync" in r
            assert c.send({"cmd": "gps", "ok": False})["ok"]
            assert c.send({"cmd": "status"})["status"]["sim"]["gps_fix"] is False
            assert c.send({"cmd": "gps", "ok": True})["ok"]
            r = c.send({"cmd": "walk", "route": str(shipped_route())})
            assert r["ok"], r
            r = c.send({"cmd": "walk", "route": "/nonexistent.nmea"})
            assert not r["ok"] and "no such file" in r["error"]
            r = c.send({"cmd": "open"})
            assert not r["ok"] and "already open" in r["error"]
            r = c.send({"cmd": "close"})
            assert r["ok"] and r["status"]["session"] is None, r
            r = c.send({"cmd": "marker", "type": "credential_shown"})
            assert not r["ok"] and "no session is open" in r["error"]
    finally:
        channel.close()
    assert not sock.exists()
    from common.archive.device_directory import DeviceDirectory, read_public_key
    from common.archive.verify import verify_archive

    report = verify_archive(
        DeviceDirectory(dev.recorder.root), read_public_key(dev.recorder.root / "device.pub")
    )
    assert report.ok, report.problems
    (s,) = report.sessions
    assert s.id == sid and [g["cause"] for g in s.gaps] == ["camera", "storage_full"]


def test_a_process_log_line_gets_a_time_unless_it_has_one() -> None:
    assert re.fullmatch(rf"{STAMP} recording: idle\n", stamped(b"recording: idle\n").decode())
    line = b"2026-12-05T04:53:48Z WARNING agent.recorder: camera fault\n"
    assert stamped(line) == line
    assert stamp(0) == "1970-01-01T00:00:00Z"


def test_settling_waits_for_what_the_device_notices() -> None:
    fps = 25
    assert settle_frames(parse_command({"cmd": "press"}), fps) == 0
    assert settle_frames(parse_command({"cmd": "marker", "type": "credential_shown"}), fps) == 0
    for cmd in ({"cmd": "camera", "ok": False}, {"cmd": "gps", "ok": True}):
        assert settle_frames(parse_command(cmd), fps) == 1  # the next frame captures it
    for cmd in ({"cmd": "storage", "free_bytes": 0}, {"cmd": "battery", "percent": 3}):
        assert settle_frames(parse_command(cmd), fps) == fps + 1  # checked once a second


def test_a_reply_is_final_once_the_device_noticed_the_fault(tmp_path: Path) -> None:
    """On simulated time (as ``sim run --fast``): the reply to a camera or disk fault
    tells the device's state after the frames in which it noticed, not before."""
    config = DeviceConfig(recording=Recording(width=320, height=180, fps=10, prebuffer_seconds=1))
    drv = InProcessDevice("bwc-t", tmp_path / "d", config, wall0=1_796_000_000.0)
    drv.boot(0.0, None, None)
    try:
        drv.advance_to(1.0)
        press = drv.command({"cmd": "press"})["pending"]
        drv.advance_to(1.1)
        assert press.settled and press.reply["status"]["state"] == "recording"
        camera = drv.command({"cmd": "camera", "ok": False})["pending"]
        drv.advance_to(1.1 + 1 / 10)  # carried out before this frame captured it
        assert camera.done.is_set() and not camera.settled
        assert camera.reply["status"]["interrupted"] == []  # what the old reply told
        drv.advance_to(1.3)
        assert camera.settled and camera.reply["status"]["interrupted"] == ["camera"]
        back = drv.command({"cmd": "camera", "ok": True})["pending"]
        drv.advance_to(1.5)
        assert back.settled and back.reply["status"]["interrupted"] == []
        full = drv.command({"cmd": "storage", "free_bytes": 1000})["pending"]
        drv.advance_to(2.0)
        assert not full.settled  # the disk is checked once a second of frames
        drv.advance_to(2.7)
        assert full.settled and full.reply["status"]["interrupted"] == ["storage_full"]
        late = drv.command({"cmd": "storage", "free_bytes": None})["pending"]
        drv.advance_to(2.8)
        drv.power_off()  # off before it could notice: the reply stands as carried out
        assert late.settled and late.reply["ok"]
    finally:
        drv.close()


def test_control_socket_path_must_fit(tmp_path: Path, stepping: tuple[SimDevice, SimParts]) -> None:
    _, parts = stepping
    with pytest.raises(ControlError, match="longer than"):
        ControlChannel(tmp_path / ("x" * 120) / "c.sock", parts)
    code = main(["agent", "run", "--data", str(tmp_path / "d2"), "--offline"])
    assert code == 2


# -- end to end ------------------------------------------------------------------------------


def _run(
    scenario: Path, report: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    code = main(["sim", "run", str(scenario), "--report", str(report), *extra])
    return code, capsys.readouterr().out


def _svgs(report: Path) -> list[str]:
    page = (report / "report.html").read_text(encoding="utf-8")
    return [chunk.split('"', 1)[0] for chunk in page.split('data-device="')[1:]]


def test_device_fault_scenario_fast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "w"
    code, out = _run(
        SHIPPED / "device-fault-voice.toml",
        tmp_path / "r",
        capsys,
        "--fast",
        "--workdir",
        str(work),
    )
    assert code == 0, out
    assert "RESULT: PASS" in out and "camera at" in out
    # told as it happened, with the time and the scenario second, and the state after
    told = re.search(rf"^  {STAMP} \[    7\.0 s\] ok  bwc-hf-0002: camera ok=False .*$", out, re.M)
    assert told and "interrupted: camera" in told.group(0), out
    log = (work / "logs" / "runner.log").read_text(encoding="utf-8").splitlines()
    assert len(log) > 10 and all(re.match(rf"\s*{STAMP} ", line) for line in log), log
    assert told.group(0) in log
    assert _svgs(tmp_path / "r") == ["bwc-hf-0002"]
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    causes = [g["cause"] for g in doc["facts"]["devices"]["bwc-hf-0002"]["gaps"]]
    assert causes == ["camera", "clock_jump", "storage_full"]


@pytest.mark.slow
def test_routine_stop_in_real_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "w"
    code, out = _run(SHIPPED / "routine-stop.toml", tmp_path / "r", capsys, "--workdir", str(work))
    assert code == 0, out
    assert "PASS  uploaded_within_24h" in out
    for name in ("runner.log", "bwc-hf-0001.log"):  # every line with its time
        log = (work / "logs" / name).read_text(encoding="utf-8").splitlines()
        assert log and all(re.match(rf"\s*{STAMP} ", line) for line in log), (name, log)
    device_log = (work / "logs" / "bwc-hf-0001.log").read_text(encoding="utf-8")
    assert re.search(rf"^{STAMP} recording: ", device_log, re.M)  # what it printed, too
    assert _svgs(tmp_path / "r") == ["bwc-hf-0001"]
    assert "Device bwc-hf-0001" in (tmp_path / "r" / "store-report.txt").read_text()


@pytest.mark.slow
def test_interview_room_in_real_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(SHIPPED / "interview-room-camera-failure.toml", tmp_path / "r", capsys)
    assert code == 0, out
    assert "PASS  all_tracks_present" in out and "camera on subject,pip" in out
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert _svgs(tmp_path / "r") == ["room-hf-0101"] and "track pip" in page


def test_a_failing_expectation_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "broken.toml"
    scenario.write_text(
        """
name = "no-gap-happens"
duration = 6
[[devices]]
id = "bwc-1"
[[timeline]]
at = 1
do = "press"
[[timeline]]
at = 5
do = "close"
[[expect]]
check = "sessions"
count = 1
[[expect]]
check = "gap_explained"
how = "voice"
cause = "camera"
"""
    )
    code, out = _run(scenario, tmp_path / "r", capsys, "--fast", "--workdir", str(tmp_path / "w"))
    assert code == 1
    assert "PASS  sessions" in out
    assert "FAIL  gap_explained (*, voice, camera): expected at least 1 camera gap" in out
    assert "RESULT: FAIL: 1 of 2 expectations failed" in out
    assert "FAIL" in (tmp_path / "r" / "report.html").read_text()
    assert (tmp_path / "w" / "site").is_dir(), "a failed run keeps its evidence"


def test_fast_refuses_a_real_time_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sim", "run", str(SHIPPED / "power-cuts.toml"), "--fast"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot run --fast" in err and "power_cut" in err
