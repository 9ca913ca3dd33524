"""The watermark is in the picture, and follows the badge, the position and the clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import ImageFont

from agent.media import decode_frames
from agent.watermark import FontError, Watermark, find_font, watermark_text
from common.settings import DeviceConfig, Labels
from common.settings import Watermark as WatermarkConfig
from device.clock import SimClock
from device.gnss import GnssState, NmeaReplay
from simulator.device import SimDevice, shipped_route
from tests.fixtures.config import small_config

CJK = Labels(badge="警号", device="设备", no_fix="无定位", unsynced="时钟未同步")


def _config() -> DeviceConfig:
    base = small_config(prebuffer_seconds=0)
    return base.model_copy(update={"watermark": WatermarkConfig(labels=CJK)})


def _expected_text(dev: SimDevice, mono: float, badges: list[str]) -> str:
    """Re-derive what the watermark must say at a moment, from a fresh clock and route."""
    clock = SimClock()
    gnss = NmeaReplay(shipped_route(), clock, loop=True)
    clock.advance(mono - clock.monotonic())
    wall = clock.wall()
    return watermark_text(
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
        frames = decode_frames(files[seg])
        for k in (0, 7, 29):
            mono = start + seg * 2 + k / 15
            expected = wm.render(_expected_text(dev, mono, badges))
            got = frames[k][: wm.strip_height]
            other = wm.render(_expected_text(dev, mono, ["012345"] if seg else ["678901"]))
            assert _diff(got, expected) < 3.0
            assert _diff(got, other) > 2 * _diff(got, expected)


def test_position_and_time_change_the_strip(two_badges: tuple[SimDevice, list[Path]]) -> None:
    dev, _ = two_badges
    early = _expected_text(dev, 1000.0, ["012345"])
    later = _expected_text(dev, 1002.0, ["012345"])
    assert early.split("  ")[1] != later.split("  ")[1], "position moves along the route"
    assert early.split("  ")[0] != later.split("  ")[0], "time advances"


def test_text_says_no_fix_with_its_age_and_an_unsynced_clock() -> None:
    text = watermark_text(
        1_773_451_800, 8 * 3600, False, GnssState(None, False), 0.0, ["012345"], "bwc-1", CJK
    )
    assert text == "2026-03-14 09:30:00 UTC+08:00  时钟未同步  无定位  警号 012345  设备 bwc-1"


def test_cjk_glyphs_render_from_the_font() -> None:
    font = ImageFont.truetype(str(find_font(None)), 24)
    masks = {ch: bytes(font.getmask(ch)) for ch in "警号设"}
    assert len(set(masks.values())) == 3, "each CJK character has its own glyph"
    assert all(any(m) for m in masks.values())


def test_strip_is_rendered_only_when_its_text_changes() -> None:
    wm = Watermark(640, 360, find_font(None))
    frame = np.zeros((360, 640, 3), np.uint8)
    wm.apply(frame, "a")
    first = wm._strip
    wm.apply(frame, "a")
    assert wm._strip is first
    wm.apply(frame, "b")
    assert wm._strip is not first


def test_missing_font_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FontError, match="does not exist"):
        find_font(tmp_path / "none.ttf")
