"""No silent gap: every interruption is logged, bounded, and explained or shown unexplained."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.archive.device_directory import DeviceDirectory, load_chain, read_public_key
from common.archive.verify import verify_archive
from common.settings import Continuity, DeviceConfig, StorageLimits
from device.clock import SimClock
from evidence.seal import Entry
from simulator.device import SimDevice
from tests.fixtures.config import record_as_the_disk_fills, small_config
from unbroken.cli import main


def _device(root: Path, clock: SimClock | None = None, **continuity: object) -> SimDevice:
    cfg: DeviceConfig = small_config(prebuffer_seconds=0)
    cfg = cfg.model_copy(
        update={
            "continuity": Continuity(**{"explain_seconds": 3, **continuity}),  # type: ignore[arg-type]
            "storage": StorageLimits(min_free_bytes=1_000_000),
        }
    )
    dev = SimDevice(root, cfg, clock=clock)
    dev.start()
    return dev


def _gaps(root: Path) -> list[dict]:
    report = verify_archive(DeviceDirectory(root), read_public_key(root / "device.pub"))
    assert report.ok, report.problems
    (s,) = report.sessions
    return s.gaps


def _kinds(root: Path) -> list[str]:
    return [e.kind for _, e in load_chain(root) if isinstance(e, Entry)]


def test_camera_stall_is_a_gap_explained_by_voice(tmp_path: Path) -> None:
    dev = _device(tmp_path / "d")
    dev.recorder.open_session()
    dev.run(2)
    dev.camera.fail()
    dev.run(1.5)
    assert dev.recorder.status()["interrupted"] == ["camera"]
    dev.camera.fail(False)
    dev.run(0.2)
    assert dev.recorder.indicator == "prompt", "the officer is prompted to explain"
    dev.run(4)  # the first 3 s after resuming are the spoken explanation
    assert dev.recorder.indicator == "on"
    dev.recorder.close_session()
    dev.stop()
    (g,) = _gaps(dev.recorder.root)
    assert (g["cause"], g["affects"], g["explanation"]) == ("camera", ["video"], "voice")
    assert g["length"] == pytest.approx(1.5, abs=0.15)
    # audio went on through the camera fault: black frames, real sound
    segs = [
        e for _, e in load_chain(dev.recorder.root) if isinstance(e, Entry) and e.kind == "segment"
    ]
    assert all(e.body["media"]["audio"] for e in segs)


def test_unexplained_gap_verifies_but_fails_strict(tmp_path: Path) -> None:
    dev = _device(tmp_path / "d", explain_mode="button", explain_timeout=2)
    dev.recorder.open_session()
    dev.run(1)
    dev.microphone.fail()
    dev.run(1)
    dev.microphone.fail(False)
    dev.run(3)  # no press of the explain control within 2 s
    assert dev.recorder.status()["unexplained"]
    dev.recorder.close_session()
    dev.stop()
    root = dev.recorder.root
    (g,) = _gaps(root)
    assert (g["cause"], g["affects"], g["explanation"]) == ("microphone", ["audio"], None)
    assert main(["verify", str(root)]) == 0
    assert main(["verify", str(root), "--strict"]) == 1


def test_explain_button_starts_the_clip(tmp_path: Path) -> None:
    dev = _device(tmp_path / "d", explain_mode="button")
    dev.recorder.open_session()
    dev.run(1)
    dev.camera.fail()
    dev.run(1)
    dev.camera.fail(False)
    dev.run(1)
    assert dev.recorder.explain()
    dev.run(3.5)
    dev.recorder.close_session()
    dev.stop()
    (g,) = _gaps(dev.recorder.root)
    assert g["explanation"] == "voice"


def test_full_disk_pauses_writing_and_loses_nothing_sealed(tmp_path: Path) -> None:
    dev = _device(tmp_path / "d")
    dev.recorder.open_session()
    dev.run(3)
    before = {
        e.body["file"]
        for _, e in load_chain(dev.recorder.root)
        if isinstance(e, Entry) and e.kind == "segment"
    }
    dev.storage.filler = dev.storage.capacity  # the card is full
    dev.run(3)
    assert "storage_full" in dev.recorder.status()["interrupted"]
    dev.storage.filler = 0
    dev.run(4)
    dev.recorder.close_session()
    dev.stop()
    root = dev.recorder.root
    assert all((root / f).exists() for f in before), "sealed evidence is never deleted"
    (g,) = _gaps(root)
    assert g["cause"] == "storage_full" and g["explanation"] == "voice"
    assert "event" in _kinds(root)  # the early warning


def test_clock_jump_is_logged(tmp_path: Path) -> None:
    dev = _device(tmp_path / "d")
    dev.recorder.open_session()
    dev.run(1)
    dev.clock.jump_wall(3600)
    dev.run(4)
    dev.recorder.close_session()
    dev.stop()
    (g,) = _gaps(dev.recorder.root)
    assert g["cause"] == "clock_jump" and g["length"] == 0 and "+3600" in g["detail"]


def test_power_cut_recovers_resumes_and_prompts(tmp_path: Path) -> None:
    dev = _device(tmp_path / "d")
    sid = dev.recorder.open_session()
    dev.run(3.6)  # 1 s fragments: 3 s sealed or flushed, 0.6 s in the air
    cut_wall = dev.clock.wall()
    after_cut = tmp_path / "after-cut"
    shutil.copytree(dev.recorder.root, after_cut)  # the disk as the power cut left it
    dev.stop()

    again = _device(after_cut, clock=SimClock(wall_start=cut_wall + 20))  # boot takes a while
    assert again.recorder.session and again.recorder.session.id == sid, "same session resumes"
    assert again.recorder.indicator == "prompt"
    again.run(4)
    again.recorder.close_session()
    again.stop()
    entries = [e for _, e in load_chain(after_cut) if isinstance(e, Entry)]
    recovered = [e for e in entries if e.kind == "segment" and e.body.get("recovered")]
    assert len(recovered) == 1
    (g,) = _gaps(after_cut)
    assert g["cause"] == "power_loss" and g["explanation"] == "voice"
    lost = cut_wall - g["start"]
    assert 0 <= lost <= 1.0 + 1 / 15, f"{lost:.2f} s of footage lost"


def test_battery_shutdown_inside_a_session_resumes_at_next_boot(tmp_path: Path) -> None:
    dev = _device(tmp_path / "d")
    dev.recorder.open_session()
    dev.run(2)
    dev.battery.set(2.0)
    dev.run(1.5)
    assert dev.recorder.powered_off
    dev.stop()
    again = _device(tmp_path / "d", clock=SimClock(wall_start=dev.clock.wall() + 600))
    assert again.recorder.session
    again.run(4)
    again.recorder.close_session()
    again.stop()
    (g,) = _gaps(again.recorder.root)
    assert g["cause"] == "battery" and g["end"] is not None and g["explanation"] == "voice"
    assert "shutdown" in _kinds(again.recorder.root)


def test_written_statement_needs_two_distinct_authenticated_officers(tmp_path: Path) -> None:
    import nacl.signing

    from agent.statement import seal_statement
    from common.statements import Attestation, PinCredentials, StatementError, officer_credentials
    from evidence.seal import Moment

    dev = _device(tmp_path / "d")
    dev.recorder.open_session()
    dev.run(1)
    dev.camera.fail()
    dev.run(1)
    dev.recorder.close_session()  # the camera never came back
    dev.stop()
    root = dev.recorder.root
    (g,) = _gaps(root)
    assert g["end"] is None and g["explanation"] is None

    agency = nacl.signing.SigningKey.generate()
    creds_file = tmp_path / "officers.json"
    creds_file.write_bytes(officer_credentials(agency, {"340102": "4711", "340117": "0815"}))
    creds = PinCredentials.load(creds_file, agency.verify_key)
    at = Moment(dev.clock.wall() + 3600, 5.0, True)
    reason = "camera destroyed in the struggle; recording could not resume"
    with pytest.raises(StatementError, match="2 distinct officers, has 1"):
        seal_statement(
            root,
            g["id"],
            reason,
            [Attestation("340102", "pin", "4711"), Attestation("340102", "pin", "4711")],
            creds,
            at,
        )
    with pytest.raises(StatementError, match="340117: credential not accepted"):
        seal_statement(
            root,
            g["id"],
            reason,
            [Attestation("340102", "pin", "4711"), Attestation("340117", "pin", "0000")],
            creds,
            at,
        )
    forged = tmp_path / "forged.json"
    forged.write_bytes(officer_credentials(nacl.signing.SigningKey.generate(), {"1": "1"}))
    with pytest.raises(StatementError, match="not an agency-signed officer list"):
        PinCredentials.load(forged, agency.verify_key)
    seal_statement(
        root,
        g["id"],
        reason,
        [Attestation("340102", "pin", "4711"), Attestation("340117", "pin", "0815")],
        creds,
        at,
    )
    (g,) = _gaps(root)
    assert g["explanation"] == "written"
    assert [a["badge"] for a in g["statement"]["attestations"]] == ["340102", "340117"]
    assert main(["verify", str(root), "--strict"]) == 0


def test_officer_stop_inside_a_session_is_a_gap(tmp_path: Path) -> None:
    dev = _device(tmp_path / "d")
    dev.recorder.open_session()
    dev.run(2)
    dev.recorder.pause("private conversation with a victim")
    dev.run(2)
    dev.recorder.resume()
    dev.run(4)
    dev.recorder.close_session()
    dev.stop()
    (g,) = _gaps(dev.recorder.root)
    assert (g["cause"], g["explanation"]) == ("officer_stop", "voice")
    assert g["length"] == pytest.approx(2.0, abs=0.15)


def test_gnss_fix_loss_is_an_event_not_a_gap(tmp_path: Path) -> None:
    from common.hardware_settings import Gnss
    from simulator.device import shipped_route

    lines = shipped_route().read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "013457.00" in line)
    route = tmp_path / "underpass.nmea"
    route.write_text("\n".join(lines[start : start + 70]) + "\n")  # 3 s fix, 25 s none, fix
    cfg = small_config(prebuffer_seconds=0).model_copy(update={"gnss": Gnss(route=route)})
    dev = SimDevice(tmp_path / "d", cfg)
    dev.start()
    dev.recorder.open_session()
    dev.run(32)
    dev.recorder.close_session()
    dev.stop()
    events = [
        e.body["type"]
        for _, e in load_chain(dev.recorder.root)
        if isinstance(e, Entry) and e.kind == "event"
    ]
    assert events == ["gnss_lost", "gnss_regained"]
    assert _gaps(dev.recorder.root) == []


def test_written_statement_through_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulator.site import LocalSite

    site = LocalSite(tmp_path / "site")  # an agency; no broker needed here
    data = site.provision_device("bwc-0042")
    dev = SimDevice(data, small_config(prebuffer_seconds=0))
    dev.start()
    dev.recorder.open_session()
    dev.run(1)
    dev.camera.fail()
    dev.run(1)
    dev.recorder.close_session()
    dev.stop()
    (g,) = _gaps(data)
    officers = tmp_path / "officers.json"
    pins = tmp_path / "pins.txt"  # PINs never on the command line: a file of mode 0600
    pins.write_text("340102:4711\n340117:0815\n")
    pins.chmod(0o600)
    agency = str(site.agency.root)
    assert (
        main(
            [
                "provision",
                "officers",
                "--agency",
                agency,
                "--pins",
                str(pins),
                "--out",
                str(officers),
            ]
        )
        == 0
    )
    base = [
        "agent",
        "explain",
        "--data",
        str(data),
        "--gap",
        g["id"],
        "--reason",
        "camera smashed",
        "--credentials",
        str(officers),
        "--pins",
        str(pins),
    ]
    assert main([*base, "--attest", "340102"]) == 2
    assert "2 distinct officers, has 1" in capsys.readouterr().err
    assert main([*base, "--attest", "340102", "--attest", "340117"]) == 0
    (g,) = _gaps(data)
    assert g["explanation"] == "written"
    site.close()


def test_nearly_full_disk_lowers_the_bitrate_instead_of_stopping(tmp_path: Path) -> None:
    cfg = small_config(prebuffer_seconds=0)
    root = record_as_the_disk_fills(tmp_path / "d", cfg)
    entries = [e for _, e in load_chain(root) if isinstance(e, Entry)]
    rates = [e.body["media"]["video"]["bitrate"] for e in entries if e.kind == "segment"]
    assert rates[0] == cfg.recording.video_bitrate and rates[-1] == 200_000
    assert "storage_degraded" in [e.body["type"] for e in entries if e.kind == "event"]
    assert _gaps(root) == [], "degrading is not a gap: recording went on"


def test_encoder_failure_is_a_gap_and_recording_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import av

    from agent.media import TrackEncoder

    dev = _device(tmp_path / "d")
    dev.recorder.open_session()
    dev.run(3)
    real_encode = TrackEncoder.encode
    failures = iter(range(10))

    def broken(
        self: TrackEncoder, image: object, samples: object, keyframe: bool = False
    ) -> object:
        if next(failures, None) is not None:
            raise av.error.InvalidDataError(1094995529, "encoder broke")
        return real_encode(self, image, samples, keyframe)  # type: ignore[arg-type]

    monkeypatch.setattr(TrackEncoder, "encode", broken)
    dev.run(1)
    monkeypatch.setattr(TrackEncoder, "encode", real_encode)
    dev.run(4)
    dev.recorder.close_session()
    dev.stop()
    (g,) = _gaps(dev.recorder.root)  # verifies: no silent hole around the lost footage
    assert (g["cause"], g["explanation"]) == ("encoder", "voice")
