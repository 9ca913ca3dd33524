"""The agency keeps exactly what it received (issue 24): blobs are write-once, a file is
sealed once, and one device's input is one failure domain.

The attacks reproduced: a second manifest naming a file already sealed (with other bytes,
or the same blob), which an export used to copy through a hard link into the first blob;
an entry with a field of the wrong JSON type in a batch with another device's segment,
which used to refuse every segment of the batch and leave its blobs on disk with no row.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import queue
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from agent.keys import load_or_create_key
from agent.provisioned import broker_settings
from agent.uplink import Uplink
from common.archive.device_directory import load_chain
from common.archive.export import export_session
from evidence import protocol as p
from evidence.manifest import SegmentManifest
from evidence.seal import Entry, Moment, Sealer, canonical
from simulator.device import stand_in_agency_key
from simulator.history import into_store, with_history
from simulator.site import LocalSite
from store.archive import StoreArchive
from store.blobs import FileBlobs
from store.db import Database
from store.evidence_view import lay_out
from store.ingest import Ingest
from store.judge import RESEALED
from store.uploads import SWEEP_GRACE
from tests.fixtures.session import synced_session
from tests.fixtures.store import DEV, NOW, Directory, _codes, ack_of, segment_manifest
from unbroken.cli import main

OTHER = "bwc-0099"
FIRST = b"\x11" * 6000
JUNK = b"\x99" * 5000
FILE = "segments/s1/000001.mp4"


def _manifest(sealer: Sealer, data: bytes, index: int, file: str) -> Entry:
    m = segment_manifest(index, file, hashlib.sha256(data).hexdigest(), len(data), NOW)
    return sealer.seal("segment", m.to_body(), Moment(NOW, float(index), True), "s1")


def _whole(dev: str, e: Entry | bytes, data: bytes) -> tuple[str, bytes, dict[str, str]]:
    entry = e.to_json() if isinstance(e, Entry) else e
    payload, properties = p.whole_segment(entry, data)
    return p.up(dev, "segment"), payload, properties


def _store(db: Database, tmp_path: Path) -> tuple[Ingest, dict[str, Sealer], Directory]:
    directory, sealers = Directory(), {}
    for dev in (DEV, OTHER):
        key = nacl.signing.SigningKey.generate()
        directory.add(dev, key.verify_key)
        sealers[dev] = Sealer(key, dev, None)
    receipt_key = nacl.signing.SigningKey.generate()
    ingest = Ingest(db, FileBlobs(tmp_path / "blobs"), directory, receipt_key, "store-t")
    return ingest, sealers, directory


def _stored(tmp_path: Path) -> dict[str, bytes]:
    """Every blob on disk by name; each is read-only and its SHA-256 is its name."""
    found = {}
    for f in sorted((tmp_path / "blobs").glob("??/*.mp4")):
        data = f.read_bytes()
        assert hashlib.sha256(data).hexdigest() == f.stem, f"{f} holds other bytes"
        assert stat.S_IMODE(f.stat().st_mode) == 0o444
        found[f.stem] = data
    return found


def _problems(db: Database, device: str) -> list[tuple[int, str]]:
    rows = db.query("select seq, code from chain_problems where device = ? order by seq", (device,))
    return [(int(r["seq"]), str(r["code"])) for r in rows]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- a file is sealed once ---------------------------------------------------------------


def test_a_second_manifest_naming_a_sealed_file_is_refused(db: Database, tmp_path: Path) -> None:
    ingest, sealers, directory = _store(db, tmp_path)
    sealer = sealers[DEV]
    first = _manifest(sealer, FIRST, 1, FILE)
    assert _codes(ingest.handle_many([_whole(DEV, first, FIRST)], NOW)) == ["receipt"]
    # the key holder seals other bytes under the same name
    second = _manifest(sealer, JUNK, 2, FILE)
    ((topic, reply),) = ingest.handle_many([_whole(DEV, second, JUNK)], NOW)
    ack = ack_of(reply)
    assert topic.endswith("/ack") and not ack.ok and ack.code == "refused_entry"
    assert f"file {FILE!r} is sealed already, by entry 1" in ack.reason
    # ... and the same blob under the same name, as an entry and then its chunks
    third = _manifest(sealer, FIRST, 3, FILE)
    ((_, reply),) = ingest.handle(p.up(DEV, "entry"), third.to_json(), NOW)
    assert ack_of(reply).code == "refused_entry"
    assert _problems(db, DEV) == [(2, RESEALED), (3, RESEALED)]
    kept = db.query("select seq from entries where device = ? order by seq", (DEV,))
    assert [r["seq"] for r in kept] == [1]
    rejected = db.query("select reason from rejections where device = ?", (DEV,))
    assert all("sealed already" in r["reason"] for r in rejected) and len(rejected) == 2
    assert _stored(tmp_path) == {_sha(FIRST): FIRST}  # the junk never stored
    # the store's view of the device, linked and copied: the first segment as it came
    for link in (True, False):
        view = tmp_path / f"view-{link}"
        archive = StoreArchive(db, ingest.blobs, DEV, directory.device_keys(DEV), None)
        lay_out(archive, view, link=link)
        assert (view / FILE).read_bytes() == FIRST
        assert _stored(tmp_path) == {_sha(FIRST): FIRST}


def test_a_file_sealed_twice_in_one_batch_is_refused_the_second_time(
    db: Database, tmp_path: Path
) -> None:
    ingest, sealers, _ = _store(db, tmp_path)
    first, second = (_manifest(sealers[DEV], d, i, FILE) for i, d in ((1, FIRST), (2, JUNK)))
    replies = ingest.handle_many([_whole(DEV, first, FIRST), _whole(DEV, second, JUNK)], NOW)
    assert _codes(replies) == ["refused_entry", "receipt"]  # refused as judged, then the batch
    assert _problems(db, DEV) == [(2, RESEALED)]
    assert _stored(tmp_path) == {_sha(FIRST): FIRST}


def test_a_view_never_writes_through_a_link_into_a_blob(db: Database, tmp_path: Path) -> None:
    """A store that took two manifests naming one file before it refused them: laying its
    evidence out (linked or copied) leaves every blob as it was, and the first name kept."""
    ingest, sealers, directory = _store(db, tmp_path)
    sealer = sealers[DEV]
    assert _codes(
        ingest.handle_many([_whole(DEV, _manifest(sealer, FIRST, 1, FILE), FIRST)], NOW)
    ) == ["receipt"]
    # kept past the judge, as an older store did: other bytes, then the same blob
    for seq, data in ((2, JUNK), (3, FIRST)):
        e = _manifest(sealer, data, seq, FILE)
        (placed,) = ingest.blobs.put_many([(_sha(data), data)])
        with db.transaction():
            ingest.chain.record(DEV, e, NOW, (NOW, None))
            ingest.uploads.receipted(DEV, seq, placed.sha256, len(data), e.hash, "s1", NOW)
    before = _stored(tmp_path)
    assert before == {_sha(FIRST): FIRST, _sha(JUNK): JUNK}
    for link in (True, False):
        view = tmp_path / f"view-{link}"
        archive = StoreArchive(db, ingest.blobs, DEV, directory.device_keys(DEV), None)
        lay_out(archive, view, link=link)
        assert (view / FILE).read_bytes() == FIRST
        assert _stored(tmp_path) == before


def test_an_export_of_a_session_with_a_repeated_file_leaves_every_blob_as_it_was(
    db: Database, tmp_path: Path, recorded: Path
) -> None:
    """A recorded session in a store that also kept, past the judge as an older store did,
    a later manifest of the session naming its first file with other bytes: exporting the
    session (its problems accepted) reads the blobs and writes only the export."""
    key = nacl.signing.SigningKey.generate()
    entries = with_history(recorded, tmp_path / "dev", 0, key)
    device = str(entries[0].payload["device"])
    directory = Directory()
    directory.add(device, key.verify_key)
    ingest = Ingest(db, FileBlobs(tmp_path / "blobs"), directory, key, "store-t")
    into_store(ingest, entries, tmp_path / "dev", NOW)
    first = next(e for e in entries if e.kind == "segment")
    again = Sealer(key, device, entries[-1]).seal(
        "segment",
        {**first.body, "sha256": _sha(JUNK), "size": len(JUNK)},
        Moment(NOW, 1e6, True),
        first.session,
    )
    (placed,) = ingest.blobs.put_many([(_sha(JUNK), JUNK)])
    with db.transaction():
        ingest.chain.record(device, again, NOW, (NOW, None))
        ingest.uploads.receipted(device, again.seq, placed.sha256, len(JUNK), again.hash, "x", NOW)
    before = _stored(tmp_path)
    archive = StoreArchive(db, ingest.blobs, device, directory.device_keys(device), None)
    out = tmp_path / "out"
    agency = stand_in_agency_key(recorded)
    result = export_session(archive, first.session, out, accept_problems=True, evidence_key=agency)
    named = {(p["code"], p["where"]) for p in result.summary.doc["verification"]["problems"]}
    assert ("foreign_session", f"entry {again.seq} (chain/{again.seq:010d}.json)") in named
    assert _stored(tmp_path) == before  # every blob's SHA-256 its name, before and after
    assert sorted(f.name for f in out.iterdir()) == sorted(f.name for f in result.files)


# -- one failure domain per device ---------------------------------------------------------


def _signed(key: nacl.signing.SigningKey, payload: dict[str, Any]) -> bytes:
    signature = key.sign(canonical(payload)).signature
    return canonical({"payload": payload, "signature": base64.b64encode(signature).decode()})


POISONS = {
    "prev": lambda pl: pl | {"prev": 5},
    "session": lambda pl: pl | {"session": {"id": "s1"}},
    "device": lambda pl: pl | {"device": ["bwc-0042"]},
    "key": lambda pl: pl | {"key": 7},
    "index": lambda pl: pl | {"body": pl["body"] | {"index": "1"}},
    "file": lambda pl: pl | {"body": pl["body"] | {"file": 7}},
    "sha256": lambda pl: pl | {"body": pl["body"] | {"sha256": "x" * 64}},
}


@pytest.mark.parametrize("field", sorted(POISONS))
def test_a_poisoned_entry_leaves_another_devices_segment_receipted(
    db: Database, tmp_path: Path, field: str
) -> None:
    ingest, sealers, _ = _store(db, tmp_path)
    genuine = _manifest(sealers[DEV], JUNK, 1, FILE)
    poisoned = _signed(sealers[DEV].signing_key, POISONS[field](dict(genuine.payload)))
    other = _manifest(sealers[OTHER], FIRST, 1, FILE)
    batch = [_whole(DEV, poisoned, JUNK), _whole(OTHER, other, FIRST)]
    replies = ingest.handle_many(batch, NOW)
    assert [t.split("/")[2:] for t, _ in replies] == [[DEV, "rejected"], [OTHER, "receipt"]]
    assert p.parse_json(replies[0][1], "rejected")["code"] == "malformed"
    assert db.query("select seq from receipts where device = ?", (OTHER,)) == [{"seq": 1}]
    assert not db.query("select * from rejections where device = ?", (OTHER,))
    assert _stored(tmp_path) == {_sha(FIRST): FIRST}


def test_a_segment_that_fails_to_record_is_refused_alone_and_its_blob_removed(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest, sealers, _ = _store(db, tmp_path)
    shared = b"\x22" * 3000  # stored for OTHER before: a failed put must not remove it
    ingest.handle_many([_whole(OTHER, _manifest(sealers[OTHER], shared, 1, FILE), shared)], NOW)
    record = ingest.chain.record

    def failing(device: str, *args: Any) -> p.Ack:
        if device == DEV:
            raise RuntimeError("the database refused this row")
        return record(device, *args)

    monkeypatch.setattr(ingest.chain, "record", failing)
    batch = [
        _whole(DEV, _manifest(sealers[DEV], JUNK, 1, FILE), JUNK),
        _whole(DEV, _manifest(sealers[DEV], shared, 2, "segments/s1/000002.mp4"), shared),
        _whole(OTHER, _manifest(sealers[OTHER], FIRST, 2, "segments/s1/000002.mp4"), FIRST),
    ]
    replies = ingest.handle_many(batch, NOW)
    assert _codes(replies) == ["receipt", "store_error", "store_error"]
    assert replies[0][0] == p.reply(OTHER, "receipt")
    assert not db.query("select * from entries where device = ?", (DEV,))
    # no blob without a row: the junk removed, the blob another device holds kept
    assert _stored(tmp_path) == {_sha(shared): shared, _sha(FIRST): FIRST}
    monkeypatch.undo()
    # sent again, as the device does, it is kept
    replies = ingest.handle_many(batch[:1], NOW)
    assert _codes(replies) == ["receipt"]


def test_a_failed_commit_removes_the_blobs_the_batch_placed(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest, sealers, _ = _store(db, tmp_path)

    real = db.transaction

    @contextmanager
    def lost(durable: bool = True) -> Iterator[None]:
        with real(durable):
            yield
            raise OSError("the database's disk went away")  # rolled back, never committed

    monkeypatch.setattr(db, "transaction", lost)
    batch = [_whole(d, _manifest(sealers[d], FIRST, 1, FILE), FIRST) for d in (DEV, OTHER)]
    replies = ingest.handle_many(batch, NOW)
    monkeypatch.undo()
    assert _codes(replies) == ["store_error", "store_error"]
    assert _stored(tmp_path) == {}


# -- write-once blobs and the sweep ----------------------------------------------------------


def test_blobs_are_written_once_and_read_as_streams(tmp_path: Path) -> None:
    blobs = FileBlobs(tmp_path / "blobs")
    assert isinstance(blobs, FileBlobs)
    (placed,) = blobs.put_many([(_sha(FIRST), FIRST)])
    assert placed.new and placed.durability.startswith("fsync")
    again = blobs.put_many([(_sha(FIRST), FIRST), (_sha(JUNK), JUNK)])
    assert [b.new for b in again] == [False, True]
    with blobs.get(_sha(FIRST)) as f:
        assert f.read() == FIRST
        assert not f.writable()
    # a partial of bytes stored already keeps the one copy
    blobs.write_chunk(DEV, _sha(FIRST), 0, FIRST)
    assert blobs.put_partial(DEV, _sha(FIRST), len(FIRST)) == placed.__class__(
        _sha(FIRST), False, placed.durability
    )
    assert not blobs.partial(DEV, _sha(FIRST)).exists()
    # a partial that is not what it says is not placed
    blobs.write_chunk(DEV, _sha(b"other"), 0, JUNK)
    assert blobs.put_partial(DEV, _sha(b"other"), len(JUNK)) is None
    assert not blobs.has(_sha(b"other"))
    # nothing links onto a stored name
    with pytest.raises(FileExistsError):
        blobs.link(_sha(JUNK), tmp_path / "blobs" / _sha(FIRST)[:2] / f"{_sha(FIRST)}.mp4")
    assert _stored(tmp_path) == {_sha(FIRST): FIRST, _sha(JUNK): JUNK}
    assert not list((tmp_path / "blobs" / "landing").iterdir())


def test_the_sweep_removes_an_orphan_and_keeps_a_referenced_blob(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ingest, sealers, _ = _store(db, tmp_path)
    ingest.handle_many([_whole(DEV, _manifest(sealers[DEV], FIRST, 1, FILE), FIRST)], NOW)
    ingest.blobs.put_many([(_sha(JUNK), JUNK)])  # as a crash between placing and receipting
    stale = tmp_path / "blobs" / "landing" / f"{_sha(b'x')}.tmp"
    stale.write_bytes(b"x")  # a put that died half way
    assert ingest.uploads.sweep(time.time()) == 0  # within the grace period: kept
    assert set(_stored(tmp_path)) == {_sha(FIRST), _sha(JUNK)} and stale.exists()
    caplog.set_level(logging.DEBUG, logger="store.uploads")
    assert ingest.uploads.sweep(time.time() + 2 * SWEEP_GRACE) == 1
    assert _stored(tmp_path) == {_sha(FIRST): FIRST} and not stale.exists()
    assert "removed 1 blob(s) no receipt names" in caplog.text


# -- end to end: a real broker, a store worker, a device, then store export ------------------


def _next(link: Uplink, kind: str, topic: str | None = None) -> bytes:
    """The payload of the next ``kind`` event the link has (a message: on ``topic``)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            got, msg = link.inbox.get(timeout=1)
        except queue.Empty:
            continue
        if got == kind and (topic is None or msg.topic == topic):
            return b"" if msg is None else bytes(msg.payload)
    raise AssertionError(f"no {kind} {topic or ''} within 30 s")


