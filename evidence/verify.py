"""Offline verification of a device chain and its media: every check, no I/O.

The caller (``unbroken verify``, the store) reads files and decodes media; this module
decides. Each problem has a stable ``code`` so that tools and tests can tell a flipped
byte from a deleted segment from a foreign manifest. Here: the chain's order, links and
sessions; which key signs each entry is :mod:`evidence.chain_keys`', whether each file
holds what was sealed :mod:`evidence.media_check`', the report and its codes
:mod:`evidence.verify_report`'s.

Example::

    report = verify_chain(entries, verify_key, media={"segments/s/000000.mp4": facts})
    if not report.ok:
        for p in report.problems:
            print(p.code, p.where, p.message)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import replace
from typing import Any

import nacl.signing

from evidence.body_fields import ManifestError
from evidence.chain_keys import check_signatures
from evidence.close_counts import session_closes
from evidence.gaps import Span, interrupted_tracks, session_gaps, silent_gaps
from evidence.manifest import MAIN_TRACK, SegmentManifest
from evidence.media_check import MediaFacts, SegmentFiles
from evidence.seal import GENESIS, Entry, SealError, key_id
from evidence.session_bodies import SessionOpen
from evidence.verify_report import Problem, Report, SessionReport


def verify_chain(
    entries: Sequence[tuple[str, Entry | SealError]],
    verify_key: nacl.signing.VerifyKey,
    media: Mapping[str, MediaFacts | None],
    pinned: bool = True,
    unexpected_files: Sequence[str] = (),
    archived: Set[str] = frozenset(),
    strict: bool = False,
    unsafe_paths: Mapping[str, str] | None = None,
    first_seq: int = 1,
    session: str | None = None,
) -> Report:
    """Check a device chain and the media it seals.

    ``entries`` are (name, parsed entry or the parse error) in any order; ``media`` maps
    every file a manifest names to what was found there (None: absent). ``archived``
    names SHA-256s for which the agency's signed receipt was verified: media absent after
    such a receipt was deleted lawfully (R9), not lost. ``unsafe_paths`` maps files the
    reader refused to follow (a link, ``../``) to why: those are named, not "absent".

    One session's part of a chain: ``session``, with ``entries`` from ``first_seq`` (the
    entry before the session's first) to the entry after its last, and ``verify_key`` the
    key in force at ``first_seq``. Every entry there is checked for its seal, link and
    device; only ``session``'s for what they say (other sessions' are left out, unread).
    """
    report = Report(device=None, key_id=key_id(verify_key), pinned=pinned)
    checker = _Checker(report, verify_key, media, archived, unsafe_paths or {})
    checker.first_seq, checker.only = first_seq, session
    checker.run(entries)
    for close in session_closes(checker.in_order):
        if session is not None and close.session != session:
            continue
        if why := close.malformed or close.mismatch:
            code = "malformed_entry" if close.malformed else "close_count_mismatch"
            checker.problem(code, f"entry {close.seq}", why, close.session)
    report.notices += checker.files.notices()
    if report.entries == 0:
        report.problems.append(Problem("no_evidence", "chain/", "no valid chain entries"))
    checker.gaps(strict)
    for name in unexpected_files:
        report.problems.append(Problem("unexpected_file", name, "not referenced by any entry"))
    return report


class _Checker:
    def __init__(
        self,
        report: Report,
        verify_key: nacl.signing.VerifyKey,
        media: Mapping[str, MediaFacts | None],
        archived: Set[str] = frozenset(),
        unsafe_paths: Mapping[str, str] | None = None,
    ) -> None:
        self.in_order: list[Entry] = []
        # interruptions so far, per session and per (session, track): media need not
        # continue across one
        self.breaks: dict[str | tuple[str, str], int] = {}
        self.r = report
        self.key = verify_key
        self.files = SegmentFiles(media, archived, unsafe_paths or {}, self.problem)
        self.sessions: dict[str, SessionReport] = {}
        self.open: set[str] = set()
        # per (session, track): last index, its media, the interruptions seen by then
        self.last_segment: dict[tuple[str, str], tuple[int, MediaFacts | None, int]] = {}
        self.misplaced: list[tuple[str, int, Entry]] = []  # (file, seq its name says, entry)
        self.open_at: dict[int, frozenset[str]] = {}  # sessions open after each entry
        self.manifests: dict[str, SegmentManifest | None] = {}  # by entry hash
        self.first_seq = 1  # where the entries checked begin (1: the whole chain)
        self.only: str | None = None  # the one session checked for what its entries say

    def manifest(self, e: Entry, where: str) -> SegmentManifest | None:
        """A segment entry's manifest; a malformed one is named once and counts as none."""
        if e.hash not in self.manifests:
            try:
                self.manifests[e.hash] = SegmentManifest.from_body(e.body)
            except ManifestError as err:
                self.manifests[e.hash] = None
                self.problem("malformed_entry", where, str(err), e.session)
        return self.manifests[e.hash]

    def problem(self, code: str, where: str, message: str, session: str | None = None) -> None:
        p = Problem(code, where, message, session)
        self.r.problems.append(p)
        if session in self.sessions:
            self.sessions[session].problems.append(p)

    def run(self, named: Sequence[tuple[str, Entry | SealError]]) -> None:
        good: list[tuple[str, Entry]] = []
        for name, e in named:
            if isinstance(e, SealError):
                self.problem("malformed_entry", name, str(e))
            else:
                good.append((name, e))
        good.sort(key=lambda ne: ne[1].seq)
        good = self._placement(good)
        self.r.entries = len(good)
        check_signatures(good, self.key, self.r.key_id, self.problem)
        self.r.device = _majority([e.payload["device"] for _, e in good])
        seen_hash: dict[int, str] = {}
        prev: Entry | None = None
        for name, e in good:
            where = f"entry {e.seq} ({name})"
            if e.payload["device"] != self.r.device:
                self.problem("foreign_device", where, f"names device {e.payload['device']!r}")
            if e.seq in seen_hash:
                self.problem("duplicate_sequence", where, f"sequence {e.seq} appears twice")
                continue
            seen_hash[e.seq] = e.hash
            self._link(prev, e, where)
            self._apply(e, where)
            self.in_order.append(e)
            self.open_at[e.seq] = frozenset(self.open)
            prev = e
        self._sealed_media_hashes(good)
        self._name_misplaced()

    def gaps(self, strict: bool) -> None:
        """Every interruption per session, its explanation, and holes nobody logged."""
        gaps, problems = session_gaps(self.in_order)
        for code, seq, sid, why in problems.named():  # a malformed body, a statement
            if self.only is None or sid == self.only:
                self.problem(code, f"entry {seq}", why, sid)
        for g in gaps:
            s = self.sessions.get(g.session)
            if s is None:
                continue
            s.gaps.append(g.as_dict())
            if strict and g.explanation is None:
                self.problem(
                    "unexplained_gap", f"entry {g.seq}", f"{g.cause} gap has no explanation", s.id
                )
        spans: dict[tuple[str, str], list[Span]] = {}
        for e in self.in_order:
            m = self.manifests.get(e.hash) if e.kind == "segment" else None
            if m and e.session in self.sessions:
                spans.setdefault((str(e.session), m.track_name), []).append(
                    Span(m.start.wall, m.end.wall, m.start.mono, m.end.mono)
                )
        for (sid, track), track_spans in spans.items():
            mine = [g for g in gaps if g.session == sid and g.covers(track)]
            for start, end in silent_gaps(track_spans, mine, tolerance=0.5):
                on = "" if track == MAIN_TRACK else f" on track {track}"
                self.problem(
                    "silent_gap",
                    f"session {sid}",
                    f"no recording{on} and no interruption from {start:.3f} to {end:.3f} "
                    f"({end - start:.1f} s)",
                    sid,
                )

    def _placement(self, good: list[tuple[str, Entry]]) -> list[tuple[str, Entry]]:
        """Set aside entries filed under another sequence number than their own (a copied
        or substituted file); an identical copy of an entry counts once."""
        kept: list[tuple[str, Entry]] = []
        for name, e in good:
            named = _seq_from_name(name)
            if named is not None and named != e.seq:
                self.misplaced.append((name, named, e))
            else:
                kept.append((name, e))
        hashes = {e.seq: e.hash for _, e in kept}
        for name, _named, e in self.misplaced:
            if e.seq not in hashes:  # the only copy of its entry: check it in its own place
                kept.append((name, e))
                hashes[e.seq] = e.hash
        kept.sort(key=lambda ne: ne[1].seq)
        return kept

    def _name_misplaced(self) -> None:
        for name, named, e in self.misplaced:
            there = self.open_at.get(named - 1, frozenset())
            if e.session is not None and e.session not in there:
                self.problem(
                    "foreign_session",
                    name,
                    f"holds entry {e.seq} of session {e.session} in place of entry {named}, "
                    f"where {', '.join(sorted(there)) or 'no session'} was open",
                    next(iter(there), None),
                )
            else:
                self.problem("misplaced_entry", name, f"holds entry {e.seq}, not {named}")

    def _link(self, prev: Entry | None, e: Entry, where: str) -> None:
        expected_seq = prev.seq + 1 if prev else self.first_seq
        if prev is None and e.seq == expected_seq > 1:
            return  # the first entry read of a part of the chain: what it follows is unread
        if e.seq > expected_seq:
            self.problem(
                "sequence_gap",
                where,
                f"entries {expected_seq}..{e.seq - 1} are missing",
                e.session,
            )
            return  # the predecessor is gone, so its hash cannot be checked
        expected_prev = prev.hash if prev else GENESIS
        if e.payload["prev"] != expected_prev:
            self.problem(
                "chain_break", where, "does not name the hash of the entry before it", e.session
            )
        if prev and e.kind != "boot" and e.payload["at"]["mono"] < prev.payload["at"]["mono"]:
            self.problem("time_order", where, "monotonic time went backwards", e.session)
        if prev and e.kind == "boot" and e.payload["at"]["wall"] < prev.payload["at"]["wall"]:
            # Not tampering (the chain links): a clock reset. Times after it are suspect.
            back = prev.payload["at"]["wall"] - e.payload["at"]["wall"]
            self.r.notices.append(
                Problem("clock_backwards", where, f"the wall clock went back {back:.0f} s at boot")
            )

    def _apply(self, e: Entry, where: str) -> None:
        sid, body = e.session, e.body
        if self.only is not None and sid is not None and sid != self.only:
            return  # another session's, in this session's part of the chain
        if e.kind == "session_open" and sid is not None:
            try:
                opened = SessionOpen.from_body(body)
            except ManifestError as err:
                self.problem("malformed_entry", where, str(err), sid)
                return
            s = self.sessions.setdefault(sid, SessionReport(id=sid))
            s.category, s.badges = opened.category, list(opened.badges)
            s.room, s.case = opened.room, opened.case.case if opened.case else None
            s.first_track = opened.first_track
            s.opened = float(e.payload["at"]["wall"])
            self.open.add(sid)
            self.r.sessions.append(s)
            return
        kinds = ("segment", "marker", "session_close", "interruption", "interruption_end")
        if e.kind not in (*kinds, "explanation"):
            return
        if e.kind == "explanation" and sid in self.sessions:
            return  # a written statement may come after the session closed
        if sid is None or sid not in self.open:
            self.problem(
                "foreign_session", where, f"{e.kind} for session {sid!r}, which is not open", sid
            )
            return
        s = self.sessions[sid]
        if e.kind in ("interruption", "interruption_end", "explanation"):
            for key in tuple((sid, t) for t in interrupted_tracks(e)) or (sid,):
                self.breaks[key] = self.breaks.get(key, 0) + 1
            return  # collected by gaps() once the whole chain is read
        if e.kind == "marker":
            s.markers.append({"type": body.get("type"), "wall": e.payload["at"]["wall"]})
        elif e.kind == "session_close":
            s.closed = float(e.payload["at"]["wall"])
            self.open.discard(sid)
        else:
            self._segment(s, e, where)

    def _segment(self, s: SessionReport, e: Entry, where: str) -> None:
        m = self.manifest(e, where)
        if m is None:
            return
        track, index = m.track_name, m.index
        last_index, last_facts, breaks_then = self.last_segment.get((s.id, track), (-1, None, 0))
        if index != last_index + 1:
            on = "" if track == MAIN_TRACK else f" of track {track}"
            self.problem(
                "segment_gap", where, f"segment {index}{on} follows segment {last_index}", s.id
            )
        duration = m.duration
        s.segments += 1
        t = s.tracks.setdefault(track, {"segments": 0, "duration": 0.0})
        t["segments"] += 1
        t["duration"] += duration
        s.duration = max(float(x["duration"]) for x in s.tracks.values())
        if m.prebuffer and track == s.first_track:
            s.prebuffer += max(0.0, min(duration, m.prebuffer_seconds))
        facts = self.files.check(s, m, where)
        breaks = self.breaks.get(s.id, 0) + self.breaks.get((s.id, track), 0)
        if breaks != breaks_then:
            last_facts = None
        fps = float(m.video.fps)
        if facts and facts.video_start is not None and facts.video_end is not None:
            # On the recorder's timeline: files whose timestamps start at zero are placed
            # by their sealed first frame.
            shift = m.video.first_frame / fps if m.video.timestamps == "segment" else 0.0
            facts = replace(
                facts, video_start=facts.video_start + shift, video_end=facts.video_end + shift
            )
        if (
            facts
            and last_facts
            and index == last_index + 1
            and (
                facts.video_start is not None
                and last_facts.video_end is not None
                and abs(facts.video_start - last_facts.video_end) > 0.5 / fps
            )
        ):
            self.problem(
                "timestamp_discontinuity",
                where,
                f"media starts at {facts.video_start:.3f}s, previous ended at "
                f"{last_facts.video_end:.3f}s",
                s.id,
            )
        self.last_segment[(s.id, track)] = (index, facts, breaks)

    def _sealed_media_hashes(self, good: list[tuple[str, Entry]]) -> None:
        sealed = {}
        for name, e in good:
            m = self.manifest(e, f"entry {e.seq} ({name})") if e.kind == "segment" else None
            if m:
                sealed[m.sha256] = m.file
        self.files.name_mismatched(sealed)


