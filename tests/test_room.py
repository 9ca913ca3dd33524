"""Interview rooms (R3): several tracks, sessions opened by the case system, the panel's
key or the door plus the key; a camera failing mid-interview; the RECORDING lamp."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import nacl.signing
import numpy as np
import pytest

from agent import enrolment
from agent.config import device_config
from agent.room import (
    NO_ROOM,
    CloseRoomSession,
    OpenRoomSession,
    Prompt,
    Refused,
    RoomTriggers,
    compose_pip,
    panel_state,
    room_lacks,
)
from agent.run import make_uploader
from common.archive.device_directory import DeviceDirectory
from common.archive.verify import verify_archive
from common.commands import make_command
from common.recording_settings import Recording
from common.room_settings import PictureInPicture, Room
from common.settings import DeviceConfig
from device import yuv
from device.clock import SimClock
from evidence.receipt import check_receipt
from simulator.device import SimDevice
from simulator.site import LocalSite
from store.mailbox import Mailbox
from tests.fixtures.media import plain
from tests.fixtures.panel import BOARD, Panel, launch_firmware
from tests.fixtures.room import SMALL, entries


def room_config(**room: object) -> DeviceConfig:
    return DeviceConfig(recording=Recording(**SMALL), room=Room(**room))  # type: ignore[arg-type]


# -- the decisions, pure ------------------------------------------------------------------


def test_door_then_key_opens_and_key_closes() -> None:
    t = RoomTriggers(["door"], confirm_seconds=60)
    assert t.key(start=True, now=0) == [
        Refused("the key opens a session only after the door closes")
    ]
    assert t.door(closed=True, now=1) == [Prompt()]
    assert panel_state(False, t.awaiting, False) == "confirm"
    assert t.key(start=True, now=5) == [OpenRoomSession("door")]
    t.opened("door")
    assert t.key(start=False, now=900) == [CloseRoomSession("key")]


def test_confirmation_lapses_and_door_opening_withdraws_it() -> None:
    t = RoomTriggers(["door"], confirm_seconds=30)
    t.door(closed=True, now=0)
    t.tick(now=31)
    assert not t.awaiting
    assert t.key(start=True, now=32) != [OpenRoomSession("door")]
    t.door(closed=False, now=40)
    t.door(closed=True, now=41)
    t.door(closed=False, now=42)
    assert t.key(start=True, now=43) != [OpenRoomSession("door")]


def test_case_system_session_is_closed_by_the_case_system_only() -> None:
    t = RoomTriggers(["command", "key", "door"], confirm_seconds=60)
    assert t.command(open_=True) == [OpenRoomSession("command")]
    t.opened("command")
    assert t.key(start=False, now=10) == [
        Refused("the case system opened this session: it closes it")
    ]
    assert t.door(closed=True, now=11) == []  # already recording: nothing to confirm
    assert t.command(open_=False) == [CloseRoomSession("command")]
    t.closed()
    assert t.command(open_=False) == []


def test_triggers_not_configured_are_refused() -> None:
    t = RoomTriggers(["key"], confirm_seconds=60)
    assert isinstance(t.command(open_=True)[0], Refused)
    assert t.door(closed=True, now=0) == []
    assert t.key(start=True, now=1) == [OpenRoomSession("key")]


def test_panel_lamp_means_recording_only() -> None:
    assert panel_state(True, False, True) == "recording"  # one camera down: still recording
    assert panel_state(False, False, True) == "fault"
    assert panel_state(False, True, False) == "confirm"
    assert panel_state(False, False, False) == "idle"


def test_picture_in_picture_puts_the_close_up_in_its_corner() -> None:
    room = yuv.blank(320, 180)
    face = yuv.from_planes(
        np.full((180, 320), 200, np.uint8),
        np.full((90, 160), 90, np.uint8),
        np.full((90, 160), 170, np.uint8),
    )
    out = compose_pip(room, face, divisor=4, corner="bottom_right")
    assert out.shape == room.shape and np.array_equal(room, yuv.blank(320, 180))  # untouched
    y, u, v = yuv.planes(out)
    h, w = 44, 80  # 180/4 and 320/4, even
    assert (y[180 - h - 4 : 180 - 4, 320 - w - 4 : 320 - 4] == 200).all()
    assert (u[(180 - h - 4) // 2 : 88, (320 - w - 4) // 2 : 158] == 90).all()  # its colour too
    assert (v[(180 - h - 4) // 2 : 88, (320 - w - 4) // 2 : 158] == 170).all()
    assert (y[:90, :160] == yuv.BLACK_Y).all()  # the rest is the room view
    assert (y[180 - h - 6, 320 - w - 6 : 320 - 2] == yuv.WHITE_Y).all()  # the frame around it


def test_room_config_is_checked() -> None:
    with pytest.raises(ValueError, match="not among the cameras"):
        Room(cameras=["a", "b"], pip=PictureInPicture(main="a", inset="c"))
    with pytest.raises(ValueError, match="at least 2"):
        Room(cameras=["a"], pip=None)
    assert room_config().tracks == ["subject", "room", "pip"]


# -- a room on simulated hardware ---------------------------------------------------------


@pytest.fixture
def room(tmp_path: Path) -> Iterator[SimDevice]:
    dev = SimDevice(tmp_path / "room", room_config())
    dev.start()
    dev.run(1)
    yield dev
    dev.stop()


def test_door_and_key_record_every_track_and_the_lamp_follows(room: SimDevice) -> None:
    rec = room.recorder
    assert not room.lamp_lit() and rec.panel_state == "idle"
    rec.room_input("door", b"closed")
    room.run(0.5)
    assert rec.panel_state == "confirm" and not room.lamp_lit()
    rec.room_input("key", b"start")
    room.run(0.1)
    assert rec.session is not None and room.lamp_lit() and rec.panel_state == "recording"
    room.run(4)
    rec.room_input("key", b"stop")
    room.run(0.1)
    assert rec.session is None and not room.lamp_lit() and rec.panel_state == "idle"
    opened = entries(room.recorder.root, "session_open")[-1]
    assert opened.body["trigger"] == "door"
    assert opened.body["tracks"] == ["subject", "room", "pip"]
    closed = entries(room.recorder.root, "session_close")[-1]
    assert closed.body["trigger"] == "key"
    segs = entries(room.recorder.root, "segment")
    by_track = {t: [e for e in segs if e.body["track"] == t] for t in opened.body["tracks"]}
    assert {t: len(v) for t, v in by_track.items()} == {"subject": 3, "room": 3, "pip": 3}
    for a, b, c in zip(*by_track.values(), strict=True):  # cut at the same frames
        assert a.body["start"] == b.body["start"] == c.body["start"]
    for e in segs:  # every file decodes to the frames sealed, with the room's sound
        with av.open(plain(room.recorder.root / e.body["file"])) as f:
            frames = sum(1 for _ in f.decode(video=0))
        assert frames == e.body["media"]["video"]["frames"]
        assert e.body["media"]["audio"]
    assert verify_archive(DeviceDirectory(room.recorder.root), None).ok


def test_composite_track_shows_the_close_up_inset(room: SimDevice) -> None:
    rec = room.recorder
    rec.open_session()
    room.run(0.5)
    pip, subject, whole = (yuv.planes(rec.pictures[t])[0] for t in ("pip", "subject", "room"))
    h, w, m = 180 // 3 & ~1, 320 // 3 & ~1, 4
    small = subject[::3, ::3][:h, :w]  # the close-up, shrunk (rows under its watermark aside)
    inset = pip[180 - h - m : 180 - m, 320 - w - m : 320 - m].astype(int)
    below = rec.watermarks["subject"].strip_height // 3 + 1
    assert np.abs(inset[below:] - small[below:]).mean() < 1
    assert np.abs(pip[40:100, :100].astype(int) - whole[40:100, :100]).mean() < 1
    strip = rec.watermarks["pip"].strip_height
    assert (pip[:strip] == whole[:strip]).all()  # the same watermark on every track
    rec.close_session()


def test_a_camera_failing_mid_interview_interrupts_its_tracks_only(room: SimDevice) -> None:
    rec = room.recorder
    rec.room_input("key", b"start")
    room.run(2)
    room.cameras["subject"].fail()
    room.run(2)
    assert rec.session is not None and room.lamp_lit()  # the room still records
    room.cameras["subject"].fail(False)
    room.run(12)  # the spoken explanation after resuming (10 s)
    rec.room_input("key", b"stop")
    room.run(0.1)
    gap = entries(rec.root, "interruption")[-1]
    assert gap.body["cause"] == "camera" and gap.body["tracks"] == ["subject", "pip"]
    assert entries(rec.root, "explanation")[-1].body["interruption"] == gap.body["id"]
    report = verify_archive(DeviceDirectory(rec.root), None)
    assert report.ok, report.problems
    s = report.sessions[-1]
    assert [g["tracks"] for g in s.gaps] == [["subject", "pip"]]
    assert set(s.tracks) == {"subject", "room", "pip"}
    assert s.tracks["room"]["duration"] == pytest.approx(s.duration)


def test_a_deleted_segment_of_one_track_is_caught(room: SimDevice, tmp_path: Path) -> None:
    rec = room.recorder
    rec.open_session()
    room.run(5)
    rec.close_session()
    copy = tmp_path / "copy"
    room.stop()
    shutil.copytree(rec.root, copy)
    victim = next(e for e in entries(copy, "segment") if e.body["track"] == "room")
    (copy / victim.body["file"]).unlink()
    problems = {p.code for p in verify_archive(DeviceDirectory(copy), None).problems}
    assert "missing_segment" in problems


def test_silent_gap_on_one_track_is_named() -> None:
    from evidence.gaps import Gap, Span, silent_gaps

    spans = [Span(0, 2, 0, 2), Span(6, 8, 6, 8)]
    other_track = Gap("g", "s", "camera", 2, 6, ["video"], tracks=["subject"])
    assert silent_gaps(spans, [g for g in [other_track] if g.covers("room")], 0.5) == [(2, 6)]
    assert silent_gaps(spans, [g for g in [other_track] if g.covers("subject")], 0.5) == []


# -- over MQTT, with the case system and the store ----------------------------------------


class RoomSite:
    """A room controller provisioned for room 101, recording in real time with its real
    uploader, on a LocalSite with broker and store."""

    def __init__(self, site: LocalSite) -> None:
        self.site = site
        self.dev = site.start_device(
            "room-0101", settings={"recording": SMALL}, room="101", realtime=True
        )
        self.data = self.dev.recorder.root
        assert self.dev.uploader is not None
        self.uploader = self.dev.uploader

    def run_until(self, done: Callable[[], bool], timeout: float = 10) -> float:
        t0 = time.monotonic()
        while not done():
            assert time.monotonic() - t0 < timeout, "timed out"
            self.dev.run(0.1)
        return time.monotonic() - t0

    def command(self, name: str, data: bytes) -> None:
        self.site.send_command("room-0101", name, data)


@pytest.fixture
def room_site(tmp_path: Path) -> Iterator[RoomSite]:
    with LocalSite(tmp_path / "site") as site:
        site.start_broker()
        site.start_store()
        rs = RoomSite(site)
        yield rs
        rs.dev.stop()
        rs.uploader.stop()


@pytest.mark.slow
def test_case_system_opens_and_closes_and_everything_reaches_the_agency(
    room_site: RoomSite,
) -> None:
    rs, rec = room_site, room_site.dev.recorder
    rs.dev.run(1)
    opening = rs.site.session_command(
        "room-0101", "session_open", case="A-2026-17", badges=["012345", "054321"], person="张三"
    )
    rs.command("session_open", opening)
    rs.run_until(lambda: rec.session is not None)
    assert rs.dev.lamp_lit()
    rs.run_until(lambda: rs.uploader.panel_state == "recording")
    rs.dev.run(3)
    sid = rec.session.id if rec.session else None
    rs.command("session_open", opening)  # delivered again: answered, applied once
    rs.dev.run(0.5)
    assert rec.session is not None and rec.session.id == sid and rec.last_error is None
    closing = rs.site.session_command("room-0101", "session_close", case="A-2026-17")
    rs.command("session_close", closing)
    rs.run_until(lambda: rec.session is None)
    assert not rs.dev.lamp_lit()
    opened = entries(rs.data, "session_open")[-1]
    assert opened.body["case"] == "A-2026-17" and opened.body["person"] == "张三"
    assert opened.body["trigger"] == "command" and opened.body["room"] == "101"
    assert opened.body["badges"] == ["012345", "054321"]
    assert entries(rs.data, "session_close")[-1].body["trigger"] == "command"
    assert rs.uploader.wait_idle(30)
    segs = entries(rs.data, "segment")
    assert {e.body["track"] for e in segs} == {"subject", "room", "pip"}
    for e in segs:  # every track's every segment is at the agency, receipted
        receipt = DeviceDirectory(rs.data).stored_receipt(e.body["sha256"]) or b""
        check_receipt(
            receipt, rs.site.agency.verify_key, device="room-0101", sha256=e.body["sha256"]
        )
    assert verify_archive(DeviceDirectory(rs.data), None).ok


@pytest.mark.slow
def test_forged_and_foreign_session_commands_are_ignored(room_site: RoomSite) -> None:
    rs, rec = room_site, room_site.dev.recorder
    now = time.time()
    forger = nacl.signing.SigningKey.generate()
    forged, _ = make_command(forger, "room-0101", "session_open", {"case": "X-1"}, now, 600)
    rs.command("session_open", forged)
    rs.command("session_open", b"\xff not a command")
    for_other = rs.site.session_command("room-0101", "session_open", case="X-2")
    tampered = for_other.replace(b"X-2", b"X-3")
    rs.command("session_open", tampered)
    rs.run_until(lambda: "command refused" in str(rec.last_error))
    rs.dev.run(1)
    assert rec.session is None and not rs.dev.lamp_lit()
    assert not entries(rs.data, "session_open")


@pytest.mark.slow
def test_panel_key_over_mqtt_opens_the_room(room_site: RoomSite) -> None:
    """The panel's messages as the broker delivers them (the firmware itself is tested in
    test_panel.py); the ACL lets only panel-101 and the controller use room 101's topics."""
    rs, rec = room_site, room_site.dev.recorder
    panel = rs.site.panel_client("101")
    try:
        states: list[bytes] = []
        panel.on_message = lambda _c, _u, m: states.append(bytes(m.payload))
        panel.subscribe("unbroken/p/101/state", qos=1)
        rs.run_until(lambda: b"idle" in states)
        panel.publish("unbroken/p/101/door", b"closed", qos=1, retain=True)
        rs.run_until(lambda: rec.panel_state == "confirm")
        rs.run_until(lambda: states[-1:] == [b"confirm"])
        panel.publish("unbroken/p/101/key", b"start", qos=1)
        rs.run_until(lambda: rec.session is not None)
        rs.run_until(lambda: states[-1:] == [b"recording"])
        panel.publish("unbroken/p/101/key", b"sideways", qos=1)  # malformed: refused
        rs.run_until(lambda: "not a door or key state" in str(rec.last_error))
        assert rec.session is not None
        rs.dev.run(2)
        panel.publish("unbroken/p/101/key", b"stop", qos=1)
        rs.run_until(lambda: rec.session is None)
        rs.run_until(lambda: states[-1:] == [b"idle"])
    finally:
        panel.disconnect()
        panel.loop_stop()
    opened = entries(rs.data, "session_open")[-1]
    assert opened.body["trigger"] == "door"


