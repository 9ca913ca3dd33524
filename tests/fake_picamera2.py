"""A fake of the parts of picamera2 that ``device.picamera`` uses, faithful where it matters.

It follows picamera2's own code (``picamera2/picamera2.py`` and ``picamera2/request.py``):

- ``create_video_configuration`` returns the same dict shape, with the same defaults
  (XBGR8888 1280x720, six buffers, ``FrameDurationLimits`` of 33333 µs merged *under* the
  caller's controls), accepts only ``format``, ``size``, ``stride`` and ``preserve_ar`` in a
  stream dict (``ValueError`` otherwise) and rounds sizes down to even.
- ``configure`` raises ``RuntimeError`` for a bad format, a size that is not an even
  ``(width, height)`` tuple, or a started camera, and fills in ``stride`` and
  ``framesize`` as libcamera does. ``adjust_main_size`` mimics libcamera adjusting a size
  it cannot meet (``Status.Adjusted``), which picamera2 only logs.
- ``make_array`` of an ``RGB888`` stream is B, G, R in memory (``BGR888`` is R, G, B), with
  rows padded to a 64-byte stride and copied out contiguous, as picamera2 does.
- ``get_metadata`` has ``SensorTimestamp`` (ns since boot, advancing by the frame duration),
  ``FrameDuration`` and ``ExposureTime`` (µs).
- ``release`` twice raises, as the real reference count does.

Stricter than picamera2 where picamera2 would hang or misbehave silently: a second
``capture_request`` while a request is still held raises (the real pipeline stalls once
every buffer is held), capturing from a stopped camera raises instead of blocking for
ever, and ``stall = True`` makes ``capture_request(wait=seconds)`` time out at once.

Install it as ``sys.modules["picamera2"]`` (see the fixture in ``test_picamera.py``)::

    module, Picamera2 = make_module()
    monkeypatch.setitem(sys.modules, "picamera2", module)
    ...
    fake = Picamera2.opened[-1]   # the instance the code under test created
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

# Where the fake sensor clock starts: two hours after boot, so that stamps are large.
BOOT_NS = 7_200_123_456_789
SENSOR_FORMAT = "SRGGB10_CSI2P"
SENSOR_MIN_FRAME_US = 8_333  # 120 fps, the fastest mode of a Camera Module 3
NOISE_REDUCTION_FAST = 1  # libcamera.controls.draft.NoiseReductionModeEnum.Fast
RGB_FORMATS = ("XBGR8888", "XRGB8888", "BGR888", "RGB888", "BGR161616", "RGB161616")
YUV_FORMATS = ("YUV420", "YVU420", "NV12", "NV21", "YUYV", "YVYU", "UYVY", "VYUY")
_STREAM_KEYS = ("format", "size", "stride", "preserve_ar")


def scene(width: int, height: int, frame: int) -> NDArray[np.uint8]:
    """What the fake sensor sees, as RGB: R, G and B in disjoint ranges, so a swapped or
    flipped channel shows. Pixel (0, 0) of frame 0 is exactly (210, 120, 30)."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = 210 - xx % 8
    rgb[..., 1] = 120 - yy % 8
    rgb[..., 2] = 30 + frame % 8
    return rgb


@dataclass
class Transform:
    """Stands in for ``libcamera.Transform``."""

    hflip: bool = False
    vflip: bool = False


