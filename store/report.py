"""``unbroken store report``: per device and per session, what the agency holds.

Synced (entries and receipted media), backlog (from the device's last status), uploads
that took longer than 24 hours or are overdue (R7), and the chain's state: gaps, forks,
breaks — never silently accepted (R1). Devices whose keys are in files (their last
``install`` entry says ``key_store: "file"``, or nothing: installed before there was a
choice) are listed as weaker: a copied card can sign as them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from typing import Any

from evidence.gaps import session_gaps
from evidence.names import iso
from evidence.protocol import DEADLINE_SECONDS, REFUSALS
from evidence.seal import Entry
from store.db import Database
from store.mailbox import Mailbox
from store.report_view import summary, summary_line
from store.statements import statements_of


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


def _room_of(db: Database, device: str) -> str | None:
    """The room a controller last said it serves (its last assignment entry)."""
    rows = db.query(
        "select entry from entries where device = ? and kind = 'assignment'"
        " order by seq desc limit 1",
        (device,),
    )
    if not rows:
        return None
    room = json.loads(rows[0]["entry"])["payload"]["body"].get("room")
    return str(room) if room else None


def known_devices(db: Database) -> list[str]:
    """Every device the store has heard of: entries, a status or a refused message."""
    return sorted(
        {r["device"] for r in db.query("select distinct device from entries")}
        | {r["device"] for r in db.query("select device from statuses")}
        | {r["device"] for r in db.query("select distinct device from rejections")} - {"?"}
    )


def _key_store(db: Database, device: str) -> str | None:
    """Where the device keeps its keys, from its last ``install`` entry: "tpm", "file"
    (said so, or an entry from before the field existed), None if none was received."""
    rows = db.query(
        "select entry from entries where device = ? and kind = 'install' order by seq desc limit 1",
        (device,),
    )
    if not rows:
        return None
    body = json.loads(rows[0]["entry"])["payload"]["body"]
    return "tpm" if body.get("key_store") == "tpm" else "file"


def _clock_offsets(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per session, receive time minus device time at its most promptly received entry:
    the device clock's error plus the shortest delivery delay."""
    out: dict[str, float] = {}
    for r in rows:
        off = float(r["received"]) - float(r["wall"])
        out[r["session"]] = min(off, out.get(r["session"], off))
    return out


def _skew(offset: float, bound: float) -> float | None:
    return round(offset, 1) if abs(offset) > bound else None


