"""A recorded session, checked with an independent decoder (PyAV's demuxer and decoders).

Each test runs on a session sealed both ways: inline (simulated time) and on the chain's
own thread (the device's way), there with the sealer behind the frame loop."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

import av
import pytest

import simulator.session
from common.archive.device_directory import DeviceDirectory, load_chain, read_public_key
from common.archive.verify import verify_archive
from evidence.custody import custody_summary
from evidence.seal import Entry
from simulator.device import SimDevice
from simulator.session import record_session
from tests.fixtures.config import small_config
from tests.fixtures.media import plain
from unbroken.cli import main

FPS, SEGMENT, PREBUFFER, SECONDS = 15, 2, 4, 5


@pytest.fixture(scope="module", params=["inline", "background"])
def recorded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session of conftest's ``recorded``, sealed inline or on the chain's thread."""
    root = tmp_path_factory.mktemp(f"recorded-{request.param}") / "dev"
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "background":
            mp.setattr(simulator.session, "SimDevice", _behind_device)
        record_session(root, small_config(), SECONDS, badges=["012345"])
    return root


def _behind_device(*args: object, **kwargs: object) -> SimDevice:
    dev = SimDevice(*args, **kwargs, seal_in_background=True)  # type: ignore[arg-type]
    sealer_behind(dev)
    return dev


def sealer_behind(dev: SimDevice) -> None:
    """Hold the chain's thread back until the recording thread waits for it, as on a
    device whose disk is slower than its frames: what the frame loop has cut is not
    sealed yet when it goes on (or closes the session)."""
    chain = dev.recorder.chain
    waited = threading.Event()
    drain, place = chain.drain, chain.place_segment

    def draining() -> None:
        if threading.current_thread().name == "sealer":
            return drain()
        waited.set()
        try:
            drain()
        finally:
            waited.clear()

    def placing(written: Path, dest: Path) -> None:
        waited.wait()
        place(written, dest)

    chain.drain = draining  # type: ignore[method-assign]
    chain.place_segment = placing  # type: ignore[method-assign]


def _entries(root: Path) -> list[Entry]:
    return [e for _, e in load_chain(root) if isinstance(e, Entry)]


def _segments(root: Path) -> list[Entry]:
    return [e for e in _entries(root) if e.kind == "segment"]


def test_recorded_session_verifies(recorded: Path, capsys: object) -> None:
    report = verify_archive(DeviceDirectory(recorded), read_public_key(recorded / "device.pub"))
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


def test_the_close_counts_every_segment_sealed_before_it(recorded: Path) -> None:
    """However far the sealer is behind the frame loop, the close states what it sealed;
    verification and the custody summary compare the two."""
    entries = _entries(recorded)
    segments = _segments(recorded)
    (close,) = [e for e in entries if e.kind == "session_close"]
    assert close.seq > segments[-1].seq
    assert close.body["segments"] == len(segments) >= (PREBUFFER + SECONDS) // SEGMENT
    assert close.body["tracks"] == {"main": len(segments)}
    report = verify_archive(DeviceDirectory(recorded), read_public_key(recorded / "device.pub"))
    assert report.ok, report.problems
    summary = custody_summary(entries, report, str(close.session), {}, 0.0).as_dict()
    assert summary["close_counts"]["agrees"] and summary["verification"]["ok"]
    held = {"segments": len(segments), "tracks": {"main": len(segments)}}
    assert summary["close_counts"]["held"] == held


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
    (close,) = [e for e in chain if e.kind == "session_close"]
    assert close.body["segments"] == len(segments), "the close counts what the sealer sealed"
    assert verify_archive(DeviceDirectory(dev.recorder.root), None).ok