class CompletedRequest:
    """One frame, held by the caller until ``release()``."""

    def __init__(self, camera: Picamera2, frame: int, config: dict[str, Any]) -> None:
        self.camera = camera
        self.frame = frame
        self.config = config
        self.ref_count = 1
        self.make_array_calls = 0

    @property
    def released(self) -> bool:
        return self.ref_count == 0

    def make_array(self, name: str) -> NDArray[np.uint8]:
        self.make_array_calls += 1
        if self.released:
            raise RuntimeError("CompletedRequest: make_array after release")
        stream = self.config.get(name)
        if name not in ("main", "lores", "raw") or stream is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        if self.camera.fail_make_array is not None:
            raise self.camera.fail_make_array
        fmt = stream["format"]
        w, h = stream["size"]
        stride = stream["stride"]
        rgb = scene(w, h, self.frame)
        # The buffer as the ISP writes it: each row padded out to the stride.
        buffer = np.zeros((h, stride), np.uint8)
        pixels = buffer[:, : w * 3].reshape(h, w, 3)
        if fmt == "RGB888":  # B, G, R in memory
            pixels[..., 0], pixels[..., 1], pixels[..., 2] = rgb[..., 2], rgb[..., 1], rgb[..., 0]
        elif fmt == "BGR888":  # R, G, B in memory
            pixels[...] = rgb
        else:
            raise NotImplementedError(f"the fake makes arrays only for RGB888/BGR888, not {fmt}")
        # picamera2 copies the padded rows out contiguous.
        return np.asarray(buffer[:, : w * 3], order="C").reshape(h, w, 3)

    def get_metadata(self) -> dict[str, Any]:
        if self.released:
            raise RuntimeError("CompletedRequest: get_metadata after release")
        frame_us = self.camera.frame_us
        metadata: dict[str, Any] = {
            "FrameDuration": frame_us,
            "ExposureTime": frame_us - 500,
            "AnalogueGain": 2.0,
            "DigitalGain": 1.0,
        }
        if not self.camera.omit_sensor_timestamp:
            metadata["SensorTimestamp"] = BOOT_NS + self.frame * frame_us * 1000
        return metadata

    def release(self) -> None:
        self.ref_count -= 1
        if self.ref_count < 0:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        if self.ref_count == 0 and self in self.camera.held:
            self.camera.held.remove(self)


