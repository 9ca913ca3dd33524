"""One device cannot exhaust the store (issue 14): what a device declares is bounded, its
uploads in progress have a quota and expire, and no input produces a traceback — each is
a refusal with a reason code, counted in the report. The handler is fuzzed."""

from __future__ import annotations

import errno
import hashlib
import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evidence import protocol as p
from store.db import Database
from store.ingest import Ingest
from store.report import build_report, format_report
from tests.fixtures.store import (
    CHUNK,
    DATA,
    DEV,
    NOW,
    SHA,
    _after,
    _at,
    _codes,
    _entry,
    _init,
    _store,
)
from tests.test_store_forks import _segment


def test_declared_sizes_sequences_and_times_are_bounded(db: Database, tmp_path: Path) -> None:
    ingest, sealer = _store(db, tmp_path)
    init = p.up(DEV, "blob", "init")
    big = 10 * 2**30
    assert _codes(ingest.handle(init, _init(size=big, chunk=p.MAX_CHUNK), NOW)) == ["too_large"]
    assert _codes(ingest.handle(init, _init(seq=2**53), NOW)) == ["out_of_range"]
    assert _entry(ingest, _after(sealer, 2**53 - 1).seal("marker", {}, _at())) == ["out_of_range"]
    assert _entry(ingest, sealer.seal("marker", {}, _at(1e300))) == ["out_of_range"]
    assert _entry(ingest, _after(sealer, 0).seal("marker", {}, _at())) == ["ok"]
    report = build_report(db, NOW)
    (d,) = report["devices"]
    assert d["refusals"] == {"out_of_range": 3, "too_large": 1}
    assert "refused: out_of_range 3, too_large 1" in format_report(report)


def test_each_device_has_a_quota_of_uploads_in_progress(db: Database, tmp_path: Path) -> None:
    ingest, _ = _store(db, tmp_path, uploads=3, upload_bytes=15_000)
    init = p.up(DEV, "blob", "init")
    shas = [hashlib.sha256(bytes([i])).hexdigest() for i in range(5)]
    codes = [_codes(ingest.handle(init, _init(sha), NOW))[0] for sha in shas[:4]]
    assert codes == ["missing", "missing", "missing", "quota"]
    # asking again about an upload in progress is no new upload
    assert _codes(ingest.handle(init, _init(shas[0]), NOW)) == ["missing"]
    ingest2, _ = _store(db, tmp_path / "b", uploads=100, upload_bytes=12_000)
    assert _codes(ingest2.handle(init, _init(shas[4], size=5000), NOW)) == ["quota"]  # bytes
    (d,) = build_report(db, NOW)["devices"]
    assert d["quota_hits"] == 2


def test_unfinished_uploads_expire_with_their_partial_file(db: Database, tmp_path: Path) -> None:
    ingest, _ = _store(db, tmp_path, expire_hours=48)
    chunks = [hashlib.sha256(DATA[o : o + CHUNK]).hexdigest() for o in range(0, 5000, CHUNK)]
    ingest.handle(p.up(DEV, "blob", "init"), _init(chunks=chunks), NOW)
    assert ingest.handle(p.up(DEV, "blob", SHA, "0"), DATA[:CHUNK], NOW) == []
    partial = ingest.blobs.partial(DEV, SHA)
    assert partial.exists()
    ingest.handle(p.up(DEV, "status"), p.dumps({"device": DEV}), NOW + 47 * 3600)
    assert partial.exists()
    ingest.handle(p.up(DEV, "status"), p.dumps({"device": DEV}), NOW + 49 * 3600)
    assert not partial.exists()
    late = ingest.handle(
        p.up(DEV, "blob", SHA, str(CHUNK)), DATA[CHUNK : 2 * CHUNK], NOW + 50 * 3600
    )
    assert _codes(late) == ["unknown_blob"]
    (d,) = build_report(db, NOW)["devices"]
    assert d["refusals"]["expired"] == 1


