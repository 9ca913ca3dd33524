"""The burned-in watermark: time, clock state, position, badges and device id in every
frame (R2, R4, R12), every field whole at every resolution down to 320x180.

The text changes about once a second, so the strip is rendered with Pillow only when its
fields change and then copied into each frame's planes with numpy slice assignments.

Example::

    wm = Watermark(width=1280, height=720, font=find_font(None))
    wm.apply(frame.image, watermark_fields(...))    # a YUV 4:2:0 picture, in place
    wm.layout.lines                                  # which field went on which line
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from common.settings import Labels
from device import yuv
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


def watermark_fields(
    wall: float,
    utc_offset: int,
    synced: bool,
    gnss: GnssState,
    now_mono: float,
    badges: Sequence[str],
    device_id: str,
    labels: Labels,
    place: str | None = None,
) -> tuple[str, ...]:
    """What is burned into the picture, field by field. Pure, so tests can render the
    expected strip. ``place``: an interview room's name, shown instead of the position
    (the room does not move). A failed camera's notice (``labels.camera_fault``) is put
    first by the caller, on the tracks it feeds."""
    tz = dt.timezone(dt.timedelta(seconds=utc_offset))
    stamp = dt.datetime.fromtimestamp(int(wall), tz).strftime("%Y-%m-%d %H:%M:%S UTC%z")
    stamp = stamp[:-2] + ":" + stamp[-2:]  # UTC+0800 -> UTC+08:00
    fields = [stamp, labels.synced if synced else labels.unsynced]
    fields.append(place or format_position(gnss, now_mono, labels.no_fix))
    if badges:
        fields.append(f"{labels.badge} {','.join(badges)}")
    fields.append(f"{labels.device} {device_id}")
    return tuple(fields)


@dataclass(frozen=True)
class Layout:
    """Where the fields go: the font size, and each line's fields (whole, or a field cut
    at a space or comma when no line is wide enough for it)."""

    size: int
    lines: tuple[tuple[str, ...], ...]

    def text(self, line: int) -> str:
        return SEPARATOR.join(self.lines[line])


SEPARATOR = "  "
MIN_SIZE = 8  # pixels: the smallest font still legible on a 320x180 frame
MAX_LINES = 3


class Watermark:
    """Lays the fields out on the strip at the top of the picture, and burns it in.

    The font starts at 1/24 of the height; fields that do not fit on one line wrap onto
    a second, then the font shrinks (to two thirds), then a third line is allowed, down
    to :data:`MIN_SIZE`: every field stays whole and inside the picture. The strip is
    rendered once per text (about once a second) as luma with neutral chroma, and copied
    into each frame's planes.
    """

    def __init__(self, width: int, height: int, font: Path) -> None:
        self.width, self.height = width, height
        self.base_size = max(12, height // 24)
        self._path = font
        self._fonts: dict[int, ImageFont.FreeTypeFont] = {}
        self._fields: tuple[str, ...] | None = None
        self.layout = Layout(self.base_size, ((),))
        self.strip_height = self._strip_height(self.layout)
        self._strip: Frame = np.full((self.strip_height, width), yuv.BLACK_Y, np.uint8)

    def font(self, size: int) -> ImageFont.FreeTypeFont:
        if size not in self._fonts:
            self._fonts[size] = ImageFont.truetype(str(self._path), size)
        return self._fonts[size]

    def arrange(self, fields: Sequence[str]) -> Layout:
        """The layout of ``fields`` (pure but for the font's metrics)."""
        room = self.width - 2 * self._pad(self.base_size)
        tries = [(s, 2) for s in range(self.base_size, max(MIN_SIZE, self.base_size * 2 // 3), -1)]
        tries += [(s, MAX_LINES) for s in range(self.base_size, MIN_SIZE - 1, -1)]
        for size, most in tries:
            font = self.font(size)
            lines = _wrap(fields, room, font.getlength)
            if lines is not None and len(lines) <= most:
                return Layout(size, lines)
        # Not even the smallest font fits a word: cut words (never seen at 320 pixels wide).
        font = self.font(MIN_SIZE)
        return Layout(MIN_SIZE, _wrap(fields, room, font.getlength, hard=True) or ((),))

    def boxes(self, layout: Layout) -> list[tuple[str, tuple[int, int, int, int]]]:
        """Each piece of text on the strip with its inked box (left, top, right, bottom)."""
        font, pad = self.font(layout.size), self._pad(layout.size)
        out = []
        for i, line in enumerate(layout.lines):
            x = pad
            y = pad + i * self._line_height(layout.size)
            for piece in line:
                left, top, right, bottom = font.getbbox(piece)
                out.append((piece, (x + int(left), y + int(top), x + int(right), y + int(bottom))))
                x += int(font.getlength(piece + SEPARATOR))
        return out

    def render(self, fields: Sequence[str]) -> Frame:
        """The strip for ``fields`` as luma rows: white on black, full frame width."""
        layout = self.arrange(fields)
        height = self._strip_height(layout)
        img = Image.new("L", (self.width, height), 0)
        draw = ImageDraw.Draw(img)
        font, pad = self.font(layout.size), self._pad(layout.size)
        for i in range(len(layout.lines)):
            y = pad + i * self._line_height(layout.size)
            draw.text((pad, y), layout.text(i), font=font, fill=255)
        self.layout, self.strip_height = layout, height
        return _TO_LUMA[np.asarray(img, dtype=np.uint8)]

    def prepare(self, fields: Sequence[str]) -> None:
        """Render the strip if the fields changed (so ``strip_height`` is current)."""
        fields = tuple(fields)
        if fields != self._fields:
            self._strip, self._fields = self.render(fields), fields

    def apply(self, picture: Frame, fields: Sequence[str]) -> None:
        """Burn the strip into a YUV 4:2:0 picture, in place."""
        self.prepare(fields)
        y, u, v = yuv.planes(picture)
        h = self.strip_height
        y[:h] = self._strip
        u[: h // 2] = yuv.NEUTRAL_UV
        v[: h // 2] = yuv.NEUTRAL_UV

    def _pad(self, size: int) -> int:
        return max(2, size // 4)

    def _line_height(self, size: int) -> int:
        return size * 5 // 4

    def _strip_height(self, layout: Layout) -> int:
        h = 2 * self._pad(layout.size) + len(layout.lines) * self._line_height(layout.size)
        return min(self.height, h + h % 2)  # even: chroma rows cover it exactly


# Full-range grey (what Pillow draws) to video-range luma.
_TO_LUMA = (yuv.BLACK_Y + np.arange(256) * (yuv.WHITE_Y - yuv.BLACK_Y) // 255).astype(np.uint8)


def _wrap(
    fields: Sequence[str], room: float, length: Callable[[str], float], hard: bool = False
) -> tuple[tuple[str, ...], ...] | None:
    """Fields packed greedily into lines no wider than ``room``; a field wider than a line
    is cut at spaces and commas (``hard``: anywhere). None: a piece fits no line."""
    pieces: list[str] = []
    for field in fields:
        pieces += [field] if length(field) <= room else _cut(field, room, length, hard)
    if any(length(p) > room for p in pieces):
        return None
    lines: list[list[str]] = [[]]
    for piece in pieces:
        line = lines[-1]
        if line and length(SEPARATOR.join([*line, piece])) > room:
            lines.append([piece])
        else:
            line.append(piece)
    return tuple(tuple(line) for line in lines)


def _cut(field: str, room: float, length: Callable[[str], float], hard: bool) -> list[str]:
    """A field in pieces that each fit ``room``, cut after spaces and commas."""
    words = list(field) if hard else re.findall(r"[^ ,]*[ ,]?", field)
    out = [""]
    for word in filter(None, words):
        if out[-1] and length(out[-1] + word) > room:
            out.append(word)
        else:
            out[-1] += word
    return [p.strip() for p in out]
