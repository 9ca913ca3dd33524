"""The watermark is in the picture, follows the badge, the position and the clock, and
keeps every field whole at every resolution."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageFont

from agent.watermark import FontError, Watermark, find_font, watermark_fields
from common.archive.media import decode_frames
from common.settings import DeviceConfig, Labels
from common.settings import Watermark as WatermarkConfig
from device import yuv
from device.clock import SimClock
from device.gnss import Fix, GnssState
from device.nmea_replay import NmeaReplay
from simulator.device import SimDevice, shipped_route
from tests.fixtures.config import small_config
from tests.fixtures.media import agency_key_for

CJK = Labels(
    badge="警号",
    device="设备",
    room="审讯室",
    no_fix="无定位",
    synced="时钟已同步",
    unsynced="时钟未同步",
    camera_fault="摄像头故障",
)


def _config() -> DeviceConfig:
    base = small_config(prebuffer_seconds=0)
    return base.model_copy(update={"watermark": WatermarkConfig(labels=CJK)})


def _expected_fields(dev: SimDevice, mono: float, badges: list[str]) -> tuple[str, ...]:
    """Re-derive what the watermark must say at a moment, from a fresh clock and route."""
    clock = SimClock()
    gnss = NmeaReplay(shipped_route(), clock, loop=True)
    clock.advance(mono - clock.monotonic())
    wall = clock.wall()
    return watermark_fields(
        wall, 8 * 3600, True, gnss.state(), mono, badges, dev.recorder.device_id, CJK
    )


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def two_badges(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimDevice, list[Path]]:
    """A session whose badge changes after its first segment."""
    dev = SimDevice(tmp_path_factory.mktemp("wm") / "dev", _config())
    dev.start()
    dev.recorder.badges = ["012345"]
    dev.recorder.open_session()
    dev.run(2)
    dev.recorder.badges = ["678901", "警A123"]
    dev.run(2)
    dev.recorder.close_session()
    dev.stop()
    files = sorted((dev.recorder.root / "segments").rglob("*.mp4"))
    return dev, files


def test_strip_matches_the_expected_rendering(two_badges: tuple[SimDevice, list[Path]]) -> None:
    dev, files = two_badges
    wm = dev.recorder.watermarks["main"]
    start = 1000.0  # SimClock's monotonic start; the session opened at once
    for seg, badges in ((0, ["012345"]), (1, ["678901", "警A123"])):
        frames = decode_frames(files[seg], agency_key_for(files[seg]))
        for k in (0, 7, 29):
            mono = start + seg * 2 + k / 15
            expected = wm.render(_expected_fields(dev, mono, badges))
            got = yuv.planes(frames[k])[0][: len(expected)]
            other = wm.render(_expected_fields(dev, mono, ["012345"] if seg else ["678901"]))
            assert _diff(got, expected) < 3.0
            assert _diff(got, other) > 2 * _diff(got, expected)


def test_position_and_time_change_the_strip(two_badges: tuple[SimDevice, list[Path]]) -> None:
    dev, _ = two_badges
    early = _expected_fields(dev, 1000.0, ["012345"])
    later = _expected_fields(dev, 1002.0, ["012345"])
    assert early[2] != later[2], "position moves along the route"
    assert early[0] != later[0], "time advances"


def test_fields_say_no_fix_with_its_age_and_the_clock_state() -> None:
    fields = watermark_fields(
        1_773_451_800, 8 * 3600, False, GnssState(None, False), 0.0, ["012345"], "bwc-1", CJK
    )
    assert fields == (
        "2026-03-14 09:30:00 UTC+08:00",
        "时钟未同步",
        "无定位",
        "警号 012345",
        "设备 bwc-1",
    )
    synced = watermark_fields(1_773_451_800, 0, True, GnssState(None, False), 0.0, [], "bwc-1", CJK)
    assert synced[:2] == ("2026-03-14 01:30:00 UTC+00:00", "时钟已同步"), "synced is shown too"


LONG_ID = "bwc-027-4f1c9a2e7d"
BADGES = ["012345", "警A123456"]


def _full_fields(lost: bool) -> tuple[str, ...]:
    fix = Fix(31.820603, 117.227213, 10.0, 1_773_451_795.0, 995.0, 9, 0.9)
    gnss = GnssState(fix, not lost)
    return watermark_fields(1_773_451_800, 8 * 3600, False, gnss, 1000.0, BADGES, LONG_ID, CJK)


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (640, 360), (320, 180)])
@pytest.mark.parametrize("lost", [False, True])
def test_every_field_is_whole_and_inside_the_picture(width: int, height: int, lost: bool) -> None:
    wm = Watermark(width, height, find_font(None))
    fields = (CJK.camera_fault, *_full_fields(lost))
    picture = yuv.blank(width, height)
    wm.apply(picture, fields)
    boxes = wm.boxes(wm.layout)
    # Every field is laid out, whole or cut at spaces and commas into pieces that are.
    laid = [piece for piece, _ in boxes]
    for field in fields:
        assert field in laid or "".join(field.split()) in "".join("".join(laid).split()), field
    assert LONG_ID in " ".join(laid) or f"{CJK.device} {LONG_ID}" in laid
    y = yuv.planes(picture)[0]
    for piece, (left, top, right, bottom) in boxes:
        # Inside the picture and inside the strip: nothing is clipped.
        assert 0 <= left < right <= width and 0 <= top < bottom <= wm.strip_height, piece
        # And drawn: white ink where the layout says the piece is.
        assert (y[top:bottom, left:right] > 128).sum() >= len(piece), piece
    # Pieces on a line do not overlap.
    k = 0
    for line in wm.layout.lines:
        row = [box for _, box in boxes[k : k + len(line)]]
        k += len(line)
        assert all(a[2] <= b[0] for a, b in itertools.pairwise(row))
    assert len(wm.layout.lines) <= 3 and wm.strip_height <= height // 4 + 2


def test_a_wide_picture_keeps_one_line_and_a_narrow_one_wraps() -> None:
    fields = _full_fields(lost=False)
    wide = Watermark(2560, 720, find_font(None))
    narrow = Watermark(320, 180, find_font(None))
    assert len(wide.arrange(fields).lines) == 1
    assert len(narrow.arrange(fields).lines) >= 2


def test_chroma_of_the_strip_is_neutral_and_the_picture_below_untouched() -> None:
    wm = Watermark(640, 360, find_font(None))
    picture = yuv.from_rgb(np.full((360, 640, 3), (200, 30, 30), np.uint8))
    before = picture.copy()
    wm.apply(picture, _full_fields(lost=False))
    y, u, v = yuv.planes(picture)
    y0, u0, _ = yuv.planes(before)
    h = wm.strip_height
    assert h % 2 == 0
    assert (u[: h // 2] == 128).all() and (v[: h // 2] == 128).all()
    assert np.array_equal(y[h:], y0[h:]) and np.array_equal(u[h // 2 :], u0[h // 2 :])
    assert y[:h].min() >= 16 and y[:h].max() <= 235, "video range"


def test_cjk_glyphs_render_from_the_font() -> None:
    font = ImageFont.truetype(str(find_font(None)), 24)
    masks = {ch: bytes(font.getmask(ch)) for ch in "警号设"}
    assert len(set(masks.values())) == 3, "each CJK character has its own glyph"
    assert all(any(m) for m in masks.values())


def test_strip_is_rendered_only_when_its_text_changes() -> None:
    wm = Watermark(640, 360, find_font(None))
    frame = yuv.blank(640, 360)
    wm.apply(frame, ("a",))
    first = wm._strip
    wm.apply(frame, ("a",))
    assert wm._strip is first
    wm.apply(frame, ("b",))
    assert wm._strip is not first


def test_missing_font_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FontError, match="does not exist"):
        find_font(tmp_path / "none.ttf")
