"""A device's journal as the panel's page reads it: the newest entries, each summed up in
a line for the event log (:func:`summarize`), and the sync counts.

Example::

    journal = JournalView(root)
    journal.open()
    for e in journal.events(12):
        print(e["seq"], e["kind"], e["summary"])     # e.g. 3 boot unbroken 0.1.0
    summarize(Marker("rights_notified", "", {}))       # "rights_notified"
    journal.close()
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from agent.journal.sync_ledger import SyncLedger
from agent.sync import backlog as sync_backlog
from evidence.body_fields import ManifestError
from evidence.entries import (
    Assignment,
    Body,
    Boot,
    Config,
    Event,
    Install,
    KeyRotation,
    Shutdown,
    WrittenExplanation,
    body_of,
)
from evidence.manifest import MAIN_TRACK, SegmentManifest
from evidence.messages import Backlog
from evidence.seal import Entry
from evidence.session_bodies import (
    Interruption,
    InterruptionEnd,
    Marker,
    SessionClose,
    SessionOpen,
    VoiceExplanation,
)


class JournalView:
    """A device's journal as the page reads it, through a connection of its own (any
    thread): the newest entries, each summed up in a line, and the sync counts. Closed,
    it reads nothing (while a power cut puts the disk back)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._ledger: SyncLedger | None = None

    def open(self) -> None:
        with self._lock:
            self._ledger = SyncLedger(self.root)

    def close(self) -> None:
        with self._lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None

    def counts(self) -> tuple[int, int, Backlog] | None:
        """Segments sealed, entries, and the backlog; None while closed."""
        with self._lock:
            if self._ledger is None:
                return None
            backlog = sync_backlog(self._ledger)
            sealed, total = self._ledger.sealed_counts()
        return sealed, total, backlog

    def events(self, limit: int) -> list[dict[str, Any]]:
        """The newest chain entries, newest first."""
        with self._lock:
            if self._ledger is None:
                return []
            entries = self._ledger.newest(limit)
        return [
            {
                "seq": e.seq,
                "kind": e.kind,
                "session": e.session,
                "wall": e.payload["at"]["wall"],
                "summary": summary_of(e),
            }
            for e in entries
        ]


def summary_of(e: Entry) -> str:
    """One line for the event log: the entry's body as its owner reads it, or what in it
    does not read."""
    try:
        return summarize(body_of(e))
    except ManifestError as err:
        return f"unreadable: {err}"


def summarize(body: Body) -> str:
    """One line for the event log."""
    match body:
        case Boot():
            return body.software or ""
        case Config():
            return f"settings {body.sha256[:12]}"
        case SessionOpen():
            parts = [f"{body.category} ({', '.join(body.badges) or 'no badge'})"]
            if body.trigger:
                parts.insert(0, f"by {body.trigger}")
            if body.case and body.case.case:
                parts.append(f"case {body.case.case}")
            return ", ".join(parts)
        case SessionClose():
            return f"{body.segments} segments" + (f", by {body.trigger}" if body.trigger else "")
        case SegmentManifest():
            pre = " pre-event" if body.prebuffer else ""
            if body.track_name != MAIN_TRACK:
                pre = f" {body.track_name}{pre}"
            seconds = body.end.wall - body.start.wall
            return (
                f"#{body.index}{pre} {seconds:.1f} s, {body.size // 1024} KiB, "
                f"fix {body.location.fix}"
            )
        case Marker():
            return f"{body.type} {body.note}".strip()
        case Interruption():
            return f"{body.cause}: {body.detail}".rstrip(": ")
        case InterruptionEnd():
            return f"gap {body.id[:8]} ended"
        case VoiceExplanation():
            return f"voice explanation of gap {body.interruption[:8]}"
        case WrittenExplanation():
            return f"written explanation of gap {body.interruption[:8]}"
        case Event():
            case = body.case_command
            return f"{body.type} {case.case}" if case and case.case else body.type
        case Shutdown():
            return body.reason
        case Install():
            broker = f"{body.broker.get('host')}:{body.broker.get('port')}"
            return f"provisioned by agency key {body.agency_key_id}, broker {broker}"
        case KeyRotation():
            return f"new key {body.new_key[:16]}"
        case Assignment():
            if body.room:
                return f"room {body.room}"
            return ", ".join(body.badges) or "unassigned"
