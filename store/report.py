"""``unbroken store report``: per device and per session, what the agency holds.

Synced (entries and receipted media), backlog (from the device's last status), uploads
that took longer than 24 hours or are overdue (R7), and the chain's state: gaps, forks,
breaks — never silently accepted (R1). Devices whose keys are in files (their last
``install`` entry says ``key_store: "file"``, or nothing: installed before there was a
choice) are listed as weaker: a copied card can sign as them.

What a device sent is read without trusting it (:mod:`store.report_read`): what does not
read is listed as unreadable beside the rest. The queries per device use the indexes of
:mod:`store.models` and count in the database, so a device costs what it holds, not
what the store holds. As text: :mod:`store.report_text`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from evidence.body_fields import ManifestError
from evidence.gaps import session_gaps
from evidence.manifest import SegmentManifest
from evidence.protocol import DEADLINE_SECONDS, REFUSALS
from evidence.seal import Entry
from store.db import Database
from store.mailbox import Mailbox
from store.report_read import (
    STATUS_MAX,
    entry_of,
    gap_entry,
    key_store_of,
    read_status,
    room_of,
    session_open,
)
from store.report_text import format_report
from store.statements import statements_of

__all__ = ["build_report", "format_report", "known_devices", "not_recorded"]

PAGE = 1000  # a device's entries are read this many at a time: memory stays bounded

# Refusals by reason code (the text before ":"), counted in the database.
_CODES = sorted({*REFUSALS, "expired"})
assert all(c.replace("_", "").isalpha() for c in _CODES)  # safe to write into the SQL
_REFUSALS_SQL = (
    "select case "
    + " ".join(
        f"when substr(reason, 1, {len(c) + 1}) = '{c}:' or reason = '{c}' then '{c}'"
        for c in _CODES
    )
    + " else 'other' end as code, count(*) as n from rejections where device = ? group by 1"
)


def build_report(
    db: Database, now: float, skew_seconds: float = 300.0, device: str | None = None
) -> dict[str, Any]:
    """What the agency holds (of ``device`` only, if named). Late and overdue are judged
    in the store's time: a session's device clock found more than ``skew_seconds`` off the
    receive time is corrected (and the skew shown). Which of it to show, and its summary:
    :mod:`store.report_view`."""
    devices = [d for d in known_devices(db) if device is None or d == device]
    report = [_device(db, d, now, skew_seconds) for d in devices]
    weaker = [d["device"] for d in report if d["key_store"] == "file"]
    clear = [d["device"] for d in report if any(s["in_the_clear"] for s in d["sessions"])]
    return {
        "generated": now,
        "devices": report,
        "weaker_key_stores": weaker,
        "footage_in_the_clear": clear,
        "not_recorded": [i for i in not_recorded(db, now) if device in (None, i["device"])],
    }


def not_recorded(db: Database, now: float) -> list[dict[str, Any]]:
    """Interviews the case system asked for that no room recorded (R3): session_open
    commands that expired with no answer (the room never came online for them), or that
    the room refused, with the room the controller was assigned to and the case."""
    try:
        lost = Mailbox(db).not_recorded(now)
    except Exception:  # a database from before commands were kept: none to report
        if db.postgres:
            db.conn.rollback()
        return []
    return [
        {
            "device": c.device,
            "room": _room_of(db, c.device),
            "case": c.case,
            "nonce": c.nonce,
            "issued": c.issued,
            "expires": c.expires,
            "state": c.state,
            "reason": c.reason,
            "delivered": c.sends,
        }
        for c in lost
    ]


def _latest(db: Database, device: str, kind: str) -> Entry | str | None:
    """The device's last entry of ``kind``: None if none, why not if it does not read."""
    rows = db.query(
        "select seq, entry from entries where device = ? and kind = ? order by seq desc limit 1",
        (device, kind),
    )
    return entry_of(rows[0]["entry"], int(rows[0]["seq"])) if rows else None


def _room_of(db: Database, device: str) -> str | None:
    """The room a controller last said it serves (its last assignment entry)."""
    e = _latest(db, device, "assignment")
    return room_of(e) if isinstance(e, Entry) else None


def known_devices(db: Database) -> list[str]:
    """Every device the store has heard of: entries, a status or a refused message (one
    pass over each table's device index, once per report)."""
    return sorted(
        {r["device"] for r in db.query("select distinct device from entries")}
        | {r["device"] for r in db.query("select device from statuses")}
        | {r["device"] for r in db.query("select distinct device from rejections")} - {"?"}
    )