class Picamera2:
    """The fake camera. ``make_module`` gives each test a subclass with fresh class state."""

    opened: ClassVar[list[Picamera2]] = []
    attached_cameras: ClassVar[int] = 1
    adjust_main_size: ClassVar[tuple[int, int] | None] = None

    def __init__(self, camera_num: int = 0) -> None:
        if not 0 <= camera_num < self.attached_cameras:
            # picamera2 indexes its list of attached cameras with camera_num.
            raise IndexError("list index out of range")
        self.camera_num = camera_num
        self.is_open = True
        self.started = False
        self.camera_config: dict[str, Any] | None = None
        self.video_configuration_calls: list[dict[str, Any]] = []
        self.requests: list[CompletedRequest] = []
        self.held: list[CompletedRequest] = []
        self.waits: list[float | None] = []
        self.flushes = 0
        self.stops = 0
        self.frame_us = 33_333
        self._frames = 0
        # Knobs for tests, changed on the instance after the code under test created it.
        self.fail_make_array: Exception | None = None
        self.omit_sensor_timestamp = False
        self.stall = False
        type(self).opened.append(self)

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Transform | None = None,
        colour_space: str | None = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] | None = None,
        use_case: str = "video",
    ) -> dict[str, Any]:
        self.video_configuration_calls.append(
            {"main": main, "lores": lores, "raw": raw, "controls": controls}
        )
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        main_cfg = _stream({"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}, main)
        assert main_cfg is not None
        _align(main_cfg)
        lores_cfg = _stream(
            {"format": "YUV420", "size": main_cfg["size"], "preserve_ar": False}, lores
        )
        if lores_cfg is not None:
            _align(lores_cfg)
        raw_cfg = _stream(
            {"format": SENSOR_FORMAT, "size": main_cfg["size"]}, {} if raw is None else raw
        )
        if colour_space is None:
            small = main_cfg["size"][0] < 1280 or main_cfg["size"][1] < 720
            colour_space = "Smpte170m" if small else "Rec709"
        merged = {
            "NoiseReductionMode": NOISE_REDUCTION_FAST,
            "FrameDurationLimits": (33333, 33333),
        } | (controls or {})
        config: dict[str, Any] = {
            "use_case": use_case,
            "transform": transform or Transform(),
            "colour_space": colour_space,
            "buffer_count": buffer_count,
            "queue": queue,
            "main": main_cfg,
            "lores": lores_cfg,
            "raw": raw_cfg,
            "controls": merged,
            "sensor": {} if sensor is None else sensor,
            "display": display,
            "encode": encode,
        }
        return config

    def configure(self, camera_config: dict[str, Any] | None = None) -> None:
        if camera_config is None:
            raise NotImplementedError("the fake has no preview configuration; pass one")
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        config = dict(camera_config)  # picamera2 copies shallowly: stream dicts are shared
        for key in ("colour_space", "transform", "main", "lores", "raw"):
            if key not in config:
                raise RuntimeError(f"{key!r} key expected in camera configuration")
        _check_stream(config["main"], "main")
        if config["lores"] is not None:
            _check_stream(config["lores"], "lores")
        main = config["main"]
        if self.adjust_main_size is not None:
            main["size"] = self.adjust_main_size  # libcamera's validate() says "Adjusted"
        w, h = main["size"]
        bytes_per_pixel = 4 if main["format"] in ("XBGR8888", "XRGB8888") else 3
        main["stride"] = -(-w * bytes_per_pixel // 64) * 64
        main["framesize"] = main["stride"] * h
        lo, hi = config["controls"].get("FrameDurationLimits", (33333, 33333))
        if lo > hi:
            raise RuntimeError(f"FrameDurationLimits {lo} > {hi}")
        self.frame_us = max(lo, SENSOR_MIN_FRAME_US)
        self.camera_config = config

    def camera_configuration(self) -> dict[str, Any] | None:
        return self.camera_config

    def start(
        self, config: dict[str, Any] | None = None, show_preview: bool | None = False
    ) -> None:
        if config is not None:
            self.configure(config)
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def capture_request(
        self, wait: float | None = None, signal_function: Any = None, flush: Any = None
    ) -> CompletedRequest:
        self.waits.append(wait)
        if not self.started or self.stall:
            if wait is None or wait is True:
                raise RuntimeError(
                    "fake picamera2: no frames are coming; the real one would block for ever"
                )
            raise TimeoutError()  # concurrent.futures.TimeoutError, as Job.get_result raises
        if self.held:
            raise RuntimeError(
                "fake picamera2: a request is still held; release() it first "
                "(real picamera2 stalls once every buffer is held)"
            )
        assert self.camera_config is not None
        request = CompletedRequest(self, self._frames, dict(self.camera_config))
        self._frames += 1
        self.requests.append(request)
        self.held.append(request)
        return request

    def cancel_all_and_flush(self) -> None:
        self.flushes += 1

    def stop(self) -> None:
        if not self.started:
            return
        self.stops += 1
        self.started = False

    def close(self) -> None:
        if not self.is_open:
            return
        self.stop()
        self.is_open = False
        self.camera_config = None


def make_module(attached_cameras: int = 1) -> tuple[types.ModuleType, type[Picamera2]]:
    """A fresh ``picamera2`` module whose ``Picamera2`` records the instances it opens."""
    cls = type(
        "Picamera2",
        (Picamera2,),
        {"opened": [], "attached_cameras": attached_cameras, "adjust_main_size": None},
    )
    module = types.ModuleType("picamera2", "fake picamera2 (tests/fake_picamera2.py)")
    module.Picamera2 = cls  # type: ignore[attr-defined]
    module.CompletedRequest = CompletedRequest  # type: ignore[attr-defined]
    return module, cls


def _stream(defaults: dict[str, Any], updates: dict[str, Any] | None) -> dict[str, Any] | None:
    if updates is None:
        return None
    for key, value in updates.items():
        if key not in _STREAM_KEYS:
            raise ValueError(f"Bad key {key!r}: valid stream configuration keys are {_STREAM_KEYS}")
        defaults[key] = value
    return defaults


def _align(stream: dict[str, Any]) -> None:
    # create_*_configuration aligns with optimal=False: both dimensions rounded down to even.
    w, h = stream["size"]
    stream["size"] = (w - w % 2, h - h % 2)


def _check_stream(stream: Any, name: str) -> None:
    if type(stream) is not dict:
        raise RuntimeError(name + " stream should be a dictionary")
    if "format" not in stream:
        raise RuntimeError("format not found in " + name + " stream")
    if "size" not in stream:
        raise RuntimeError("size not found in " + name + " stream")
    fmt = stream["format"]
    if type(fmt) is not str:
        raise RuntimeError("format in " + name + " stream should be a string")
    if fmt not in RGB_FORMATS and fmt not in YUV_FORMATS and fmt != "MJPEG":
        raise RuntimeError("Bad format " + fmt + " in stream " + name)
    size = stream["size"]
    if type(size) is not tuple or len(size) != 2:
        raise RuntimeError("size in " + name + " stream should be (width, height)")
    if size[0] % 2 or size[1] % 2:
        raise RuntimeError("width and height should be even")
