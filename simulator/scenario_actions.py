"""The timeline steps the scenario runner carries out itself, not the device's control
channel (:data:`~simulator.scenario_steps.RUNNER_VERBS`).

Power cuts and boots (the process), the room's door and key (over the broker, as a real
panel), case-system sessions (signed agency commands) and written statements (`agent
explain` or `store explain`). Also the text of each reply in the run's log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.archive.device_directory import DeviceDirectory
from common.archive.verify import verify_archive
from common.mqtt import Client
from evidence import protocol as p
from simulator.control import Pending
from simulator.powercut import PROJECT
from simulator.scenario_drivers import DeviceDriver
from simulator.scenario_model import Device
from simulator.scenario_steps import (
    Boot,
    CaseClose,
    CaseOpen,
    Door,
    Key,
    PowerCut,
    PowerOff,
    Statement,
    Step,
)
from simulator.site import LocalSite

EFFECT_WAIT = 8.0  # seconds a command over MQTT may take to show on the device


class SiteActions:
    """Carries out the runner's verbs on the booted fleet of one run."""

    def __init__(
        self,
        site: LocalSite,
        fleet: dict[str, Device],
        drivers: dict[str, DeviceDriver],
        workdir: Path,
        pins: dict[str, str],
        fast: bool,
        wall0: float,
    ) -> None:
        self.site = site
        self.fleet = fleet
        self.drivers = drivers
        self.workdir = workdir
        self.pins = pins
        self.fast = fast
        self.wall0 = wall0
        self.panels: dict[str, Client] = {}

    def close(self) -> None:
        for client in self.panels.values():
            client.disconnect()
            client.loop_stop()

    def carry_out(self, step: Step, device: str, t: float) -> tuple[bool, str] | Pending:
        drv, a = self.drivers[device], step.command
        if isinstance(a, PowerCut):
            drv.power_cut(t)
            return True, "SIGKILL"
        if isinstance(a, PowerOff):
            if not drv.running:
                return False, f"{device} is already off"
            drv.power_off()
            return True, "SIGTERM: shut down cleanly"
        if isinstance(a, Boot):
            drv.boot(t, a.clock_offset_hours, a.network)
            st = drv.command({"cmd": "status"}).get("status", {})
            offset = f", clock {drv.offset / 3600:+g} h" if drv.offset else ""
            return True, f"booted: {st.get('state')}{offset}{'' if drv.online else ', offline'}"
        if isinstance(a, Door | Key):
            state = a.state
            return self._over_mqtt(drv, lambda: self._panel(device, a.cmd, state))
        if isinstance(a, CaseOpen | CaseClose):
            return self._case(a, device, drv, t)
        if isinstance(a, Statement):
            return self._statement(a, device, drv)
        raise AssertionError(step.do)

    def _over_mqtt(self, drv: DeviceDriver, send: Callable[[], None]) -> tuple[bool, str]:
        """Send something over the broker; wait until the device's state shows it."""
        before = state(drv.command({"cmd": "status"}))
        send()
        deadline = time.monotonic() + EFFECT_WAIT
        after = before
        while time.monotonic() < deadline:
            after = state(drv.command({"cmd": "status"}))
            if after != before:
                break
            time.sleep(0.1)
        if after == before:
            return True, f"sent; state still {after[0]} (panel {after[2]})"
        return True, f"→ {after[0]}, panel {after[2]}" + (
            f", session {after[1][:8]}" if after[1] else ""
        )

    def _panel(self, device: str, what: str, state: str) -> None:
        assert self.site is not None
        room = self.fleet[device].spec.room
        assert room is not None
        if room not in self.panels:
            self.panels[room] = self.site.panel_client(room)
        info = self.panels[room].publish(p.panel(room, what), state.encode(), qos=1, retain=True)
        info.wait_for_publish(timeout=5)

    def _case(
        self, a: CaseOpen | CaseClose, device: str, drv: DeviceDriver, t: float
    ) -> tuple[bool, str] | Pending:
        assert self.site is not None
        # the agency command's own arguments, as the step gave them
        args = a.model_dump(mode="json", exclude={"cmd"}, exclude_defaults=True)
        name: Any = "session_open" if isinstance(a, CaseOpen) else "session_close"
        # signed "now" as the device sees it (fast: simulated time), so it is not stale
        now = self.wall0 + drv.offset + t if self.fast else time.time()
        out = self.workdir / "outbox" / f"{device}-{name}-{time.time_ns()}.cmd"
        out.parent.mkdir(parents=True, exist_ok=True)
        self.site.agency.session_command(device, name, args, out, now)
        data = out.read_bytes()
        if self.fast:
            return drv.signed_command(data)
        opening = name == "session_open"
        before = state(drv.command({"cmd": "status"}))
        self.site.send_command(device, name, data)
        deadline = time.monotonic() + EFFECT_WAIT
        while time.monotonic() < deadline:
            st = drv.command({"cmd": "status"}).get("status", {})
            if (st.get("session") is not None) == opening and st.get("session") != before[1]:
                sid = st.get("session")
                return True, f"{name} over MQTT: " + (f"session {sid[:8]}" if sid else "closed")
            time.sleep(0.1)
        st = drv.command({"cmd": "status"}).get("status", {})
        return False, f"{name} sent, but the room did not follow: {st.get('last_error')}"

    def _statement(self, a: Statement, device: str, drv: DeviceDriver) -> tuple[bool, str]:
        assert self.site is not None
        if a.where == "device" and drv.running:
            return False, (
                f"{device} is running: its chain has one writer; power it off first, or "
                "add the statement at the store (where = 'store')"
            )
        gap = self._open_gap(a, device, drv)
        if gap is None:
            what = f"{a.cause} gap" if a.cause else "gap"
            return False, f"no unexplained {what} of {device} at the {a.where}"
        # The officers' PINs in a file only this user can read: never on a command line.
        pins = self.workdir / "pins.txt"
        with os.fdopen(os.open(pins, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.writelines(f"{b}:{self.pins[b]}\n" for b in a.officers)
        attest = [*(f"--attest={b}" for b in a.officers), "--pins", str(pins)]
        creds = str(self.workdir / "officers.json")
        base = [sys.executable, "-m", "unbroken.cli"]
        if a.where == "device":
            cmd = [*base, "agent", "explain", "--data", str(drv.data), "--credentials", creds]
        else:
            store = str(self.site.store_config("1"))
            cmd = [*base, "store", "explain", "--config", store, "--device", device]
            cmd += ["--credentials", creds]
        cmd += ["--gap", gap, "--reason", a.reason, *attest]
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(PROJECT)},
            timeout=60,
        )
        said = (done.stdout.strip() or done.stderr.strip()).splitlines()
        return done.returncode == 0, (said[-1] if said else f"exit {done.returncode}")

    def _open_gap(self, a: Statement, device: str, drv: DeviceDriver) -> str | None:
        """The last gap without an explanation (of the cause named), where it is added."""
        gaps: list[dict[str, Any]] = []
        if a.where == "device":
            report = verify_archive(DeviceDirectory(drv.data), None)
            gaps = [g for s in report.sessions for g in s.gaps]
        else:
            from store.report import build_report

            assert self.site is not None
            db = self.site.db()
            try:
                rep = build_report(db, time.time())
            finally:
                db.close()
            gaps = [
                g
                for d in rep["devices"]
                if d["device"] == device
                for s in d["sessions"]
                for g in s["gaps"]
            ]
        open_gaps = [
            g for g in gaps if g.get("explanation") is None and a.cause in (None, g["cause"])
        ]
        return str(open_gaps[-1]["id"]) if open_gaps else None

    # -- the end --------------------------------------------------------------------------------


def state(reply: dict[str, Any]) -> tuple[str, str | None, str | None]:
    st = reply.get("status") or {}
    return str(st.get("state")), st.get("session"), st.get("panel")


def reply_text(reply: dict[str, Any]) -> str:
    if reply.get("queued"):
        return "queued"
    if not reply.get("ok"):
        return str(reply.get("error", "refused"))
    st = reply.get("status") or {}
    parts = [str(st.get("state", ""))]
    if st.get("panel"):
        parts.append(f"panel {st['panel']}")
    if st.get("session"):
        parts.append(f"session {str(st['session'])[:8]}")
    if st.get("interrupted"):
        parts.append(f"interrupted: {', '.join(st['interrupted'])}")
    if st.get("explain_prompt"):
        parts.append("prompting for an explanation")
    return "→ " + ", ".join(p for p in parts if p)
