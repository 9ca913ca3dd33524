"""The panel's previews: each track's last watermarked picture as JPEG, scaled down to
:data:`PREVIEW_WIDTH`, encoded once per picture however many pages ask."""

from __future__ import annotations

import io
import threading

import numpy as np
from PIL import Image

from device import yuv

PREVIEW_WIDTH = 640  # larger pictures are scaled down for the page


class JpegPreviews:
    """The last picture of each track as JPEG, encoded once per picture however many
    pages ask for it (any thread). No picture yet: grey; none any more (the device
    stopped): the last one.

    >>> JpegPreviews().jpeg("main", None, (360, 640), 320)[:2]
    b'\\xff\\xd8'
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[np.ndarray | None, bytes]] = {}

    def jpeg(
        self, track: str, picture: np.ndarray | None, size: tuple[int, int], width: int
    ) -> bytes:
        """``picture``: the track's last (YUV 4:2:0, converted here: the preview is the
        only place frames become RGB); ``size``: (height, width) of the grey one;
        ``width``: wider pictures are scaled down to it."""
        with self._lock:
            cached, data = self._cache.get(track, (None, b""))
            if picture is not None and picture is cached:
                return data
            if picture is None:
                if data:
                    return data
                picture = yuv.blank(size[1], size[0], luma=40)
            img = Image.fromarray(yuv.to_rgb(picture))
            if img.width > width:
                img = img.resize((width, img.height * width // img.width))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=75)
            self._cache[track] = (picture, buf.getvalue())
            return buf.getvalue()
