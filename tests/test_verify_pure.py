"""Chain verification as a pure function: each problem gets its own name."""

from __future__ import annotations

from dataclasses import replace

import nacl.signing

from evidence.manifest import UNKNOWN_LOCATION, Audio, Encryption, SegmentManifest, Video
from evidence.media_check import MediaFacts
from evidence.seal import Entry, Moment, Sealer
from evidence.verify import sealed_to, verify_chain, wrong_evidence_key

FPS = 10


def _chain(
    key: nacl.signing.SigningKey, segments: int = 3, reseal: int | None = None
) -> tuple[list[Entry], dict]:
    """A session of ``segments`` segments; ``reseal``: that segment's manifest names the
    first segment's file (a second manifest for a file sealed already)."""
    s = Sealer(key, "bwc-1", None)
    t = [0.0]

    def at() -> Moment:
        t[0] += 1
        return Moment(1_700_000_000 + t[0], t[0], True)

    entries = [s.seal("boot", {}, at())]
    entries.append(s.seal("session_open", {"category": "penalty"}, at(), "s1"))
    media: dict[str, MediaFacts | None] = {}
    for i in range(segments):
        file = f"segments/s1/{0 if i == reseal else i:06d}.mp4"
        sha = f"{i:064x}"
        media.setdefault(file, MediaFacts(1000 + i, sha, 20, 2.0 * i, 2.0 * (i + 1), 32000))
        manifest = SegmentManifest(
            index=i,
            file=file,
            sha256=sha,
            size=1000 + i,
            start=Moment(0, 2.0 * i, True),
            end=Moment(0, 2.0 * (i + 1), True),
            video=Video("h264", 640, 360, FPS, 1, 1_000_000, 20, 20 * i),
            audio=Audio("aac", 16000, 1, 32000),
            prebuffer_seconds=0,
            location=UNKNOWN_LOCATION,
            badges=[],
        )
        entries.append(s.seal("segment", manifest.to_body(), at(), "s1"))
    entries.append(s.seal("marker", {"type": "rights_notified"}, at(), "s1"))
    entries.append(s.seal("session_close", {"segments": segments}, at(), "s1"))
    return entries, media


def _named(entries: list[Entry]) -> list[tuple[str, Entry]]:
    return [(f"chain/{e.seq:010d}.json", e) for e in entries]


def _codes(entries: list[Entry], media: dict, key: nacl.signing.SigningKey) -> set[str]:
    return {p.code for p in verify_chain(_named(entries), key.verify_key, media).problems}


KEY = nacl.signing.SigningKey.generate()


def test_intact_chain_verifies_with_a_session_summary() -> None:
    entries, media = _chain(KEY)
    r = verify_chain(_named(entries), KEY.verify_key, media)
    assert r.ok, r.problems
    (s,) = r.sessions
    assert (s.segments, s.duration, s.state) == (3, 6.0, "closed")
    assert [m["type"] for m in s.markers] == ["rights_notified"]


def test_deleted_entry_is_a_sequence_gap() -> None:
    entries, media = _chain(KEY)
    del entries[3]
    assert {"sequence_gap", "segment_gap"} <= _codes(entries, media, KEY)


def test_an_entry_moved_to_another_place_fails_its_signature() -> None:
    entries, media = _chain(KEY)
    a, b = entries[2], entries[3]
    # b re-numbered into a's place: the signature covers the sequence number
    entries[2] = Entry({**b.payload, "seq": a.seq}, b.signature)
    assert "bad_signature" in _codes(entries, media, KEY)


def test_wrong_key_is_named_once() -> None:
    entries, media = _chain(KEY)
    r = verify_chain(_named(entries), nacl.signing.SigningKey.generate().verify_key, media)
    assert [p.code for p in r.problems] == ["wrong_key"]


def test_media_problems() -> None:
    entries, media = _chain(KEY)
    f0, f1, f2 = sorted(media)
    media[f0], media[f1] = media[f1], media[f0]  # swapped
    media[f2] = None  # deleted
    codes = _codes(entries, media, KEY)
    assert {"swapped_segment", "missing_segment"} <= codes
    entries, media = _chain(KEY)
    m = media[f1]
    assert m
    media[f1] = MediaFacts(m.size - 10, "f" * 64)
    media[f2] = MediaFacts(m.size + 10, "e" * 64)
    assert {"truncated_segment", "hash_mismatch"} <= _codes(entries, media, KEY)


def test_decoded_media_must_match_the_manifest() -> None:
    entries, media = _chain(KEY)
    f0, f1, f2 = sorted(media)
    m0, m1, m2 = media[f0], media[f1], media[f2]
    assert m0 and m1 and m2
    media[f0] = MediaFacts(m0.size, m0.sha256, decode_error="invalid data")
    media[f1] = MediaFacts(m1.size, m1.sha256, 19, 2.0, 3.9, 0)
    media[f2] = MediaFacts(m2.size, m2.sha256, 20, 4.5, 6.5, 32000)
    codes = _codes(entries, media, KEY)
    assert {"undecodable", "frame_count", "no_audio", "timestamp_discontinuity"} <= codes


def test_segment_outside_an_open_session_is_foreign() -> None:
    s = Sealer(KEY, "bwc-1", None)
    at = Moment(1.0, 1.0, True)
    entries = [s.seal("marker", {"type": "rights_notified"}, at, "ghost")]
    assert _codes(entries, {}, KEY) == {"foreign_session"}


