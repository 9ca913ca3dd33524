"""``unbroken export``: a session as one MP4 per track by stream copy, with its custody
summary; refused when the evidence fails verification, unless accepted, and then said.
Checked with Debian's ffprobe (the independent decoder) and PyAV's decoders."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import nacl.public
import numpy as np
import pytest

from agent import assignment
from common.archive.device_directory import DeviceDirectory, load_chain
from common.archive.export import (
    EXPORTING,
    SUMMARY,
    ExportResult,
    export_session,
)
from common.archive.export_reading import read_evidence_key
from common.progress import VERIFYING
from common.recording_settings import Recording
from common.room_settings import Room
from common.settings import Continuity, DeviceConfig
from device.clock import SimClock
from evidence import protocol as p
from evidence.custody import blocking
from evidence.encryption import decrypt, is_encrypted, key_id
from evidence.manifest import SegmentManifest
from evidence.seal import Entry
from evidence.splice import SegmentPackets, Splicer
from evidence.verify_report import Problem, Report
from provisioning.agency_directory import REGISTRY
from simulator.device import SimDevice, stand_in_agency_key
from simulator.session import record_session
from simulator.site import LocalSite
from store.blobs import FileBlobs
from store.config import load_store_config
from store.db import Database
from store.directory import RegistryDirectory
from store.evidence_view import access_log
from store.ingest import Ingest
from tests.fixtures.config import record_as_the_disk_fills, small_config
from tests.fixtures.media import ffprobe
from tests.fixtures.room import SMALL
from tests.fixtures.store import upload
from tests.fixtures.tone import tone_breaks
from unbroken.cli import main

FPS, RATE, SECONDS = 15, 48000, 60


def _segments(root: Path, track: str | None = None) -> list[tuple[Entry, SegmentManifest]]:
    out = [
        (e, SegmentManifest.from_body(e.body))
        for _, e in load_chain(root)
        if isinstance(e, Entry) and e.kind == "segment"
    ]
    out.sort(key=lambda em: em[0].seq)
    return [(e, m) for e, m in out if track is None or m.track_name == track]


def _summary(result: ExportResult) -> dict[str, Any]:
    (path,) = [f for f in result.files if f.name.endswith("-custody.json")]
    return dict(json.loads(path.read_text()))


def _mp4s(result: ExportResult) -> list[Path]:
    return [f for f in result.files if f.suffix == ".mp4"]


def _probe(path: Path) -> dict[str, Any]:
    out = ffprobe(
        path, "-show_entries", "format=duration:stream=codec_type,duration,nb_frames", "-of", "json"
    )
    return dict(json.loads(out))


def _packet_hashes(path: Path, stream: str, options: Sequence[str] = ()) -> list[str]:
    """The SHA-256 of each packet's data, by ffprobe, as the summary tells a checker."""
    out = ffprobe(
        path, *options, "-select_streams", stream, "-show_packets", "-show_data_hash", "SHA256",
        "-show_entries", "packet=data_hash", "-of", "csv=p=0",
    )  # fmt: skip
    return re.findall(r"SHA256:[0-9a-f]{64}", out)


def _sealed_packet_hashes(files: list[Path], stream: str) -> list[str]:
    """The packets' hashes of the segment files, one after another: ffprobe reading them
    through the concat demuxer with ``-auto_convert 0`` (as the summary says; without it
    the demuxer rewrites H.264 packets into Annex B)."""
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "segments.txt"
        listing.write_text("".join(f"file '{f}'\n" for f in files))
        concat = ["-f", "concat", "-safe", "0", "-auto_convert", "0"]
        return _packet_hashes(listing, stream, concat)


def _boxes(path: Path) -> list[bytes]:
    """The MP4's top-level boxes, in order."""
    data, pos, out = path.read_bytes(), 0, []
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        out.append(kind)
        pos += size or len(data)
    return out


