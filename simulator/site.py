"""A whole agency on one machine: agency keys and registry, a real Mosquitto with the
provisioned TLS configuration on a free loopback port, store workers, and provisioned
devices — what the demo, the simulator's scenarios, the sync tests and the benchmarks run.

Example::

    with LocalSite(workdir) as site:
        site.start_broker()
        site.start_store()
        data = site.provision_device("bwc-0001")
        ...                                   # record with SimDevice(data), sync with
        up = site.uploader(data, clock)       # the device's real uploader
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import tomli_w

from agent import assignment, enrolment, provisioned
from agent.config import device_config
from agent.identity import load_identity
from agent.run import make_uploader
from agent.sync import Uploader
from common import pki
from common.bundle import Broker
from common.mqtt import Client, tls_client
from common.settings import Sync
from device.clock import Clock, SimClock, SystemClock
from provisioning.agency import Agency, init_agency
from provisioning.broker_config import write_broker_config
from simulator.mosquitto import Mosquitto, free_port
from store.commands import Outcome, publish_command
from store.commands import send_command as store_send
from store.config import load_store_config
from store.db import Database
from store.worker import Worker, start_worker

if TYPE_CHECKING:
    from simulator.device import SimDevice

log = logging.getLogger(__name__)


class LocalSite:
    def __init__(self, workdir: Path, port: int | None = None, database: str | None = None):
        self.workdir = workdir.resolve()  # store.toml paths must not depend on the cwd
        self.port = port or free_port()
        self.database = database or f"sqlite:///{self.workdir / 'store' / 'store.db'}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        agency_dir = self.workdir / "agency"
        if (agency_dir / "agency.toml").exists():
            self.agency = Agency(agency_dir)
        else:
            self.agency = init_agency(
                agency_dir, "Local agency", Broker(host="127.0.0.1", port=self.port), time.time()
            )
        self.broker: Mosquitto | None = None
        self.workers: list[Worker] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self._store_configs: dict[str, Path] = {}

    # -- the agency side ------------------------------------------------------------

    def store_config(self, name: str = "1") -> Path:
        """Enrol a store worker certificate and write its store.toml (once per name)."""
        if name in self._store_configs:
            return self._store_configs[name]
        out = self.workdir / "store" / f"worker-{name}"
        self.agency.enroll_store(name, out, time.time())
        snippet = tomllib.loads((out / "broker.toml").read_text())
        config = {
            "name": f"store-{name}",
            "database": self.database,
            "blobs": str(self.workdir / "store" / "blobs"),
            "agency": str(self.agency.root),
            "broker": {**snippet["broker"], "port": self.port},
            "receipts": snippet["receipts"],
        }
        path = out / "store.toml"
        path.write_text(tomli_w.dumps(config))
        self._store_configs[name] = path
        return path

    def start_broker(self) -> Mosquitto:
        conf_dir = self.workdir / "broker"
        write_broker_config(self.agency, conf_dir, self.port, time.time())
        if self.broker is None:
            self.broker = Mosquitto(conf_dir / "mosquitto.conf", self.port).start()
        else:
            self.broker.reload()
        return self.broker

    def stop_broker(self) -> None:
        if self.broker:
            self.broker.stop()
            self.broker = None

    def start_store(self, workers: int = 1) -> list[Worker]:
        for i in range(workers):
            config = load_store_config(self.store_config(str(len(self.workers) + 1 + i)))
            self.workers.append(start_worker(config))
        if self.broker:
            self.start_broker()  # the ACL now names the new store certificates
        for w in self.workers:
            w.ready.wait(10)
        return self.workers

    def start_store_processes(self, workers: int = 2) -> list[subprocess.Popen[bytes]]:
        """Store workers as their own processes (``unbroken store run``), as an agency
        would run them: the devices' threads here then do not share their interpreter."""
        configs = [self.store_config(str(len(self.workers) + 1 + i)) for i in range(workers)]
        self.start_broker()
        for config in configs:
            log = open(config.with_suffix(".log"), "ab")  # noqa: SIM115  (the child owns it)
            proc = subprocess.Popen(
                [sys.executable, "-m", "unbroken.cli", "store", "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            self.processes.append(proc)
        return self.processes

    def stop_store(self) -> None:
        for proc in self.processes:
            proc.terminate()
            proc.wait(timeout=10)
        self.processes = []
        for w in self.workers:
            w.stop()
            w.ingest.db.close()
        self.workers = []

    # -- devices ----------------------------------------------------------------------

    def provision_device(
        self,
        device_id: str,
        settings: dict[str, Any] | None = None,
        room: str | None = None,
        clock: Clock | None = None,
    ) -> Path:
        """Keys, enrolment and install for a body recorder, or (``room``) a room
        controller assigned to that room; the broker, if running, learns the new ACL.
        ``clock``: the device's own (default: this machine's), which dates its first
        entries: a device that then records on a simulated clock started in the past
        must have been installed on that clock, or its boot reads as the clock going back."""
        device_now = (clock or SystemClock()).wall
        data = self.workdir / "devices" / device_id
        request = self.workdir / "requests" / f"{device_id}.json"
        request.parent.mkdir(parents=True, exist_ok=True)
        role = "room_controller" if room else "body_recorder"
        enrolment.keygen(
            data, request, device_now(), device_id=device_id, serial=device_id, role=role
        )
        bundle = self.workdir / "bundles" / f"{device_id}.bundle"
        bundle.parent.mkdir(parents=True, exist_ok=True)
        self.agency.enroll(request.read_bytes(), bundle, time.time(), settings=settings)
        enrolment.install(data, bundle.read_bytes(), device_now(), clock=clock)
        if room:
            command = self.workdir / "outbox" / f"{device_id}-assign.cmd"
            command.parent.mkdir(parents=True, exist_ok=True)
            self.agency.assign(device_id, command, time.time(), room=room)
            assignment.apply_command(data, command.read_bytes(), device_now(), clock=clock)
            if self.broker:
                self.start_broker()  # the controller may now use its room's topics
        return data

    def start_device(
        self,
        device_id: str,
        settings: dict[str, Any] | None = None,
        room: str | None = None,
        realtime: bool = False,
        wall_start: float | None = None,
    ) -> SimDevice:
        """A provisioned device (a room controller with ``room``) recording on simulated
        hardware from ``wall_start`` (default now), with its real uploader attached, started
        and connected (``dev.uploader``: stop it after ``dev.stop()`` and ``wait_idle``)."""
        from simulator.device import SimDevice

        clock = SimClock(wall_start=time.time() if wall_start is None else wall_start)
        data = self.provision_device(device_id, settings, room, clock=clock)
        config = device_config(data)
        dev = SimDevice(data, config, clock=clock, realtime=realtime)
        uploader = make_uploader(data, dev.recorder, config, dev.clock)
        assert uploader is not None
        dev.uploader = uploader
        dev.start()
        uploader.start()
        if not uploader.connected.wait(10):
            raise RuntimeError(f"{device_id} did not connect to the broker")
        return dev

    def enroll_panel(self, room: str) -> Path:
        """A room panel's P-256 key, certificate and panel.json, as an admin makes them."""
        out = self.workdir / "panels" / room
        self.agency.enroll_panel(room, out, time.time())
        if self.broker:
            self.start_broker()
        return out

    def panel_client(self, room: str) -> Client:
        """A connected MQTT client with room ``room``'s panel certificate (enrolled first
        if need be): what the panel firmware speaks, from CPython."""
        d = self.workdir / "panels" / room
        if not (d / "panel.json").exists():
            self.enroll_panel(room)
        cert, key = pki.panel_pem(d)
        client = tls_client(f"panel-{room}", self.agency.root / "ca.pem", cert, key)
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        return client

    def session_command(
        self, device_id: str, name: Literal["session_open", "session_close"], **args: Any
    ) -> bytes:
        """The case system's signed command opening or closing a room session."""
        out = self.workdir / "outbox" / f"{device_id}-{name}-{time.time_ns()}.cmd"
        out.parent.mkdir(parents=True, exist_ok=True)
        self.agency.session_command(device_id, name, args, out, time.time())
        return out.read_bytes()

    def uploader(self, data: Path, clock: Clock, settings: Sync | None = None) -> Uploader:
        identity = load_identity(data)
        assert identity
        return Uploader(
            data,
            identity.device_id,
            provisioned.broker_settings(data),
            clock,
            settings or device_config(data).sync,
        )

    def store_send(self, data: bytes, wait: float = 0.0) -> Outcome:
        """``unbroken store send``: checked, kept in the store's mailbox until the device
        answers, published; what became of it after ``wait`` seconds."""
        return store_send(load_store_config(self.store_config("1")), data, time.time(), wait)

    def send_command(self, device: str, name: str, data: bytes) -> None:
        """Publish a command to a device as the store's client, unchecked (tests send
        forgeries; ``store send`` checks first)."""
        publish_command(load_store_config(self.store_config("1")), device, name, data)

    def db(self) -> Database:
        return Database.connect(self.database)

    def close(self) -> None:
        self.stop_store()
        self.stop_broker()
        self.agency.close()

    def __enter__(self) -> LocalSite:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
