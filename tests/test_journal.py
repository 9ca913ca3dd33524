"""The device journal (``journal.db``, real SQLite): what it hands the recorder and the
uploader is read through each entry kind's owner, as types, and a body that does not read
is named (the entry, its kind, the field), never a KeyError or TypeError."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest

from agent.chain import ChainWriter
from agent.journal.chain_index import Journal
from agent.journal.sync_ledger import SyncLedger
from device.clock import SimClock
from evidence.body_fields import ManifestError
from evidence.entries import Assignment, Boot, Config, Event
from evidence.seal import Entry, Moment, Sealer
from evidence.session_bodies import CaseCommand, Interruption, SessionClose, SessionOpen
from tests.fixtures.store import segment_manifest

KEY = nacl.signing.SigningKey.generate()
DEV = "bwc-1"
AT = Moment(1_773_451_800.0, 1.0, True)
H1, H2, H3 = (hashlib.sha256(bytes([i])).hexdigest() for i in (1, 2, 3))


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[ChainWriter]:
    journal = Journal(tmp_path)
    try:
        yield ChainWriter(journal, KEY, DEV, SimClock())
    finally:
        journal.close()


@pytest.fixture
def ledger(tmp_path: Path, chain: ChainWriter) -> Iterator[SyncLedger]:
    ledger = SyncLedger(tmp_path)
    try:
        yield ledger
    finally:
        ledger.close()


def _segments(chain: ChainWriter, *shas: str) -> list[Entry]:
    chain.seal_body(Boot(software="test"))
    return [
        chain.seal_body(segment_manifest(i, f"segments/s1/{i:06d}.mp4", sha, 100 + i, 10.0), "s1")
        for i, sha in enumerate(shas)
    ]


def _malformed(chain: ChainWriter, kind: str, body: dict[str, object], session: str) -> Entry:
    """An entry on the chain whose body is not what its kind says (a chain file altered
    on the disk, imported again): sealed by the device's key, so only its body is wrong."""
    entry = Sealer(KEY, DEV, chain.journal.last()).seal(kind, body, AT, session)
    chain.journal.append(entry)
    return entry


def test_the_uploader_gets_each_unreceipted_segment_as_its_manifest(
    chain: ChainWriter, ledger: SyncLedger
) -> None:
    sealed = _segments(chain, H1, H2, H3)
    manifests = [
        segment_manifest(i, f"segments/s1/{i:06d}.mp4", h, 100 + i, 10.0)
        for i, h in enumerate((H1, H2, H3))
    ]
    assert ledger.unreceipted_segments() == [
        (e.seq, m) for e, m in zip(sealed, manifests, strict=True)
    ]
    assert ledger.sealed(sealed[1].seq) == (sealed[1].hash, manifests[1])
    assert ledger.sealed(1) is None  # the boot: not a segment
    ledger.receipt(H2, sealed[1].seq, b"{}", now=50.0)
    assert [seq for seq, _ in ledger.unreceipted_segments()] == [sealed[0].seq, sealed[2].seq]
    assert ledger.unreceipted_count() == 2
    assert ledger.unreceipted_segments(limit=1) == [(sealed[0].seq, manifests[0])]
    ledger.ack(sealed[2].seq)
    assert ledger.unreceipted_segments(acked=True) == [(sealed[2].seq, manifests[2])]
    assert ledger.receipted_before(50.0) == [(H2, manifests[1])]
    assert ledger.receipted_before(49.0) == []
    assert ledger.receipt_lags() == [pytest.approx(50.0 - sealed[1].payload["at"]["wall"])]
    assert ledger.sealed_counts() == (3, 4)
    assert [e.seq for e in ledger.newest(2)] == [4, 3]


def test_the_same_bytes_sealed_twice_are_receipted_for_both(
    chain: ChainWriter, ledger: SyncLedger
) -> None:
    """The store keeps media by its hash: one receipt stands for every entry sealing it."""
    first, again = _segments(chain, H1, H1)
    assert [seq for seq, _ in ledger.unreceipted_segments()] == [first.seq, again.seq]
    ledger.receipt(H1, first.seq, b"{}", now=50.0)
    assert ledger.unreceipted_segments() == [] and ledger.unreceipted_count() == 0


