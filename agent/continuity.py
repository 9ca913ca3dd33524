"""Continuity: faults become interruptions of the open session, sealed with their end and
explanation; the health checks (clock, power, storage, GNSS fix) that find them.

The decisions are the :class:`~agent.interruptions.InterruptionTracker`'s; this class
seals what it decides, on the recorder's chain.

Example::

    c = Continuity(config, chain, session=lambda: rec.session, error=log.warning)
    c.fault("camera", ["video"], "no frame", tracks=("room",))   # seals "interruption"
    c.clear("camera", ("room",))                                # seals "interruption_end"
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from agent.chain import ChainWriter
from agent.interruptions import Explained, InterruptionTracker, Started, fault_key
from agent.overload import LoadChange
from agent.session import OpenSession
from common.settings import DeviceConfig
from device.power import Battery
from device.storage import Storage
from evidence.entries import Event
from evidence.seal import Moment
from evidence.session_bodies import Interruption, InterruptionEnd, VoiceExplanation


@dataclass(frozen=True)
class StorageCheck:
    """What the disk allows now: ``full`` (stop writing), ``degraded`` (lower bitrate)."""

    full: bool
    degraded: bool


log = logging.getLogger(__name__)


class Continuity:
    def __init__(
        self,
        config: DeviceConfig,
        chain: ChainWriter,
        session: Callable[[], OpenSession | None],
        error: Callable[[str], None],
    ) -> None:
        self.config = config
        self.chain = chain
        self._session = session
        self._error = error
        c = config.continuity
        self.gaps = InterruptionTracker(c.explain_seconds, c.explain_mode, c.explain_timeout)
        self.faults: set[str] = set()  # present now, in a session or not
        self._had_fix: bool | None = None
        self._wall_offset: float | None = None
        self._storage_warned = False
        self._degraded = False
        self._lost_before: list[tuple[Moment, Moment, str]] = []  # outside a session

    # -- faults and interruptions -----------------------------------------------------------

    def fault(
        self,
        cause: str,
        affects: list[str],
        detail: str = "",
        since: Moment | None = None,
        tracks: tuple[str, ...] = (),
    ) -> None:
        """A fault is present; ``since``: when footage stopped being kept, if earlier;
        ``tracks``: the tracks it interrupts (none named: all of them)."""
        where = f"{cause} ({', '.join(tracks)})" if tracks else cause
        self._error(f"{where}: {detail}" if detail else where)
        self.faults.add(fault_key(cause, tracks))
        if self._session() is None:
            return  # outside a session nothing is owed; a fault still present at open counts
        started = self.gaps.fault(cause, since or self.chain.now(), affects, detail, tracks)
        if started:
            self.seal_interruption(started)

    def clear(self, cause: str, tracks: tuple[str, ...] = ()) -> None:
        self.faults.discard(fault_key(cause, tracks))
        if fault_key(cause, tracks) not in self.gaps.active:
            return
        ended = self.gaps.clear(cause, self.chain.now(), tracks)
        session = self._session()
        if ended and session:
            self.chain.seal_body(InterruptionEnd(ended.id, ended.end), session.id)
            log.info("interruption %s ended: %s cleared; recording resumed", ended.id, cause)

    def seal_interruption(self, s: Started, end: Moment | None = None) -> None:
        session = self._session()
        assert session
        gap = Interruption(s.id, s.cause, s.affects, s.start, end, s.detail, s.tracks)
        entry = self.chain.seal_body(gap, session.id)
        on = f" on {', '.join(s.tracks)}" if s.tracks else ""
        log.warning(
            "interruption %s: %s%s%s (entry %s)",
            s.id, s.cause, on, f": {s.detail}" if s.detail else "", entry.seq,
        )  # fmt: skip

    def found_over(
        self, cause: str, start: Moment, end: Moment, affects: list[str], detail: str
    ) -> None:
        """A gap found already over (a clock jump, a power loss found at boot): sealed
        with its end; its explanation is due now."""
        started = Started(str(uuid.uuid4()), cause, start, affects, detail)
        self.seal_interruption(started, end=end)
        self.gaps.resumed_after(started, end)

    def time_lost(self, start: Moment, end: Moment, detail: str) -> bool:
        """The recorder could not keep real time from ``start`` to ``end``: in a session an
        ``overload`` gap, over as soon as found (True); outside one it is kept, for the
        pre-event footage a session may take (:meth:`opened`)."""
        self._error(f"overload: {detail}")
        if self._session() is None:
            window = self.config.recording.prebuffer_seconds
            self._lost_before = [g for g in self._lost_before if g[1].mono > end.mono - window]
            self._lost_before.append((start, end, detail))
            return False
        self.found_over("overload", start, end, ["video", "audio"], detail)
        return True

    def opened(self, at: Moment) -> None:
        """A session opened at ``at``: time lost within its pre-event window is its gap too
        (the footage either side of it became the session's)."""
        window = self.config.recording.prebuffer_seconds
        lost, self._lost_before = self._lost_before, []
        for start, end, detail in lost:
            if end.mono > at.mono - window:
                self.found_over("overload", start, end, ["video", "audio"], detail)

    def ended_at_boot(self, gap_id: str, at: Moment) -> None:
        """A gap sealed open before a shutdown inside the session ends at this boot."""
        self.gaps.ended_at_boot(gap_id, at)

    def explained(self, done: list[Explained]) -> None:
        session = self._session()
        if session is None:
            return
        for ex in done:
            self.chain.seal_body(VoiceExplanation(ex.id, ex.start, ex.end), session.id)
            log.info(
                "interruption %s explained by voice (%.0f s)", ex.id, ex.end.mono - ex.start.mono
            )

    def tick(self) -> None:
        """Time passes: spoken explanations that have run their length are sealed."""
        self.explained(self.gaps.tick(self.chain.now()))

    def session_closing(self) -> None:
        self.explained(self.gaps.session_closing(self.chain.now()))

    # -- health checks ------------------------------------------------------------------

    def check_clock(self) -> None:
        """A wall-clock jump inside a session is a gap in time, over as soon as found."""
        clock = self.chain.clock
        offset = clock.wall() - clock.monotonic()
        previous, self._wall_offset = self._wall_offset, offset
        if previous is None or abs(offset - previous) <= self.config.continuity.clock_jump_seconds:
            return
        jump = offset - previous
        self._error(f"wall clock jumped {jump:+.1f} s")
        if self._session():
            at = self.chain.now()
            self.found_over("clock_jump", at, at, ["time"], f"{jump:+.3f} s")

    def power_critical(self, battery: Battery | None) -> bool:
        """Whether the battery is so low the device must shut down now (a gap of the
        session is opened first: it ends at the next boot)."""
        if battery is None or battery.external_power():
            return False
        if battery.percent() > self.config.power.critical_percent:
            return False
        self._error("battery critical: shutting down")
        if self._session():
            self.fault("battery", ["video", "audio", "location"], "battery critical")
        return True

    def check_storage(self, storage: Storage) -> StorageCheck:
        usage = storage.usage()
        limits = self.config.storage
        session = self._session()
        if usage.fraction_used >= limits.warn_fraction and not self._storage_warned:
            self._storage_warned = True
            used = round(usage.fraction_used, 3)
            self.chain.seal_body(Event("storage_warning", {"used": used}))
        degrade = (
            limits.degrade_fraction is not None and usage.fraction_used >= limits.degrade_fraction
        )
        if degrade != self._degraded:
            self._degraded = degrade
            kind = "storage_degraded" if degrade else "storage_restored"
            self.chain.seal_body(
                Event(kind, {"used": round(usage.fraction_used, 3)}),
                session.id if session else None,
            )
        full = usage.free < limits.min_free_bytes
        if full:
            self.fault("storage_full", ["video", "audio"], f"{usage.free} bytes free")
        else:
            self.clear("storage_full")
        return StorageCheck(full, degrade)

    def load_changed(self, change: LoadChange) -> None:
        """The recorder stepped its load down or back up: sealed, so the change of picture
        rate and bitrate is on record."""
        session = self._session()
        event = change.event()
        log.warning(
            "%s to level %d (%s): %d b/s, %s pictures a second",
            event.type, change.level, change.reason, change.bitrate, round(change.picture_rate, 3),
        )  # fmt: skip
        self.chain.seal_body(event, session.id if session else None)

    def note_fix(self, has_fix: bool) -> None:
        """Losing the GNSS fix is an event, not a gap: the footage goes on."""
        session = self._session()
        if self._had_fix is not None and has_fix != self._had_fix and session:
            kind = "gnss_regained" if has_fix else "gnss_lost"
            self.chain.seal_body(Event(kind), session.id)
        self._had_fix = has_fix
