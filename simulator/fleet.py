"""The panel's simulated fleet: body recorders and interview rooms in real time, each
body recorder worn by an officer, with (optionally) a local agency site to sync to.

Example::

    with Fleet(workdir, devices=2, rooms=1, sync=False) as fleet:
        fleet.devices[0].act("record")
        print(fleet.view()["devices"][0]["badges"])     # ['340201']
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from agent import assignment
from agent.run import make_uploader
from common.recording_settings import Recording
from common.settings import DeviceConfig
from device.clock import SimClock
from simulator.device import SimDevice
from simulator.live import LiveDevice
from simulator.live_room import CaseSystem, LiveRoom, SimPanel

if TYPE_CHECKING:
    from simulator.site import LocalSite

log = logging.getLogger(__name__)

FIRST_ROOM = 101  # rooms are numbered from here: 101, 102, ...
FIRST_BADGE = 340201  # the officers wearing the fleet's body recorders: 340201, 340202, ...
SYNC_GRACE_SECONDS = 10.0  # at stop: time given to the uploaders to send the last entries


def panel_config() -> DeviceConfig:
    """Small pictures, so that a fleet runs in real time on a laptop."""
    return DeviceConfig(
        recording=Recording(width=640, height=360, fps=15, prebuffer_seconds=10),
    )


class Fleet:
    """N simulated body recorders and M interview rooms in real time, with a local agency
    site to sync to (optional). A room is numbered from 101 and its controller is
    ``room-sim-<room>``; its configuration is ``config`` with a ``[room]`` section (the
    default room if ``config`` has none), and a body recorder's is ``config`` without."""

    def __init__(
        self,
        workdir: Path,
        devices: int = 2,
        config: DeviceConfig | None = None,
        sync: bool = False,
        rooms: int = 0,
    ) -> None:
        if devices < 0 or rooms < 0 or devices + rooms < 1:
            raise ValueError("a fleet needs at least one device or room")
        self.workdir = workdir.resolve()
        self.config = config or panel_config()
        self.body_config = self.config.model_copy(update={"room": None})
        self.room_config = self.config.for_room_controller()
        self.sync = sync
        self.count = devices
        self.room_count = rooms
        self.site: LocalSite | None = None
        self.cases: CaseSystem | None = None
        self.devices: list[LiveDevice] = []  # body recorders first, then rooms
        self._started = False

    @property
    def rooms(self) -> list[LiveRoom]:
        return [d for d in self.devices if isinstance(d, LiveRoom)]

    def start(self) -> Fleet:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._started = True
        body_ids = [f"bwc-sim-{i:02d}" for i in range(1, self.count + 1)]
        rooms = [str(FIRST_ROOM + i) for i in range(self.room_count)]
        site = None
        if self.sync:
            from simulator.site import LocalSite

            site = self.site = LocalSite(self.workdir / "site")
            site.start_broker()
            site.start_store()
            self.cases = CaseSystem(site)
            # Everything enrolled before anything connects: each room and panel reloads the
            # broker's ACL.
            body_settings = self.body_config.model_dump(mode="json", exclude_defaults=True)
            room_settings = self.room_config.model_dump(mode="json", exclude_defaults=True)
            body_data = [site.provision_device(d, settings=body_settings) for d in body_ids]
            for device_id, data in zip(body_ids, body_data, strict=True):
                self._assign(site, device_id, data)
            room_data = [
                site.provision_device(f"room-sim-{r}", settings=room_settings, room=r)
                for r in rooms
            ]
            for r in rooms:
                site.enroll_panel(r)
        else:
            body_data = [
                self.workdir / "devices" / f"sim-{i:02d}" for i in range(1, self.count + 1)
            ]
            room_data = [self.workdir / "devices" / f"room-{r}" for r in rooms]
        for data, device_id in zip(body_data, body_ids, strict=True):
            clock = SimClock(wall_start=time.time())  # simulated time, starting now
            config = self.body_config
            if site is None:  # no agency to assign them: the settings name the officer
                session = config.session.model_copy(update={"badges": self.badges(device_id)})
                config = config.model_copy(update={"session": session})
            dev = SimDevice(data, config, clock=clock, realtime=True)
            if site is None:
                live = LiveDevice(dev)
            else:
                live = LiveDevice(dev, site.uploader(data, clock), site.uploader)
            self.devices.append(live)
            live.start()
        for room, data in zip(rooms, room_data, strict=True):
            clock = SimClock(wall_start=time.time())
            dev = SimDevice(data, self.room_config, clock=clock, realtime=True)
            uploader = None
            if site is not None:
                # The room's uploader also talks with the panel (room topics, on_panel).
                uploader = make_uploader(data, dev.recorder, self.room_config, dev.clock)
            client = site.panel_client(room) if site else None
            panel = SimPanel(dev.recorder, room if site else None, client)
            live_room = LiveRoom(dev, uploader, panel, self.cases)
            self.devices.append(live_room)
            live_room.start()
            # The key is not retained: a turn before the controller listens would be lost.
            if uploader is not None and not uploader.connected.wait(10):
                log.warning("%s has not connected to the broker yet", live_room.id)

    def badges(self, device_id: str) -> list[str]:
        """Who wears body recorder ``device_id``: the configured badges, else one officer
        each (bwc-sim-01 is 340201's)."""
        if self.body_config.session.badges:
            return list(self.body_config.session.badges)
        return [str(FIRST_BADGE + int(device_id.rsplit("-", 1)[1]) - 1)]

    def _assign(self, site: LocalSite, device_id: str, data: Path) -> None:
        """The agency assigns the recorder to its officer: a signed command, applied."""
        command = site.workdir / "outbox" / f"{device_id}-assign.cmd"
        command.parent.mkdir(parents=True, exist_ok=True)
        site.agency.assign(device_id, command, time.time(), badges=self.badges(device_id))
        assignment.apply_command(data, command.read_bytes(), time.time())

    def device(self, device_id: str) -> LiveDevice | None:
        return next((d for d in self.devices if d.id == device_id), None)

    def view(self) -> dict[str, Any]:
        return {
            "workdir": str(self.workdir),
            "sync": self.sync,
            "broker": f"127.0.0.1:{self.site.port}" if self.site else None,
            "time": time.time(),
            "rooms": self.room_count,
            "devices": [d.view() for d in self.devices],
        }

    def stop(self) -> None:
        """Close open sessions, stop the devices, let the uploaders send what was sealed
        last (a few seconds at most), then stop sync and the site."""
        if not self._started:
            return
        self._started = False
        for d in self.devices:
            d.request_stop()
        for d in self.devices:
            d.stop()
        deadline = time.monotonic() + SYNC_GRACE_SECONDS
        for d in self.devices:
            if d.uploader is not None and d.uploader.connected.is_set():
                d.uploader.wait_idle(max(0.0, deadline - time.monotonic()))
        for d in self.devices:
            d.close()
        if self.site is not None:
            self.site.close()
            self.site = None

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
