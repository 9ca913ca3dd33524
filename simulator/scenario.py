"""``unbroken sim run SCENARIO.toml [--report DIR] [--fast]``: a scenario is a test.

A fleet of simulated devices — each a real ``unbroken agent run --sim`` process on
simulated hardware, driven through its control channel (:mod:`simulator.control`) — a
real Mosquitto with the provisioned TLS and ACL, and a store worker, all on this machine
(:class:`~simulator.site.LocalSite`). The scenario's timeline is played in real time:
buttons, markers, faults, power cuts, network drops, clock jumps, interview-room sessions
opened by the case system, written statements. Then every device's evidence is verified,
its receipts read, the store asked for its report, and each expectation judged
(:mod:`simulator.scenario_facts`). The report (terminal, and HTML with a timeline picture
per device: :mod:`simulator.timeline_report`) names every expectation that failed, and
the exit code is 1 if any did (2: the scenario could not be run).

``--fast`` runs the devices in this process on simulated time, as fast as the encoder
goes, with no broker, store or processes: only for scenarios that need none of those
(:func:`~simulator.scenario_model.needs_real_time` says why not).

Example::

    $ unbroken sim run simulator/scenarios/device-fault-voice.toml --report out/fault
    ...
    PASS  gap_explained (bwc-1, voice, camera): bwc-1: camera at 8.1 s (2.0 s): voice
    4 of 4 expectations met; report: out/fault/report.html
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from agent import enrolment
from agent.evidence_dir import EvidenceDirError, verify_dir
from evidence import protocol as p
from simulator.control import ControlError, Pending
from simulator.powercut import PROJECT
from simulator.scenario_collect import collect_device, status_sample, store_gaps
from simulator.scenario_drivers import DeviceDriver, InProcessDevice, ProcessDevice
from simulator.scenario_facts import ActionRecord, Outcome, RunFacts, Sample, check_all
from simulator.scenario_model import (
    Action,
    BootAction,
    CaseCloseAction,
    CaseOpenAction,
    DoorAction,
    KeyAction,
    PowerCutAction,
    PowerOffAction,
    Scenario,
    ScenarioError,
    StatementAction,
    StorageAction,
    load_scenario,
    matching,
    needs_real_time,
)
from simulator.site import LocalSite

SAMPLE_SECONDS = 1.0  # how often each device's status is asked
EFFECT_WAIT = 8.0  # seconds a command over MQTT may take to show on the device
RUNNER_ACTIONS = (
    "power_cut",
    "power_off",
    "boot",
    "door",
    "key",
    "case_open",
    "case_close",
    "statement",
)


class Runner:
    """Plays one scenario; :meth:`run` returns the facts it left."""

    def __init__(
        self,
        scenario: Scenario,
        workdir: Path,
        fast: bool = False,
        out: Callable[[str], None] = print,
    ) -> None:
        self.scenario = scenario
        self.workdir = workdir
        self.fast = fast
        self.out = out
        self.fleet = {d.id: d for d in scenario.fleet()}
        self.drivers: dict[str, DeviceDriver] = {}
        self.samples: dict[str, list[Sample]] = {i: [] for i in self.fleet}
        self.records: list[ActionRecord] = []
        self.notes: list[str] = []
        self.pins = {o.badge: o.pin for o in scenario.officers}
        self.site: LocalSite | None = None
        self.panels: dict[str, mqtt.Client] = {}
        self.t0 = 0.0  # monotonic at scenario second 0 (real time)
        self.wall0 = 0.0
        self.fast_t = 0.0
        self._lazy: list[tuple[ActionRecord, Pending, Action]] = []  # fast: replies to come
        self._stop_sampling = threading.Event()
        self._lock = threading.Lock()
        # Unix socket paths are short: not under a deep workdir
        tmp = "/tmp" if Path("/tmp").is_dir() else None
        self.sockets = Path(tempfile.mkdtemp(prefix="ub-", dir=tmp))

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> RunFacts:
        started = time.monotonic()
        mode = "fast" if self.fast else "real time"
        sampler: threading.Thread | None = None
        self.site = site = LocalSite(self.workdir / "site")
        try:
            if not self.fast:
                site.start_broker()
                site.start_store(self.scenario.site.store_workers)
            self._provision(site)
            self._boot_all()
            if not self.fast:
                sampler = threading.Thread(target=self._sample_loop, daemon=True)
                sampler.start()
            self._play()
            self._finish()
            self._stop_sampling.set()
            if sampler is not None:
                sampler.join(timeout=30)
            ended = self.now()
            facts = RunFacts(
                self.scenario.name,
                mode,
                self.scenario.duration,
                round(ended, 3),
                self.wall0,
                actions=self.records,
                notes=self.notes,
            )
            self._collect(facts, site)
            facts.wall_seconds = round(time.monotonic() - started, 2)
            return facts
        finally:
            self._stop_sampling.set()
            for d in self.drivers.values():
                d.close()
            for client in self.panels.values():
                client.disconnect()
                client.loop_stop()
            site.close()
            shutil.rmtree(self.sockets, ignore_errors=True)

    def now(self) -> float:
        return self.fast_t if self.fast else time.monotonic() - self.t0

    def _provision(self, site: LocalSite) -> None:
        officers = self.workdir / "officers.json"
        if self.pins:
            from common.statements import officer_credentials

            officers.write_bytes(officer_credentials(site.agency.signing_key, self.pins))
        for dev in self.fleet.values():
            settings = dev.config().model_dump(mode="json", exclude_defaults=True)
            data = site.provision_device(dev.id, settings=settings, room=dev.spec.room)
            if dev.spec.badges:
                cmd = self.workdir / "outbox" / f"{dev.id}-assign.cmd"
                cmd.parent.mkdir(parents=True, exist_ok=True)
                site.agency.assign(dev.id, cmd, time.time(), badges=dev.spec.badges)
                enrolment.apply_command(data, cmd.read_bytes(), time.time())
            if self.pins:
                shutil.copy(officers, data / "officers.json")  # what `agent explain` reads
            if self.fast:
                self.drivers[dev.id] = InProcessDevice(dev.id, data, dev.config(), 0.0)
            else:
                self.drivers[dev.id] = ProcessDevice(
                    dev.id,
                    data,
                    self.sockets / f"{dev.id}.sock",
                    self.workdir / "logs" / f"{dev.id}.log",
                )
        self.out(
            f"{self.scenario.name}: {len(self.fleet)} device(s) provisioned"
            + ("" if self.fast else f"; broker on 127.0.0.1:{site.port}, store running")
            + f"; workdir {self.workdir}"
        )

    def _boot_all(self) -> None:
        specs = {i: d.spec for i, d in self.fleet.items()}
        if self.fast:
            self.wall0 = time.time()
            for i, drv in self.drivers.items():
                assert isinstance(drv, InProcessDevice)
                drv.wall0 = self.wall0
                drv.boot(0.0, specs[i].clock_offset_hours, specs[i].network)
            self.out(f"{len(self.drivers)} device(s) recording (fast: simulated time)")
            return
        procs = [d for d in self.drivers.values() if isinstance(d, ProcessDevice)]
        for d in procs:
            d.launch(0.0, specs[d.id].clock_offset_hours, specs[d.id].network)
        booted = time.monotonic()
        for d in procs:
            d.wait_ready()
        self.t0, self.wall0 = time.monotonic(), time.time()
        self.out(f"{len(procs)} agent process(es) recording after {self.t0 - booted:.1f} s")

    # -- the timeline ------------------------------------------------------------------------

    def _play(self) -> None:
        timeline = sorted(self.scenario.timeline, key=lambda a: a.at)
        for at, group in itertools.groupby(timeline, key=lambda a: a.at):
            self._until(at)
            jobs = [(a, i) for a in group for i in matching(sorted(self.fleet), a.device)]
            self._apply_all(jobs)
        self._until(self.scenario.duration)

    def _until(self, t: float) -> None:
        if not self.fast:
            delay = self.t0 + t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            return
        while self.fast_t < t - 1e-9:
            step = min(t, (int(self.fast_t / SAMPLE_SECONDS + 1e-9) + 1) * SAMPLE_SECONDS)
            for d in self.drivers.values():
                assert isinstance(d, InProcessDevice)
                d.advance_to(step)
            self.fast_t = step
            self._settle()
            if abs(step / SAMPLE_SECONDS - round(step / SAMPLE_SECONDS)) < 1e-9:
                self._sample_all()

    def _settle(self) -> None:
        """Fast: fill in the replies of commands the devices carried out since."""
        left = []
        for record, pending, a in self._lazy:
            if pending.done.is_set():
                record.ok = bool(pending.reply.get("ok"))
                record.detail = _reply_text(pending.reply)
                self._tell(record, a)
            else:
                left.append((record, pending, a))
        self._lazy = left

    def _apply_all(self, jobs: list[tuple[Action, str]]) -> None:
        if self.fast or len(jobs) == 1:
            for a, i in jobs:
                self._apply(a, i)
            return
        with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
            list(pool.map(lambda job: self._apply(*job), jobs))

    def _apply(self, a: Action, device: str) -> None:
        t = self.now()
        record = ActionRecord(a.at, round(t, 3), device, a.do, False)
        try:
            if a.do in RUNNER_ACTIONS and not (self.fast and isinstance(a, DoorAction | KeyAction)):
                done = self._runner_action(a, device, t)
                if isinstance(done, Pending):  # fast: carried out at the next frame
                    record.ok, record.detail = True, "queued"
                    self._lazy.append((record, done, a))
                else:
                    record.ok, record.detail = done
            else:  # fast: the panel speaks through the control channel, not the broker
                reply = self.drivers[device].command(control_command(a))
                record.ok = bool(reply.get("ok"))
                record.detail = _reply_text(reply)
                if record.ok and a.do == "clock_jump":
                    self.drivers[device].note_jump(t, float(getattr(a, "seconds", 0.0)))
                if isinstance(reply.get("pending"), Pending):
                    self._lazy.append((record, reply["pending"], a))
        except (ControlError, OSError, EvidenceDirError) as e:
            record.ok, record.detail = False, str(e)
        with self._lock:
            self.records.append(record)
        if self._lazy and self._lazy[-1][0] is record:
            return  # fast: told once the device carried it out (_settle)
        self._tell(record, a)

    def _tell(self, record: ActionRecord, a: Action) -> None:
        mark = "ok " if record.ok else "ERR"
        line = f"  [{record.t:7.1f} s] {mark} {record.device}: {_action_text(a)}  {record.detail}"
        self.out(line.rstrip())

    def _runner_action(self, a: Action, device: str, t: float) -> tuple[bool, str] | Pending:
        drv = self.drivers[device]
        if isinstance(a, PowerCutAction):
            drv.power_cut(t)
            return True, "SIGKILL"
        if isinstance(a, PowerOffAction):
            if not drv.running:
                return False, f"{device} is already off"
            drv.power_off()
            return True, "SIGTERM: shut down cleanly"
        if isinstance(a, BootAction):
            drv.boot(t, a.clock_offset_hours, a.network)
            st = drv.command({"cmd": "status"}).get("status", {})
            offset = f", clock {drv.offset / 3600:+g} h" if drv.offset else ""
            return True, f"booted: {st.get('state')}{offset}{'' if drv.online else ', offline'}"
        if isinstance(a, DoorAction | KeyAction):
            what = "door" if isinstance(a, DoorAction) else "key"
            return self._over_mqtt(drv, lambda: self._panel(device, what, a.state))
        if isinstance(a, CaseOpenAction | CaseCloseAction):
            return self._case(a, device, drv, t)
        if isinstance(a, StatementAction):
            return self._statement(a, device, drv)
        raise AssertionError(a.do)

    def _over_mqtt(self, drv: DeviceDriver, send: Callable[[], None]) -> tuple[bool, str]:
        """Send something over the broker; wait until the device's state shows it."""
        before = _state(drv.command({"cmd": "status"}))
        send()
        deadline = time.monotonic() + EFFECT_WAIT
        after = before
        while time.monotonic() < deadline:
            after = _state(drv.command({"cmd": "status"}))
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
        self, a: CaseOpenAction | CaseCloseAction, device: str, drv: DeviceDriver, t: float
    ) -> tuple[bool, str] | Pending:
        assert self.site is not None
        args: dict[str, Any] = {"case": a.case}
        name: Any = "session_close"
        if isinstance(a, CaseOpenAction):
            name = "session_open"
            args["badges"] = a.badges
            if a.person:
                args["person"] = a.person
            if a.category:
                args["category"] = a.category.value
        # signed "now" as the device sees it (fast: simulated time), so it is not stale
        now = self.wall0 + drv.offset + t if self.fast else time.time()
        out = self.workdir / "outbox" / f"{device}-{name}-{time.time_ns()}.cmd"
        out.parent.mkdir(parents=True, exist_ok=True)
        self.site.agency.session_command(device, name, args, out, now)
        data = out.read_bytes()
        if self.fast:
            return drv.signed_command(data)
        opening = name == "session_open"
        before = _state(drv.command({"cmd": "status"}))
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

    def _statement(self, a: StatementAction, device: str, drv: DeviceDriver) -> tuple[bool, str]:
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
        attest = [f"--attest={b}:{self.pins[b]}" for b in a.officers]
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

    def _open_gap(self, a: StatementAction, device: str, drv: DeviceDriver) -> str | None:
        """The last gap without an explanation (of the cause named), where it is added."""
        gaps: list[dict[str, Any]] = []
        if a.where == "device":
            report = verify_dir(drv.data, None)
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

    def _finish(self) -> None:
        """Close sessions left open, wait for the uploads, switch every device off."""
        left_open = []
        for i, d in self.drivers.items():
            st = d.command({"cmd": "status"}).get("status") or {}
            if st.get("session"):
                d.command({"cmd": "close"})
                left_open.append(i)
        if left_open:
            self.notes.append(
                f"sessions still open at the end were closed by the runner: {', '.join(left_open)}"
            )
            self.out(f"  [{self.now():7.1f} s] closing sessions left open: {', '.join(left_open)}")
        if self.fast:
            self._until(self.now() + 1.0)
        else:
            self._wait_for_uploads()
        for d in self.drivers.values():
            d.power_off()
        if self.fast:
            self._settle()
            for record, _, a in self._lazy:
                record.ok, record.detail = False, "not carried out: the device was off"
                self._tell(record, a)

    def _wait_for_uploads(self) -> None:
        waiting = [d for d in self.drivers.values() if d.running and d.online]
        skipped = [d.id for d in self.drivers.values() if not (d.running and d.online)]
        if skipped:
            self.notes.append(f"not waited for (off or offline at the end): {', '.join(skipped)}")
        deadline = time.monotonic() + self.scenario.sync_timeout
        t = time.monotonic()
        while waiting and time.monotonic() < deadline:
            for d in list(waiting):
                r = d.command({"cmd": "status"})
                sync = r.get("sync") or {}
                if not r.get("ok") or (
                    sync.get("segments") == sync.get("receipted") and sync.get("unacked") == 0
                ):
                    waiting.remove(d)
            if waiting:
                time.sleep(0.25)
        if waiting:
            late = ", ".join(d.id for d in waiting)
            self.notes.append(
                f"uploads unfinished after sync_timeout = {self.scenario.sync_timeout:g} s: {late}"
            )
        self.out(f"  [{self.now():7.1f} s] uploads settled in {time.monotonic() - t:.1f} s")

    # -- status samples --------------------------------------------------------------------------

    def _sample_loop(self) -> None:
        with ThreadPoolExecutor(max_workers=min(8, len(self.drivers))) as pool:
            while not self._stop_sampling.wait(SAMPLE_SECONDS):
                list(pool.map(self._sample, list(self.drivers.values())))

    def _sample_all(self) -> None:
        for d in self.drivers.values():
            self._sample(d)

    def _sample(self, d: DeviceDriver) -> None:
        if not d.running:
            return
        t = self.now()
        s = status_sample(t, d.command({"cmd": "status"}))
        if s is not None:
            with self._lock:
                self.samples[d.id].append(s)

    # -- the facts -------------------------------------------------------------------------------

    def _collect(self, facts: RunFacts, site: LocalSite) -> None:
        report: dict[str, Any] = {"devices": []}
        if not self.fast:
            from store.report import build_report, format_report

            db = site.db()
            try:
                report = build_report(db, time.time())
            finally:
                db.close()
            (self.workdir / "store-report.txt").write_text(format_report(report) + "\n")
        gaps = store_gaps(report)
        for i, dev in self.fleet.items():
            drv = self.drivers[i]
            facts.devices[i] = collect_device(
                drv.data,
                i,
                dev.kind,
                dev.tracks,
                drv.offsets,
                self.wall0,
                site.agency.verify_key,
                gaps.get(i, {}),
                drv.kills,
                sorted(self.samples[i], key=lambda s: s.t),
            )


