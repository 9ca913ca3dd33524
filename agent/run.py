"""``unbroken agent run``: the device process — recorder in real time, plus sync when the
device is provisioned.

With ``--sim`` it runs on simulated hardware (camera, microphone, GNSS route, battery,
gpiozero mock pins) against the real clock, which is what the simulator's fleets and the
power-cut tests start and kill. Without it, it runs on the Pi's hardware.

SIGTERM or SIGINT stops it cleanly (the open session is closed); SIGKILL is a power cut:
the next start recovers and resumes the session.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from agent.config import DeviceConfig
from agent.recorder import Hardware, Recorder
from agent.sync import SyncSettings, Uploader
from device.clock import Clock, OffsetClock, SystemClock
from device.controls import RecordingLamp
from device.gnss import NmeaReplay
from device.microphone import SimMicrophone
from device.power import SimBattery
from device.storage import DiskStorage

log = logging.getLogger(__name__)


class HardwareError(RuntimeError):
    pass


def sim_hardware(config: DeviceConfig, root: Path, clock: SystemClock) -> Hardware:
    from simulator.device import shipped_route, sim_cameras

    rec = config.recording
    return Hardware(
        cameras=sim_cameras(config, clock),
        microphone=SimMicrophone(rec.audio_rate),
        gnss=NmeaReplay(config.gnss.route or shipped_route(), clock, loop=True),
        battery=SimBattery(clock, drain_per_hour=0),
        storage=DiskStorage(root),
    )


def pi_hardware(config: DeviceConfig, root: Path, clock: SystemClock) -> Hardware:
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


def room_lamp(config: DeviceConfig, sim: bool) -> RecordingLamp | None:
    """A room controller's RECORDING lamp (on a mock pin when simulated)."""
    if config.room is None:
        return None
    from gpiozero.pins.mock import MockFactory

    return RecordingLamp(config.room.lamp_pin, pin_factory=MockFactory() if sim else None)


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
    from agent.enrolment import PROVISION, link

    if not (root / PROVISION / "bundle.json").exists():
        log.warning("not provisioned: recording without sync")
        return None
    return Uploader(
        root,
        recorder.device_id,
        link(root),
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
    sim: bool,
    open_session: bool = False,
    seconds: float | None = None,
    sync: bool = True,
    control: Path | None = None,
    clock_offset: float = 0.0,
    offline: bool = False,
) -> int:
    """``control``: a tester's control channel on this Unix socket (simulator/control.py);
    ``clock_offset``: the simulated device's wall clock is this many seconds off;
    ``offline``: start with the network down (the control channel brings it up)."""
    if not sim and (control is not None or clock_offset or offline):
        raise HardwareError("--control, --clock-offset and --offline need --sim")
    if offline and control is None:
        raise HardwareError("--offline needs --control (to bring the network up)")
    if control is not None:
        from simulator.control import socket_path_problem

        if problem := socket_path_problem(control):
            raise HardwareError(problem)
    clock = SystemClock()
    if sim:
        clock = OffsetClock(clock_offset)
    hardware = (sim_hardware if sim else pi_hardware)(config, root, clock)
    recorder = Recorder(root, config, hardware, clock)
    uploader = make_uploader(root, recorder, config, clock) if sync else None
    channel = None
    if control is not None:
        from simulator.control import serve

        channel = serve(control, recorder, clock, uploader, online=not offline)
    lamp = room_lamp(config, sim)
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