def test_inputs_that_gave_tracebacks_are_refusals(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ingest, sealer = _store(db, tmp_path)
    caplog.set_level(logging.WARNING)
    init = p.up(DEV, "blob", "init")
    assert _codes(ingest.handle(init, _init(chunks=5), NOW)) == ["malformed"]
    # a manifest declaring size "x": refused as it is parsed, naming the field
    body = _segment(_after(sealer, 0), DATA, 1).body | {"size": "x"}  # as if sealed first
    entry = sealer.seal("segment", body, _at(), "s1").to_json()
    ((topic, reply),) = ingest.handle(p.up(DEV, "entry"), entry, NOW)
    assert topic.endswith("/rejected")
    assert "'size' is not an integer" in p.parse_json(reply, "rejected")["reason"]
    chunks = [hashlib.sha256(DATA[o : o + CHUNK]).hexdigest() for o in range(0, 5000, CHUNK)]
    ingest.handle(init, _init(chunks=chunks), NOW)
    for off in range(0, 5000, CHUNK):
        ingest.handle(p.up(DEV, "blob", SHA, str(off)), DATA[off : off + CHUNK], NOW)
    finish = ingest.handle(p.up(DEV, "blob", "finish"), p.dumps({"sha256": SHA}), NOW)
    assert _codes(finish) == ["missing"]  # no manifest kept names it: nothing receipted
    assert not ingest.blobs.has(SHA)
    assert not [r for r in caplog.records if r.exc_info]


def test_a_full_disk_tells_the_device_to_back_off(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ingest, _ = _store(db, tmp_path)
    chunks = [hashlib.sha256(DATA[o : o + CHUNK]).hexdigest() for o in range(0, 5000, CHUNK)]
    ingest.handle(p.up(DEV, "blob", "init"), _init(chunks=chunks), NOW)

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ingest.blobs, "write_chunk", full)
    replies = ingest.handle(p.up(DEV, "blob", SHA, "0"), DATA[:CHUNK], NOW)
    assert _codes(replies) == ["store_full"]
    assert p.BACK_OFF["store_full"] > 0
    assert not [r for r in caplog.records if r.exc_info]


# -- fuzzing the handler ---------------------------------------------------------------

_suffixes = st.sampled_from(
    ["entry", "blob/init", "blob/finish", f"blob/{SHA}/0", f"blob/{SHA}/x", "status", "x/y"]
)
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
    max_leaves=12,
)
_docs = st.fixed_dictionaries(
    {},
    optional={
        "sha256": st.just(SHA) | st.text(max_size=70),
        "size": _values | st.integers(),
        "chunk_size": st.integers() | _values,
        "seq": st.integers() | _values,
        "chunks": st.lists(st.just(SHA), max_size=8) | _values,
        "device": st.just(DEV) | _values,
        "payload": _values,
        "signature": _values,
    },
).map(p.dumps)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    topic=st.one_of(_suffixes.map(lambda s: p.up(DEV, *s.split("/"))), st.text(max_size=60)),
    payload=st.one_of(_docs, st.binary(max_size=300)),
)
def test_fuzz_the_store_handler(tmp_path: Path, topic: str, payload: bytes) -> None:
    ingest = _fuzz_store(tmp_path)
    replies = ingest.handle(topic, payload, NOW)
    for reply_topic, body in replies:
        assert reply_topic.startswith(f"{p.PREFIX}/r/")
        if reply_topic.endswith("/rejected"):
            # every refusal is anticipated: none is the store failing on its own input
            assert p.parse_json(body, "rejected")["code"] in p.REFUSALS
            assert p.parse_json(body, "rejected")["code"] != "store_error", body


_fuzz_stores: dict[Path, Ingest] = {}


def _fuzz_store(tmp_path: Path) -> Ingest:
    if tmp_path not in _fuzz_stores:
        db = Database.connect(str(tmp_path / "fuzz.db"))
        _fuzz_stores[tmp_path], _ = _store(db, tmp_path)
    return _fuzz_stores[tmp_path]
