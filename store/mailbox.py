"""Agency commands kept for their device until it answers: the store's mailbox.

A command is published the moment it is sent, but a device that is offline then never
sees an MQTT message sent before it connects (a device that never connected has no
session at the broker to queue it in, and a broker restart loses what it queued). So the
store keeps every command it sends, in its database, and delivers it again each time the
device says it is online, until the device answers (signed: applied, or refused with the
reason) or the command's own expiry passes. The device applies a command once and
answers a repeat ``applied`` again, so delivering more than once is harmless.

This module alone speaks the ``commands`` table's SQL. The rules (when is a command due
again, what state is it in) are pure functions.

Example::

    box = Mailbox(db)
    box.queue(cmd, data, now)                 # store send
    box.due("room-1", now)                    # on the device's online status: deliver these
    box.record(answer, raw, now)              # its signed answer arrived
    box.get(cmd.nonce, now).state             # "applied", "refused", "pending", "expired"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from common.commands import AgencyCommand, CommandAnswer, SessionArgs
from store.db import Database

RESEND_SECONDS = 30.0  # a command not answered is delivered again at most this often
# What became of a command: nobody answered yet, the device's answer, or too late for one.
CommandState = Literal["pending", "applied", "refused", "expired"]


@dataclass(frozen=True)
class QueuedCommand:
    nonce: str
    device: str
    command: str
    data: bytes
    issued: float
    expires: float
    queued: float
    sent: float | None
    sends: int
    state: CommandState  # expiry applied as of the time asked
    reason: str | None
    seq: int | None
    answered: float | None
    case: str | None

    @staticmethod
    def of(row: dict[str, Any], now: float) -> QueuedCommand:
        return QueuedCommand(
            nonce=row["nonce"],
            device=row["device"],
            command=row["command"],
            data=row["data"].encode(),
            issued=float(row["issued"]),
            expires=float(row["expires"]),
            queued=float(row["queued"]),
            sent=row["sent"],
            sends=int(row["sends"]),
            state=state_at(row["state"], float(row["expires"]), now),
            reason=row["reason"],
            seq=row["seq"],
            answered=row["answered"],
            case=row["case_id"],
        )


def state_at(stored: str, expires: float, now: float) -> CommandState:
    """A command nobody answered is ``expired`` once its validity has passed: the device
    would refuse it now, and it is delivered no more."""
    if stored not in ("pending", "applied", "refused"):  # only this module writes it
        raise ValueError(f"a command in an unknown state {stored!r}")
    return "expired" if stored == "pending" and now >= expires else cast(CommandState, stored)


def delivery_due(c: QueuedCommand, now: float, came_online: bool) -> bool:
    """Deliver ``c`` now? Pending and valid, and never sent, or the device has just come
    online, or it was last sent long enough ago that the delivery was surely lost."""
    if c.state != "pending":
        return False
    return c.sent is None or came_online or now - c.sent >= RESEND_SECONDS


class Mailbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    def queue(self, cmd: AgencyCommand, data: bytes, now: float) -> QueuedCommand:
        """Keep a checked command for its device (once: the same command sent again keeps
        its first row and whatever answer it has)."""
        case = cmd.args.case if isinstance(cmd.args, SessionArgs) else None
        with self.db.transaction():
            self.db.execute(
                "insert into commands (nonce, device, command, data, issued, expires, queued,"
                " sends, state, case_id) values (?, ?, ?, ?, ?, ?, ?, 0, 'pending', ?)"
                " on conflict (nonce) do nothing",
                (
                    *(cmd.nonce, cmd.device, cmd.command, data.decode()),
                    *(cmd.issued, cmd.expires, now, case),
                ),
            )
        found = self.get(cmd.nonce, now)
        assert found is not None  # just written
        return found

    def sent(self, nonce: str, now: float) -> None:
        """Count a delivery made by ``store send`` itself."""
        with self.db.transaction():
            self.db.execute(
                "update commands set sent = ?, sends = sends + 1 where nonce = ?", (now, nonce)
            )

    def get(self, nonce: str, now: float) -> QueuedCommand | None:
        rows = self.db.query("select * from commands where nonce = ?", (nonce,))
        return QueuedCommand.of(rows[0], now) if rows else None

    def due(self, device: str, now: float, came_online: bool = False) -> list[QueuedCommand]:
        """The device's commands to deliver now, oldest first, counted as sent."""
        rows = self.db.query(
            "select * from commands where device = ? and state = 'pending' and expires > ?"
            " order by issued",
            (device, now),
        )
        due = [
            c for c in (QueuedCommand.of(r, now) for r in rows) if delivery_due(c, now, came_online)
        ]
        if due:
            with self.db.transaction():
                for c in due:
                    self.db.execute(
                        "update commands set sent = ?, sends = sends + 1 where nonce = ?",
                        (now, c.nonce),
                    )
        return due

    def record(self, answer: CommandAnswer, raw: bytes, now: float) -> QueuedCommand | None:
        """The device's checked answer, kept with its command (None: no such command for
        that device). The first answer stands: a repeat delivery's answer changes nothing."""
        with self.db.transaction():
            self.db.execute(
                "update commands set state = ?, reason = ?, seq = ?, answer = ?, answered = ?"
                " where nonce = ? and device = ? and state = 'pending'",
                (
                    *(answer.outcome, answer.reason or None, answer.seq, raw.decode(), now),
                    *(answer.nonce, answer.device),
                ),
            )
        found = self.get(answer.nonce, now)
        return found if found is not None and found.device == answer.device else None

    def listing(self, now: float, device: str | None = None) -> list[QueuedCommand]:
        """Every command kept (one device's), newest first."""
        where, params = ("where device = ?", (device,)) if device else ("", ())
        rows = self.db.query(f"select * from commands {where} order by queued desc", params)
        return [QueuedCommand.of(r, now) for r in rows]

    def not_recorded(self, now: float) -> list[QueuedCommand]:
        """Interviews the case system asked for that no room opened: session_open commands
        that expired unanswered, or that the room refused."""
        rows = self.db.query(
            "select * from commands where command = 'session_open'"
            " and (state = 'refused' or (state = 'pending' and expires <= ?)) order by issued",
            (now,),
        )
        return [QueuedCommand.of(r, now) for r in rows]
