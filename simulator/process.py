"""``unbroken agent run --sim``: the real agent process on simulated hardware (camera per
track, microphone, GNSS route, battery, the real disk, gpiozero mock pins) against the real
clock, with a tester's control channel if asked for."""

from __future__ import annotations

from pathlib import Path

from agent.recorder import Recorder
from agent.run import room_lamp, run_agent
from agent.sync import Uploader
from common.settings import DeviceConfig
from device.clock import OffsetClock
from device.hardware import HardwareError
from simulator.control_channel import ControlChannel, serve, socket_path_problem
from simulator.device import sim_factory, simulated_evidence_key


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
    # A battery that holds its charge and the real disk, until a tester says otherwise.
    factory = sim_factory(battery_drain_per_hour=0, storage_capacity=None)
    hardware = factory.build(config, root, clock)

    def attach(recorder: Recorder, uploader: Uploader | None) -> ControlChannel:
        assert control is not None
        return serve(control, recorder, hardware, clock, uploader, online=not offline)

    return run_agent(
        root,
        config,
        hardware,
        clock,
        lamp=room_lamp(config, factory.pins),
        open_session=open_session,
        seconds=seconds,
        sync=sync,
        attach=attach if control is not None else None,
        evidence_key=simulated_evidence_key(root, config),
    )