def test_unexpected_files_and_malformed_entries_are_named() -> None:
    from evidence.seal import SealError

    entries, media = _chain(KEY)
    named: list[tuple[str, Entry | SealError]] = list(_named(entries))
    named.append(("chain/notes.txt", SealError("not a chain entry")))
    r = verify_chain(named, KEY.verify_key, media, unexpected_files=["segments/x.mp4"])
    assert {p.code for p in r.problems} == {"malformed_entry", "unexpected_file"}


def test_a_voice_clip_after_a_written_statement_does_not_replace_it() -> None:
    """A device that died (statement written by two officers) and later came back and
    prompted for a voice explanation: the gap stays explained in writing."""
    from evidence.gaps import session_gaps
    from evidence.seal import Moment, Sealer

    sealer = Sealer(nacl.signing.SigningKey.generate(), "bwc-1", None)
    at = Moment(1.7e9, 1.0, True)
    statement = {
        "reason": "battery died",
        "attestations": [{"badge": "340102"}, {"badge": "340177"}],
    }
    gap = {"id": "g1", "cause": "battery", "affects": ["video"], "start": at.as_dict()}
    entries = [
        sealer.seal("interruption", {**gap, "end": None, "detail": ""}, at, "s"),
        sealer.seal(
            "explanation",
            {"interruption": "g1", "kind": "written", "statement": statement},
            at,
            "s",
        ),
        sealer.seal("explanation", {"interruption": "g1", "kind": "voice", "clip": {}}, at, "s"),
    ]
    (g,), problems = session_gaps(entries)
    assert g.explanation == "written" and not problems.bad_statements


def test_a_wrong_evidence_key_is_named_once_with_the_key_sealed_to() -> None:
    s = Sealer(KEY, "bwc-1", None)
    moment = Moment(1_700_000_000, 1.0, True)
    entries, _ = _chain(KEY, segments=1)
    plain = SegmentManifest.from_body(entries[2].body)
    assert wrong_evidence_key(_named(entries), "aaaa") is None  # nothing encrypted

    def sealed(index: int, key: str, scheme: str = "x") -> Entry:
        m = replace(plain, index=index, encryption=Encryption(scheme, key))
        return s.seal("segment", m.to_body(), moment, "s1")

    chain = _named([sealed(0, "k1"), sealed(1, "k1"), sealed(2, "k2"), sealed(3, "", "none")])
    assert sealed_to(chain) == ["k1", "k2"]
    assert wrong_evidence_key(chain, "k2") is None
    assert wrong_evidence_key(chain[:2], "k9") == (
        "key k9 is not the key these segments were sealed to: they name key k1"
    )
    assert wrong_evidence_key(chain, "k9") == (
        "key k9 is not the key these segments were sealed to: they name keys k1, k2"
    )


def test_a_second_manifest_for_a_file_sealed_already_is_named() -> None:
    entries, media = _chain(KEY, segments=3, reseal=2)
    report = verify_chain(_named(entries), KEY.verify_key, media)
    [again] = [p for p in report.problems if p.code == "resealed_file"]
    assert again.where == "segments/s1/000000.mp4" and again.session == "s1"
    assert again.message == (
        "sealed by entry 3 (chain/0000000003.json) and again by entry 5 (chain/0000000005.json)"
    )
    assert "resealed_file" not in _codes(*_chain(KEY, segments=3), KEY)


def test_one_sessions_part_of_a_chain_is_checked_from_the_entry_before_it() -> None:
    """A session's entries with the entry before its first: intact as the whole chain is;
    without that entry, or with its link broken, named; another session's entries inside
    the part are checked for their seal and link only."""
    key = nacl.signing.SigningKey.generate()
    entries, media = _chain(key)  # boot, then session s1 (seq 2..)
    part = entries[:]  # the boot entry is the one before the session
    report = verify_chain(_named(part), key.verify_key, media, first_seq=1, session="s1")
    assert report.ok and [s.id for s in report.sessions] == ["s1"]
    after_boot = entries[1:]
    report = verify_chain(_named(after_boot), key.verify_key, media, first_seq=1, session="s1")
    assert [p.code for p in report.problems] == ["sequence_gap"]
    # read from the boot entry on: its own predecessor is not asked for
    s = Sealer(key, "bwc-1", None)
    longer = [s.seal("boot", {}, Moment(1_699_999_000.0 + i, 0, True)) for i in range(3)]
    s2 = Sealer(key, "bwc-1", longer[-1])
    other = s2.seal("marker", {"type": "x"}, Moment(1_700_000_000.0, 0.5, True), "elsewhere")
    chain = [*longer, other]
    s3 = Sealer(key, "bwc-1", other)
    chain.append(
        s3.seal("session_open", {"category": "penalty"}, Moment(1_700_000_001, 1, True), "s2")
    )
    chain.append(
        Sealer(key, "bwc-1", chain[-1]).seal(
            "session_close", {"segments": 0}, Moment(1_700_000_002, 2, True), "s2"
        )
    )
    view = _named(chain[2:])  # from the entry before the one before s2's open
    report = verify_chain(view, key.verify_key, {}, first_seq=3, session="s2")
    assert report.ok, report.problems  # "elsewhere" is not open here: not s2's to judge
    assert [s.id for s in report.sessions] == ["s2"]
    whole = verify_chain(_named(chain), key.verify_key, {})
    assert "foreign_session" in {p.code for p in whole.problems}