def sealed_to(entries: Sequence[tuple[str, Entry | SealError]]) -> list[str]:
    """The agency key ids the chain's segments say they are encrypted to, in order."""
    keys: dict[str, None] = {}
    for _, e in entries:
        if isinstance(e, Entry) and e.kind == "segment":
            enc = e.body.get("encryption")
            if isinstance(enc, dict) and enc.get("scheme") != "none" and enc.get("key"):
                keys.setdefault(str(enc["key"]))
    return list(keys)


def wrong_evidence_key(
    entries: Sequence[tuple[str, Entry | SealError]], evidence_key_id: str
) -> str | None:
    """Why the evidence key given is of no use here (None: segments are sealed to it, or
    none is encrypted): said once, rather than every segment named undecodable."""
    keys = sealed_to(entries)
    if not keys or evidence_key_id in keys:
        return None
    named = f"key {keys[0]}" if len(keys) == 1 else f"keys {', '.join(keys)}"
    return f"key {evidence_key_id} is not the key these segments were sealed to: they name {named}"


def _seq_from_name(name: str) -> int | None:
    stem = name.rsplit("/", 1)[-1].removesuffix(".json")
    return int(stem) if stem.isdigit() else None


def _majority(values: Sequence[Any]) -> Any:
    if not values:
        return None
    return max(set(values), key=list(values).count)
