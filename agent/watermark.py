"""The burned-in watermark: time, position, badges and device id in every frame (R2, R4, R12).

The text changes about once a second, so the strip is rendered with Pillow only when its
text changes and then copied into each frame with one numpy slice assignment.

Example::

    wm = Watermark(width=1280, height=720, font=find_font(None))
    wm.apply(frame.image, watermark_text(...))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.settings import Labels
from device.camera import Image as Frame
from device.gnss import GnssState, format_position

# Fonts with CJK glyphs, in order of preference: Debian's fonts-wqy-microhei (what
# `make` installs), then Noto CJK and WenQuanYi Zen Hei if present.
FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
)


class FontError(RuntimeError):
    pass


def find_font(configured: Path | None) -> Path:
    """The configured font, or the first CJK font installed; FontError names what is missing."""
    if configured is not None:
        if not configured.is_file():
            raise FontError(f"watermark font {configured} does not exist")
        return configured
    for p in FONT_CANDIDATES:
        if p.is_file():
            return p
    raise FontError(
        "no CJK font found for the watermark: install fonts-wqy-microhei "
        "(apt install fonts-wqy-microhei) or set watermark.font"
    )


def watermark_text(
    wall: float,
    utc_offset: int,
    synced: bool,
    gnss: GnssState,
    now_mono: float,
    badges: Sequence[str],
    device_id: str,
    labels: Labels,
    place: str | None = None,
) -> str:
    """The line burned into the picture. Pure, so tests can render the expected strip.
    ``place``: shown instead of the position (an interview room's name)."""
    tz = dt.timezone(dt.timedelta(seconds=utc_offset))
    stamp = dt.datetime.fromtimestamp(int(wall), tz).strftime("%Y-%m-%d %H:%M:%S UTC%z")
    stamp = stamp[:-2] + ":" + stamp[-2:]  # UTC+0800 -> UTC+08:00
    parts = [stamp]
    if not synced:
        parts.append(labels.unsynced)
    parts.append(place or format_position(gnss, now_mono, labels.no_fix))
    if badges:
        parts.append(f"{labels.badge} {','.join(badges)}")
    parts.append(f"{labels.device} {device_id}")
    return "  ".join(parts)


class Watermark:
    """Renders the strip for a text once, then blits it into frames at the top edge."""

    def __init__(self, width: int, height: int, font: Path) -> None:
        self.width = width
        self.font_size = max(12, height // 24)
        self.strip_height = self.font_size * 3 // 2
        self._font = ImageFont.truetype(str(font), self.font_size)
        self._text: str | None = None
        self._strip: Frame = np.zeros((self.strip_height, width, 3), np.uint8)

    def render(self, text: str) -> Frame:
        """The strip for ``text``: white on black, full frame width."""
        img = Image.new("RGB", (self.width, self.strip_height), (0, 0, 0))
        ImageDraw.Draw(img).text(
            (self.font_size // 3, self.font_size // 6), text, font=self._font, fill=(255, 255, 255)
        )
        return np.asarray(img, dtype=np.uint8)

    def apply(self, image: Frame, text: str) -> None:
        if text != self._text:
            self._strip, self._text = self.render(text), text
        image[: self.strip_height] = self._strip