def _clear(cfg: DeviceConfig) -> DeviceConfig:
    """Footage in the clear (a test bench's setting), so that ffprobe reads the segment
    files themselves; encrypted footage has a test of its own."""
    return cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"encrypt": False})})


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 s after the press, with a 4 s pre-event buffer. Read-only: see ``evidence`` (the
    shared fixture copies this one)."""
    root = tmp_path_factory.mktemp("recorded") / "dev"
    record_session(root, _clear(small_config()), 5)
    return root


# -- a minute, exported ---------------------------------------------------------------


@pytest.fixture(scope="module")
def minute(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportResult]:
    root = tmp_path_factory.mktemp("minute") / "dev"
    record_session(root, _clear(small_config(width=320, height=180, prebuffer_seconds=0)), SECONDS)
    return root, export_session(DeviceDirectory(root), None, root.parent / "export")


def test_a_minute_plays_in_ffprobe_as_long_as_the_session(
    minute: tuple[Path, ExportResult],
) -> None:
    root, result = minute
    (video,) = _mp4s(result)
    manifests = [m for _, m in _segments(root)]
    frames = sum(m.video.frames for m in manifests)
    length = frames / FPS
    assert length >= SECONDS
    assert length == pytest.approx(sum(m.duration for m in manifests), abs=1 / FPS)
    probe = _probe(video)
    assert abs(float(probe["format"]["duration"]) - length) <= 1 / FPS
    streams = {s["codec_type"]: s for s in probe["streams"]}
    assert set(streams) == {"video", "audio"}
    for s in streams.values():
        assert abs(float(s["duration"]) - length) <= 1 / FPS, s
    assert int(streams["video"]["nb_frames"]) == frames
    # an ordinary MP4 with its index first, as a browser plays at once: no fragments
    boxes = _boxes(video)
    assert boxes.index(b"moov") < boxes.index(b"mdat") and b"moof" not in boxes


def test_the_exported_sound_is_continuous(minute: tuple[Path, ExportResult]) -> None:
    _, result = minute
    (video,) = _mp4s(result)
    # ffprobe: every audio packet follows the one before by exactly one AAC frame
    args = ["-v", "error", "-select_streams", "a", "-show_entries", "packet=pts", "-of", "json"]
    done = subprocess.run(["ffprobe", *args, str(video)], capture_output=True, check=True)
    pts = [int(pk["pts"]) for pk in json.loads(done.stdout)["packets"]]
    assert set(np.diff(pts)) == {1024}
    # decoded, the tone goes on through every former cut
    with av.open(str(video)) as c:
        frames = list(c.decode(audio=0))
    assert frames[0].pts == 0  # the encoder's priming is left out, by the file's edit list
    x = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float64) * 32768
    rows = _summary(result)["tracks"]["main"]["segments"]
    cuts = [round(r["in_export"][0] * RATE) for r in rows[1:]]
    assert len(cuts) >= SECONDS // 2 - 1
    assert tone_breaks(x, cuts) == []
    # and the check sees a hole of 1 ms
    holed = np.insert(x, cuts[3], np.zeros(RATE // 1000))
    assert tone_breaks(holed, [cuts[3]])


def test_the_summary_hashes_are_the_chains(minute: tuple[Path, ExportResult]) -> None:
    root, result = minute
    summary = _summary(result)
    rows = summary["tracks"]["main"]["segments"]
    sealed = _segments(root)
    assert [(r["index"], r["sha256"], r["size"], r["sealed_by"]["seq"]) for r in rows] == [
        (m.index, m.sha256, m.size, e.seq) for e, m in sealed
    ]
    for r in rows:
        assert hashlib.sha256((root / r["file"]).read_bytes()).hexdigest() == r["sha256"]
    v = summary["verification"]
    assert (v["ok"], v["accepted"], v["problems"], v["other_sessions_problems"]) == (
        True,
        False,
        [],
        0,
    )
    assert summary["interruptions"] == [] and summary["category"]
    assert summary["collector"]["badges"] == ["012345"]
    assert summary["places"]["first"] and summary["places"]["distinct"]
    text = next(f for f in result.files if f.suffix == ".txt").read_text()
    assert all(r["sha256"] in text for r in rows)
    assert "VERIFICATION: OK" in text and "How to check this export" in text


def test_the_export_holds_exactly_the_segments_packets(
    minute: tuple[Path, ExportResult],
) -> None:
    """What the summary tells a checker to run: the export's packets, stream by stream,
    are the segments' packets in order, byte for byte."""
    root, result = minute
    (video,) = _mp4s(result)
    files = [root / m.file for _, m in _segments(root)]
    for stream in ("v", "a"):
        exported = _packet_hashes(video, stream)
        sealed = _sealed_packet_hashes(files, stream)
        assert exported == sealed and len(exported) > SECONDS * 10, stream


