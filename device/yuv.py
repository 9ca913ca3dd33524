"""Pictures as the cameras and the encoder see them: YUV 4:2:0, planar, in one array.

A picture of ``width`` x ``height`` is a C-contiguous ``uint8`` array of shape
``(height * 3 // 2, width)``: the luma plane (``height`` rows), then the U plane and the V
plane, each ``height/2`` x ``width/2`` pixels stored as ``height/4`` rows of the array. It
is the layout the Pi's ISP writes (picamera2's ``YUV420``) and PyAV's ``yuv420p``, so a
frame goes from the sensor to the encoder without a colour conversion: the watermark and
picture-in-picture are drawn on the planes.

Levels are the video range every H.264 decoder assumes: black is Y 16, white Y 235, and
grey has U = V = 128.

Example::

    pic = blank(640, 360)             # black
    y, u, v = planes(pic)             # views: writing into them writes into ``pic``
    y[:20] = WHITE_Y                  # a white band at the top; U and V stay neutral
    rgb = to_rgb(pic)                 # (360, 640, 3), for a preview, never for recording
"""

from __future__ import annotations

import av
import numpy as np
from numpy.typing import NDArray

Picture = NDArray[np.uint8]

BLACK_Y, WHITE_Y, NEUTRAL_UV = 16, 235, 128


def shape(width: int, height: int) -> tuple[int, int]:
    """The array shape of a ``width`` x ``height`` picture (both even)."""
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"a YUV 4:2:0 picture needs a positive, even size, not {width}x{height}")
    return height * 3 // 2, width


def size_of(picture: Picture) -> tuple[int, int]:
    """(width, height) of a picture."""
    return picture.shape[1], picture.shape[0] * 2 // 3


def planes(picture: Picture) -> tuple[Picture, Picture, Picture]:
    """The Y, U and V planes of a contiguous picture, as views into it."""
    width, height = size_of(picture)
    flat = picture.reshape(-1)
    n, q = width * height, width * height // 4
    y = flat[:n].reshape(height, width)
    u = flat[n : n + q].reshape(height // 2, width // 2)
    v = flat[n + q : n + 2 * q].reshape(height // 2, width // 2)
    return y, u, v


def blank(width: int, height: int, luma: int = BLACK_Y) -> Picture:
    """A uniform grey picture (black by default)."""
    pic = np.full(shape(width, height), NEUTRAL_UV, np.uint8)
    pic[:height] = luma
    return pic


def from_planes(y: Picture, u: Picture, v: Picture) -> Picture:
    """One picture from its three planes (copied)."""
    height, width = y.shape
    pic = np.empty(shape(width, height), np.uint8)
    py, pu, pv = planes(pic)
    py[...], pu[...], pv[...] = y, u, v
    return pic


def from_rgb(rgb: NDArray[np.uint8]) -> Picture:
    """An RGB array ``(height, width, 3)`` converted (for making scenes, not per frame)."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return np.ascontiguousarray(frame.reformat(format="yuv420p").to_ndarray(), np.uint8)


def to_rgb(picture: Picture) -> NDArray[np.uint8]:
    """The picture as RGB ``(height, width, 3)``: for previews and tests, never recording."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="yuv420p")
    return np.asarray(frame.to_ndarray(format="rgb24"), np.uint8)


def from_strided(buffer: Picture, width: int, height: int) -> Picture:
    """A contiguous picture from a camera buffer whose rows are ``stride`` bytes wide.

    picamera2 hands ``YUV420`` out as ``(height * 3 // 2, stride)``: luma rows of
    ``stride`` bytes, then chroma rows of ``stride // 2`` bytes, two to an array row.
    Copying is needed anyway (the buffer goes back to the camera); this copy drops the
    padding.
    """
    rows, stride = buffer.shape
    if rows != height * 3 // 2 or stride < width or stride % 2:
        raise ValueError(
            f"a {width}x{height} YUV420 buffer has {height * 3 // 2} rows of at least "
            f"{width} bytes, not {buffer.shape}"
        )
    if stride == width:
        return np.array(buffer, np.uint8, order="C")
    y = buffer[:height, :width]
    chroma = buffer[height:].reshape(height, stride // 2)  # one chroma row per array row
    u = chroma[: height // 2, : width // 2]
    v = chroma[height // 2 :, : width // 2]
    return from_planes(y, u, v)
