"""``unbroken demo --workdir DIR``: the main job, end to end, on one machine.

An agency is set up (keys, CA, registry), its own Mosquitto runs with the provisioned TLS
configuration on a free loopback port, a store worker subscribes, and a body recorder is
provisioned (keygen → enroll → install) and assigned to an officer by an agency-signed
command. The officer arrives (the device has been buffering), presses record, shows the
credential; the camera fails for a moment and the officer explains the gap on resuming;
the session is closed with press-and-confirm. Everything syncs as it is sealed. Then an
interview room: its controller is provisioned for room 101, the case system opens a
session by a signed command over MQTT, three tracks record (the person interviewed, the
room, and the picture-in-picture), the close-up camera fails for a moment, and the case
system closes the session. The demo exits 0 only when every recorded segment of both
devices has a receipt that verifies with the agency key and both verify offline; it shows
tampering being caught, and prints the store's report.

The demo deletes only what an earlier demo made: it writes :data:`MARKER` into a workdir
it creates (or finds empty) before anything else, and refuses a directory that holds
something without it (:func:`prepare_workdir`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from agent import assignment
from agent.journal.sync_ledger import SyncLedger
from agent.session import MarkerType
from agent.sync import backlog as sync_backlog
from common.archive.device_directory import DeviceDirectory, load_chain, read_public_key
from common.archive.verify import verify_archive
from common.cli import CliError
from common.recording_settings import Recording
from common.settings import DeviceConfig, Labels, Watermark
from device.clock import SimClock
from evidence.layout import PUBKEY
from evidence.manifest import SegmentManifest, segment
from evidence.receipt import ReceiptError, check_receipt
from evidence.seal import Entry
from evidence.verify_report import format_report as format_verify
from simulator.device import SimDevice
from simulator.site import LocalSite
from store.commands import outcome
from store.mailbox import Mailbox
from store.report import build_report, format_report

DEVICE = "bwc-hf-0001"
BADGE = "340102"
ROOM_DEVICE = "room-hf-0101"
ROOM = "101"


def _segments(data: Path) -> list[tuple[Entry, SegmentManifest]]:
    """The chain's segment entries with their manifests, in chain order."""
    entries = (e for _, e in load_chain(data) if isinstance(e, Entry) and e.kind == "segment")
    return [(e, segment(e)) for e in sorted(entries, key=lambda e: e.seq)]


def demo_settings() -> dict[str, object]:
    """What the agency installs on the device with its bundle."""
    return DeviceConfig(
        recording=Recording(width=1280, height=720, fps=30, prebuffer_seconds=10),
        watermark=Watermark(labels=Labels(badge="警号", device="设备", no_fix="无定位")),
    ).model_dump(mode="json", exclude_defaults=True)


def room_settings() -> dict[str, object]:
    return DeviceConfig(
        recording=Recording(width=640, height=360, fps=25, prebuffer_seconds=5),
        watermark=Watermark(labels=Labels(badge="警号", device="设备", room="审讯室")),
    ).model_dump(mode="json", exclude_defaults=True)


# How much simulated time each part of the demo records, at most.
BODY_SECONDS = 30.0
ROOM_SECONDS = 40.0
# Simulated time runs faster than the wall clock. The demo's devices record one after the
# other on one simulated story line, which starts as far back as all of it lasts: what they
# record is then in the past of the store's report, the room's session after the body's.
STORY_SECONDS = BODY_SECONDS + ROOM_SECONDS

MARKER = ".unbroken-demo"  # written first into a workdir the demo makes; see prepare_workdir
MARKER_TEXT = "made by `unbroken demo`: a rerun deletes this directory and recreates it\n"


class WorkdirRefused(CliError):
    """A workdir the demo did not make and will not empty (exit 2, nothing deleted)."""


def workdir_problem(workdir: Path) -> str | None:
    """Why the demo may not use ``workdir``, or None: it must be new, empty, or made by an
    earlier demo (its :data:`MARKER` in it)."""
    if not workdir.exists():
        return None
    if not workdir.is_dir():
        return f"--workdir {workdir}: not a directory"
    if (workdir / MARKER).is_file() or not any(workdir.iterdir()):
        return None
    return (
        f"--workdir {workdir}: holds files the demo did not make (no {MARKER} in it); "
        "nothing was deleted. Give a new or empty directory, or one an earlier demo made "
        f"(one an older version left, without {MARKER}: remove it yourself)"
    )


