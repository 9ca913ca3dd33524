"""A USB (UVC) camera through Video4Linux2: the :class:`~device.camera.Camera` port on
``/dev/videoN``, read by the V4L2 input of the FFmpeg inside PyAV's wheel.

:class:`V4l2Camera` asks the driver for the configured size and rate (and, if given, a
pixel format: ``mjpeg`` lets most USB cameras reach 720p at 30 fps, which raw ``yuyv422``
cannot over USB 2), and decodes in the reading thread of
:class:`~device.rtsp.StreamCamera`: the newest frame, a fault naming its cause after
``timeout`` seconds without one, the device opened again with backoff (a camera that was
unplugged and plugged back in comes back by itself).

Example::

    cam = V4l2Camera("/dev/video0", width=1280, height=720, fps=30, clock=SystemClock(),
                     input_format="mjpeg")
    cam.start()
    frame = cam.read()
    cam.stop()
"""

from __future__ import annotations

import os
import stat
from typing import Any

import av

from device.clock import Clock
from device.rtsp import StreamCamera


def check_device(path: str) -> str:
    """``path`` if it is a character device (as ``/dev/video0`` is), else a ValueError
    naming it."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ValueError(f"no V4L2 camera {path}: {exc.strerror}") from None
    if not stat.S_ISCHR(mode):
        raise ValueError(f"{path} is not a V4L2 camera (not a character device)")
    return path


class V4l2Camera(StreamCamera):
    """A V4L2 capture device; see the module docstring.

    ``device`` is the device node; ``width``, ``height`` and ``fps`` are asked of the
    driver (frames are scaled if it delivers another size); ``input_format`` is FFmpeg's
    name for the camera's pixel format (``mjpeg``, ``yuyv422``; ``None``: the driver's
    default). The keywords are :class:`~device.rtsp.StreamCamera`'s.
    """

    def __init__(
        self,
        device: str,
        width: int,
        height: int,
        fps: int,
        clock: Clock,
        *,
        input_format: str | None = None,
        timeout: float = 1.0,
        retry_initial: float = 0.5,
        retry_max: float = 5.0,
    ) -> None:
        self.device = check_device(device)
        self.input_format = input_format
        super().__init__(
            device,
            width,
            height,
            fps,
            clock,
            timeout=timeout,
            retry_initial=retry_initial,
            retry_max=retry_max,
        )

    def _open_stream(self) -> Any:
        options = {"video_size": f"{self.width}x{self.height}", "framerate": str(self.fps)}
        if self.input_format is not None:
            options["input_format"] = self.input_format
        return av.open(
            self.device, format="v4l2", options=options, timeout=(self._timeout, self._timeout)
        )
