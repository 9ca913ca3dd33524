"""``unbroken agent status`` as an admin reads it: one line a subject, everything the
``--json`` document holds, in human units (MB/GB, ages, ISO times with the local offset).
What needs acting on says so in capitals: a store that refuses the device, a clock not
synchronised, a recording past its deadline.

Example::

    print(format_status(doc, time.time()))   # doc: what ``agent status --json`` prints
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

# The 24-hour sync deadline of the oldest recording without a receipt (R7), in words.
DEADLINE = {
    "ok": "deadline ok",
    "warn": "deadline WARN (oldest unsynced recording past 12 h)",
    "urgent": "deadline URGENT (oldest unsynced recording past 20 h)",
    "overdue": "deadline OVERDUE (oldest unsynced recording past 24 h)",
}


def when(ts: float) -> str:
    """An instant as ISO 8601 in local time, with its offset."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def ago(seconds: float) -> str:
    """An age: 4 s, 12 min, 3 h 05 min, 2 d 4 h."""
    s = max(0.0, seconds)
    if s < 90:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def size(n: float) -> str:
    """Bytes in MB or GB (decimal, as disks are sold)."""
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.0f} kB" if n >= 1e3 else f"{n:.0f} B"


def keys_line(k: dict[str, Any]) -> str:
    if k.get("unreadable"):
        return f"not readable here ({k['unreadable']})"
    where = f"tpm: sealed by this device's TPM ({k.get('tcti')})" if k["backend"] == "tpm" else ""
    where = where or str(k["backend"])
    if k.get("weaker"):
        return f"{where} (WEAKER: {k.get('note', 'a copied card can sign')})"
    return where + (", a copied card cannot sign" if k["backend"] == "tpm" else "")


def format_status(s: dict[str, Any], now: float) -> str:
    model = f", {s['model']}" if s.get("model") else ""
    lines = [f"device   {s['device_id']} ({s['role']}{model}), key {s['key_id']}"]
    if "key_store" in s:
        lines.append(f"keys     {keys_line(s['key_store'])}")
    lines += _agency(s, now)
    lines.append(f"assigned {_assignment(s.get('assignment'))}")
    a = s.get("agent")
    lines.append(_agent_line(s, a, now))
    if a:
        lines += _recorder(s, a)
        lines += _hardware(a, now)
        lines += _sync(a.get("sync"), now)
    return "\n".join(lines)


def _agency(s: dict[str, Any], now: float) -> list[str]:
    if not s["provisioned"]:
        return ["agency   not provisioned (records, does not sync)"]
    b, line = s["broker"], f"agency   key {s['agency_key_id']}"
    until = s["certificate_expires"]
    try:
        ts = datetime.fromisoformat(until).timestamp()
    except ValueError:
        pass  # shown as the document has it
    else:
        left = f"EXPIRED {ago(now - ts)} ago" if ts < now else f"in {ago(ts - now)}"
        until = f"{when(ts)} ({left})"
    return [f"{line}, broker {b['host']}:{b['port']}", f"         certificate until {until}"]


def _assignment(a: dict[str, Any] | None) -> str:
    if not a:
        return "nobody (no assignment command applied)"
    who = []
    if a.get("badges"):
        who.append("badge(s) " + ", ".join(a["badges"]))
    who += [f"{k} {a[k]}" for k in ("name", "unit", "room") if a.get(k)]
    issued = f" issued {when(float(a['issued']))}" if a.get("issued") is not None else ""
    return (
        f"{'; '.join(who) or 'nobody'} ({a.get('command', '?')} command {a.get('nonce', '?')}"
        f"{issued})"
    )


def _agent_line(s: dict[str, Any], a: dict[str, Any] | None, now: float) -> str:
    pid = f"pid {a.get('pid')}" if a and a.get("pid") is not None else "pid ?"
    at = ""
    if a and a.get("written_at") is not None:
        at = f"; status of {when(a['written_at'])} ({ago(now - a['written_at'])} ago)"
    if s["running"]:
        return f"agent    running ({pid}){at}"
    return f"agent    not running{at and f'{at}, {pid}'}"


