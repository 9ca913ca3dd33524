"""Starting a scenario's devices: provision each at the site, then boot them all.

Used by the runner (:class:`simulator.scenario.Runner`); the site itself (broker, store,
agency keys) is :class:`~simulator.site.LocalSite`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from agent import assignment
from simulator.scenario_drivers import DeviceDriver, InProcessDevice, ProcessDevice
from simulator.scenario_model import Device
from simulator.site import LocalSite


def provision_fleet(
    site: LocalSite,
    fleet: dict[str, Device],
    pins: dict[str, str],
    workdir: Path,
    sockets: Path,
    fast: bool,
) -> dict[str, DeviceDriver]:
    """Provision (and assign) every device; the driver of each, not yet booted."""
    drivers: dict[str, DeviceDriver] = {}
    officers = workdir / "officers.json"
    if pins:
        from common.statements import officer_credentials

        officers.write_bytes(officer_credentials(site.agency.signing_key, pins))
    for dev in fleet.values():
        settings = dev.config().model_dump(mode="json", exclude_defaults=True)
        data = site.provision_device(dev.id, settings=settings, room=dev.spec.room)
        if dev.spec.badges:
            cmd = workdir / "outbox" / f"{dev.id}-assign.cmd"
            cmd.parent.mkdir(parents=True, exist_ok=True)
            site.agency.assign(dev.id, cmd, time.time(), badges=dev.spec.badges)
            assignment.apply_command(data, cmd.read_bytes(), time.time())
        if pins:
            shutil.copy(officers, data / "officers.json")  # what `agent explain` reads
        if fast:
            drivers[dev.id] = InProcessDevice(dev.id, data, dev.config(), 0.0)
        else:
            drivers[dev.id] = ProcessDevice(
                dev.id,
                data,
                sockets / f"{dev.id}.sock",
                workdir / "logs" / f"{dev.id}.log",
            )
    return drivers


def boot_fleet(
    drivers: dict[str, DeviceDriver],
    fleet: dict[str, Device],
    fast: bool,
    out: Callable[[str], None],
) -> tuple[float, float]:
    """Boot every device; (monotonic, wall clock) at scenario second 0."""
    specs = {i: d.spec for i, d in fleet.items()}
    if fast:
        wall0 = time.time()
        for i, drv in drivers.items():
            assert isinstance(drv, InProcessDevice)
            drv.wall0 = wall0
            drv.boot(0.0, specs[i].clock_offset_hours, specs[i].network)
        out(f"{len(drivers)} device(s) recording (fast: simulated time)")
        return 0.0, wall0
    procs = [d for d in drivers.values() if isinstance(d, ProcessDevice)]
    for d in procs:
        d.launch(0.0, specs[d.id].clock_offset_hours, specs[d.id].network)
    booted = time.monotonic()
    for d in procs:
        d.wait_ready()
    t0, wall0 = time.monotonic(), time.time()
    out(f"{len(procs)} agent process(es) recording after {t0 - booted:.1f} s")
    return t0, wall0
