"""The camera port and its simulated backend.

A camera hands out frames as YUV 4:2:0 pictures (:mod:`device.yuv`: one ``uint8`` array of
shape ``(height * 3 // 2, width)``, what the Pi's ISP writes and the H.264 encoder takes),
each stamped with the monotonic time it was captured. The recorder burns the watermark
into that array in place before encoding, so every backend must return a writable,
contiguous array that it owns.

Example::

    cam = SimCamera(width=640, height=360, fps=30, clock=SimClock())
    cam.start()
    frame = cam.read()          # a moving scene with a frame counter; every frame differs
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from device import yuv
from device.clock import Clock

Image = NDArray[np.uint8]  # a YUV 4:2:0 picture (device.yuv)


@dataclass
class VideoFrame:
    image: Image  # YUV 4:2:0, (height * 3 // 2, width) uint8, writable
    captured: float  # monotonic seconds
    index: int  # frames since the camera started


class CameraError(RuntimeError):
    """The camera failed or stalled; the recorder logs it as an interruption."""


class Camera(Protocol):
    width: int
    height: int
    fps: int

    def start(self) -> None: ...

    def read(self) -> VideoFrame:
        """The next frame. Blocks for at most one frame interval on real hardware."""

    def stop(self) -> None: ...


class SimCamera:
    """A synthetic scene that pans, with a frame counter, so that consecutive frames differ.

    The background is generated once, twice as wide as the frame, and each frame is a
    slice of it at a moving offset: cheap enough for 1280x720 at many times real time.
    ``fail()`` makes the next reads raise :class:`CameraError`, as a broken sensor would.
    """

    _DIGIT_W, _DIGIT_H = 12, 20

    def __init__(self, width: int, height: int, fps: int, clock: Clock, tint: int = 0) -> None:
        self.width, self.height, self.fps = width, height, fps
        self._clock = clock
        self._index = 0
        self._failed = False
        # Built from a row and a column (broadcast), not full index grids: a 720p scene
        # would otherwise cost 30 MB of int64 for a moment, the agent's peak memory.
        x, y = np.arange(width * 2), np.arange(height)
        bg = np.empty((height, width * 2, 3), np.uint8)
        bg[..., 0] = (x * 255 // (width * 2)).astype(np.uint8)[None, :]
        bg[..., 1] = (y * 255 // max(1, height)).astype(np.uint8)[:, None]
        checker = ((x // 40) % 2).astype(np.uint8)[None, :] ^ ((y // 40) % 2).astype(np.uint8)[
            :, None
        ]
        bg[..., 2] = checker * np.uint8(120) + np.uint8(60)
        # ``tint``: tell several cameras apart. Converted once: frames are slices of planes.
        self._planes = yuv.planes(yuv.from_rgb(np.roll(bg, tint, axis=2)))
        self._digits = _digit_atlas(self._DIGIT_W, self._DIGIT_H)

    def start(self) -> None:
        self._index = 0

    def stop(self) -> None:
        pass

    def fail(self, failed: bool = True) -> None:
        """A tester's switch: ``fail()`` breaks the sensor, ``fail(False)`` mends it."""
        self._failed = failed

    @property
    def failed(self) -> bool:
        return self._failed

    def read(self) -> VideoFrame:
        if self._failed:
            raise CameraError("simulated camera fault")
        offset = (self._index * 4) % self.width  # even: chroma moves by whole samples
        by, bu, bv = self._planes
        image = np.empty(yuv.shape(self.width, self.height), np.uint8)
        y, u, v = yuv.planes(image)
        y[...] = by[:, offset : offset + self.width]
        u[...] = bu[:, offset // 2 : (offset + self.width) // 2]
        v[...] = bv[:, offset // 2 : (offset + self.width) // 2]
        self._stamp_counter(y, u, v, self._index)
        frame = VideoFrame(image=image, captured=self._clock.monotonic(), index=self._index)
        self._index += 1
        return frame

    def _stamp_counter(self, y: Image, u: Image, v: Image, n: int) -> None:
        text = f"{n:08d}"
        w, h = self._DIGIT_W, self._DIGIT_H
        top = (self.height // 2 - h // 2) & ~1
        x0 = (self.width // 2 - len(text) * w // 2) & ~1
        for i, ch in enumerate(text):
            y[top : top + h, x0 + i * w : x0 + (i + 1) * w] = self._digits[int(ch)]
        box = np.s_[top // 2 : (top + h) // 2, x0 // 2 : (x0 + len(text) * w) // 2]
        u[box] = v[box] = yuv.NEUTRAL_UV


def _digit_atlas(w: int, h: int) -> list[Image]:
    """Seven-segment digits, drawn once, white on black (luma)."""
    segs = {
        0: "abcdef",
        1: "bc",
        2: "abdeg",
        3: "abcdg",
        4: "bcfg",
        5: "acdfg",
        6: "acdefg",
        7: "abc",
        8: "abcdefg",
        9: "abcdfg",
    }
    t = 2
    m = h // 2
    boxes = {
        "a": (0, t, 0, w),
        "g": (m - 1, m + 1, 0, w),
        "d": (h - t, h, 0, w),
        "f": (0, m, 0, t),
        "b": (0, m, w - t, w),
        "e": (m, h, 0, t),
        "c": (m, h, w - t, w),
    }
    atlas = []
    for d in range(10):
        tile = np.full((h, w), yuv.BLACK_Y, np.uint8)
        for s in segs[d]:
            y0, y1, x0, x1 = boxes[s]
            tile[y0:y1, x0 + 1 : x1 - 1 if x1 > t else x1] = yuv.WHITE_Y
        atlas.append(tile)
    return atlas