def control_command(a: Action) -> dict[str, Any]:
    """The control channel command a timeline action becomes."""
    if isinstance(a, DoorAction | KeyAction):
        return {"cmd": "panel", a.do: a.state}
    fields = a.model_dump(mode="json", exclude={"at", "device", "do"})
    if a.do != "storage":  # there, null means "the real disk again"
        fields = {k: v for k, v in fields.items() if v is not None}
    return {"cmd": a.do, **fields}


def _state(reply: dict[str, Any]) -> tuple[str, str | None, str | None]:
    st = reply.get("status") or {}
    return str(st.get("state")), st.get("session"), st.get("panel")


def _reply_text(reply: dict[str, Any]) -> str:
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


def _short(value: object, limit: int = 40) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _action_text(a: Action) -> str:
    if isinstance(a, StorageAction) and a.free_bytes is None:
        return "storage: space freed"
    fields = a.model_dump(mode="json", exclude={"at", "device", "do"}, exclude_none=True)
    shown = " ".join(f"{k}={_short(v)}" for k, v in fields.items() if v not in ("", [], None))
    return f"{a.do} {shown}".strip()


# -- the command line ---------------------------------------------------------------------------


def run_scenario(
    path: Path,
    report: Path | None = None,
    fast: bool = False,
    workdir: Path | None = None,
    keep: bool = False,
    out: Callable[[str], None] = print,
) -> tuple[RunFacts, list[Outcome]]:
    """Load, run, judge and report one scenario (ScenarioError: it cannot be run)."""
    from simulator.timeline_report import format_text, write_html

    scenario = load_scenario(path)
    if fast and (why := needs_real_time(scenario)):
        raise ScenarioError(
            f"{path}: cannot run --fast (no broker, store or processes):\n  " + "\n  ".join(why)
        )
    temporary = workdir is None
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=f"unbroken-sim-{scenario.name}-"))
    elif workdir.exists() and any(workdir.iterdir()):
        raise ScenarioError(f"--workdir {workdir}: not empty (a run needs a fresh site)")
    workdir.mkdir(parents=True, exist_ok=True)
    facts = Runner(scenario, workdir, fast, out).run()
    outcomes = check_all(scenario.expect, facts)
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        write_html(scenario, facts, outcomes, report / "report.html")
        (report / "report.json").write_text(
            json.dumps(
                {"facts": asdict(facts), "outcomes": [asdict(o) for o in outcomes]},
                ensure_ascii=False,
                indent=1,
                default=str,
            )
        )
        if (workdir / "store-report.txt").exists():
            shutil.copy(workdir / "store-report.txt", report / "store-report.txt")
    out(format_text(scenario, facts, outcomes, report / "report.html" if report else None))
    failed = any(not o.ok for o in outcomes)
    if temporary and not keep and not failed:
        shutil.rmtree(workdir, ignore_errors=True)
    elif failed or keep:
        out(f"evidence, logs and the store are kept in {workdir}")
    return facts, outcomes


def _say(line: str) -> None:
    print(line, flush=True)  # interleaved with the devices' warnings on stderr


def cmd_run(args: argparse.Namespace) -> int:
    try:
        _, outcomes = run_scenario(
            args.scenario,
            args.report,
            fast=args.fast,
            workdir=args.workdir,
            keep=args.keep,
            out=_say,
        )
    except (ScenarioError, ControlError) as e:
        print(f"unbroken: error: {e}", file=sys.stderr)
        return 2
    return 1 if any(not o.ok for o in outcomes) else 0
