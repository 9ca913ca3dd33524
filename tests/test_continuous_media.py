"""A 60 s session as one continuous stream: audio with no hole or overlap at any cut,
audio and video aligned, and the segments back to back (stream copy) as long as the
session. Measured with Debian's ffmpeg/ffprobe and PyAV's decoders on the simulated tone."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from common.archive.device_directory import load_chain
from evidence.seal import Entry
from simulator.session import record_session
from tests.fixtures.config import small_config
from tests.fixtures.media import ffprobe, plain_file
from tests.fixtures.system import need

# ffprobe counting a file's video packets, then what to show
COUNT_VIDEO = ("-select_streams", "v", "-count_packets", "-of", "csv=p=0", "-show_entries")

FPS, RATE, SECONDS, TONE = 15, 48000, 60, 440.0
PRIMING = 1024  # the AAC encoder's delay: decoded sample i is input sample i - PRIMING


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("continuous") / "dev"
    config = small_config(width=320, height=180, prebuffer_seconds=0)
    record_session(root, config, SECONDS)
    segs = [e for _, e in load_chain(root) if isinstance(e, Entry) and e.kind == "segment"]
    # As the agency reads them: decrypted (each file's MP4, byte for byte).
    plain = root.parent / "plain"
    plain.mkdir()
    return [plain_file(root / e.body["file"], plain / f"{i:06d}.mp4") for i, e in enumerate(segs)]


def _audio_in_order(paths: list[Path]) -> list[np.ndarray]:
    """Each segment's audio, decoded as a player of the whole session does: one decoder
    fed every segment's packets in order (a decoder opened per file has no previous
    frame to overlap its first one with, whoever cut the files)."""
    decoder = None
    pcm = []
    for path in paths:
        with av.open(str(path)) as c:
            stream = c.streams.audio[0]
            if decoder is None:
                decoder = av.CodecContext.create("aac", "r")
                decoder.extradata = stream.codec_context.extradata
            frames = [f for p in c.demux(stream) if p.size for f in decoder.decode(p)]
        pcm.append(np.concatenate([f.to_ndarray().reshape(-1) for f in frames]))
    return pcm


def test_decoded_audio_is_continuous_across_every_cut(session: list[Path]) -> None:
    pcm = _audio_in_order(session)
    x = np.concatenate(pcm).astype(np.float64) * 32768
    cuts = np.cumsum([len(p) for p in pcm])[:-1]
    assert len(cuts) >= SECONDS // 2 - 1
    w = 2 * np.pi * TONE / RATE
    for cut in cuts:
        # the tone fitted on the 20 ms before the cut, compared with the 10 ms after it:
        # noise (300) and coding error only; a hole or an overlap of even 1 ms puts the
        # tone out of phase (thousands)
        before, after = np.arange(cut - 960, cut), np.arange(cut, cut + 480)
        basis = np.stack([np.sin(w * before), np.cos(w * before)], axis=1)
        coef = np.linalg.lstsq(basis, x[before], rcond=None)[0]
        predicted = np.stack([np.sin(w * after), np.cos(w * after)], axis=1) @ coef
        residual = np.sqrt(np.mean((x[after] - predicted) ** 2))
        assert residual < 1200, f"audio breaks at sample {cut}: residual {residual:.0f}"
    assert len(x) - PRIMING >= SECONDS * RATE


def test_audio_and_video_start_together_in_every_segment(session: list[Path]) -> None:
    for p in session:
        with av.open(str(p)) as c:
            v = next(c.decode(video=0))
        with av.open(str(p)) as c:
            a = next(c.decode(audio=0))
        offset = float(a.pts * a.time_base) - float(v.pts * v.time_base)
        assert abs(offset) <= 1 / FPS, f"{p.name}: audio {offset * 1000:.1f} ms off the video"


def test_segments_back_to_back_play_as_long_as_the_session(
    session: list[Path], tmp_path: Path
) -> None:
    need("/usr/bin/ffprobe", "ffmpeg")  # the independent decoder: CI installs it
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in session))
    out = tmp_path / "all.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            "-c",
            "copy",
            str(out),
        ],
        check=True,
    )
    probe = ffprobe(out, *COUNT_VIDEO, "stream=nb_read_packets:format=duration").split()
    frames, duration = int(probe[0]), float(probe[1])
    assert frames >= SECONDS * FPS
    # As long as its video but for the AAC encoder's priming at the start and the padding
    # of its last frame (1024 samples each), once per recording: 50 s used to play 650 s,
    # and 60 s played 60.134 s when each segment's audio ran past its cut.
    slack = 2 * PRIMING / RATE + 1e-3
    assert abs(duration - frames / FPS) <= slack, f"{frames} frames play {duration:.3f} s"


def test_every_segment_lasts_exactly_as_long_as_its_video(session: list[Path]) -> None:
    """No segment's audio runs past its cut, so segments add up whatever their number
    (ffprobe's format duration: what a player and the concat demuxer go by)."""
    need("/usr/bin/ffprobe", "ffmpeg")
    for i, path in enumerate(session):
        out = ffprobe(
            path, *COUNT_VIDEO, "stream=nb_read_packets:format=start_time,duration"
        ).split()
        frames, (start, duration) = int(out[0]), map(float, out[1].split(","))
        if i == 0:  # the priming: the audio encoder's first frame starts before the video
            assert start == pytest.approx(-PRIMING / RATE, abs=1e-5)
            assert start + duration == pytest.approx(frames / FPS, abs=1e-5), path.name
        else:
            assert (start, duration) == pytest.approx((0.0, frames / FPS), abs=1e-5), path.name
