"""The Raspberry Pi camera backend, through picamera2 (libcamera).

:class:`Picamera2Camera` implements the :class:`~device.camera.Camera` port on a Pi camera
module. It streams the ``main`` stream as ``YUV420`` (what the ISP produces and the H.264
encoder takes: no colour conversion anywhere) at a fixed frame duration, and hands out
frames that honour the port contract: a YUV 4:2:0 picture (:mod:`device.yuv`),
C-contiguous, writable, owned by the caller (not a view of a camera buffer), the row
padding of the camera's stride dropped.

picamera2 ships with Raspberry Pi OS (``apt install python3-picamera2``) and cannot be
installed elsewhere, so it is imported only when the camera starts; off a Pi, ``start()``
raises :class:`~device.camera.CameraError` saying so.

Timestamps come from the sensor, not from when Python got round to reading the frame:
the metadata's ``SensorTimestamp`` (nanoseconds, when the sensor began reading the frame
out) is mapped onto the clock's monotonic timeline by the offset taken at the first frame,
so frame times advance by the true frame interval however late each ``read()`` runs.

Example::

    cam = Picamera2Camera(width=1280, height=720, fps=30, clock=SystemClock())
    cam.start()                 # opens camera 0, fixed 1/30 s frames
    frame = cam.read()          # YUV 4:2:0 picture, stamped on clock.monotonic()'s timeline
    frame.image[:20] = 0        # writable: the recorder burns the watermark in place
    cam.stop()                  # stops streaming and frees the camera for other processes
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, Protocol, cast

import numpy as np

from device import yuv
from device.camera import CameraError, Image, VideoFrame
from device.clock import Clock

NOT_INSTALLED = (
    "picamera2 is not installed: the Pi camera backend runs only on Raspberry Pi OS "
    "(apt install python3-picamera2)"
)

# Planar Y, U, V (I420): what the encoders take, half the bytes of RGB. picamera2 hands it
# out as one array of height * 3 / 2 rows of ``stride`` bytes.
_FORMAT = "YUV420"


class _Request(Protocol):
    """The parts of ``picamera2.request.CompletedRequest`` this backend uses."""

    def make_array(self, name: str) -> Any: ...

    def get_metadata(self) -> dict[str, Any]: ...

    def release(self) -> None: ...


class _Picamera2(Protocol):
    """The parts of ``picamera2.Picamera2`` this backend uses."""

    def create_video_configuration(self, **kwargs: Any) -> dict[str, Any]: ...

    def configure(self, camera_config: dict[str, Any]) -> None: ...

    def camera_configuration(self) -> dict[str, Any] | None: ...

    def start(self) -> None: ...

    def capture_request(self, wait: float | None = None) -> _Request: ...

    def cancel_all_and_flush(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class Picamera2Camera:
    """A Raspberry Pi camera module, read frame by frame through picamera2.

    ``camera_num`` is picamera2's index (0 is the first camera; on a Pi 5 with two
    connectors, 1 is the second). ``timeout`` bounds how long ``read()`` waits for a
    frame before reporting a stall: a frame normally arrives within one frame interval,
    but a loose ribbon cable makes libcamera wait forever, and the recorder must log an
    interruption instead of hanging.

    Every picamera2 failure surfaces as :class:`~device.camera.CameraError` carrying the
    original message. Every captured request is released, even when reading it fails,
    because libcamera owns only a handful of buffers and stops delivering frames once
    they are all held.
    """

    def __init__(
        self,
        width: int,
        height: int,
        fps: int,
        clock: Clock,
        camera_num: int = 0,
        *,
        timeout: float = 1.0,
    ) -> None:
        # picamera2 silently rounds odd sizes down; refusing here beats a frame of the
        # wrong shape later.
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"the Pi camera needs a positive, even size, not {width}x{height}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, not {fps}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        self.width, self.height, self.fps = width, height, fps
        self.camera_num = camera_num
        self._clock = clock
        self._timeout = timeout
        self._frame_us = 1_000_000 // fps
        self._cam: _Picamera2 | None = None
        self._index = 0
        # (SensorTimestamp ns, clock.monotonic()) at the first stamped frame since start().
        self._anchor: tuple[int, float] | None = None

    def start(self) -> None:
        """Open the camera, configure the ``main`` stream and start streaming."""
        if self._cam is not None:
            # libcamera hands a camera to one owner at a time: a second Picamera2 on the
            # same sensor fails while this one is open.
            self.stop()
        module = _load_picamera2()
        try:
            cam = cast(_Picamera2, module.Picamera2(self.camera_num))
        except Exception as exc:
            raise CameraError(_describe(f"cannot open camera {self.camera_num}", exc)) from exc
        try:
            config = cam.create_video_configuration(
                main={"size": (self.width, self.height), "format": _FORMAT},
                # Equal limits pin the frame rate: auto-exposure may then lengthen
                # exposure only up to the frame duration, never slow the video down.
                controls={"FrameDurationLimits": (self._frame_us, self._frame_us)},
            )
            cam.configure(config)
            self._check_configuration(cam.camera_configuration())
            cam.start()
        except Exception as exc:
            # Release the sensor, or the next start() could not open it again.
            with contextlib.suppress(Exception):
                cam.close()
            if isinstance(exc, CameraError):
                raise
            raise CameraError(_describe(f"cannot start camera {self.camera_num}", exc)) from exc
        self._cam = cam
        self._index = 0
        self._anchor = None

    def read(self) -> VideoFrame:
        """The next frame from the sensor, YUV 4:2:0, stamped with when the sensor produced it."""
        cam = self._cam
        if cam is None:
            raise CameraError(f"camera {self.camera_num} is not started")
        try:
            request = cam.capture_request(wait=self._timeout)
        except TimeoutError as exc:
            # The timed-out job stays queued in picamera2 and would later take a frame
            # that nobody releases; flush it so the buffers keep circulating.
            with contextlib.suppress(Exception):
                cam.cancel_all_and_flush()
            raise CameraError(
                f"camera {self.camera_num} delivered no frame within {self._timeout:g} s "
                "(stalled, or the cable is loose)"
            ) from exc
        except Exception as exc:
            raise CameraError(_describe(f"camera {self.camera_num} capture failed", exc)) from exc
        try:
            try:
                buffer = request.make_array("main")
                metadata = request.get_metadata()
            finally:
                request.release()
        except Exception as exc:
            raise CameraError(_describe(f"camera {self.camera_num} frame failed", exc)) from exc
        frame = VideoFrame(
            image=self._to_picture(buffer), captured=self._captured(metadata), index=self._index
        )
        self._index += 1
        return frame

    def stop(self) -> None:
        """Stop streaming and close the camera. Harmless when not started."""
        cam, self._cam = self._cam, None
        if cam is None:
            return
        try:
            try:
                cam.stop()
            finally:
                # Close even if stopping failed: an open camera stays claimed.
                cam.close()
        except Exception as exc:
            raise CameraError(_describe(f"cannot stop camera {self.camera_num}", exc)) from exc

    def _check_configuration(self, config: dict[str, Any] | None) -> None:
        # libcamera may adjust a configuration it cannot meet instead of refusing it;
        # frames of another size or format would break the recorder further down.
        main = (config or {}).get("main") or {}
        size, fmt = main.get("size"), main.get("format")
        if size is not None and tuple(size) != (self.width, self.height):
            raise CameraError(
                f"camera {self.camera_num} cannot deliver {self.width}x{self.height}: "
                f"libcamera adjusted it to {size[0]}x{size[1]}"
            )
        if fmt is not None and fmt != _FORMAT:
            raise CameraError(
                f"camera {self.camera_num} cannot deliver {_FORMAT}: libcamera chose {fmt}"
            )

    def _to_picture(self, buffer: Any) -> Image:
        rows = self.height * 3 // 2
        if not isinstance(buffer, np.ndarray) or buffer.ndim != 2 or buffer.dtype != np.uint8:
            got = (
                f"{buffer.shape} {buffer.dtype}"
                if isinstance(buffer, np.ndarray)
                else type(buffer).__name__
            )
            raise CameraError(
                f"camera {self.camera_num} gave a {got} frame, expected YUV420 ({rows}, stride)"
            )
        try:
            # The copy drops the stride's padding, and is what lets the caller write into
            # the frame after its buffer went back to libcamera.
            return yuv.from_strided(buffer, self.width, self.height)
        except ValueError as exc:
            raise CameraError(f"camera {self.camera_num}: {exc}") from None

    def _captured(self, metadata: dict[str, Any]) -> float:
        ts = metadata.get("SensorTimestamp")
        if not isinstance(ts, int | np.integer):
            return self._clock.monotonic()
        ts = int(ts)
        if self._anchor is None:
            self._anchor = (ts, self._clock.monotonic())
        ts0, mono0 = self._anchor
        # Subtract in integer nanoseconds first: boot-relative stamps are large enough
        # that converting each to float seconds would blur the frame interval.
        return mono0 + (ts - ts0) / 1e9


def require_picamera2() -> None:
    """Raise :class:`CameraError` naming what is missing if picamera2 cannot be used here
    (checked when the hardware is built, so a device without it fails at start)."""
    _load_picamera2()


def _load_picamera2() -> Any:
    try:
        return importlib.import_module("picamera2")
    except ModuleNotFoundError as exc:
        if exc.name == "picamera2":
            raise CameraError(NOT_INSTALLED) from exc
        # picamera2 is there but a dependency is not; typically pip-installed picamera2
        # in a virtualenv that cannot see the apt-installed libcamera bindings.
        raise CameraError(
            f"picamera2 is installed but cannot import {exc.name!r}: use the apt package "
            "(python3-picamera2) and create the virtualenv with --system-site-packages"
        ) from exc
    except Exception as exc:
        raise CameraError(_describe("picamera2 failed to import", exc)) from exc


def _describe(what: str, exc: BaseException) -> str:
    detail = str(exc)
    name = type(exc).__name__
    return f"{what}: {name}: {detail}" if detail else f"{what}: {name}"