def _key_store(db: Database, device: str) -> str | None:
    """Where the device keeps its keys, from its last ``install`` entry: "tpm", "file"
    (said so, an entry from before the field existed, or one that does not read), None
    if none was received."""
    e = _latest(db, device, "install")
    if e is None:
        return None
    return key_store_of(e) if isinstance(e, Entry) else "file"


def _skew(offset: float, bound: float) -> float | None:
    return round(offset, 1) if abs(offset) > bound else None


def _session_rows(db: Database, device: str) -> Iterator[dict[str, Any]]:
    """The device's entries in sessions, in chain order, a page at a time."""
    after = 0
    while rows := db.query(
        "select seq, kind, session, entry from entries"
        " where device = ? and seq > ? and session is not null order by seq limit ?",
        (device, after, PAGE),
    ):
        yield from rows
        after = int(rows[-1]["seq"])


def _new_session(session: str, skew: float | None) -> dict[str, Any]:
    return {
        "session": session,
        "category": None,
        "badges": [],
        "opened": None,
        "closed": None,
        "segments": 0,
        "in_the_clear": 0,  # sealed as stored unencrypted (a test bench's choice)
        "receipted": 0,
        "late": 0,
        "overdue": 0,
        "gaps": [],
        "room": None,
        "case": None,
        "tracks": [],
        "clock_skew": skew,
        "unreadable": [],  # what of the session's entries does not read, and why
    }


def _sessions(
    db: Database, device: str, now: float, skew_seconds: float
) -> tuple[dict[str, dict[str, Any]], list[Entry]]:
    """The device's sessions, and its interruptions and their ends and explanations."""
    # Per session, receive time minus device time at its most promptly received entry:
    # the device clock's error plus the shortest delivery delay.
    offsets = {
        r["session"]: float(r["off"])
        for r in db.query(
            "select session, min(received - wall) as off from entries"
            " where device = ? and session is not null group by session",
            (device,),
        )
    }
    receipts = {
        r["sha256"]: float(r["stored_at"])
        for r in db.query("select sha256, stored_at from receipts where device = ?", (device,))
    }
    sessions: dict[str, dict[str, Any]] = {}
    gap_entries: list[Entry] = []
    for r in _session_rows(db, device):
        s = sessions.get(r["session"])
        if s is None:
            skew = _skew(offsets.get(r["session"], 0.0), skew_seconds)
            s = sessions[r["session"]] = _new_session(r["session"], skew)
        s["segments"] += r["kind"] == "segment"  # held, whether its manifest reads or not
        e = entry_of(r["entry"], int(r["seq"]))
        if isinstance(e, str):
            s["unreadable"].append(e)
        elif e.kind == "session_open":
            s["opened"] = e.payload["at"]["wall"]
            _opened(s, e)
        elif e.kind == "session_close":
            s["closed"] = e.payload["at"]["wall"]
        elif e.kind == "segment":
            _segment(s, e, receipts, now)
        elif e.kind in ("interruption", "interruption_end", "explanation"):
            g = gap_entry(e)
            if isinstance(g, str):
                s["unreadable"].append(g)
            else:
                gap_entries.append(g)
    return sessions, gap_entries


def _opened(s: dict[str, Any], e: Entry) -> None:
    opened = session_open(e)
    if isinstance(opened, str):
        s["unreadable"].append(opened)
        return
    s["category"], s["badges"], s["tracks"] = opened.category, opened.badges, opened.tracks
    s["room"] = opened.room
    s["case"] = opened.case.case if opened.case else None


def _segment(s: dict[str, Any], e: Entry, receipts: dict[str, float], now: float) -> None:
    try:
        m = SegmentManifest.from_body(e.body)
    except ManifestError as err:
        s["unreadable"].append(f"entry {e.seq}: {err}")
        return
    s["in_the_clear"] += m.encryption is not None and not m.encryption.encrypted
    # The end in the store's time: the device's clock corrected by its skew.
    end = m.end.wall + (s["clock_skew"] or 0.0)
    stored = receipts.get(m.sha256)
    if stored is not None:
        s["receipted"] += 1
        s["late"] += stored - end > DEADLINE_SECONDS
    elif now - end > DEADLINE_SECONDS:
        s["overdue"] += 1


