"""The store report (:func:`store.report.build_report`) as people read it.

Every value a device chose (a session's name, category, badges, room, case; a status
field; a room's refusal) goes through :func:`store.report_read.shown`: one line, cut,
its control characters escaped, so no device can forge or bury a line of the report.
What does not read is listed as UNREADABLE where it belongs, never in place of the rest.

Example::

    print(format_report(build_report(db, time.time())))
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from evidence.names import iso
from store.report_read import shown, shown_list
from store.report_view import summary, summary_line

UNREADABLE_SHOWN = 5  # notes per session (or status) listed; the rest are counted


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    try:
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):  # a time no clock can mean
        return f"{t!r} (not a date)"


def _unreadable(notes: list[str], indent: str) -> list[str]:
    lines = [f"{indent}UNREADABLE {shown(n, 200)}" for n in notes[:UNREADABLE_SHOWN]]
    if len(notes) > UNREADABLE_SHOWN:
        lines.append(f"{indent}UNREADABLE: {len(notes) - UNREADABLE_SHOWN} more entries")
    return lines


def _status_line(d: dict[str, Any]) -> list[str]:
    """The device's own last word, dated, and not mixed up with what the store holds."""
    st, problem = d["status"], d.get("status_unreadable")
    if d["status_at"] is None:
        return ["  device status: none received yet"]
    lines = []
    if st is not None:
        since = d.get("receipted_since_status") or 0
        online = {True: "online", False: "offline"}.get(st["online"], "online ?")
        backlog = st["backlog"]
        deadline = "?" if st["deadline"] is None else shown(st["deadline"])
        lines.append(
            f"  device status as reported {iso(d['status_at'])}: {online}, "
            f"{_count(backlog['blobs'])} segment(s) / {_count(backlog['bytes'])} B not yet "
            f"uploaded, deadline {deadline}"
            + (f" (the store has receipted {since} segment(s) since)" if since else "")
        )
    if problem:
        lines.append(
            f"  UNREADABLE status as reported {iso(d['status_at'])}: {shown(problem, 200)}"
        )
    return lines


def _count(n: int | None) -> str:
    return "?" if n is None else str(n)


def _header(report: dict[str, Any]) -> list[str]:
    shown_as = report.get("shown")
    lines = [f"Store report, {_when(report['generated'])}" + (f" ({shown_as})" if shown_as else "")]
    if not report["devices"]:
        lines.append("  nothing to show" if shown_as else "  no devices have synced yet")
    if crl := report.get("crl"):
        lines.append(crl_line(crl, report["generated"]))
    if weaker := report.get("weaker_key_stores"):
        names = shown_list(weaker, ", ", len(weaker))
        lines.append(f"  keys in files (weaker: a copied card can sign): {names}")
    if clear := report.get("footage_in_the_clear"):
        lines.append(
            f"  FOOTAGE IN THE CLEAR (encryption turned off): {shown_list(clear, ', ', len(clear))}"
        )
    for i in report.get("not_recorded", []):
        why = (
            f"refused by the room: {shown(i['reason'], 200)}"
            if i["state"] == "refused"
            else f"expired {_when(i['expires'])} undelivered (delivered {i['delivered']}x, "
            "never answered)"
        )
        room = "?" if not i["room"] else shown(i["room"])
        lines.append(
            f"  INTERVIEW NOT RECORDED: case {shown(i['case'])}, room {room} "
            f"({shown(i['device'])}), asked {_when(i['issued'])}: {why}"
        )
    return lines


CRL_WARN_DAYS = 10  # the shipped renewal renews 10 days ahead: later than that, it failed


def crl_line(crl: dict[str, Any], now: float) -> str:
    """The broker's CRL: when it runs out, said loudly when it has or soon will (then the
    broker refuses every device and store)."""
    if "unreadable" in crl:
        return f"  BROKER CRL UNREADABLE: {shown(crl['unreadable'], 300)}"
    until = float(crl["valid_until"])
    days = (until - now) / 86400
    if days <= 0:
        return (
            f"  BROKER CRL EXPIRED {_when(until)}: the broker refuses every device and store "
            "until it is renewed (provision renew-crl) and the broker reloaded"
        )
    if days <= CRL_WARN_DAYS:
        return (
            f"  BROKER CRL RUNS OUT {_when(until)} ({days:.1f} days): its renewal has not run "
            "or failed (provision renew-crl)"
        )
    return f"  broker CRL valid until {_when(until)} ({days:.0f} days)"


def _device(d: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Device {shown(d['device'])}: chain {d['chain']}, {d['entries']} entries "
        f"(last {d['last_seq']}), {d['rejected_messages']} refused messages"
        + (f", {d['flagged_entries']} flagged" if d["flagged_entries"] else ""),
        *_status_line(d),
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
        lines.append(f"  PROBLEM at entry {p['seq']}: {p['code']}: {shown(p['detail'], 200)}")
    for s in d["sessions"]:
        lines += _session(s)
    return lines


def _session(s: dict[str, Any]) -> list[str]:
    category = "?" if s["category"] is None else shown(s["category"])
    lines = [
        f"  session {shown(s['session'])} [{category}] badges {shown_list(s['badges'])}"
        f" opened {_when(s['opened'])} closed {_when(s['closed'])}: "
        f"{s['receipted']}/{s['segments']} segments stored"
        + (
            f", room {shown(s['room'])} case {'-' if not s['case'] else shown(s['case'])}"
            if s["room"]
            else ""
        )
        + (f", tracks {shown_list(s['tracks'])}" if len(s["tracks"]) > 1 else "")
        + (f", {s['late']} stored after 24 h" if s["late"] else "")
        + (f", device clock {s['clock_skew']:+.0f} s off the store's" if s["clock_skew"] else "")
        + (f", {s['overdue']} OVERDUE" if s["overdue"] else "")
        + (f", {s['in_the_clear']} IN THE CLEAR" if s["in_the_clear"] else "")
    ]
    lines += _unreadable(s.get("unreadable", []), "    ")
    if not s["gaps"]:
        lines.append("    recording continuous")
    for g in s["gaps"]:
        length = "never resumed" if g["length"] is None else f"{g['length']:.1f} s"
        on = f" on {shown_list(g['tracks'])}" if g.get("tracks") else ""
        affects = shown_list(g["affects"], ", ")
        lines.append(
            f"    gap {_when(g['start'])} {shown(g['cause'])} ({affects}){on}, "
            f"{length}: {g['explanation'] or 'UNEXPLAINED'}"
        )
    return lines


def format_report(report: dict[str, Any]) -> str:
    """The report as people read it, ending with its summary line. ``shown``: what
    a filter left in (store.report_view), said so the reader knows it is not all."""
    lines = _header(report)
    for d in report["devices"]:
        lines += _device(d)
    lines += ["", summary_line(report.get("summary") or summary(report))]
    return "\n".join(lines)
