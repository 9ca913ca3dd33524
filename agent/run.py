"""``unbroken agent run``: the device process — recorder in real time, plus sync when the
device is provisioned.

The hardware comes from the caller: the device's own (:func:`real_hardware`), or the
simulator's (``agent run --sim``, :mod:`simulator.process`), which is what the simulator's
fleets and the power-cut tests start and kill.

SIGTERM or SIGINT stops it cleanly (the open session is closed); SIGKILL is a power cut:
the next start recovers and resumes the session.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from agent.recorder import Hardware, Recorder
from agent.sync import SyncSettings, Uploader
from common.settings import DeviceConfig
from device.clock import Clock
from device.controls import RecordingLamp

if TYPE_CHECKING:
    from gpiozero import Factory

log = logging.getLogger(__name__)


class HardwareError(RuntimeError):
    pass


def real_hardware(config: DeviceConfig, root: Path, clock: Clock) -> Hardware:
    raise HardwareError(
        "real hardware needs a microphone backend, which is not written yet: "
        "run with --sim (the Pi camera, GPIO and gpsd backends exist: device/picamera.py, "
        "device/controls.py, device/gnss.py)"
    )


def show_state(
    recorder: Recorder, uploader: Uploader | None, lamp: RecordingLamp | None = None
) -> None:
    """After each frame: the room's RECORDING lamp and panel follow the session; the
    recorder learns the 24-hour deadline level from the uploader."""
    if lamp is not None:
        lamp.show(recorder.session is not None)
    if uploader is not None:
        recorder.sync_deadline = uploader.deadline_level
        if recorder.room:
            uploader.show_on_panel(recorder.panel_state)


def room_lamp(config: DeviceConfig, pin_factory: Factory | None = None) -> RecordingLamp | None:
    """A room controller's RECORDING lamp (None for a body recorder)."""
    if config.room is None:
        return None
    return RecordingLamp(config.room.lamp_pin, pin_factory=pin_factory)


class Attach(Protocol):
    """Something started beside the recorder (the simulator's control channel)."""

    def start(self) -> object: ...

    def close(self) -> None: ...


def sync_settings(config: DeviceConfig) -> SyncSettings:
    s = config.sync
    return SyncSettings(
        chunk_size=s.chunk_size,
        bandwidth=s.bandwidth,
        keep_after_receipt_hours=s.keep_after_receipt_hours,
        warn_hours=s.warn_hours,
    )


def make_uploader(
    root: Path, recorder: Recorder, config: DeviceConfig, clock: Clock
) -> Uploader | None:
    """The uploader, once the device is provisioned (None before: nothing to sync to)."""
    from agent.enrolment import PROVISION, broker_settings

    if not (root / PROVISION / "bundle.json").exists():
        log.warning("not provisioned: recording without sync")
        return None
    return Uploader(
        root,
        recorder.device_id,
        broker_settings(root),
        clock,
        sync_settings(config),
        status_source=recorder.status,
        on_command=lambda data: recorder.post(lambda: recorder.apply_command(data)),
        room=recorder.room_id if recorder.room else None,
        on_panel=recorder.room_input,
    )


def run_agent(
    root: Path,
    config: DeviceConfig,
    hardware: Hardware,
    clock: Clock,
    lamp: RecordingLamp | None = None,
    open_session: bool = False,
    seconds: float | None = None,
    sync: bool = True,
    attach: Callable[[Recorder, Uploader | None], Attach] | None = None,
) -> int:
    """Record in real time on ``hardware`` until stopped. ``attach`` starts something beside
    the recorder that takes over starting the uploader (the simulator's control channel)."""
    recorder = Recorder(root, config, hardware, clock)
    uploader = make_uploader(root, recorder, config, clock) if sync else None
    channel = attach(recorder, uploader) if attach is not None else None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    recorder.start()
    if channel is not None:
        channel.start()  # listening, and the uploader started if the device is online
    elif uploader is not None:
        uploader.start()
    if open_session and recorder.session is None:
        recorder.open_session()
    print(
        f"recording: {recorder.status()['state']} session {recorder.status()['session']}",
        flush=True,
    )
    fps = config.recording.fps
    t0 = time.monotonic()
    n = 0
    try:
        while not stop.is_set() and not recorder.powered_off:
            if seconds is not None and time.monotonic() - t0 >= seconds:
                break
            recorder.step()
            show_state(recorder, uploader, lamp)
            n += 1
            delay = t0 + n / fps - time.monotonic()
            if delay > 0:
                stop.wait(delay)
    finally:
        if channel is not None:
            channel.close()
        if not recorder.powered_off:
            recorder.stop()
        show_state(recorder, uploader, lamp)
        if uploader is not None:
            uploader.stop()
        if lamp is not None:
            lamp.close()
    return 0