def test_a_refused_manifest_stays_in_the_backlog_and_is_sent_again_later(
    chain: ChainWriter, ledger: SyncLedger
) -> None:
    """A refusal is never the end of footage: the segment still counts against the 24-hour
    deadline, and its entry is sent again once the refusal is old."""
    first, second = _segments(chain, H1, H2)
    ledger.refused(first.seq, "no", now=1000.0)
    assert [seq for seq, _ in ledger.unreceipted_segments()] == [first.seq, second.seq]
    assert first.seq not in [e.seq for e in ledger.unacked(10)]
    assert ledger.retry_refused(before=1000.0) == 0  # not old enough yet
    assert ledger.retry_refused(before=1000.5) == 1
    assert first.seq in [e.seq for e in ledger.unacked(10)]


def test_a_segment_that_does_not_read_is_named_to_the_uploader(
    chain: ChainWriter, ledger: SyncLedger
) -> None:
    _segments(chain, H1)
    bad = _malformed(chain, "segment", {"file": "segments/s1/x.mp4", "size": "big"}, "s1")
    why = f"entry {bad.seq}: segment manifest: 'media' is missing"
    with pytest.raises(ManifestError, match=why):
        ledger.unreceipted_segments()
    with pytest.raises(ManifestError, match=why):
        ledger.unreceipted_count()
    with pytest.raises(ManifestError, match=why):
        ledger.sealed(bad.seq)
    with pytest.raises(ManifestError, match=why):
        chain.journal.segments("s1")
    # the row is kept whole, though its index column could not be read
    assert [e.seq for e in ledger.newest(1)] == [bad.seq]


def test_gaps_and_applied_commands_are_read_through_their_owners(chain: ChainWriter) -> None:
    journal = chain.journal
    case = CaseCommand("C-1", None, "n-open", 1.0, "agency")
    chain.seal_body(SessionOpen("interview", [], 0.0, ["main"], True, "101", "command", case), "s1")
    chain.seal_body(Interruption("g-1", "camera", ["video"], AT), "s1")
    chain.seal_body(Event.case_named(CaseCommand("C-2", None, "n-case", 2.0, "agency")), "s1")
    chain.seal_body(Assignment("assign", ["1"], None, None, None, "n-assign", 3.0, "agency", 9.0))
    chain.seal_body(SessionClose(0, {"main": 0}), "s1")
    assert journal.interruption("g-1") == (Interruption("g-1", "camera", ["video"], AT), "s1")
    assert journal.interruption("g-2") is None
    assert journal.open_interruption("s1") == "g-1"
    for nonce in ("n-open", "n-case", "n-assign"):
        assert journal.command_applied(nonce), nonce
    assert not journal.command_applied("n-other")


@pytest.mark.parametrize(
    ("kind", "body", "why"),
    [
        ("interruption", {"id": "g-2", "cause": "camera"}, "interruption: 'start' is missing"),
        ("assignment", {"nonce": "n-1"}, "assignment: 'command' is missing"),
        ("session_open", {"category": 7}, "session_open: 'category' is not a string"),
        ("event", {"type": "case", "case": "C-1"}, "event: a case event names no 'command'"),
        ("config", {"sha256": ["ab"]}, "config: 'sha256' is not a string"),
    ],
)
def test_a_body_the_recorder_asks_about_that_does_not_read_is_named_and_passed_over(
    chain: ChainWriter,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    body: dict[str, object],
    why: str,
) -> None:
    """A command is still checked and a boot still made: the entry is named in the log."""
    journal = chain.journal
    chain.seal_body(Interruption("g-1", "camera", ["video"], AT), "s1")
    bad = _malformed(chain, kind, body, "s1")
    with caplog.at_level(logging.ERROR, logger="agent.journal.chain_index"):
        assert journal.interruption("g-1") == (Interruption("g-1", "camera", ["video"], AT), "s1")
        assert journal.interruption("g-3") is None  # every interruption read
        assert journal.open_interruption("s1") == "g-1"
        assert not journal.command_applied("n-1")
        assert journal.last_body(Config.KIND, Config.from_body) is None
    said = [r.getMessage() for r in caplog.records]
    assert f"journal: entry {bad.seq} does not read, passed over: {why}" in said