def _device(db: Database, device: str, now: float, skew_seconds: float) -> dict[str, Any]:
    seqs = [
        int(r["seq"])
        for r in db.query("select seq from entries where device = ? order by seq", (device,))
    ]
    gaps = _gaps(seqs)
    problems = db.query(
        "select seq, code, detail from chain_problems where device = ? order by seq", (device,)
    )
    status_rows = db.query("select status, at from statuses where device = ?", (device,))
    status = json.loads(status_rows[0]["status"]) if status_rows else None
    status_at = float(status_rows[0]["at"]) if status_rows else None
    # What the device's backlog figure may already be out of date by.
    receipted_since = (
        db.query(
            "select count(*) as n from receipts where device = ? and stored_at > ?",
            (device, status_at),
        )[0]["n"]
        if status_at is not None
        else 0
    )
    refusals = _refusals(db, device)
    rejected = sum(refusals.values())
    flags: Counter[str] = Counter()
    for r in db.query("select flag from entries where device = ? and flag is not null", (device,)):
        flags.update(str(r["flag"]).split(","))
    flagged = db.query(
        "select count(*) as n from entries where device = ? and flag is not null", (device,)
    )[0]["n"]
    receipts = {
        r["sha256"]: float(r["stored_at"])
        for r in db.query("select sha256, stored_at from receipts where device = ?", (device,))
    }
    sessions: dict[str, dict[str, Any]] = {}
    rows = db.query(
        "select kind, session, entry, wall, received from entries"
        " where device = ? and session is not null order by seq",
        (device,),
    )
    offsets = _clock_offsets(rows)
    for r in rows:
        payload = json.loads(r["entry"])["payload"]
        s = sessions.setdefault(
            r["session"],
            {
                "session": r["session"],
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
                "clock_skew": _skew(offsets[r["session"]], skew_seconds),
            },
        )
        if r["kind"] == "session_open":
            s["category"] = payload["body"].get("category")
            s["badges"] = payload["body"].get("badges", [])
            s["opened"] = payload["at"]["wall"]
            s["room"], s["case"] = payload["body"].get("room"), payload["body"].get("case")
            s["tracks"] = payload["body"].get("tracks", [])
        elif r["kind"] == "session_close":
            s["closed"] = payload["at"]["wall"]
        elif r["kind"] == "segment":
            body = payload["body"]
            s["segments"] += 1
            s["in_the_clear"] += (body.get("encryption") or {}).get("scheme") == "none"
            # The end in the store's time: the device's clock corrected by its skew.
            end = float(body["end"]["wall"]) + (s["clock_skew"] or 0.0)
            stored = receipts.get(body["sha256"])
            if stored is not None:
                s["receipted"] += 1
                s["late"] += stored - end > DEADLINE_SECONDS
            elif now - end > DEADLINE_SECONDS:
                s["overdue"] += 1
    entries = [
        Entry.from_json(r["entry"].encode())
        for r in db.query(
            "select entry from entries where device = ? and kind in"
            " ('interruption', 'interruption_end', 'explanation') order by seq",
            (device,),
        )
    ]
    interruptions, _ = session_gaps(entries)
    written = statements_of(db, device)
    for g in interruptions:
        if g.explanation is None and g.id in written:
            g.explanation, g.statement = "written", written[g.id]["statement"]
            g.detail = (g.detail + " (statement added at the agency)").strip()
        if g.session in sessions:
            sessions[g.session]["gaps"].append(g.as_dict())
    chain = "ok" if not gaps and not problems else "problems"
    return {
        "device": device,
        "entries": len(seqs),
        "last_seq": seqs[-1] if seqs else None,
        "chain": chain,
        "gaps": gaps,
        "problems": problems,
        "rejected_messages": rejected,
        "refusals": refusals,  # by reason code; "quota" counts the quota hits
        "quota_hits": refusals.get("quota", 0),
        "flagged_entries": flagged,
        "flags": dict(sorted(flags.items())),  # future_dated, clock_backwards
        "fork": _fork(db, device),
        "key_store": _key_store(db, device),  # "file" is weaker: a copied card can sign
        "status": status,
        "status_at": status_at,
        "receipted_since_status": receipted_since,
        "sessions": list(sessions.values()),
    }


def _status_line(d: dict[str, Any], st: dict[str, Any], backlog: dict[str, Any]) -> str:
    """The device's own last word, dated, and not mixed up with what the store holds."""
    if not st:
        return "  device status: none received yet"
    since = d.get("receipted_since_status") or 0
    return (
        f"  device status as reported {iso(d['status_at'])}: "
        f"{'online' if st.get('online') else 'offline'}, "
        f"{backlog.get('blobs', '?')} segment(s) / {backlog.get('bytes', '?')} B not yet uploaded, "
        f"deadline {st.get('deadline', '?')}"
        + (f" (the store has receipted {since} segment(s) since)" if since else "")
    )


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


def _refusals(db: Database, device: str) -> dict[str, int]:
    """Refused messages and expired uploads, by reason code (the text before ``:``)."""
    counts: Counter[str] = Counter()
    for r in db.query("select reason from rejections where device = ?", (device,)):
        code = str(r["reason"]).split(":", 1)[0]
        counts[code if code in REFUSALS or code == "expired" else "other"] += 1
    return dict(sorted(counts.items()))


