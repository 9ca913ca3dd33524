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
the exit code is 1 if any did (2: the scenario could not be run); the command itself
is :mod:`simulator.scenario_cli`, the run :class:`Runner`.

``--fast`` runs the devices in this process on simulated time, as fast as the encoder
goes, with no broker, store or processes: only for scenarios that need none of those
(:func:`~simulator.scenario_model.needs_real_time` says why not).

What happens is told as it happens, each line with its time (UTC) and scenario second,
and kept in ``WORKDIR/logs/runner.log`` beside each device's log (``logs/DEVICE.log``).

Example::

    $ unbroken sim run simulator/scenarios/device-fault-voice.toml --report out/fault
    ...
      2026-12-05T04:53:08Z [    7.0 s] ok  bwc-hf-0002: camera ok=False  → recording, …
    ...
    PASS  gap_explained (bwc-1, voice, camera): bwc-1: camera at 8.1 s (2.0 s): voice
    4 of 4 expectations met; report: out/fault/report.html
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common.archive.archive import ArchiveError
from simulator.control import Pending
from simulator.control_commands import ClockJump, ControlError
from simulator.scenario_actions import SiteActions, reply_text
from simulator.scenario_collect import collect_device, status_sample, store_gaps
from simulator.scenario_drivers import DeviceDriver, InProcessDevice, stamp
from simulator.scenario_facts import ActionRecord, RunFacts, Sample
from simulator.scenario_model import Scenario, matching
from simulator.scenario_start import boot_fleet, provision_fleet
from simulator.scenario_steps import RUNNER_VERBS, Door, Key, Step
from simulator.site import LocalSite

SAMPLE_SECONDS = 1.0  # how often each device's status is asked


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
        self.actions: SiteActions | None = None  # once the fleet is booted
        self.t0 = 0.0  # monotonic at scenario second 0 (real time)
        self.wall0 = 0.0
        self.fast_t = 0.0
        self._lazy: list[tuple[ActionRecord, Pending, Step]] = []  # fast: replies to come
        self._stop_sampling = threading.Event()
        self._lock = threading.Lock()
        self.log = workdir / "logs" / "runner.log"
        # Unix socket paths are short: not under a deep workdir
        tmp = "/tmp" if Path("/tmp").is_dir() else None
        self.sockets = Path(tempfile.mkdtemp(prefix="ub-", dir=tmp))

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> RunFacts:
        started = time.monotonic()
        mode = "fast" if self.fast else "real time"
        sampler: threading.Thread | None = None
        site = LocalSite(self.workdir / "site")
        try:
            if not self.fast:
                site.start_broker()
                site.start_store(self.scenario.site.store_workers)
            self._start(site)
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
            if self.actions is not None:
                self.actions.close()
            site.close()
            shutil.rmtree(self.sockets, ignore_errors=True)

    def now(self) -> float:
        return self.fast_t if self.fast else time.monotonic() - self.t0

    def _start(self, site: LocalSite) -> None:
        self.drivers = provision_fleet(
            site, self.fleet, self.pins, self.workdir, self.sockets, self.fast
        )
        self.say(
            f"{self.scenario.name}: {len(self.fleet)} device(s) provisioned"
            + ("" if self.fast else f"; broker on 127.0.0.1:{site.port}, store running")
            + f"; workdir {self.workdir}"
        )
        self.t0, self.wall0 = boot_fleet(self.drivers, self.fleet, self.fast, self.say)
        self.actions = SiteActions(
            site, self.fleet, self.drivers, self.workdir, self.pins, self.fast, self.wall0
        )

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
        """Fast: fill in the replies of commands the devices carried out, and noticed, since."""
        left = []
        for record, pending, a in self._lazy:
            if pending.settled:
                record.ok = bool(pending.reply.get("ok"))
                record.detail = reply_text(pending.reply)
                self._tell(record, a)
            else:
                left.append((record, pending, a))
        self._lazy = left

    def _apply_all(self, jobs: list[tuple[Step, str]]) -> None:
        if self.fast or len(jobs) == 1:
            for a, i in jobs:
                self._apply(a, i)
            return
        with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
            list(pool.map(lambda job: self._apply(*job), jobs))

    def _apply(self, a: Step, device: str) -> None:
        t = self.now()
        record = ActionRecord(a.at, round(t, 3), device, a.do, False)
        c = a.command
        try:
            if a.do in RUNNER_VERBS and not (self.fast and isinstance(c, Door | Key)):
                assert self.actions is not None
                done = self.actions.carry_out(a, device, t)
                if isinstance(done, Pending):  # fast: carried out at the next frame
                    record.ok, record.detail = True, "queued"
                    self._lazy.append((record, done, a))
                else:
                    record.ok, record.detail = done
            else:  # fast: the panel speaks through the control channel, not the broker
                doc = c.model_dump(mode="json")
                if isinstance(c, Door | Key):
                    doc = {"cmd": "panel", c.cmd: c.state}
                reply = self.drivers[device].command(doc)
                record.ok = bool(reply.get("ok"))
                record.detail = reply_text(reply)
                if record.ok and isinstance(c, ClockJump):
                    self.drivers[device].note_jump(t, c.seconds)
                if isinstance(reply.get("pending"), Pending):
                    self._lazy.append((record, reply["pending"], a))
        except (ControlError, OSError, ArchiveError) as e:
            record.ok, record.detail = False, str(e)
        with self._lock:
            self.records.append(record)
        if self._lazy and self._lazy[-1][0] is record:
            return  # fast: told once the device carried it out (_settle)
        self._tell(record, a)

    def _tell(self, record: ActionRecord, a: Step) -> None:
        mark = "ok " if record.ok else "ERR"
        self.event(record.t, f"{mark} {record.device}: {a.text()}  {record.detail}")

    def event(self, t: float, text: str) -> None:
        """A line of the narrative at scenario second ``t``."""
        self.say(f"[{t:7.1f} s] {text}".rstrip(), indent="  ")

    def say(self, line: str, indent: str = "") -> None:
        """Told now, with the time, on the terminal and in the runner's log."""
        line = f"{indent}{stamp()} {line}"
        self.out(line)
        with self._lock:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log, "a", encoding="utf-8") as f:
                f.write(line + "\n")

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
            self.event(self.now(), f"closing sessions left open: {', '.join(left_open)}")
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
        self.event(self.now(), f"uploads settled in {time.monotonic() - t:.1f} s")

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
