"""The store's rules, without a broker: every message in, the replies out."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nacl.signing
import pytest

from common.archive.device_directory import load_chain
from evidence import protocol as p
from evidence.blob_messages import BlobInit, Missing
from evidence.messages import Ack
from evidence.receipt import check_receipt
from evidence.seal import Entry, Moment, Sealer
from simulator.session import record_session
from store.blobs import FileBlobs
from store.db import Database
from store.ingest import Ingest
from store.report import build_report
from tests.fixtures.config import small_config
from tests.fixtures.store import NOW, Directory, ack_of
from tests.fixtures.store import upload as _upload


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dev") / "bwc"
    record_session(root, small_config(prebuffer_seconds=2), 3)
    return root


def _setup(
    db: Database, tmp_path: Path, device: Path
) -> tuple[Ingest, Directory, str, nacl.signing.SigningKey]:
    directory = Directory()
    pub = nacl.signing.VerifyKey(bytes.fromhex((device / "device.pub").read_text().strip()))
    dev_id = json.loads((device / "identity.json").read_text())["device_id"]
    directory.add(dev_id, pub)
    agency = nacl.signing.SigningKey.generate()
    return (
        Ingest(db, FileBlobs(tmp_path / "blobs"), directory, agency, "store-t"),
        directory,
        dev_id,
        agency,
    )


def _entries(device: Path) -> list[Entry]:
    return [e for _, e in load_chain(device) if isinstance(e, Entry)]


def test_session_synced_with_verified_receipts(db: Database, tmp_path: Path, device: Path) -> None:
    ingest, _, dev, agency = _setup(db, tmp_path, device)
    entries = _entries(device)
    for e in entries:
        ((topic, payload),) = ingest.handle(p.up(dev, "entry"), e.to_json(), NOW)
        assert topic == p.reply(dev, "ack") and ack_of(payload).ok
    segments = [e for e in entries if e.kind == "segment"]
    for e in segments:
        ((topic, payload),) = _upload(ingest, dev, device, e)
        assert topic == p.reply(dev, "receipt")
        r = check_receipt(payload, agency.verify_key, device=dev, sha256=e.body["sha256"])
        assert r["entry_hash"] == e.hash and r["size"] == e.body["size"]
        assert ingest.blobs.get(e.body["sha256"]).read() == (device / e.body["file"]).read_bytes()
    report = build_report(db, NOW)
    (d,) = report["devices"]
    assert d["chain"] == "ok" and d["entries"] == len(entries)
    (s,) = d["sessions"]
    assert s["receipted"] == s["segments"] == len(segments)
    # idempotent: the same entry again is a duplicate, the same blob gets the same receipt
    ((_, again),) = ingest.handle(p.up(dev, "entry"), entries[0].to_json(), NOW)
    assert ack_of(again) == Ack(seq=entries[0].seq, ok=True, reason="duplicate")
    ((_, first_receipt),) = _upload(ingest, dev, device, segments[0])
    assert check_receipt(first_receipt, agency.verify_key, device=dev)["stored_at"] == NOW


def _whole(ingest: Ingest, dev: str, e: Entry, data: bytes) -> list[tuple[str, bytes]]:
    payload, properties = p.whole_segment(e.to_json(), data)
    return ingest.handle(p.up(dev, "segment"), payload, NOW, properties)


def test_a_whole_segment_with_its_entry_is_one_message_and_one_receipt(
    db: Database, tmp_path: Path, device: Path
) -> None:
    ingest, _, dev, agency = _setup(db, tmp_path, device)
    entries = _entries(device)
    segments = [e for e in entries if e.kind == "segment"]
    # the segments first, out of chain order (another worker may have the entries)
    for e in reversed(segments):
        data = (device / e.body["file"]).read_bytes()
        ((topic, payload),) = _whole(ingest, dev, e, data)
        assert topic == p.reply(dev, "receipt")
        r = check_receipt(payload, agency.verify_key, device=dev, sha256=e.body["sha256"])
        assert (r["entry_seq"], r["entry_hash"], r["size"]) == (e.seq, e.hash, len(data))
        assert ingest.blobs.get(e.body["sha256"]).read() == data
    for e in entries:
        ((_, payload),) = ingest.handle(p.up(dev, "entry"), e.to_json(), NOW)
        assert ack_of(payload).ok
    (d,) = build_report(db, NOW)["devices"]
    assert d["chain"] == "ok" and d["entries"] == len(entries)
    (s,) = d["sessions"]
    assert s["receipted"] == s["segments"] == len(segments)
    # sent again (our receipt was lost): the same receipt, nothing stored twice
    first = segments[0]
    ((_, again),) = _whole(ingest, dev, first, (device / first.body["file"]).read_bytes())
    assert check_receipt(again, agency.verify_key, device=dev)["entry_hash"] == first.hash
    assert db.query("select count(*) as n from receipts")[0]["n"] == len(segments)


def test_a_whole_segment_altered_or_without_its_entry_is_not_stored(
    db: Database, tmp_path: Path, device: Path
) -> None:
    ingest, _, dev, _ = _setup(db, tmp_path, device)
    seg = next(e for e in _entries(device) if e.kind == "segment")
    data = bytearray((device / seg.body["file"]).read_bytes())
    data[100] ^= 1
    ((topic, payload),) = _whole(ingest, dev, seg, bytes(data))
    missing = Missing.parse(payload)
    assert topic == p.reply(dev, "missing") and "altered in transit" in missing.reason
    assert not ingest.blobs.has(seg.body["sha256"])
    ((topic, payload),) = _whole(ingest, dev, seg, bytes(data[:-1]))  # a byte short
    assert topic == p.reply(dev, "missing")
    ((topic, payload),) = ingest.handle(p.up(dev, "segment"), bytes(data), NOW)
    assert topic == p.reply(dev, "rejected") and json.loads(payload)["code"] == "malformed"
    for wrong in ("0", "abc", str(len(data) + 1), "99999999"):  # where the manifest ends
        ((topic, payload),) = ingest.handle(
            p.up(dev, "segment"), bytes(data), NOW, {p.ENTRY_BYTES: wrong}
        )
        assert json.loads(payload)["code"] == "malformed", wrong
    marker = next(e for e in _entries(device) if e.kind != "segment")
    ((topic, payload),) = _whole(ingest, dev, marker, bytes(data))
    assert json.loads(payload)["code"] == "malformed" and b"not a segment manifest" in payload
    assert db.query("select count(*) as n from receipts")[0]["n"] == 0


def test_a_whole_segment_signed_by_an_unknown_key_is_refused(
    db: Database, tmp_path: Path, device: Path
) -> None:
    ingest, _, dev, _ = _setup(db, tmp_path, device)
    seg = next(e for e in _entries(device) if e.kind == "segment")
    forged = Sealer(nacl.signing.SigningKey.generate(), dev, last=None).seal(
        "segment", seg.body, Moment(**seg.payload["at"]), seg.session
    )
    ((topic, payload),) = _whole(ingest, dev, forged, (device / seg.body["file"]).read_bytes())
    assert topic == p.reply(dev, "ack") and not ack_of(payload).ok
    assert not ingest.blobs.has(seg.body["sha256"])


def test_a_finish_before_its_manifest_says_when_to_ask_again(
    db: Database, tmp_path: Path, device: Path
) -> None:
    ingest, _, dev, _ = _setup(db, tmp_path, device)
    seg = next(e for e in _entries(device) if e.kind == "segment")
    data = (device / seg.body["file"]).read_bytes()
    init = BlobInit(
        sha256=seg.body["sha256"],
        size=len(data),
        chunk_size=len(data),
        seq=seg.seq,
        chunks=(seg.body["sha256"],),
    )
    ingest.handle(p.up(dev, "blob", "init"), init.to_bytes(), NOW)
    ingest.handle(p.up(dev, "blob", init.sha256, "0"), data, NOW)
    ((topic, payload),) = ingest.handle(
        p.up(dev, "blob", "finish"), p.dumps({"sha256": init.sha256}), NOW
    )
    missing = Missing.parse(payload)
    assert topic == p.reply(dev, "missing") and "not received" in missing.reason
    assert 0 < missing.retry < 10  # at once, with a time: never by silence


def test_altered_chunk_is_refused_and_resent(db: Database, tmp_path: Path, device: Path) -> None:
    ingest, _, dev, _ = _setup(db, tmp_path, device)
    for e in _entries(device):
        ingest.handle(p.up(dev, "entry"), e.to_json(), NOW)
    seg = next(e for e in _entries(device) if e.kind == "segment")
    data = (device / seg.body["file"]).read_bytes()
    chunk = 65536
    hashes = tuple(
        hashlib.sha256(data[o : o + chunk]).hexdigest() for o in range(0, len(data), chunk)
    )
    init = BlobInit(
        sha256=seg.body["sha256"], size=len(data), chunk_size=chunk, seq=seg.seq, chunks=hashes
    )
    ingest.handle(p.up(dev, "blob", "init"), init.to_bytes(), NOW)
    altered = bytearray(data[:chunk])
    altered[100] ^= 1
    ((topic, payload),) = ingest.handle(p.up(dev, "blob", init.sha256, "0"), bytes(altered), NOW)
    assert topic == p.reply(dev, "rejected") and b"altered in transit" in payload
    for off in range(0, len(data), chunk):
        if off:
            ingest.handle(p.up(dev, "blob", init.sha256, str(off)), data[off : off + chunk], NOW)
    ((topic, payload),) = ingest.handle(
        p.up(dev, "blob", "finish"), p.dumps({"sha256": init.sha256}), NOW
    )
    assert topic == p.reply(dev, "missing") and Missing.parse(payload).offsets == [0]
    ingest.handle(p.up(dev, "blob", init.sha256, "0"), data[:chunk], NOW)
    ((topic, _),) = ingest.handle(
        p.up(dev, "blob", "finish"), p.dumps({"sha256": init.sha256}), NOW
    )
    assert topic == p.reply(dev, "receipt")


@pytest.mark.parametrize(
    "topic,payload,reason",
    [
        ("unbroken/d/{dev}/entry", b"\xff garbage", "not a chain entry"),
        ("unbroken/d/{dev}/blob/init", b"{}", "blob init: 'sha256' is missing; 'size' is"),
        ("unbroken/d/{dev}/blob/finish", b'{"sha256":"AB"}', "not a lowercase hex SHA-256"),
        ("unbroken/d/{dev}/blob/" + "a" * 64 + "/0", b"x", "unknown blob"),
        ("unbroken/d/{dev}/blob/finish", b"[1]", "not a JSON object"),
        ("unbroken/d/{dev}/selfdestruct", b"", "unknown message type"),
        ("unbroken/d/{dev}/entry", b"{" + b" " * (p.MAX_JSON + 1) + b"}", "larger than"),
    ],
)
def test_bad_messages_are_refused_with_a_reason(
    db: Database, tmp_path: Path, device: Path, topic: str, payload: bytes, reason: str
) -> None:
    ingest, _, dev, _ = _setup(db, tmp_path, device)
    ((reply_topic, reply),) = ingest.handle(topic.format(dev=dev), payload, NOW)
    assert reply_topic == p.reply(dev, "rejected")
    assert reason in json.loads(reply)["reason"]
    assert db.query("select reason from rejections")[0]["reason"].count(reason)


def test_out_of_range_chunk(db: Database, tmp_path: Path, device: Path) -> None:
    ingest, _, dev, _ = _setup(db, tmp_path, device)
    init = BlobInit(sha256="b" * 64, size=3000, chunk_size=1024, seq=5, chunks=("c" * 64,) * 3)
    ingest.handle(p.up(dev, "blob", "init"), init.to_bytes(), NOW)
    for off, data, reason in [
        (4096, b"x" * 10, "not a multiple"),
        (1000, b"x", "not a multiple"),
        (2048, b"x" * 5, "expected 952"),
    ]:
        ((_, reply),) = ingest.handle(p.up(dev, "blob", "b" * 64, str(off)), data, NOW)
        assert reason in json.loads(reply)["reason"]


def test_identity_and_key_checks(db: Database, tmp_path: Path, device: Path) -> None:
    ingest, _directory, dev, _ = _setup(db, tmp_path, device)
    e = _entries(device)[0]
    # a device uploading under another's topic (the broker would refuse it first)
    ((_, ack),) = ingest.handle(p.up("bwc-other", "entry"), e.to_json(), NOW)
    assert "topic says" in ack_of(ack).reason
    # a manifest signed by another device's key, claiming this device
    other = Sealer(nacl.signing.SigningKey.generate(), dev, None).seal(
        "boot", {}, Moment(NOW, 1.0, True)
    )
    ((_, ack),) = ingest.handle(p.up(dev, "entry"), other.to_json(), NOW)
    assert "not registered" in ack_of(ack).reason
    # unknown device
    stranger = Sealer(nacl.signing.SigningKey.generate(), "bwc-x", None).seal(
        "boot", {}, Moment(NOW, 1.0, True)
    )
    ((_, ack),) = ingest.handle(p.up("bwc-x", "entry"), stranger.to_json(), NOW)
    assert "unknown device" in ack_of(ack).reason


def test_revocation_refuses_what_arrives_after_it(
    db: Database, tmp_path: Path, device: Path
) -> None:
    ingest, directory, dev, _ = _setup(db, tmp_path, device)
    entries = _entries(device)
    for e in entries[:4]:
        assert ack_of(ingest.handle(p.up(dev, "entry"), e.to_json(), NOW)[0][1]).ok
    # revoked now: whatever the entries' own dates, nothing received later is accepted
    directory.revoked[dev] = NOW
    acks = [ack_of(ingest.handle(p.up(dev, "entry"), e.to_json(), NOW)[0][1]) for e in entries[4:]]
    assert not any(a.ok for a in acks) and {a.code for a in acks} == {"revoked"}
    assert build_report(db, NOW)["devices"][0]["refusals"] == {"revoked": len(acks)}


def test_gaps_and_forks_are_reported(db: Database, tmp_path: Path, device: Path) -> None:
    ingest, directory, _dev, _ = _setup(db, tmp_path, device)
    key = nacl.signing.SigningKey.generate()
    directory.add("bwc-f", key.verify_key)
    s = Sealer(key, "bwc-f", None)
    at = Moment(NOW, 1.0, True)
    e1, e2, e3 = (s.seal("boot", {"n": i}, at) for i in range(3))
    fork = Sealer(key, "bwc-f", e1).seal("boot", {"n": "fork"}, at)  # another entry 2
    for e in (e1, e3):
        ingest.handle(p.up("bwc-f", "entry"), e.to_json(), NOW)
    d = build_report(db, NOW)["devices"][0]
    assert d["gaps"] == [[2, 2]] and d["chain"] == "problems"
    ingest.handle(p.up("bwc-f", "entry"), e2.to_json(), NOW)
    ((_, ack),) = ingest.handle(p.up("bwc-f", "entry"), fork.to_json(), NOW)
    assert ack_of(ack).ok and "fork" in ack_of(ack).reason  # kept, not dropped
    d = build_report(db, NOW)["devices"][0]
    assert d["gaps"] == [] and [x["code"] for x in d["problems"]] == ["fork"]


def test_identical_bytes_from_two_devices_are_kept_once_and_receipted_to_each(
    db: Database, tmp_path: Path, device: Path
) -> None:
    ingest, directory, dev, agency = _setup(db, tmp_path, device)
    seg = next(e for e in _entries(device) if e.kind == "segment")
    other_key = nacl.signing.SigningKey.generate()
    directory.add("bwc-twin", other_key.verify_key)
    twin = Sealer(other_key, "bwc-twin", None).seal("segment", seg.body, Moment(NOW, 1.0, True))
    for d, e in ((dev, seg), ("bwc-twin", twin)):
        ingest.handle(p.up(d, "entry"), e.to_json(), NOW)
    for d, e in ((dev, seg), ("bwc-twin", twin)):
        ((topic, payload),) = _upload(ingest, d, device, e)
        assert topic == p.reply(d, "receipt")
        assert check_receipt(payload, agency.verify_key, device=d)["entry_hash"] == e.hash
    assert len(list((tmp_path / "blobs").rglob("*.mp4"))) == 1