@pytest.mark.slow
def test_the_panel_firmware_opens_the_room_and_lights_its_lamp(
    room_site: RoomSite, umqtt: Path, tmp_path: Path
) -> None:
    """The MicroPython firmware on the unix port (pins are files), against the real room
    controller: door closed, the status LED asks for confirmation, the key confirms, every
    track records and both lamps light; the key turned back closes and both go dark."""
    rs, rec = room_site, room_site.dev.recorder
    enrolled = rs.site.enroll_panel("101")
    panel = launch_firmware(enrolled, tmp_path / "panel", umqtt, board=BOARD)
    try:
        panel.set("door", 1)  # open
        panel.set("key", 1)  # stop
        rs.run_until(lambda: rec.room is not None and rec.room.door_closed is False, 20)
        assert panel.get("lamp") == 0
        panel.set("door", 0)  # the door closes
        rs.run_until(lambda: rec.panel_state == "confirm")
        rs.run_until(lambda: _blinking(panel, "led"))
        assert rec.session is None and panel.get("lamp") == 0
        panel.set("key", 0)  # the key confirms
        rs.run_until(lambda: rec.session is not None)
        rs.run_until(lambda: panel.get("lamp") == 1)
        assert rs.dev.lamp_lit()
        rs.dev.run(3)
        panel.set("key", 1)
        rs.run_until(lambda: rec.session is None)
        rs.run_until(lambda: panel.get("lamp") == 0)
        assert not rs.dev.lamp_lit()
    finally:
        panel.proc.kill()
        panel.proc.wait()
    opened = entries(rs.data, "session_open")[-1]
    assert opened.body["trigger"] == "door"
    assert {e.body["track"] for e in entries(rs.data, "segment")} == {"subject", "room", "pip"}
    assert verify_archive(DeviceDirectory(rs.data), None).ok


