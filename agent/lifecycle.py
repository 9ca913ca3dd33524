"""The session lifecycle: the state machine's decisions carried out — a session opened
(its pre-event footage sealed into it) and closed (its counts sealed by the chain's
thread, once it has sealed every segment handed over) — and the LED.

Example::

    life = SessionLifecycle(config, chain, machine, segments, continuity, room, room_id)
    life.act(machine.press(now))          # opens: seals session_open, LED on
    life.act(machine.close())             # closes: seals session_close, LED off
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import cast

from agent.chain import ChainWriter
from agent.continuity import Continuity
from agent.room import RoomTriggers, Trigger
from agent.segments import Segmenter
from agent.session import Action, OpenSession, SessionError, SessionMachine
from common.settings import Category, DeviceConfig
from evidence.seal import Entry
from evidence.session_bodies import CaseCommand, SessionClose, SessionOpen

log = logging.getLogger(__name__)


class SessionLifecycle:
    def __init__(
        self,
        config: DeviceConfig,
        chain: ChainWriter,
        machine: SessionMachine,
        segments: Segmenter,
        continuity: Continuity,
        room: RoomTriggers | None,
        room_id: Callable[[], str | None],
        badges: list[str],
    ) -> None:
        self.config = config
        self.chain = chain
        self.machine = machine
        self.segments = segments
        self.continuity = continuity
        self.room = room
        self._room_id = room_id
        self.badges = badges
        self.session: OpenSession | None = None
        self.paused = False
        self.led = "off"

    def act(
        self,
        actions: list[Action],
        category: Category | None = None,
        trigger: str | None = None,
        case: CaseCommand | None = None,
    ) -> Entry | None:
        """Carry out the session machine's actions; the session entry sealed, if any."""
        sealed = None
        for a in actions:
            if a == Action.OPEN:
                sealed = self.open(category or self.config.session.category, trigger, case)
            elif a == Action.CLOSE:
                sealed = self.close(trigger, case)
            elif a == Action.ARM_CLOSE:
                self.led = "blink"
            elif a == Action.DISARM_CLOSE:
                self.led = "on"
        return sealed

    def open(
        self, category: Category, trigger: str | None = None, case: CaseCommand | None = None
    ) -> Entry:
        at = self.chain.now()
        sid = str(uuid.uuid4())
        body = SessionOpen(
            category.value,
            list(self.badges),
            self.config.recording.prebuffer_seconds,
            list(self.config.tracks),
            in_room=self.room is not None,
            room=self._room_id() if self.room else None,
            trigger=trigger,
            case=case,
        )
        entry = self.chain.seal_body(body, sid)
        self.session = OpenSession(sid, category, list(self.badges), at)
        log.info(
            "session %s opened (%s%s, badges %s, entry %s)",
            sid, category.value, f", by {trigger}" if trigger else "",
            ", ".join(self.badges) or "none", entry.seq,
        )  # fmt: skip
        self.paused = False
        self.segments.opened(at)
        self.continuity.opened(at)
        self.led = "on"
        return entry

    def close(self, trigger: str | None = None, case: CaseCommand | None = None) -> Entry:
        assert self.session
        if self.segments.segment and self.segments.segment.frames:
            self.segments.end()
        self.continuity.session_closing()
        session = self.session

        def counted() -> SessionClose:
            # On the chain's thread, after the segments handed over before the close:
            # the sealer's own count of what it sealed (the frame loop's is behind it).
            counts = session.next_index
            tracks = {t: counts.get(t, 0) for t in self.config.tracks}
            return SessionClose(sum(counts.values()), tracks, trigger, case)

        entry = self.chain.seal_when_sealed(counted, session.id)
        log.info(
            "session %s closed (%d segments%s, entry %s)",
            session.id, SessionClose.from_body(entry.body).segments,
            f", by {trigger}" if trigger else "", entry.seq,
        )  # fmt: skip
        self.session = None
        if self.room:
            self.room.closed()
        self.machine.closed()
        self.led = "off"
        return entry

    def officer_pause(self, reason: str) -> None:
        """The officer stops recording while the session stays open: an interruption
        (``officer_stop``) until :meth:`officer_resume`, explained like any other."""
        if self.session is None:
            raise SessionError("no session is open: nothing to pause")
        self.paused = True
        if self.segments.segment:
            self.segments.end()
        self.continuity.fault("officer_stop", ["video", "audio"], reason)

    def officer_resume(self) -> None:
        self.paused = False
        self.continuity.clear("officer_stop")

    def resume(self, session: OpenSession, opened: SessionOpen) -> None:
        """At boot: the session the last boot left open goes on (:mod:`agent.boot`)."""
        log.warning("session %s resumed at boot: it was open when the device stopped", session.id)
        self.session = session
        if self.room:
            self.room.opened(cast(Trigger, opened.trigger or "command"))
        self.machine.recovered()
        self.led = "on"