def _gaps(seqs: list[int]) -> list[list[int]]:
    """Missing sequence ranges [first, last], counting from 1."""
    out, expected = [], 1
    for s in seqs:
        if s > expected:
            out.append([expected, s - 1])
        expected = s + 1
    return out


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_report(report: dict[str, Any]) -> str:
    """The report as people read it, ending with its summary line. ``shown``: what
    a filter left in (store.report_view), said so the reader knows it is not all."""
    shown = report.get("shown")
    lines = [f"Store report, {_when(report['generated'])}" + (f" ({shown})" if shown else "")]
    if not report["devices"]:
        lines.append("  nothing to show" if shown else "  no devices have synced yet")
    if weaker := report.get("weaker_key_stores"):
        lines.append(f"  keys in files (weaker: a copied card can sign): {', '.join(weaker)}")
    if clear := report.get("footage_in_the_clear"):
        lines.append(f"  FOOTAGE IN THE CLEAR (encryption turned off): {', '.join(clear)}")
    for i in report.get("not_recorded", []):
        why = (
            f"refused by the room: {i['reason']}"
            if i["state"] == "refused"
            else f"expired {_when(i['expires'])} undelivered (delivered {i['delivered']}x, "
            "never answered)"
        )
        lines.append(
            f"  INTERVIEW NOT RECORDED: case {i['case']}, room {i['room'] or '?'} "
            f"({i['device']}), asked {_when(i['issued'])}: {why}"
        )
    for d in report["devices"]:
        st = d["status"] or {}
        backlog = st.get("backlog") or {}
        lines += [
            "",
            f"Device {d['device']}: chain {d['chain']}, {d['entries']} entries "
            f"(last {d['last_seq']}), {d['rejected_messages']} refused messages"
            + (f", {d['flagged_entries']} flagged" if d["flagged_entries"] else ""),
            _status_line(d, st, backlog),
        ]
        if d.get("key_store") == "file":
            lines.append("  keys: file (WEAKER: a copied card can sign as this device)")
        if fork := d["fork"]:
            a, b = fork["branches"]
            lines.append(
                f"  ALERT: {fork['alert']}: the chain forks at entry {fork['seq']}: "
                f"branch {(a['first'] or '-')[:16]} ({a['entries']} entries), "
                f"branch {b['first'][:16]} ({b['entries']} entries); both kept"
            )
        if d["flags"]:
            lines.append("  flagged: " + ", ".join(f"{f} {n}" for f, n in d["flags"].items()))
        if d["refusals"]:
            counts = ", ".join(f"{code} {n}" for code, n in d["refusals"].items())
            lines.append(f"  refused: {counts}")
        for g in d["gaps"]:
            lines.append(f"  GAP: entries {g[0]}..{g[1]} not received")
        for p in d["problems"]:
            lines.append(f"  PROBLEM at entry {p['seq']}: {p['code']}: {p['detail']}")
        for s in d["sessions"]:
            lines.append(
                f"  session {s['session']} [{s['category']}] badges {','.join(s['badges'])}"
                f" opened {_when(s['opened'])} closed {_when(s['closed'])}: "
                f"{s['receipted']}/{s['segments']} segments stored"
                + (f", room {s['room']} case {s['case'] or '-'}" if s["room"] else "")
                + (f", tracks {','.join(s['tracks'])}" if len(s["tracks"]) > 1 else "")
                + (f", {s['late']} stored after 24 h" if s["late"] else "")
                + (
                    f", device clock {s['clock_skew']:+.0f} s off the store's"
                    if s["clock_skew"]
                    else ""
                )
                + (f", {s['overdue']} OVERDUE" if s["overdue"] else "")
                + (f", {s['in_the_clear']} IN THE CLEAR" if s["in_the_clear"] else "")
            )
            if not s["gaps"]:
                lines.append("    recording continuous")
            for g in s["gaps"]:
                length = "never resumed" if g["length"] is None else f"{g['length']:.1f} s"
                on = f" on {','.join(g['tracks'])}" if g.get("tracks") else ""
                lines.append(
                    f"    gap {_when(g['start'])} {g['cause']} ({', '.join(g['affects'])}){on}, "
                    f"{length}: {g['explanation'] or 'UNEXPLAINED'}"
                )
    lines += ["", summary_line(report.get("summary") or summary(report))]
    return "\n".join(lines)
