"""Reading what a scenario left behind into :mod:`simulator.scenario_facts`: each device's
evidence directory (``verify``, its chain, its receipts), the store's report, and what the
runner saw (power cuts, status samples).

Example::

    facts = collect_device(data, "bwc-1", "body", ["main"], offsets, wall0, agency_key,
                           store_gaps={}, kills=[], samples=[])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nacl.signing

from common.archive.archive import ArchiveError
from common.archive.device_directory import DeviceDirectory, load_chain, read_public_key
from common.archive.verify import verify_archive
from evidence.body_fields import ManifestError
from evidence.entries import Boot, Event, Shutdown, body_of
from evidence.layout import PUBKEY
from evidence.manifest import SegmentManifest
from evidence.receipt import ReceiptError, check_receipt
from evidence.seal import Entry
from evidence.session_bodies import Marker, SessionClose, SessionOpen
from simulator.powercut import footage_lost
from simulator.scenario_facts import (
    CutFact,
    DeviceFacts,
    GapFact,
    MarkerFact,
    Sample,
    SegmentFact,
    SessionFact,
    scenario_time,
)

AGENCY_NOTE = "(statement added at the agency)"


def collect_device(
    data: Path,
    device: str,
    kind: str,
    tracks: list[str],
    offsets: Sequence[tuple[float, float]],
    wall0: float,
    agency_key: nacl.signing.VerifyKey | None,
    store_gaps: dict[str, dict[str, Any]],
    kills: Sequence[tuple[float, float]],
    samples: list[Sample],
) -> DeviceFacts:
    """``offsets``: the device clock's offset from real time, by scenario second (see
    :func:`scenario_time`); ``store_gaps``: the store report's gaps of this device by id;
    ``kills``: (scenario second, device wall clock) of each power cut."""
    facts = DeviceFacts(device, kind, list(tracks), samples=samples)

    def t(wall: float) -> float:
        return round(scenario_time(wall, offsets, wall0), 3)

    try:
        pin = read_public_key(data / PUBKEY) if (data / PUBKEY).exists() else None
        report = verify_archive(DeviceDirectory(data), pin)
    except ArchiveError as err:
        facts.verify_ok = False
        facts.problems.append({"code": "unreadable", "where": str(data), "message": str(err)})
        return facts
    facts.verify_ok = report.ok
    facts.problems = [
        {"code": p.code, "where": p.where, "message": p.message} for p in report.problems
    ]
    entries = sorted((e for _, e in load_chain(data) if isinstance(e, Entry)), key=lambda e: e.seq)
    sessions: dict[str, SessionFact] = {}
    for e in entries:
        at = float(e.payload["at"]["wall"])
        try:
            b = body_of(e)
        except ManifestError as err:  # named, and read as no entry
            unread = {"code": "malformed_entry", "where": "chain", "message": str(err)}
            facts.problems.append(unread)
            continue
        if isinstance(b, Boot) and not b.tool:  # a tool's boot (agent explain) is no boot
            facts.boots.append(t(at))
        elif isinstance(b, Shutdown):
            facts.shutdowns.append((t(at), b.reason))
        elif isinstance(b, SessionOpen):
            sessions[str(e.session)] = SessionFact(
                str(e.session),
                t(at),
                None,
                b.category,
                list(b.badges),
                b.room,
                b.case.case if b.case else None,
            )
        elif isinstance(b, SessionClose) and str(e.session) in sessions:
            sessions[str(e.session)].closed = t(at)
        elif isinstance(b, SegmentManifest):
            track = b.track_name
            seg = SegmentFact(
                session=str(e.session),
                track=track,
                index=b.index,
                start=t(b.start.wall),
                end=t(b.end.wall),
                end_wall=b.end.wall,
                sealed=t(at),
                prebuffer=b.prebuffer,
                recovered=b.recovered,
            )
            seg.stored_at = _stored_at(data, device, b.sha256, agency_key)
            if seg.stored_at is not None:
                seg.receipt_t = round(seg.stored_at - wall0, 3)  # the store runs on real time
            facts.segments.append(seg)
            if seg.session in sessions:
                counts = sessions[seg.session].tracks
                counts[track] = counts.get(track, 0) + 1
        elif isinstance(b, Marker):
            facts.markers.append(MarkerFact(t(at), b.type, b.note, e.session))
        elif isinstance(b, Event):
            facts.events.append((t(at), b.type))
    facts.sessions = list(sessions.values())
    gaps_by_session: dict[str, list[dict[str, Any]]] = {}
    for s in report.sessions:
        gaps_by_session[s.id] = list(s.gaps)
        for g in s.gaps:
            facts.gaps.append(_gap(g, store_gaps.get(str(g["id"])), t))
    _cuts(facts, kills, report_sessions=report.sessions, gaps_by_session=gaps_by_session)
    return facts


def _gap(g: dict[str, Any], at_store: dict[str, Any] | None, t: Any) -> GapFact:
    explanation, where = g.get("explanation"), "device" if g.get("explanation") else None
    if explanation is None and at_store and at_store.get("explanation"):
        explanation, where = at_store["explanation"], "store"
    end = None if g.get("end") is None else t(float(g["end"]))
    start = t(float(g["start"]))
    return GapFact(
        id=str(g["id"]),
        session=str(g["session"]),
        cause=str(g["cause"]),
        start=start,
        end=end,
        length=g.get("length"),
        affects=list(g.get("affects", [])),
        tracks=list(g.get("tracks", [])),
        explanation=explanation,
        where=where,
        detail=str(g.get("detail", "")),
    )


def _cuts(
    facts: DeviceFacts,
    kills: Sequence[tuple[float, float]],
    report_sessions: Sequence[Any],
    gaps_by_session: dict[str, list[dict[str, Any]]],
) -> None:
    """Each power cut, the session it cut into, and the footage it cost."""
    by_session: dict[str, list[CutFact]] = {}
    for kill_t, kill_wall in kills:
        cut = CutFact(round(kill_t, 3), kill_wall, None)
        for s in report_sessions:
            if (
                s.opened is not None
                and s.opened <= kill_wall
                and (s.closed is None or kill_wall <= s.closed)
            ):
                cut.session = s.id
                by_session.setdefault(s.id, []).append(cut)
        facts.cuts.append(cut)
    for sid, cuts in by_session.items():
        gaps = gaps_by_session.get(sid, [])
        try:
            lost = footage_lost(gaps, [c.wall for c in cuts])
        except ValueError:
            found = sum(g["cause"] == "power_loss" for g in gaps)
            facts.cut_problems.append(
                f"session {sid[:8]}: {len(cuts)} power cut(s) but {found} power_loss gap(s)"
            )
            continue
        for c, seconds in zip(cuts, lost, strict=True):
            c.lost = round(seconds, 3)


def _stored_at(
    data: Path, device: str, sha256: str, agency_key: nacl.signing.VerifyKey | None
) -> float | None:
    """When the store stored this blob, from its receipt — only if the receipt verifies."""
    receipt = DeviceDirectory(data).stored_receipt(sha256)
    if agency_key is None or receipt is None:
        return None
    try:
        r = check_receipt(receipt, agency_key, device=device, sha256=sha256)
    except ReceiptError:
        return None
    return float(r["stored_at"])


def store_gaps(report: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """The store report's gaps by device and gap id; a statement added at the agency shows
    as a written explanation there."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for d in report.get("devices", []):
        gaps = out.setdefault(d["device"], {})
        for s in d.get("sessions", []):
            for g in s.get("gaps", []):
                gaps[str(g["id"])] = g
    return out


def status_sample(t: float, reply: dict[str, Any]) -> Sample | None:
    """A :class:`Sample` from a control channel's ``status`` reply (None if it failed)."""
    if not reply.get("ok"):
        return None
    st = reply.get("status", {})
    sim = st.get("sim", {})
    net = sim.get("network") or {}
    sync = reply.get("sync", {})
    return Sample(
        t=round(t, 3),
        state=str(st.get("state")),
        session=st.get("session"),
        deadline=str(st.get("deadline", "ok")),
        indicator=str(st.get("indicator", "")),
        interrupted=list(st.get("interrupted", [])),
        battery=sim.get("battery"),
        network=net.get("up"),
        connected=net.get("connected"),
        segments=int(sync.get("segments", 0)),
        receipted=int(sync.get("receipted", 0)),
    )


def dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=1, default=str)