def _recorder(s: dict[str, Any], a: dict[str, Any]) -> list[str]:
    other = f" (status of device {a['device']})" if a.get("device") != s["device_id"] else ""
    armed = ", close armed" if a.get("close_armed") else ""
    lines = [
        f"state    {a.get('state')}, session {a.get('session') or '-'}, LED {a.get('led')}"
        f"{armed}, chain head {a.get('chain_head')}{other}",
        f"tracks   {', '.join(a.get('tracks') or []) or '-'}",
    ]
    if a.get("badges"):
        lines.append(f"wearer   badge(s) {', '.join(a['badges'])} (as the recorder has them)")
    if a.get("room") is not None or a.get("panel") is not None:
        lines.append(f"room     {a.get('room') or '-'}, panel {a.get('panel') or '-'}")
    if a.get("room_problem"):
        lines.append(f"room     {a['room_problem']}")
    load = a.get("load")
    if load:
        lines.append(f"load     {_load(load)}")
    err = a.get("last_error")
    lines.append(f"error    {'ERROR ' + err if err else 'none'}")
    gaps = []
    if a.get("interrupted"):
        gaps.append("INTERRUPTED now: " + ", ".join(a["interrupted"]))
    if a.get("unexplained"):
        gaps.append(f"{len(a['unexplained'])} unexplained: " + ", ".join(a["unexplained"]))
    if a.get("explain_prompt"):
        gaps.append("the explain prompt is showing")
    lines.append(f"gaps     {'; '.join(gaps) or 'none'}")
    return lines


def _load(load: dict[str, Any]) -> str:
    """The recorder's step under load (0: as configured), what it records at, how busy."""
    b = float(load["bitrate"])
    rate = f"{b / 1e6:.1f} Mbit/s" if b >= 1e6 else f"{b / 1e3:.0f} kbit/s"
    step = f"STEPPED DOWN to step {load['level']}" if load["level"] else "as configured"
    return (
        f"{step}: {load['picture_rate']:g} pictures/s at {rate}, work {100 * load['busy']:.0f} "
        "% of each frame interval"
    )


def _hardware(a: dict[str, Any], now: float) -> list[str]:
    lines = []
    st = a.get("storage")
    if st:
        share = f" ({100 * st['free'] / st['total']:.0f} %)" if st["total"] else ""
        lines.append(f"storage  {size(st['free'])} free of {size(st['total'])}{share}")
    else:
        lines.append("storage  unknown")
    bat = a.get("battery")
    if bat:
        power = ", external power" if bat["external_power"] else ", on battery"
        lines.append(f"battery  {bat['percent']:.0f} %{power}")
    else:
        lines.append("battery  none (mains)")
    g = a.get("gnss") or {}
    age = f", {ago(g['age'])} old" if g.get("age") is not None else ""
    lat, lon = g.get("lat"), g.get("lon")
    pos = f" {lat:.5f}, {lon:.5f}" if lat is not None and lon is not None else ""
    if g.get("fix"):
        lines.append(f"gnss     fix{pos}{age}")
    elif pos or age:
        lines.append(f"gnss     NO FIX now; last fix{pos}{age}")
    else:
        lines.append("gnss     no fix, never a fix")
    c = a.get("clock") or {}
    synced = "synchronised" if c.get("synced") else "NOT synchronised"
    wall = f", device time {when(c['wall'])}" if c.get("wall") is not None else ""
    lines.append(f"clock    {synced}{wall}")
    return lines


def _sync(sync: dict[str, Any] | None, now: float) -> list[str]:
    if not sync:
        return ["sync     off (not provisioned, or --no-sync)"]
    lines = []
    refusal = sync.get("store_refusal")
    if refusal:
        lines.append(f"sync     ERROR: the store refuses this device: {refusal}")
    link = "connected" if sync["connected"] else "NOT connected"
    b = sync.get("backlog")
    if b:
        oldest = b.get("oldest_unsynced_end")
        since = f", oldest unsynced ended {ago(now - oldest)} ago" if oldest is not None else ""
        backlog = (
            f"backlog {b.get('blobs', '?')} segment(s) / {size(b.get('bytes') or 0)}, "
            f"{b.get('entries', '?')} chain entries not yet acknowledged{since}"
        )
    else:
        backlog = "backlog not yet counted"
    deadline = DEADLINE.get(sync["deadline"], f"deadline {sync['deadline']}")
    if refusal:  # nothing the store refuses is "ok": the deadline runs on regardless
        deadline = deadline.replace("deadline ok", "deadline running")
    lines.append(f"{'sync    ' if not refusal else '        '} {link}, {deadline}, {backlog}")
    return lines