def prepare_workdir(workdir: Path) -> None:
    """Empty the workdir an earlier demo made (or make a new one) and mark it as the
    demo's, before anything else is written; refuse any other (WorkdirRefused)."""
    if problem := workdir_problem(workdir):
        raise WorkdirRefused(problem)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        for old in workdir.iterdir():  # the directory itself stays (it may be a link)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        (workdir / MARKER).write_text(MARKER_TEXT)
    except OSError as e:
        where = e.filename or workdir
        raise WorkdirRefused(f"--workdir {workdir}: {where}: {e.strerror or e}") from None


def interview_room(site: LocalSite, wall_start: float) -> bool:
    """Room 101 records a session the case system opens and closes, its clock starting at
    ``wall_start``; True if all of it is receipted and verifies."""
    print(f"\n== 7. Interview room {ROOM}: controller {ROOM_DEVICE}, panel, case system")
    dev = site.start_device(ROOM_DEVICE, settings=room_settings(), room=ROOM, wall_start=wall_start)
    data, uploader = dev.recorder.root, dev.uploader
    assert uploader is not None
    panel = site.panel_client(ROOM)  # stands in for the MicroPython panel (device/panel/)
    lamp: list[str] = []
    panel.on_message = lambda _c, _u, m: lamp.append(m.payload.decode())
    panel.subscribe(f"unbroken/p/{ROOM}/state", qos=1)

    def until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 15
        while not done() and time.monotonic() < deadline:
            dev.run(0.1)

    dev.run(5)
    opening = site.session_command(
        ROOM_DEVICE,
        "session_open",
        case="皖公(刑)2026-0117",
        badges=[BADGE, "340177"],
        person="李某",
    )
    site.store_send(opening)  # kept by the store until the room answers; it answers as it runs
    until(lambda: dev.recorder.session is not None)
    until(lambda: lamp[-1:] == ["recording"])
    print(
        f"   case system opened the session; RECORDING lamp: {'lit' if dev.lamp_lit() else 'off'}"
    )
    box, nonce = Mailbox(site.db()), json.loads(opening)["payload"]["nonce"]
    until(lambda: getattr(box.get(nonce, time.time()), "state", None) != "pending")
    answered = box.get(nonce, time.time())
    if answered is not None:
        print(f"   the room's signed answer, kept by the store: {outcome(answered, True).text}")
    dev.run(4)
    dev.cameras["subject"].fail()  # the close-up camera fails; the room camera goes on
    dev.run(2)
    dev.cameras["subject"].fail(False)
    dev.run(11)
    closing = site.session_command(ROOM_DEVICE, "session_close", case="皖公(刑)2026-0117")
    site.store_send(closing)
    until(lambda: dev.recorder.session is None)
    until(lambda: lamp[-1:] == ["idle"])
    print(f"   case system closed it; RECORDING lamp: {'lit' if dev.lamp_lit() else 'off'}")
    told = [s for i, s in enumerate(lamp) if i == 0 or lamp[i - 1] != s]
    print(f"   the panel was told: {' -> '.join(told)}")
    panel.disconnect()
    panel.loop_stop()
    dev.stop()
    synced = uploader.wait_idle(120)
    uploader.stop()
    segments = _segments(data)
    receipts = {m.sha256: DeviceDirectory(data).stored_receipt(m.sha256) for _, m in segments}
    verified = sum(
        check_receipt(r, site.agency.verify_key, device=ROOM_DEVICE, sha256=m.sha256)["entry_hash"]
        == e.hash
        for e, m in segments
        if (r := receipts[m.sha256]) is not None
    )
    tracks = sorted({m.track_name for _, m in segments})
    print(f"   {verified}/{len(segments)} segments on tracks {', '.join(tracks)} receipted")

    print("\n== 8. Verify the room's evidence offline")
    report = verify_archive(DeviceDirectory(data), read_public_key(data / PUBKEY), strict=True)
    print(format_verify(report, str(data)))
    return synced and verified == len(segments) > 0 and len(tracks) == 3 and report.ok