def _chain(db: Database, device: str) -> tuple[int, int | None, list[list[int]]]:
    """How many entries the store holds, the last sequence number, and what is missing
    (counted first: the sequence numbers are read only if some are missing)."""
    row = db.query(
        "select count(*) as n, max(seq) as last from entries where device = ?", (device,)
    )
    n, last = int(row[0]["n"]), row[0]["last"]
    if last is None or n == int(last):
        return n, None if last is None else int(last), []
    seqs = (
        int(r["seq"])
        for r in db.query("select seq from entries where device = ? order by seq", (device,))
    )
    return n, int(last), _gaps(seqs)


def _status(db: Database, device: str) -> tuple[dict[str, Any] | None, float | None, str | None]:
    """The device's last status as the report reads it, when it came, what does not read."""
    rows = db.query(
        "select case when length(status) <= ? then status end as status,"
        " length(status) as size, at from statuses where device = ?",
        (STATUS_MAX, device),
    )
    if not rows:
        return None, None, None
    status, problem = read_status(rows[0]["status"], int(rows[0]["size"]))
    return status, float(rows[0]["at"]), problem


def _device(db: Database, device: str, now: float, skew_seconds: float) -> dict[str, Any]:
    entries, last_seq, gaps = _chain(db, device)
    problems = db.query(
        "select seq, code, detail from chain_problems where device = ? order by seq", (device,)
    )
    status, status_at, status_unreadable = _status(db, device)
    # What the device's backlog figure may already be out of date by.
    receipted_since = (
        db.query(
            "select count(*) as n from receipts where device = ? and stored_at > ?",
            (device, status_at),
        )[0]["n"]
        if status_at is not None
        else 0
    )
    refusals = dict(
        sorted((str(r["code"]), int(r["n"])) for r in db.query(_REFUSALS_SQL, (device,)))
    )
    flags: Counter[str] = Counter()
    flagged = 0
    for r in db.query(
        "select flag, count(*) as n from entries where device = ? and flag is not null"
        " group by flag",
        (device,),
    ):
        flagged += int(r["n"])
        for f in str(r["flag"]).split(","):
            flags[f] += int(r["n"])
    sessions, gap_entries = _sessions(db, device, now, skew_seconds)
    interruptions, _ = session_gaps(gap_entries)
    written = statements_of(db, device)
    for g in interruptions:
        if g.explanation is None and g.id in written:
            g.explanation, g.statement = "written", written[g.id]["statement"]
            g.detail = (g.detail + " (statement added at the agency)").strip()
        if g.session in sessions:
            sessions[g.session]["gaps"].append(g.as_dict())
    return {
        "device": device,
        "entries": entries,
        "last_seq": last_seq,
        "chain": "ok" if not gaps and not problems else "problems",
        "gaps": gaps,
        "problems": problems,
        "rejected_messages": sum(refusals.values()),
        "refusals": refusals,  # by reason code; "quota" counts the quota hits
        "quota_hits": refusals.get("quota", 0),
        "flagged_entries": flagged,
        "flags": dict(sorted(flags.items())),  # future_dated, clock_backwards
        "fork": _fork(db, device),
        "key_store": _key_store(db, device),  # "file" is weaker: a copied card can sign
        "status": status,  # its fields the report shows; None where they do not read
        "status_at": status_at,
        "status_unreadable": status_unreadable,  # what of the status does not read
        "receipted_since_status": receipted_since,
        "sessions": list(sessions.values()),
    }


def _fork(db: Database, device: str) -> dict[str, Any] | None:
    """Both branches of a fork, from where they part; None without one."""
    second = db.query("select seq, hash from forks where device = ? order by seq", (device,))
    if not second:
        return None
    at = int(second[0]["seq"])
    first = db.query(
        "select seq, hash from entries where device = ? and seq >= ? order by seq", (device, at)
    )

    def branch(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "first": rows[0]["hash"] if rows else None,
            "entries": len(rows),
            "last_seq": int(rows[-1]["seq"]) if rows else None,
        }

    return {
        "alert": "this device's key is in two places",
        "seq": at,
        "branches": [branch(first), branch(second)],
    }


def _gaps(seqs: Iterator[int] | list[int]) -> list[list[int]]:
    """Missing sequence ranges [first, last], counting from 1."""
    out, expected = [], 1
    for s in seqs:
        if s > expected:
            out.append([expected, s - 1])
        expected = s + 1
    return out
