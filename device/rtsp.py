"""A network camera read over RTSP: the :class:`~device.camera.Camera` port on an IP camera.

:class:`RtspCamera` pulls the stream over TCP (interleaved RTP, which survives NAT and
loses no packets the way UDP does) with PyAV, decoding in a daemon thread that keeps only
the newest frame. ``read()`` therefore never waits longer than one frame interval: it hands
out the frame that arrived since the last read, or, if none did yet, the newest one again.
Once no frame has arrived for ``timeout`` seconds (the camera is unplugged, the stream
ended, the server refused the path) ``read()`` raises :class:`~device.camera.CameraError`
naming the cause, and keeps doing so until the reader thread, which reconnects by itself
with exponential backoff, gets frames again.

Frames are resized to the configured size when the stream's differs, so the recorder
always gets what it was configured for.

Example::

    cam = RtspCamera("rtsp://10.0.0.7:554/stream1", width=1280, height=720, fps=25,
                     clock=SystemClock(), timeout=2.0)
    cam.start()                 # connects in the background; never blocks
    frame = cam.read()          # CameraError("... no frame yet ...") until the first frame
    cam.read().index            # frames since start; the same index if none arrived since
    cam.stop()
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from typing import Any

import av

from device.backoff import Backoff
from device.camera import CameraError, Image, VideoFrame
from device.clock import Clock

_log = logging.getLogger(__name__)


def convert(frame: Any, width: int, height: int) -> Image:
    """A decoded ``av.VideoFrame`` in the port's format, scaled to ``width`` x ``height``.

    Network and USB cameras deliver YUV 4:2:0 (H.264 decodes to it, most USB cameras'
    YUYV or MJPEG to something close), so this is a copy of the planes, converted only
    when the camera's format or size differs.
    """
    image: Image = frame.to_ndarray(format="yuv420p", width=width, height=height)
    return image


def redact(url: str) -> str:
    """The URL without its password, for messages and logs.

    Example::

        redact("rtsp://admin:secret@10.0.0.7/s1")   # "rtsp://admin@10.0.0.7/s1"
    """
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def check_url(url: str) -> str:
    """``url`` if it is an RTSP URL with a host, else a ValueError naming it."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"not a valid RTSP URL: {redact(url)!r} ({exc})") from None
    if parts.scheme not in ("rtsp", "rtsps") or not parts.hostname:
        raise ValueError(f"not an RTSP URL (rtsp://host[:port]/path): {redact(url)!r}")
    return url


class NewestFrame:
    """The newest frame a reader thread delivered, and why there is none when there is none.

    Example::

        slot = NewestFrame()
        slot.put(frame)               # the reader thread
        slot.wait_newer(-1, 0.04)     # frame (or None after 0.04 s without one)
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: VideoFrame | None = None
        self.problem = "no frame yet"  # what the reader last ran into

    def put(self, frame: VideoFrame) -> None:
        with self._cond:
            self._frame = frame
            self._cond.notify_all()

    def report(self, problem: str) -> None:
        with self._cond:
            self.problem = problem

    def wait_newer(self, index: int, timeout: float) -> VideoFrame | None:
        """The newest frame if its index is above ``index``, waiting up to ``timeout`` for
        one; else the newest frame there is (possibly ``None``)."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._frame is not None and self._frame.index > index, timeout
            )
            return self._frame