# -- refusing, and accepting, evidence that fails -------------------------------------


def _flip_a_byte(root: Path) -> str:
    _, m = _segments(root)[1]
    data = bytearray((root / m.file).read_bytes())
    data[data.index(b"mdat") + 100] ^= 0x40  # in the media, not in a box header
    (root / m.file).write_bytes(bytes(data))
    return m.file


def test_a_tampered_segment_is_refused_with_the_reason(
    evidence: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = _flip_a_byte(evidence)
    out = tmp_path / "out"
    assert main(["export", str(evidence), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"hash_mismatch: {changed}" in err and "--accept-problems" in err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_accepted_problems_are_exported_and_said(
    evidence: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = _flip_a_byte(evidence)
    out = tmp_path / "out"
    assert main(["export", str(evidence), "--out", str(out), "--accept-problems"]) == 0
    captured = capsys.readouterr()
    assert "FAILED verification" in captured.err and changed in captured.err
    (summary_file,) = out.glob("*-custody.json")
    summary = json.loads(summary_file.read_text())
    v = summary["verification"]
    assert not v["ok"] and v["accepted"]
    assert [(p["code"], p["where"]) for p in v["problems"]] == [("hash_mismatch", changed)]
    row = next(r for r in summary["tracks"]["main"]["segments"] if r["file"] == changed)
    assert row["problems"] == ["hash_mismatch"]
    text = next(out.glob("*-custody.txt")).read_text()
    assert "VERIFICATION: FAILED — EXPORTED ANYWAY" in text and "HASH_MISMATCH" in text
    assert len(list(out.glob("*.mp4"))) == 1


def test_only_this_sessions_problems_stop_its_export() -> None:
    report = Report("d", "k", True)
    report.problems = [
        Problem("missing_segment", "segments/b/000000.mp4", "absent", "b"),
        Problem("chain_break", "entry 9", "altered", "b"),
    ]
    assert [p.code for p in blocking(report, "a")] == ["chain_break"]
    assert [p.code for p in blocking(report, "b")] == ["missing_segment", "chain_break"]


# -- interruptions, holes, tracks -----------------------------------------------------


def _device(root: Path, clock: SimClock | None = None) -> SimDevice:
    cfg = _clear(small_config(width=320, height=180, prebuffer_seconds=0))
    cfg = cfg.model_copy(update={"continuity": Continuity(explain_seconds=3)})
    dev = SimDevice(root, cfg, clock=clock)
    dev.start()
    return dev


def test_an_interruption_is_in_the_summary_with_its_cause_and_explanation(
    tmp_path: Path,
) -> None:
    dev = _device(tmp_path / "d")
    dev.recorder.open_session()
    dev.run(2)
    dev.camera.fail()
    dev.run(1.5)
    dev.camera.fail(False)
    dev.run(4)
    dev.recorder.close_session()
    dev.stop()
    result = export_session(DeviceDirectory(dev.recorder.root), None, tmp_path / "out")
    summary = _summary(result)
    (gap,) = summary["interruptions"]
    assert (gap["cause"], gap["affects"], gap["explanation"]) == ("camera", ["video"], "voice")
    assert gap["explained"].startswith("spoken by the officer on resuming")
    assert gap["seconds"] == pytest.approx(1.5, abs=0.15)
    assert gap["in_export"]["file"] == f"{result.session}-main.mp4"
    assert gap["in_export"]["at"] == pytest.approx(2.0, abs=0.2)
    # black frames kept the timeline: no hole in the export
    assert summary["tracks"]["main"]["notes"] == []
    frames = sum(m.video.frames for _, m in _segments(dev.recorder.root))
    (video,) = _mp4s(result)
    assert abs(float(_probe(video)["format"]["duration"]) - frames / FPS) <= 1 / FPS
    assert "camera (video)" in next(f for f in result.files if f.suffix == ".txt").read_text()


def test_a_power_cut_leaves_a_hole_only_where_the_evidence_has_one(tmp_path: Path) -> None:
    dev = _device(tmp_path / "d")
    dev.recorder.open_session()
    dev.run(3.6)  # 1 s fragments: 3 s sealed or flushed, 0.6 s in the air
    cut = dev.clock.wall()
    root = tmp_path / "after-cut"
    shutil.copytree(dev.recorder.root, root)  # the disk as the power cut left it
    dev.stop()
    again = _device(root, clock=SimClock(wall_start=cut + 20))
    again.run(4)
    again.recorder.close_session()
    again.stop()
    result = export_session(DeviceDirectory(root), None, tmp_path / "out")
    summary = _summary(result)
    assert [g["cause"] for g in summary["interruptions"]] == ["power_loss"]
    rows = summary["tracks"]["main"]["segments"]
    recovered = next(i for i, r in enumerate(rows) if r["recovered"])
    holes = [n for n in summary["tracks"]["main"]["notes"] if "hole" in n]
    assert len(holes) == 1 and f"before segment {rows[recovered + 1]['index']}" in holes[0]
    # every other segment follows the one before it exactly
    for a, b in itertools.pairwise(rows):
        if b is not rows[recovered + 1]:
            assert b["in_export"][0] == a["in_export"][1]
    # every packet is kept: the hole is time, not footage lost
    (video,) = _mp4s(result)
    files = [root / m.file for _, m in _segments(root)]
    for stream in ("v", "a"):
        assert _packet_hashes(video, stream) == _sealed_packet_hashes(files, stream)
    assert float(_probe(video)["format"]["duration"]) == pytest.approx(
        rows[-1]["in_export"][1], abs=1 / FPS
    )


def test_a_change_of_encoder_settings_goes_on_in_a_second_file(tmp_path: Path) -> None:
    """A nearly full disk lowers the bitrate: the encoders restart with other H.264
    headers (a lower level), which one MP4 track cannot hold."""
    cfg = small_config(width=320, height=180, prebuffer_seconds=0)
    root = record_as_the_disk_fills(tmp_path / "d", cfg, encrypt=False)
    result = export_session(DeviceDirectory(root), None, tmp_path / "out")
    track = _summary(result)["tracks"]["main"]
    first, second = (tmp_path / "out" / f["file"] for f in track["files"])
    assert second.name == f"{result.session}-main-part2.mp4"
    (note,) = track["notes"]
    assert "codec headers change" in note and second.name in note
    rows = track["segments"]
    for part in (first, second):
        mine = [r for r in rows if r["export_file"] == part.name]
        assert mine and mine[0]["in_export"][0] == 0
        frames = sum(r["frames"] for r in mine)
        assert abs(float(_probe(part)["format"]["duration"]) - frames / FPS) <= 1 / FPS
        files = [root / r["file"] for r in mine]
        for stream in ("v", "a"):
            assert _packet_hashes(part, stream) == _sealed_packet_hashes(files, stream)
    assert sorted(result.files) == sorted([first, second, *(tmp_path / "out").glob("*-custody.*")])


def test_a_room_exports_one_file_per_track(tmp_path: Path) -> None:
    config = _clear(DeviceConfig(recording=Recording(**SMALL), room=Room()))
    dev = SimDevice(tmp_path / "room", config)
    dev.start()
    dev.run(1)
    dev.recorder.open_session()
    dev.run(4)
    dev.recorder.close_session()
    dev.run(0.1)
    dev.stop()
    result = export_session(DeviceDirectory(dev.recorder.root), None, tmp_path / "out")
    summary = _summary(result)
    tracks = ["subject", "room", "pip"]
    assert sorted(summary["tracks"]) == sorted(tracks)
    assert sorted(f.name for f in _mp4s(result)) == sorted(
        f"{result.session}-{t}.mp4" for t in tracks
    )
    fps = SMALL["fps"]
    for t in tracks:
        frames = sum(m.video.frames for _, m in _segments(dev.recorder.root, t))
        path = tmp_path / "out" / f"{result.session}-{t}.mp4"
        assert abs(float(_probe(path)["format"]["duration"]) - frames / fps) <= 1 / fps
        assert [r["sha256"] for r in summary["tracks"][t]["segments"]] == [
            m.sha256 for _, m in _segments(dev.recorder.root, t)
        ]
    assert summary["trigger"] == "api"  # opened by the test (not provisioned: no room name)


# -- the command line -----------------------------------------------------------------


def test_command_line_errors_are_one_clean_line(
    recorded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*args: str) -> tuple[int, str]:
        code = main(["export", *args])
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return code, err

    code, err = run(str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"))
    assert code == 2 and "no such directory" in err
    code, err = run(str(recorded), "--session", "nope", "--out", str(tmp_path / "o"))
    (sid,) = [
        e.session
        for _, e in load_chain(recorded)
        if isinstance(e, Entry) and e.kind == "session_open"
    ]
    assert code == 2 and "holds no session 'nope'" in err and str(sid) in err
    a_file = tmp_path / "file"
    a_file.write_text("")
    code, err = run(str(recorded), "--out", str(a_file / "sub"))
    assert code == 2 and "not writable" in err
    out = tmp_path / "o"
    assert run(str(recorded), "--out", str(out))[0] == 0
    code, err = run(str(recorded), "--out", str(out))
    assert code == 2 and "not overwritten" in err and "--force" in err
    assert run(str(recorded), "--out", str(out), "--force")[0] == 0
    assert main(["export", str(recorded), "--out", str(out), "--force", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["session"] == sid and len(doc["files"]) == 3


def test_two_sessions_need_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dev = _device(tmp_path / "d")
    ids = []
    for _ in range(2):
        ids.append(dev.recorder.open_session())
        dev.run(1)
        dev.recorder.close_session()
        dev.run(0.2)
    dev.stop()
    root = str(dev.recorder.root)
    assert main(["export", root, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "holds 2 sessions" in err and all(i in err for i in ids) and "--session" in err
    assert main(["export", root, "--session", ids[1], "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / f"{ids[1]}-main.mp4").exists()


def test_every_phase_of_an_export_is_reported(recorded: Path, tmp_path: Path) -> None:
    """Progress covers the whole export, not only the copying: verifying, each segment
    exported, the custody summary."""
    seen: list[tuple[str, int, int | None]] = []
    export_session(
        DeviceDirectory(recorded), None, tmp_path / "out", progress=lambda *step: seen.append(step)
    )
    assert list(dict.fromkeys(phase for phase, _, _ in seen)) == [VERIFYING, EXPORTING, SUMMARY]
    n = len(_segments(recorded))
    assert [(d, t) for phase, d, t in seen if phase == EXPORTING] == [
        (i, n) for i in range(1, n + 1)
    ]
    assert seen[-1] == (SUMMARY, 1, 1)


def test_encrypted_footage_is_exported_with_the_agencys_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Footage encrypted at rest (R7) is read with the agency's evidence key: without it
    the export says so; with it, the export holds the packets of the MP4s inside."""
    root = tmp_path / "dev"
    record_session(root, small_config(width=320, height=180, prebuffer_seconds=0), 5)
    agency = stand_in_agency_key(root)  # what the agency holds for this simulated device
    key_file = tmp_path / "evidence.key"
    key_file.write_text(bytes(agency).hex() + "\n")
    out = tmp_path / "out"
    assert main(["export", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is encrypted to the agency's evidence key" in err and "--evidence-key FILE" in err
    assert not out.exists() or not any(out.glob("*.mp4"))
    # a wrong key is said as such, once: verification still finds the evidence intact
    wrong = tmp_path / "wrong.key"
    wrong.write_text(bytes(nacl.public.PrivateKey.generate()).hex() + "\n")
    sealed_to = key_id(agency.public_key)
    assert main(["export", str(root), "--out", str(out), "--evidence-key", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert f"not the key these segments were sealed to: they name key {sealed_to}" in err
    assert len(err.splitlines()) == 1
    assert main(["verify", str(root), "--evidence-key", str(wrong)]) == 0
    said = capsys.readouterr().out
    assert said.count(f"they name key {sealed_to}") == 1 and "NOTICE wrong_evidence_key" in said
    assert "undecodable" not in said and "RESULT: OK" in said
    assert main(["export", str(root), "--out", str(out), "--evidence-key", str(key_file)]) == 0
    summary = json.loads(next(out.glob("*-custody.json")).read_text())
    rows = summary["tracks"]["main"]["segments"]
    plain = []
    for r in rows:
        mp4 = decrypt((root / r["file"]).read_bytes(), agency).plain
        assert r["encrypted_to"] and hashlib.sha256(mp4).hexdigest() == r["plain_sha256"]
        plain.append(tmp_path / f"plain-{r['index']}.mp4")
        plain[-1].write_bytes(mp4)
    (video,) = out.glob("*.mp4")
    for stream in ("v", "a"):
        assert _packet_hashes(video, stream) == _sealed_packet_hashes(plain, stream)
    assert "encrypted" in next(out.glob("*-custody.txt")).read_text()


# -- the timeline, pure ---------------------------------------------------------------


def test_the_splicer_keeps_sound_in_place_and_holes_to_gaps() -> None:
    s = Splicer(fps=15, rate=48000)
    # a recording: the priming before the first frame, then segment after segment
    assert (s.place(SegmentPackets(30, -1024, 95232)).video, s.lag) == (0, 0)
    second = s.place(SegmentPackets(30, 256, 95488))
    assert (second.video, second.audio, second.hole_frames) == (30, 96000, 0)
    # a new recording after a gap: its priming would overlap, so a frame of hole
    after_gap = s.place(SegmentPackets(30, -1024, 95232), gap_before=True)
    assert (after_gap.hole_frames, after_gap.video, after_gap.audio_lag) == (1, 61, 0)
    # a new recording with no gap (a lower bitrate): the sound moves, the picture not
    restart = s.place(SegmentPackets(30, -1024, 95232))
    assert restart.video == 91 and restart.hole_frames == 0
    assert restart.audio_lag == 95232 + 1024 - (-1024 + 30 * 3200) == 1280
    assert s.place(SegmentPackets(30, 256, 95488)).audio_lag == 1280  # until the next gap
    assert s.place(SegmentPackets(30, -1024, 0), gap_before=True).audio_lag == 0


# -- what the store holds -------------------------------------------------------------


def test_what_the_store_holds_exports_the_same_media(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LocalSite(tmp_path / "site") as site:
        config_path = site.store_config()
        data = site.provision_device("bwc-0007")
        command = tmp_path / "assign.cmd"
        site.agency.assign("bwc-0007", command, time.time(), badges=["340102"], name="Wang Wei")
        assignment.apply_command(data, command.read_bytes(), time.time())
        dev = SimDevice(
            data, small_config(prebuffer_seconds=2), clock=SimClock(wall_start=time.time())
        )
        dev.start()
        dev.run(2)
        sid = dev.recorder.open_session()
        dev.run(5)
        dev.recorder.close_session()
        dev.run(0.2)
        dev.stop()
        # synced to the store, as its worker would take it in (the rules, no broker)
        config = load_store_config(config_path)
        db = Database.connect(config.database)
        ingest = Ingest(
            db,
            FileBlobs(config.blobs),
            RegistryDirectory(config.agency / REGISTRY),
            site.agency.signing_key,
            "store-t",
        )
        now = time.time()
        entries = [e for _, e in load_chain(data) if isinstance(e, Entry)]
        for e in entries:
            ingest.handle(p.up("bwc-0007", "entry"), e.to_json(), now)
        for e in entries:
            if e.kind == "segment":
                ((topic, _),) = upload(ingest, "bwc-0007", data, e, now=now)
                assert topic.endswith("/receipt")
        db.close()

        # the footage is encrypted to the agency's evidence key, which the store uses
        key = read_evidence_key(site.agency.root / "private" / "evidence.key")
        from_device = export_session(
            DeviceDirectory(data), sid, tmp_path / "device", evidence_key=key
        )
        out = tmp_path / "store"
        args = ["store", "export", "--config", str(config_path), "--device", "bwc-0007"]
        assert main([*args, "--session", sid, "--out", str(out), "--progress"]) == 0
        err = capsys.readouterr().err  # asked for: progress as lines on a stderr not a terminal
        phases = [line.split(":")[0] for line in err.splitlines()]
        assert list(dict.fromkeys(phases)) == [VERIFYING, EXPORTING, SUMMARY]  # nothing laid out
        (mp4,) = out.glob("*.mp4")
        assert mp4.read_bytes() == _mp4s(from_device)[0].read_bytes()
        assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in from_device.files)
        summary = json.loads(next(out.glob("*-custody.json")).read_text())
        assert summary["verification"]["ok"] and summary["device"]["key_pinned"]
        assert summary["source"].startswith("store store-1")
        assert summary["collector"]["assigned"]["name"] == "Wang Wei"
        assert summary["tracks"] == _summary(from_device)["tracks"]
        assert all(r["encrypted_to"] for r in summary["tracks"]["main"]["segments"])

        # a store host without the agency's private evidence key says where to export
        key_file = config.agency / "private" / "evidence.key"
        key_file.rename(tmp_path / "evidence.key")
        assert main([*args, "--session", sid, "--out", str(tmp_path / "nokey")]) == 2
        err = capsys.readouterr().err
        assert f"this host has no {key_file}" in err and "store lay-out --config" in err
        assert "give it with --evidence-key FILE" in err
        brought = ["--evidence-key", str(tmp_path / "evidence.key")]  # from removable media
        assert main([*args, "--session", sid, "--out", str(tmp_path / "brought"), *brought]) == 0
        assert (tmp_path / "brought" / mp4.name).read_bytes() == mp4.read_bytes()
        (tmp_path / "evidence.key").rename(key_file)

        # the store's holdings as an evidence directory: verify runs on it
        view = tmp_path / "view"
        args = ["store", "lay-out", "--config", str(config_path), "--device", "bwc-0007"]
        assert main([*args, "--out", str(view)]) == 0
        pin = capsys.readouterr().out.split("--pubkey ")[1].strip()
        assert Path(pin).parent == view / "keys"
        assert main(["verify", str(view), "--pubkey", pin]) == 0
        assert main([*args, "--out", str(view)]) == 2  # not over what is there
        assert "is not empty" in capsys.readouterr().err
        for e in entries:
            assert (view / "chain" / f"{e.seq:010d}.json").read_bytes() == e.to_json()

        # At rest the store keeps the footage as it came: encrypted. Taking it out is logged.
        for e in entries:
            if e.kind == "segment":
                blob = FileBlobs(config.blobs).get(e.body["sha256"]).read()
                assert is_encrypted(blob) and b"ftyp" not in blob
        db = Database.connect(config.database)
        log = access_log(db, "bwc-0007")
        db.close()
        assert [(r["action"], r["session"]) for r in log] == [
            ("export", sid),
            ("export", sid),  # the one refused for want of the key: on record too
            ("export", sid),
            ("lay-out", None),
            ("lay-out", None),
        ]
        assert all(r["who"] and r["at"] >= now for r in log)
        assert str(out.resolve()) in log[0]["detail"]
