"""The interview room: the panel's door and key, and the case system's commands, turned
into sessions by the room's triggers (:class:`agent.room.RoomTriggers`).

Example::

    room = RoomControl(triggers, life, chain, clock, error=log.warning)
    room.panel("door", b"closed")          # may open a session, or wait for the key
    room.case_command(cmd, cmd.args)       # session_open / session_close from the case system
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent.chain import ChainWriter
from agent.lifecycle import SessionLifecycle
from agent.room import (
    CloseRoomSession,
    OpenRoomSession,
    Prompt,
    Refused,
    RoomAction,
    RoomTriggers,
    close_refusal,
    open_refusal,
)
from agent.session import SessionError
from common.commands import AgencyCommand, SessionArgs
from common.settings import Category
from device.clock import Clock
from evidence.entries import Event
from evidence.seal import Entry
from evidence.session_bodies import CaseCommand, SessionOpen

log = logging.getLogger(__name__)


class RoomControl:
    def __init__(
        self,
        triggers: RoomTriggers,
        life: SessionLifecycle,
        chain: ChainWriter,
        clock: Clock,
        error: Callable[[str], None],
    ) -> None:
        self.triggers = triggers
        self.life = life
        self.chain = chain
        self.clock = clock
        self._error = error

    def panel(self, what: str, payload: bytes) -> None:
        """The panel said ``door`` open/closed or ``key`` start/stop; anything else is
        refused (SessionError)."""
        value = payload.decode("utf-8", "replace").strip()
        now = self.clock.monotonic()
        if what == "door" and value in ("open", "closed"):
            actions = self.triggers.door(value == "closed", now)
        elif what == "key" and value in ("start", "stop"):
            actions = self.triggers.key(value == "start", now)
        else:
            raise SessionError(f"panel sent {what}={value[:40]!r}: not a door or key state")
        self.act(actions)

    def case_command(self, cmd: AgencyCommand, args: SessionArgs) -> Entry | None:
        """The case system opens or closes the room's session (a checked command)."""
        opening = cmd.command == "session_open"
        actions = self.triggers.command(opening)
        for refused in (a for a in actions if isinstance(a, Refused)):
            raise SessionError(refused.why)
        try:
            category = Category(args.category) if args.category else None
        except ValueError:
            raise SessionError(f"unknown category {args.category!r}") from None
        case = CaseCommand(args.case, args.person, cmd.nonce, cmd.issued, cmd.agency)
        if opening:
            if args.badges:
                self.life.badges = list(args.badges)
            if self.life.session is not None:  # opened at the panel: the case system names it
                sid = self.life.session.id
                if why := open_refusal(sid, self._case_of(sid), args.case):
                    raise SessionError(why)
                return self.chain.seal_body(Event.case_named(case), sid)
        elif self.life.session is None:
            raise SessionError(f"session_close for case {args.case}: no session is open")
        else:
            sid = self.life.session.id
            if why := close_refusal(sid, self._case_of(sid), args.case, args.session):
                raise SessionError(why)
        return self.act(actions, case, category)

    def _case_of(self, session: str) -> str | None:
        """The case the open session is for: named when it opened, or named since (a
        session opened at the panel, then claimed by the case system)."""
        journal = self.chain.journal
        opened = journal.bodies(SessionOpen.KIND, SessionOpen.from_body)
        claimed = journal.bodies(Event.KIND, Event.from_body)
        said = [b.case for e, b in opened if e.session == session]
        said += [b.case_command for e, b in claimed if e.session == session]
        named = [c.case for c in said if c is not None and c.case]
        return named[-1] if named else None

    def act(
        self,
        actions: list[RoomAction],
        case: CaseCommand | None = None,
        category: Category | None = None,
    ) -> Entry | None:
        """Carry out the room's decisions; returns the session entry sealed, if any."""
        entry = None
        for a in actions:
            # the entry the lifecycle sealed, not the journal's last: the chain's thread
            # may have sealed the pre-event segments after it by now
            if isinstance(a, OpenRoomSession):
                entry = self.life.act(self.life.machine.open(), category, a.trigger, case)
                self.triggers.opened(a.trigger)
            elif isinstance(a, CloseRoomSession):
                entry = self.life.act(self.life.machine.close(), trigger=a.trigger, case=case)
            elif isinstance(a, Refused):
                self._error(a.why)
            elif isinstance(a, Prompt):
                log.info("door closed: waiting for the key to confirm")
        return entry