class StreamCamera:
    """A camera PyAV decodes in a daemon thread that keeps the newest frame; the reading,
    fault and reconnection logic shared by :class:`RtspCamera` and the V4L2 camera.

    A subclass says how to open its stream (``_open_stream``). ``name`` is what messages
    call the camera; ``timeout`` is how long without a frame makes ``read()`` report a
    fault; ``retry_initial`` and ``retry_max`` bound the delay between attempts to open
    the stream again.
    """

    def __init__(
        self,
        name: str,
        width: int,
        height: int,
        fps: int,
        clock: Clock,
        *,
        timeout: float = 2.0,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
    ) -> None:
        if width <= 0 or height <= 0 or fps <= 0:
            raise ValueError(
                f"camera {name} needs a positive size and rate, not {width}x{height}@{fps}"
            )
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        self.name = name
        self.width, self.height, self.fps = width, height, fps
        self._clock = clock
        self._timeout = timeout
        self._backoff = Backoff(retry_initial, retry_max)
        self._slot = NewestFrame()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = -1  # index of the frame read() handed out last
        self._started = 0.0
        self.connects = 0  # sessions that decoded at least one frame

    def start(self) -> None:
        """Start reading the stream in the background, and wait (up to ``timeout``) for its
        first frame: a camera that takes a moment to connect at boot is not a gap in the
        first second of a session. One that does not answer in time is reported by
        ``read()``, and the reader keeps trying."""
        self.stop()
        self._slot = NewestFrame()
        self._stop = threading.Event()
        self._last = -1
        self._started = self._clock.monotonic()
        self._thread = threading.Thread(
            target=self._run, args=(self._slot, self._stop), name=f"camera {self.name}", daemon=True
        )
        self._thread.start()
        self._slot.wait_newer(-1, self._timeout)

    def read(self) -> VideoFrame:
        """The newest frame, waiting at most one frame interval for one not yet handed out."""
        if self._thread is None:
            raise CameraError(f"camera {self.name} is not started")
        frame = self._slot.wait_newer(self._last, 1.0 / self.fps)
        now = self._clock.monotonic()
        since = frame.captured if frame is not None else self._started
        if now - since > self._timeout:
            raise CameraError(
                f"camera {self.name}: no frame for {now - since:.1f} s ({self._slot.problem})"
            )
        if frame is None:
            raise CameraError(f"camera {self.name}: no frame yet ({self._slot.problem})")
        self._last = frame.index
        # A copy each time: the recorder burns the watermark into the array it gets.
        return VideoFrame(frame.image.copy(), frame.captured, frame.index)

    def stop(self) -> None:
        """Stop the reader thread and close the stream. Harmless when not started."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        # The demuxer's own read timeout bounds how long a blocked read can take.
        thread.join(timeout=self._timeout + 5.0)

    def _open_stream(self) -> Any:
        """An open PyAV input container; raises ``av.FFmpegError`` (or OSError) if not."""
        raise NotImplementedError

    def _run(self, slot: NewestFrame, stop: threading.Event) -> None:
        index = 0
        while not stop.is_set():
            try:
                index = self._session(slot, stop, index)
            except Exception as exc:  # the thread must outlive any surprise
                _log.exception("reader for camera %s failed", self.name)
                slot.report(_describe("reader failed", exc))
            if stop.wait(self._backoff.next()):
                break

    def _session(self, slot: NewestFrame, stop: threading.Event, index: int) -> int:
        """One stream until it ends, fails or we stop; the next frame index."""
        try:
            container = self._open_stream()
        except (av.FFmpegError, OSError) as exc:
            slot.report(_describe("cannot open the stream", exc))
            return index
        with container:
            got_frames = False
            try:
                for decoded in container.decode(video=0):
                    if stop.is_set():
                        break
                    image = convert(decoded, self.width, self.height)
                    slot.put(VideoFrame(image, self._clock.monotonic(), index))
                    index += 1
                    if not got_frames:
                        got_frames = True
                        self.connects += 1
                        self._backoff.reset()
                else:
                    slot.report("the stream ended")
            except (av.FFmpegError, OSError) as exc:
                slot.report(_describe("stream lost", exc))
        return index


class RtspCamera(StreamCamera):
    """An RTSP camera over TCP; see the module docstring.

    ``url`` is the stream (``rtsp://[user:password@]host[:port]/path``); ``width``,
    ``height`` and ``fps`` are what the recorder is configured for; the keywords are
    :class:`StreamCamera`'s. A malformed URL is a ValueError here; a host that does not
    answer or a path the server does not have is a ``CameraError`` from ``read()``,
    because a camera can come back and the recorder must keep going.
    """

    def __init__(
        self,
        url: str,
        width: int,
        height: int,
        fps: int,
        clock: Clock,
        *,
        timeout: float = 2.0,
        retry_initial: float = 0.5,
        retry_max: float = 10.0,
    ) -> None:
        self.url = check_url(url)
        super().__init__(
            redact(url),
            width,
            height,
            fps,
            clock,
            timeout=timeout,
            retry_initial=retry_initial,
            retry_max=retry_max,
        )

    def _open_stream(self) -> Any:
        return av.open(
            self.url, options={"rtsp_transport": "tcp"}, timeout=(self._timeout, self._timeout)
        )


def _describe(what: str, exc: BaseException) -> str:
    detail = str(exc)
    return f"{what}: {detail}" if detail else f"{what}: {type(exc).__name__}"