@pytest.mark.slow
def test_a_resealed_file_sent_through_the_broker_leaves_the_export_and_blobs_intact(
    tmp_path: Path,
) -> None:
    with LocalSite(tmp_path / "site") as site:
        site.start_broker()
        site.start_store()
        dev = site.start_device("bwc-0007")
        sid = synced_session(dev, 4)
        data = dev.recorder.root
        chain = [e for _, e in load_chain(data) if isinstance(e, Entry)]
        first = next(e for e in chain if e.kind == "segment" and e.session == sid)
        file = first.body["file"]
        # the device's key holder seals other bytes, then the same blob, under that name
        sealer = Sealer(load_or_create_key(data), "bwc-0007", chain[-1])
        link = Uplink("bwc-0007", broker_settings(data), window=8)
        link.connect()
        try:
            _next(link, "connected")  # subscribed to the store's replies
            for media in (JUNK, (data / file).read_bytes()):
                m = SegmentManifest.from_body(first.body)
                body = m.to_body() | {"sha256": _sha(media), "size": len(media)}
                e = sealer.seal("segment", body, Moment(time.time(), 99.0, True), sid)
                payload, properties = p.whole_segment(e.to_json(), media)
                link.publish(p.up("bwc-0007", "segment"), payload, properties)
                ack = ack_of(_next(link, "message", p.reply("bwc-0007", "ack")))
                assert (ack.seq, ack.ok, ack.code) == (e.seq, False, "refused_entry")
                assert f"file {file!r} is sealed already" in ack.reason
        finally:
            link.close()
        site.stop_store()
        db = site.db()
        try:
            assert _problems(db, "bwc-0007") == [
                (chain[-1].seq + 1, RESEALED),
                (chain[-1].seq + 2, RESEALED),
            ]
        finally:
            db.close()
        blobs = tmp_path / "site" / "store" / "blobs"
        before = {f.name: f.read_bytes() for f in blobs.glob("??/*.mp4")}
        assert _sha(JUNK) + ".mp4" not in before
        config = site.store_config()
        args = ["store", "export", "--config", str(config), "--device", "bwc-0007"]
        assert main([*args, "--session", sid, "--out", str(tmp_path / "out")]) == 0
        after = {f.name: f.read_bytes() for f in blobs.glob("??/*.mp4")}
        assert after == before
        assert all(_sha(b) + ".mp4" == name for name, b in after.items())
