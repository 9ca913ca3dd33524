"""``unbroken agent run --sim``: the real agent process on simulated hardware (camera per
track, microphone, GNSS route, battery, gpiozero mock pins) against the real clock, with a
tester's control channel if asked for."""

from __future__ import annotations

from pathlib import Path

from gpiozero.pins.mock import MockFactory

from agent.recorder import Hardware, Recorder
from agent.run import HardwareError, room_lamp, run_agent
from agent.sync import Uploader
from common.settings import DeviceConfig
from device.clock import OffsetClock
from device.gnss import NmeaReplay
from device.microphone import SimMicrophone
from device.power import SimBattery
from device.storage import DiskStorage
from simulator.control import ControlChannel, serve, socket_path_problem
from simulator.device import shipped_route, sim_cameras


def run_simulated_agent(
    root: Path,
    config: DeviceConfig,
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
    if offline and control is None:
        raise HardwareError("--offline needs --control (to bring the network up)")
    if control is not None and (problem := socket_path_problem(control)):
        raise HardwareError(problem)
    clock = OffsetClock(clock_offset)
    rec = config.recording
    hardware = Hardware(
        cameras=sim_cameras(config, clock),
        microphone=SimMicrophone(rec.audio_rate),
        gnss=NmeaReplay(config.gnss.route or shipped_route(), clock, loop=True),
        battery=SimBattery(clock, drain_per_hour=0),
        storage=DiskStorage(root),
    )

    def attach(recorder: Recorder, uploader: Uploader | None) -> ControlChannel:
        assert control is not None
        return serve(control, recorder, clock, uploader, online=not offline)

    return run_agent(
        root,
        config,
        hardware,
        clock,
        lamp=room_lamp(config, MockFactory()),
        open_session=open_session,
        seconds=seconds,
        sync=sync,
        attach=attach if control is not None else None,
    )
