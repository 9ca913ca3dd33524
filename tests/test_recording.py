"""A recorded session, checked with an independent decoder (PyAV's demuxer and decoders)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import av

from agent.evidence_dir import load_chain, verify_dir
from evidence.seal import Entry
from tests.fixtures.media import plain
from unbroken.cli import main

FPS, SEGMENT, PREBUFFER, SECONDS = 15, 2, 4, 5


def _segments(root: Path) -> list[Entry]:
    return [e for _, e in load_chain(root) if isinstance(e, Entry) and e.kind == "segment"]


def test_recorded_session_verifies(recorded: Path, capsys: object) -> None:
    report = verify_dir(recorded, recorded / "device.pub")
    assert report.ok, report.problems
    (s,) = report.sessions
    assert s.state == "closed" and s.badges == ["012345"]
    assert [m["type"] for m in s.markers] == ["credential_shown"]
    assert main(["verify", str(recorded), "--pubkey", str(recorded / "device.pub")]) == 0


def test_every_segment_decodes_with_continuous_timestamps_and_audio(recorded: Path) -> None:
    last_end = None
    total = 0
    for e in _segments(recorded):
        with av.open(plain(recorded / e.body["file"])) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            video = [f for f in c.decode(video=0)]
        with av.open(plain(recorded / e.body["file"])) as c:
            audio = sum(f.samples for f in c.decode(audio=0))
        own = [float(f.pts * f.time_base) for f in video]
        assert own[0] == 0.0, "each segment's timestamps start at its first frame"
        first = e.body["media"]["video"]["first_frame"] / FPS  # on the recorder's timeline
        times = [first + t for t in own]
        assert len(video) == e.body["media"]["video"]["frames"]
        assert all(b - a == pytest_approx(1 / FPS) for a, b in itertools.pairwise(times))
        if last_end is not None:
            assert abs(times[0] - last_end) < 0.5 / FPS, "timestamps must continue"
        last_end = times[-1] + 1 / FPS
        # in whole AAC frames (the first also has the encoder priming): about its video
        assert abs(audio - len(video) * 48000 // FPS) <= 2048, "every segment carries its audio"
        duration = e.body["end"]["mono"] - e.body["start"]["mono"]
        assert abs(len(video) - duration * FPS) < 1
        total += len(video)
    # the pre-event buffer plus the session, all on record
    assert total >= (PREBUFFER + SECONDS) * FPS


def test_segments_are_two_seconds_and_split_at_keyframes(recorded: Path) -> None:
    segs = _segments(recorded)
    for e in segs[:-1]:
        assert e.body["media"]["video"]["frames"] == SEGMENT * FPS
    for e in segs:
        with av.open(plain(recorded / e.body["file"])) as c:
            keys = [p.is_keyframe for p in c.demux(video=0) if p.size]
        assert keys[0], "each segment starts with a keyframe"
        assert [i for i, k in enumerate(keys) if k] == list(range(0, len(keys), FPS))


def test_prebuffer_puts_arrival_on_record(recorded: Path) -> None:
    chain = [e for _, e in load_chain(recorded) if isinstance(e, Entry)]
    opened = next(e for e in chain if e.kind == "session_open")
    segs = _segments(recorded)
    first = segs[0].body
    assert first["prebuffer"] is True
    covered = opened.payload["at"]["mono"] - first["start"]["mono"]
    assert covered >= PREBUFFER, f"only {covered:.2f} s before the trigger"
    assert sum(1 for e in segs if e.body["prebuffer"]) >= PREBUFFER // SEGMENT


def test_manifest_carries_what_the_issue_names(recorded: Path) -> None:
    body = _segments(recorded)[2].body
    for field in ("index", "sha256", "size", "start", "end", "media", "location", "badges"):
        assert field in body
    assert set(body["start"]) == {"wall", "mono", "synced"}
    assert body["location"]["fix"] == "ok" and len(body["location"]["start"]) == 2
    assert body["media"]["audio"]["codec"] == "aac"


def test_verify_json_lists_sessions(recorded: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["verify", str(recorded), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["key_pinned"] is False
    assert out["sessions"][0]["segments"] == len(_segments(recorded))


def pytest_approx(x: float) -> object:
    import pytest

    return pytest.approx(x, abs=1e-6)


def test_in_real_time_segments_are_closed_and_sealed_off_the_frame_loop(tmp_path: Path) -> None:
    """The device's way: every segment (the pre-event ones too) is closed and sealed on
    the chain's own thread, in order, and the session verifies."""
    import threading

    from simulator.device import SimDevice
    from tests.fixtures.config import small_config

    dev = SimDevice(tmp_path / "d", small_config(prebuffer_seconds=2), realtime=True)
    placed_on: list[str] = []
    place = dev.recorder.chain.place_segment

    def watched(*args: Path) -> None:
        placed_on.append(threading.current_thread().name)
        place(*args)

    dev.recorder.chain.place_segment = watched  # type: ignore[method-assign]
    dev.start()
    dev.run(seconds=3)  # the pre-event buffer fills
    dev.recorder.open_session()
    dev.run(seconds=3)
    dev.recorder.close_session()
    dev.stop()
    chain = [e for _, e in load_chain(dev.recorder.root) if isinstance(e, Entry)]
    segments = [e for e in chain if e.kind == "segment"]
    assert len(segments) >= 3 and placed_on == ["sealer"] * len(segments)
    assert [e.body["index"] for e in segments] == list(range(len(segments)))
    assert segments[0].body["prebuffer_seconds"] > 0  # arrival is on record
    assert verify_dir(dev.recorder.root, None).ok
