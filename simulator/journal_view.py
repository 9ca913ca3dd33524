"""A device's journal as the panel's page reads it: the newest entries, each summed up in
a line for the event log (:func:`summarize`), and the sync counts.

Example::

    journal = JournalView(root)
    journal.open()
    for e in journal.events(12):
        print(e["seq"], e["kind"], e["summary"])     # e.g. 3 boot unbroken 0.1.0
    journal.close()
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from agent.journal import SyncLedger
from agent.sync import backlog as sync_backlog
from evidence.messages import Backlog


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
            db = self._ledger.db
            sealed = db.execute("select count(*) from entries where kind = 'segment'").fetchone()[0]
            total = db.execute("select count(*) from entries").fetchone()[0]
        return sealed, total, backlog

    def events(self, limit: int) -> list[dict[str, Any]]:
        """The newest chain entries, newest first."""
        with self._lock:
            if self._ledger is None:
                return []
            rows = self._ledger.db.execute(
                "select seq, kind, session, wall, json_extract(entry, '$.payload.body') as body"
                " from entries order by seq desc limit ?",
                (limit,),
            ).fetchall()
        return [
            {
                "seq": r["seq"],
                "kind": r["kind"],
                "session": r["session"],
                "wall": r["wall"],
                "summary": summarize(r["kind"], json.loads(r["body"] or "{}")),
            }
            for r in rows
        ]


def summarize(kind: str, body: dict[str, Any]) -> str:
    """One line for the event log."""
    if kind == "boot":
        return str(body.get("software", ""))
    if kind == "config":
        return f"settings {str(body.get('sha256', ''))[:12]}"
    if kind == "session_open":
        badges = ", ".join(body.get("badges") or []) or "no badge"
        parts = [f"{body.get('category')} ({badges})"]
        if body.get("trigger"):
            parts.insert(0, f"by {body['trigger']}")
        if body.get("case"):
            parts.append(f"case {body['case']}")
        return ", ".join(parts)
    if kind == "session_close":
        by = f", by {body['trigger']}" if body.get("trigger") else ""
        return f"{body.get('segments')} segments{by}"
    if kind == "segment":
        try:
            seconds = float(body["end"]["wall"]) - float(body["start"]["wall"])
        except (KeyError, TypeError, ValueError):
            seconds = 0.0
        pre = " pre-event" if body.get("prebuffer") else ""
        track = body.get("track")
        if track and track != "main":
            pre = f" {track}{pre}"
        fix = (body.get("location") or {}).get("fix", "?")
        return (
            f"#{body.get('index')}{pre} {seconds:.1f} s, {int(body.get('size', 0)) // 1024} KiB, "
            f"fix {fix}"
        )
    if kind == "marker":
        return f"{body.get('type')} {body.get('note') or ''}".strip()
    if kind == "interruption":
        return f"{body.get('cause')}: {body.get('detail') or ''}".rstrip(": ")
    if kind == "interruption_end":
        return f"gap {str(body.get('id', ''))[:8]} ended"
    if kind == "explanation":
        return f"{body.get('kind')} explanation of gap {str(body.get('interruption', ''))[:8]}"
    if kind == "event":
        case = f" {body['case']}" if body.get("type") == "case" and body.get("case") else ""
        return f"{body.get('type', '')}{case}"
    if kind == "shutdown":
        return str(body.get("reason", ""))
    if kind == "install":
        broker = body.get("broker") or {}
        return (
            f"provisioned by agency key {body.get('agency_key_id')}, "
            f"broker {broker.get('host')}:{broker.get('port')}"
        )
    if kind == "key_rotation":
        return f"new key {str(body.get('new_key', ''))[:16]}"
    if kind == "assignment":
        if body.get("room"):
            return f"room {body['room']}"
        return ", ".join(body.get("badges") or []) or "unassigned"
    text = json.dumps(body, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
