"""A session's close against the segments the chain holds: hand-made chains, no I/O."""

from __future__ import annotations

from typing import Any

import nacl.signing

from evidence.close_counts import session_closes
from evidence.custody import blocking, custody_summary
from evidence.manifest import UNKNOWN_LOCATION, Audio, SegmentManifest, Video
from evidence.media_check import MediaFacts
from evidence.seal import Entry, Moment, Sealer
from evidence.verify import verify_chain
from evidence.verify_report import Report

KEY = nacl.signing.SigningKey.generate()
FPS = 10


class _Chain:
    """A device chain sealed by hand: sessions, their segments per track, their closes."""

    def __init__(self) -> None:
        self.sealer = Sealer(KEY, "bwc-1", None)
        self.entries = [self.sealer.seal("boot", {}, self._at())]
        self.media: dict[str, MediaFacts | None] = {}
        self.index: dict[tuple[str, str], int] = {}

    def _at(self) -> Moment:
        n = len(getattr(self, "entries", []))
        return Moment(1_700_000_000 + n, float(n), True)

    def open(self, session: str) -> None:
        body = {"category": "penalty", "tracks": ["main", "wide"]}
        self.entries.append(self.sealer.seal("session_open", body, self._at(), session))

    def segment(self, session: str, track: str = "main") -> None:
        i = self.index.get((session, track), 0)
        self.index[(session, track)] = i + 1
        file = f"segments/{session}/{i:06d}-{track}.mp4"
        sha = f"{len(self.media):064x}"
        self.media[file] = MediaFacts(1000, sha, 20, 2.0 * i, 2.0 * (i + 1), 32000)
        m = SegmentManifest(
            index=i,
            file=file,
            sha256=sha,
            size=1000,
            start=Moment(0, 2.0 * i, True),
            end=Moment(0, 2.0 * (i + 1), True),
            video=Video("h264", 640, 360, FPS, 1, 1_000_000, 20, 20 * i),
            audio=Audio("aac", 16000, 1, 32000),
            prebuffer_seconds=0,
            location=UNKNOWN_LOCATION,
            badges=[],
            track=track,
        )
        self.entries.append(self.sealer.seal("segment", m.to_body(), self._at(), session))

    def close(self, session: str, body: dict[str, Any]) -> Entry:
        entry = self.sealer.seal("session_close", body, self._at(), session)
        self.entries.append(entry)
        return entry

    def verify(self) -> Report:
        named = [(f"chain/{e.seq:010d}.json", e) for e in self.entries]
        return verify_chain(named, KEY.verify_key, self.media)


def _recorded(session: str = "s1", main: int = 3, wide: int = 0) -> _Chain:
    chain = _Chain()
    chain.open(session)
    for _ in range(main):
        chain.segment(session)
    for _ in range(wide):
        chain.segment(session, "wide")
    return chain


def test_a_close_that_counts_what_is_held_verifies_and_the_summary_says_so() -> None:
    chain = _recorded(main=3, wide=2)
    chain.close("s1", {"segments": 5, "tracks": {"main": 3, "wide": 2}})
    report = chain.verify()
    assert report.ok, report.problems
    summary = custody_summary(chain.entries, report, "s1", {}, 0.0)
    assert summary.as_dict()["close_counts"] == {
        "entry": len(chain.entries),
        "stated": {"segments": 5, "tracks": {"main": 3, "wide": 2}},
        "held": {"segments": 5, "tracks": {"main": 3, "wide": 2}},
        "agrees": True,
        "mismatch": None,
    }
    assert (
        "Counts:      the close states 5 segment(s) (main 3, wide 2), as the chain holds "
        "5 segment(s) (main 3, wide 2)"
    ) in summary.text()


def test_a_close_that_says_fewer_segments_than_sealed_is_a_problem_named() -> None:
    """The real-time recorder's old fault: the last segment sealed after the count."""
    chain = _recorded(main=4)
    close = chain.close("s1", {"segments": 3, "tracks": {"main": 3, "wide": 0}})
    report = chain.verify()
    (p,) = report.problems
    assert (p.code, p.where, p.session) == ("close_count_mismatch", f"entry {close.seq}", "s1")
    assert p.message == "states 3 segments, the chain holds 4; track main: states 3, holds 4"
    assert report.sessions[0].problems == [p]
    summary = custody_summary(chain.entries, report, "s1", {}, 0.0)
    doc = summary.as_dict()
    assert not doc["close_counts"]["agrees"] and not summary.verified
    assert doc["verification"]["problems"][0]["code"] == "close_count_mismatch"
    text = summary.text()
    assert (
        "Counts:      THE CLOSE IS WRONG: it states 3 segment(s) (main 3, wide 0), but the "
        "chain holds 4 segment(s) (main 4)"
    ) in text
    assert "PROBLEM close_count_mismatch: entry 7: states 3 segments" in text


def test_a_wrong_count_per_track_is_named_though_the_total_agrees() -> None:
    chain = _recorded(main=2, wide=1)
    chain.close("s1", {"segments": 3, "tracks": {"main": 3, "wide": 0}})
    (p,) = chain.verify().problems
    assert p.message == "track main: states 3, holds 2; track wide: states 0, holds 1"


def test_a_close_that_states_no_tracks_is_checked_by_its_total() -> None:
    """Closes sealed before devices counted per track state the total only."""
    chain = _recorded(main=2)
    chain.close("s1", {"segments": 2})
    assert chain.verify().ok
    chain = _recorded(main=2)
    chain.close("s1", {"segments": 1})
    assert [p.message for p in chain.verify().problems] == ["states 1 segments, the chain holds 2"]


def test_a_close_that_states_no_count_is_a_malformed_entry() -> None:
    chain = _recorded(main=1)
    chain.close("s1", {"tracks": {"main": 1}})
    (p,) = chain.verify().problems
    assert (p.code, p.message) == ("malformed_entry", "session_close: 'segments' is missing")
    (close,) = session_closes(chain.entries)
    assert close.as_dict()["mismatch"] == "session_close: 'segments' is missing"


def test_each_close_counts_its_own_session_and_only_its_problem_stops_its_export() -> None:
    chain = _recorded("s1", main=2)
    chain.close("s1", {"segments": 2, "tracks": {"main": 2}})
    chain.open("s2")
    chain.segment("s2")
    chain.segment("s1")  # after its close: another session's, not s2's
    chain.close("s2", {"segments": 2, "tracks": {"main": 2}})
    report = chain.verify()
    assert {p.code for p in report.problems} == {"foreign_session", "close_count_mismatch"}
    (wrong,) = [p for p in report.problems if p.code == "close_count_mismatch"]
    assert wrong.session == "s2"
    assert wrong.message == "states 2 segments, the chain holds 1; track main: states 2, holds 1"
    assert [c.held_total for c in session_closes(chain.entries)] == [2, 1]
    assert "close_count_mismatch" not in {p.code for p in blocking(report, "s1")}
    assert "close_count_mismatch" in {p.code for p in blocking(report, "s2")}
