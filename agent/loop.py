"""The frame loop: the one place a recorder is stepped, for ``agent run`` (on a board or
simulated), ``sim session``, the simulated devices of tests and benches, and the web panel.

Each frame: the recorder steps (queued events, then one frame captured, watermarked and
encoded); the record LED shows what the recorder asks for; :func:`relay_state` passes on
what the recorder and the uploader tell each other; then the loop waits (handling what is
posted meanwhile, such as a press, at once) for the next
frame's time (real time), advances a simulated clock one frame interval, or both.

Example::

    loop = FrameLoop(recorder, fps=30, lamp=lamp, uploader=uploader)
    loop.run(seconds=60)            # a minute in real time (or until stop() or power-off)
    FrameLoop(recorder, 30, clock=sim_clock, realtime=False).run(frames=300)  # fast
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.recorder import Recorder
    from agent.service import ServiceNotifier
    from agent.status_file import StatusFile
    from agent.sync import Uploader
    from device.clock import SimClock
    from device.controls import Controls, RecordingLamp


def relay_state(
    recorder: Recorder, uploader: Uploader | None, lamp: RecordingLamp | None = None
) -> None:
    """After a frame: a room's RECORDING lamp follows the session; the recorder learns the
    24-hour deadline level from the uploader, and the uploader the room panel's state."""
    if lamp is not None:
        lamp.show(recorder.session is not None)
    if uploader is not None:
        recorder.sync_deadline = uploader.deadline_level
        if recorder.room:
            uploader.show_on_panel(recorder.panel_state)


class Pacer:
    """When the next frame is due in real time: frame ``n`` is ``n / fps`` seconds after
    ``start``. ``max_lag``: once the frames are this many seconds late (a busy machine),
    the schedule starts again from now instead of racing to catch up (None: it races).

    Example::

        pacer = Pacer(fps=10, start=100.0)
        pacer.delay(frames=3, now=100.1)     # 0.2: frame 3 is due at 100.3
    """

    def __init__(self, fps: int, start: float, max_lag: float | None = None) -> None:
        self.fps = fps
        self.start = start
        self.max_lag = max_lag

    def restart(self, frames: int, at: float) -> None:
        """Frame ``frames`` was due ``at``: the schedule goes on from there. After time was
        lost (and sealed as lost), racing to catch up would squeeze real time into fewer
        seconds of footage than it took."""
        self.start = at - frames / self.fps

    def delay(self, frames: int, now: float) -> float:
        """Seconds to wait after ``frames`` frames (0 when late)."""
        delay = self.start + frames / self.fps - now
        if self.max_lag is not None and delay < -self.max_lag:
            self.start = now - frames / self.fps
        return max(0.0, delay)


class FrameLoop:
    """Steps ``recorder`` frame by frame and keeps what watches it in step: the record LED
    (``controls``), a room's RECORDING lamp and the ``uploader`` (:func:`relay_state`).

    ``realtime``: frames are paced against the machine's monotonic clock (``max_lag``: see
    :class:`Pacer`). ``clock``: a simulated clock advanced one frame interval per frame.
    ``on_frame(n)`` runs after frame ``n`` (the web panel's snapshot). ``service``: systemd's
    watchdog is pinged after each frame, so a loop that stalls is restarted by systemd."""

    def __init__(
        self,
        recorder: Recorder,
        fps: int,
        *,
        controls: Controls | None = None,
        lamp: RecordingLamp | None = None,
        uploader: Uploader | None = None,
        clock: SimClock | None = None,
        realtime: bool = True,
        max_lag: float | None = None,
        on_frame: Callable[[int], object] | None = None,
        stop: threading.Event | None = None,
        service: ServiceNotifier | None = None,
        status: StatusFile | None = None,
    ) -> None:
        self.recorder = recorder
        self.fps = fps
        self.controls = controls
        self.lamp = lamp
        self.uploader = uploader
        self.clock = clock
        self.realtime = realtime
        self.max_lag = max_lag
        self.on_frame = on_frame
        self.stopping = stop or threading.Event()
        self.service = service  # systemd's watchdog: pinged only while frames keep coming
        self.status = status  # DATA/status.json for `agent status`, about once a second

    def stop(self) -> None:
        """Ends an open-ended :meth:`run` before its next frame (any thread)."""
        self.stopping.set()

    def show(self) -> None:
        """The LED, the lamp and the uploader follow the recorder."""
        if self.controls is not None:
            self.controls.show(self.recorder.indicator)
        relay_state(self.recorder, self.uploader, self.lamp)

    def frame(self) -> bool:
        """One frame; whether real time was lost before it (see :class:`Pacer`)."""
        lost = bool(self.recorder.step())
        self.show()
        return lost

    def run(self, frames: int | None = None, seconds: float | None = None) -> int:
        """``frames``: exactly that many frame intervals (device time goes on while the
        device is off). Otherwise until :meth:`stop`, power-off, or ``seconds`` of real
        time. Returns the frames stepped."""
        t0 = time.monotonic()
        pacer = Pacer(self.fps, t0, self.max_lag)
        n = 0
        while self._more(n, frames, seconds, t0):
            began = time.monotonic()
            if self.frame():
                pacer.restart(n, began)
            n += 1
            if self.service is not None:
                self.service.alive(time.monotonic())
            if self.status is not None:
                self.status.maybe_write(time.monotonic())
            if self.on_frame is not None:
                self.on_frame(n)
            if self.realtime:
                self._wait(pacer.delay(n, time.monotonic()))
            if self.clock is not None:
                self.clock.advance(1 / self.fps)
        return n

    def _wait(self, delay: float) -> None:
        """Until the next frame's time: what is posted meanwhile (a press) is handled at
        once, so the session it opens is open when that frame comes."""
        until = time.monotonic() + delay
        posted = self.recorder.posted
        while (left := until - time.monotonic()) > 0 and not self.stopping.is_set():
            if posted.wait(left) and not self.recorder.powered_off:
                self.recorder.handle_events()
                self.show()

    def _more(self, n: int, frames: int | None, seconds: float | None, t0: float) -> bool:
        if frames is not None:
            return n < frames
        if self.stopping.is_set() or self.recorder.powered_off:
            return False
        return seconds is None or time.monotonic() - t0 < seconds