def run_demo(workdir: Path) -> int:
    """The demo in ``workdir`` (WorkdirRefused: one it did not make, left as it was)."""
    prepare_workdir(workdir)
    with LocalSite(workdir) as site:
        print(
            f"== 1. Agency in {site.agency.root}; Mosquitto (TLS, client certificates, ACL) "
            f"on 127.0.0.1:{site.port}; a store worker"
        )
        site.start_broker()
        site.start_store()

        print(f"\n== 2. Provision body recorder {DEVICE}: keygen, enroll, install; assign {BADGE}")
        # The device's own clock from its first entry on: installed, assigned and booted
        # on it, its chain never sees the clock go back.
        clock = SimClock(wall_start=time.time() - STORY_SECONDS)
        data = site.provision_device(DEVICE, settings=demo_settings(), clock=clock)
        command = workdir / "assign.cmd"
        site.agency.assign(DEVICE, command, time.time(), badges=[BADGE], name="Officer Wang")
        assignment.apply_command(data, command.read_bytes(), clock.wall(), clock=clock)

        print("\n== 3. Record a session (simulated hardware, 1280x720@30), syncing as it goes")
        dev = SimDevice(data, DeviceConfig.model_validate(demo_settings()), clock=clock)
        uploader = site.uploader(data, dev.clock)
        dev.start()
        uploader.status_source = dev.recorder.status
        uploader.start()
        dev.run(10)  # arrival: the pre-event buffer fills
        dev.press_record()
        dev.run(3)
        dev.recorder.mark(MarkerType.CREDENTIAL_SHOWN, "showed 执法证")
        dev.run(2)
        dev.camera.fail()  # the lens is knocked: black frames, the sound goes on
        dev.run(1.5)
        dev.camera.fail(False)
        dev.run(11)  # the first 10 s after resuming are the spoken explanation
        dev.press_record()
        dev.press_record()  # press and confirm: closed
        dev.run(0.5)
        dev.stop()
        synced = uploader.wait_idle(120)
        uploader.stop()
        backlog = sync_backlog(SyncLedger(data))
        print(f"   synced: {synced}; backlog {backlog.blobs} segments, {backlog.entries} entries")

        print("\n== 4. Every segment has a receipt signed by the agency")
        segments = _segments(data)
        verified = 0
        for e, m in segments:
            try:
                receipt = DeviceDirectory(data).stored_receipt(m.sha256) or b""
                r = check_receipt(receipt, site.agency.verify_key, device=DEVICE, sha256=m.sha256)
                verified += r["entry_hash"] == e.hash
            except ReceiptError as err:
                print(f"   segment {m.index}: no valid receipt ({err})")
        print(f"   {verified}/{len(segments)} segments receipted and verified")

        print("\n== 5. Verify the device's evidence offline, pinning its public key")
        report = verify_archive(DeviceDirectory(data), read_public_key(data / PUBKEY), strict=True)
        print(format_verify(report, str(data)))

        print("\n== 6. Flip one byte of one segment in a copy, and verify again")
        tampered = workdir / "tampered"
        shutil.copytree(data, tampered, ignore=shutil.ignore_patterns("private"))
        victim = tampered / segments[3][1].file
        raw = bytearray(victim.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        victim.write_bytes(bytes(raw))
        for p in verify_archive(DeviceDirectory(tampered), read_public_key(data / PUBKEY)).problems:
            print(f"   caught: {p.code}: {p.where}: {p.message}")

        room_ok = interview_room(site, wall_start=clock.wall())  # after the body's

        print("\n== 9. The store's report")
        db = site.db()
        print(format_report(build_report(db, time.time())))
        db.close()
        ok = synced and verified == len(segments) > 0 and report.ok and room_ok
        print(f"\nDemo {'complete' if ok else 'FAILED'}: workdir {workdir}")
        return 0 if ok else 1