def _blinking(panel: Panel, pin: str) -> bool:
    return {0, 1} <= panel.levels(pin, 1.2)


@pytest.mark.slow
def test_case_system_from_the_command_line(
    room_site: RoomSite, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`provision open-session` signs, `store send` checks and delivers; a command for a
    body recorder is refused at the agency, a tampered file by `store send`."""
    from unbroken.cli import main

    rs, rec = room_site, room_site.dev.recorder
    agency, store = str(rs.site.agency.root), str(rs.site.store_config("1"))
    opening = tmp_path / "open.cmd"
    argv = ["provision", "open-session", "--agency", agency, "--device", "room-0101"]
    assert main([*argv, "--case", "C-9", "--badge", "340102", "--out", str(opening)]) == 0
    bad = tmp_path / "bad.cmd"
    bad.write_bytes(opening.read_bytes().replace(b"C-9", b"C-8"))
    assert main(["store", "send", "--config", store, str(bad)]) == 2
    assert "signature" in capsys.readouterr().err
    # the room here applies commands only while the test runs it: not during the wait
    assert main(["store", "send", "--config", store, str(opening), "--wait", "0"]) == 3
    assert capsys.readouterr().out.startswith("pending: ")
    rs.run_until(lambda: rec.session is not None)
    assert entries(rs.data, "session_open")[-1].body["case"] == "C-9"
    nonce = json.loads(opening.read_bytes())["payload"]["nonce"]
    box = Mailbox(rs.site.db())
    rs.run_until(lambda: getattr(box.get(nonce, time.time()), "state", None) == "applied")
    assert main(["store", "send", "--config", store, str(opening)]) == 0  # its answer, kept
    assert capsys.readouterr().out.startswith("applied: session_open on room-0101")
    rs.site.provision_device("bwc-0042")
    body = ["provision", "open-session", "--agency", agency, "--device", "bwc-0042"]
    assert main([*body, "--case", "C-10", "--out", str(tmp_path / "x.cmd")]) == 2
    assert "body recorder" in capsys.readouterr().err


def test_a_room_that_takes_no_commands_refuses_the_case_system(tmp_path: Path) -> None:
    """Triggers key and door only: a genuine session_open is refused and changes nothing
    (no session, the officers on the watermark stay as they were)."""
    with LocalSite(tmp_path / "site") as site:
        settings = {"recording": SMALL, "room": {"triggers": ["key", "door"]}}
        data = site.provision_device("room-0102", settings=settings, room="102")
        dev = SimDevice(data, device_config(data), clock=SimClock(wall_start=time.time()))
        dev.start()
        try:
            dev.run(0.5)
            before = list(dev.recorder.badges)
            cmd = site.session_command("room-0102", "session_open", case="D-1", badges=["1"])
            assert dev.recorder.apply_command(cmd) is None
            assert "not a trigger in this room" in str(dev.recorder.last_error)
            assert dev.recorder.session is None and dev.recorder.badges == before
            dev.recorder.room_input("key", b"start")  # the key still works
            dev.run(0.2)
            assert dev.recorder.session is not None
        finally:
            dev.stop()


# -- a room controller with no room yet -----------------------------------------------------


def test_a_room_controller_lacks_a_room_until_one_is_assigned() -> None:
    assert room_lacks(None) == NO_ROOM and "provision assign --room" in NO_ROOM
    assert room_lacks("101") is None


@pytest.mark.slow
def test_a_room_controller_with_no_room_runs_and_takes_a_room_assigned_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Enrolled and installed, not assigned: it connects, records on, says what it lacks
    and publishes no panel state; the assignment, when it comes over MQTT, gives it its
    room's panel at once."""
    caplog.set_level(logging.INFO)
    with LocalSite(tmp_path / "site") as site:
        site.start_broker()
        site.start_store()
        data = tmp_path / "room-0103"
        request, bundle = tmp_path / "room.req", tmp_path / "room.bundle"
        enrolment.keygen(data, request, time.time(), device_id="room-0103", serial="R3",
                         role="room_controller")  # fmt: skip
        site.agency.enroll(request.read_bytes(), bundle, time.time(), settings={"recording": SMALL})
        enrolment.install(data, bundle.read_bytes(), time.time())
        site.start_broker()  # the ACL now knows the controller
        config = device_config(data)
        dev = SimDevice(data, config, clock=SimClock(wall_start=time.time()), realtime=True)
        uploader = make_uploader(data, dev.recorder, config, dev.clock)
        assert uploader is not None
        dev.uploader = uploader
        dev.start()
        uploader.start()
        panel = site.panel_client("103")
        states: list[bytes] = []
        panel.on_message = lambda _c, _u, m: states.append(bytes(m.payload))
        panel.subscribe("unbroken/p/103/state", qos=1)
        try:
            assert uploader.connected.wait(10)
            dev.run(1.5)  # frames, panel updates: nothing for a room it does not have
            assert dev.recorder.room_id is None and uploader.link.lacks == NO_ROOM
            assert [r.getMessage() for r in caplog.records].count(NO_ROOM) == 1
            assert states == []

            command = tmp_path / "assign.cmd"
            site.agency.assign("room-0103", command, time.time(), room="103")
            site.start_broker()  # the controller may now use room 103's topics
            site.send_command("room-0103", "assign", command.read_bytes())
            t0 = time.monotonic()
            while b"idle" not in states:
                assert time.monotonic() - t0 < 20, "the panel never heard from its room"
                dev.run(0.1)
            assert dev.recorder.room_id == "103" and uploader.link.lacks is None
            panel.publish("unbroken/p/103/door", b"closed", qos=1)
            t0 = time.monotonic()
            while states[-1:] != [b"confirm"]:
                assert time.monotonic() - t0 < 10, "the door did not reach the controller"
                dev.run(0.1)
        finally:
            panel.disconnect()
            panel.loop_stop()
            dev.stop()
            uploader.stop()
