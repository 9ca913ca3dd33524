"""Evidence at rest read one way (issue: one archive reader below both sides): a device's
directory and what the store holds of it are the same :class:`Archive`, and reading one
session costs that session, counted by what the archive is asked for, never timed."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any, BinaryIO

import nacl.public
import nacl.signing
import pytest

from common.archive.archive import Archive, Named
from common.archive.device_directory import DeviceDirectory
from common.archive.export import export_session
from common.archive.verify import verify_archive
from evidence.layout import entry_name
from evidence.seal import Entry, canonical
from simulator.device import SimDevice, stand_in_agency_key
from simulator.history import into_store as synced
from simulator.history import with_history
from store.archive import StoreArchive
from store.blobs import FileBlobs
from store.db import Database
from store.ingest import Ingest
from tests.fixtures.config import small_config
from tests.fixtures.store import NOW, Directory
from unbroken.cli import main

HISTORY = 400  # entries sealed before the sessions


@pytest.fixture(scope="module")
def two_sessions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Two sessions of 8 s, encrypted to a stand-in agency key. Read-only."""
    root = tmp_path_factory.mktemp("two") / "dev"
    dev = SimDevice(root, small_config(width=320, height=180, prebuffer_seconds=0))
    dev.start()
    ids = []
    for _ in range(2):
        ids.append(dev.recorder.open_session())
        dev.run(8)
        dev.recorder.close_session()
        dev.run(0.2)
    dev.stop()
    return root, ids


class Counting:
    """What an archive is asked for: the entries it hands out, the media it opens."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.handed = 0
        self.opened: list[str] = []

    def entries(self, first: int | None = None, last: int | None = None) -> list[Named]:
        got: list[Named] = super().entries(first, last)
        self.handed += len(got)
        return got

    def entries_of_kind(self, kinds: Collection[str], before: int) -> list[Named]:
        got: list[Named] = super().entries_of_kind(kinds, before)
        self.handed += len(got)
        return got

    def open_media(self, file: str, sha256: str) -> BinaryIO:
        self.opened.append(file)
        stream: BinaryIO = super().open_media(file, sha256)
        return stream


class CountingDirectory(Counting, DeviceDirectory):
    pass


class CountingStore(Counting, StoreArchive):
    pass


def _long(two: tuple[Path, list[str]], dest: Path) -> tuple[Path, nacl.signing.SigningKey]:
    key = nacl.signing.SigningKey.generate()
    with_history(two[0], dest, HISTORY, key)
    shutil.copy(two[0].parent / "dev.agency-evidence.key", dest.parent / "long.agency-evidence.key")
    return dest, key


def _device_id(root: Path) -> str:
    return next(
        str(e.payload["device"])
        for _, e in DeviceDirectory(root).entries(1, 1)
        if isinstance(e, Entry)
    )


def _store(
    db: Database, tmp_path: Path, root: Path, key: nacl.signing.SigningKey
) -> tuple[Ingest, Directory]:
    device = _device_id(root)
    directory = Directory()
    directory.add(device, key.verify_key)
    ingest = Ingest(
        db, FileBlobs(tmp_path / "blobs"), directory, nacl.signing.SigningKey.generate(), "s"
    )
    synced(
        ingest, [e for _, e in DeviceDirectory(root).entries() if isinstance(e, Entry)], root, NOW
    )
    return ingest, directory


def _segment_files(archive: Archive, session: str) -> set[str]:
    return {
        str(e.body["file"])
        for _, e in archive.entries()
        if isinstance(e, Entry) and e.kind == "segment" and e.session == session
    }


def test_a_device_directory_and_the_store_read_alike(
    two_sessions: tuple[Path, list[str]], db: Database, tmp_path: Path
) -> None:
    root, key = _long(two_sessions, tmp_path / "long")
    ingest, directory = _store(db, tmp_path, root, key)
    device = DeviceDirectory(root)
    device_id = _device_id(root)
    store = StoreArchive(db, ingest.blobs, device_id, directory.device_keys(device_id), None)
    evidence_key = stand_in_agency_key(tmp_path / "long")
    # the device kept the store's receipts, where earlier versions did (one file each)
    (root / "receipts").mkdir()
    for row in db.query("select sha256, receipt from receipts where device = ?", (device_id,)):
        (root / "receipts" / f"{row['sha256']}.json").write_text(row["receipt"])

    def read(a: Archive) -> list[tuple[str, str]]:
        return [(n, e.hash) for n, e in a.entries() if isinstance(e, Entry)]

    assert read(device) == read(store) and len(read(store)) > HISTORY
    assert device.sessions() == store.sessions() == two_sessions[1]
    for sid in two_sessions[1]:
        assert device.session_span(sid) == store.session_span(sid)
        first, last = store.session_span(sid) or (0, 0)
        assert [n for n, _ in device.entries(first, last)] == [
            n for n, _ in store.entries(first, last)
        ]
    segments = [e for _, e in store.entries() if isinstance(e, Entry) and e.kind == "segment"]
    assert segments
    for e in segments:
        file, sha = str(e.body["file"]), str(e.body["sha256"])
        assert device.holds(file, sha) and store.holds(file, sha)
        with device.open_media(file, sha) as a, store.open_media(file, sha) as b:
            assert a.read() == b.read()
        assert device.stored_receipt(sha) == store.stored_receipt(sha) is not None
    assert (
        device.public_key(ingest.directory.device_keys(device_id)[0].key_id) == store.pinned_key()
    )
    for session in (None, *two_sessions[1]):
        reports = [
            verify_archive(a, key.verify_key, evidence_key=evidence_key, session=session)
            for a in (device, store)
        ]
        assert reports[0].ok and reports[1].ok, [r.problems for r in reports]
        assert reports[0].as_dict() == reports[1].as_dict()


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_one_session_of_a_long_history_reads_its_span_only(
    two_sessions: tuple[Path, list[str]], db: Database, tmp_path: Path
) -> None:
    root, key = _long(two_sessions, tmp_path / "long")
    ingest, directory = _store(db, tmp_path, root, key)
    device_id = _device_id(root)
    everything = len(DeviceDirectory(root).entries())
    for archive in (
        CountingDirectory(root),
        CountingStore(db, ingest.blobs, device_id, directory.device_keys(device_id), None),
    ):
        for sid in two_sessions[1]:
            archive.handed, archive.opened = 0, []
            first, last = archive.session_span(sid) or (0, 0)
            report = verify_archive(archive, key.verify_key, session=sid)
            assert report.ok, report.problems
            # its entries, the one before and the one after; no key rotation before it
            assert archive.handed <= last - first + 3 < everything - HISTORY
            assert sorted(archive.opened) == sorted(_segment_files(archive, sid))
        archive.handed, archive.opened = 0, []
        assert verify_archive(archive, key.verify_key).ok
        assert archive.handed == everything  # the whole archive: every entry, every file
        assert len(archive.opened) == sum(len(_segment_files(archive, s)) for s in two_sessions[1])


def _resign(root: Path, seq: int, key: nacl.signing.SigningKey, **changes: Any) -> None:
    """Entry ``seq`` with ``changes`` to its payload, signed (again) by ``key``."""
    e = next(e for _, e in DeviceDirectory(root).entries(seq, seq) if isinstance(e, Entry))
    payload = {**e.payload, **changes}
    signature = base64.b64encode(key.sign(canonical(payload)).signature).decode()
    (root / entry_name(seq)).write_bytes(canonical({"payload": payload, "signature": signature}))


def test_one_session_verify_names_its_problems_and_no_others(
    two_sessions: tuple[Path, list[str]], tmp_path: Path
) -> None:
    root, key = _long(two_sessions, tmp_path / "long")
    first_s, second_s = two_sessions[1]
    a = DeviceDirectory(root).session_span(first_s) or (0, 0)
    b = DeviceDirectory(root).session_span(second_s) or (0, 0)
    # the first session: a segment gone, an entry altered without its key, and the entry
    # after its last one no longer linking to it (signed, but naming another predecessor)
    gone = sorted(_segment_files(DeviceDirectory(root), first_s))[0]
    (root / gone).unlink()
    data = (root / entry_name(a[0] + 1)).read_bytes()
    (root / entry_name(a[0] + 1)).write_bytes(data.replace(b'"synced":true', b'"synced":false', 1))
    _resign(root, a[1] + 1, key, prev="0" * 64)
    # the second session: a segment's entry deleted (a gap, and its close now states one
    # more segment than the chain holds), one naming a file sealed before, one signed by
    # another key
    segs = [
        e
        for _, e in DeviceDirectory(root).entries(b[0], b[1])
        if isinstance(e, Entry) and e.kind == "segment"
    ]
    assert len(segs) >= 4
    (root / entry_name(segs[1].seq)).unlink()
    resealed = str(segs[0].body["file"])
    _resign(root, segs[2].seq, key, body={**segs[2].body, "file": resealed})
    _resign(root, segs[3].seq, nacl.signing.SigningKey.generate())

    first = verify_archive(DeviceDirectory(root), key.verify_key, session=first_s)
    codes = {(p.code, p.where.split(" (")[0]) for p in first.problems}
    assert ("missing_segment", gone) in codes
    assert ("bad_signature", f"entry {a[0] + 1}") in codes
    assert ("chain_break", f"entry {a[1] + 1}") in codes  # the link at its edge
    others = {"sequence_gap", "close_count_mismatch", "resealed_file"}
    assert not others & {code for code, _ in codes}  # the second session's
    second = verify_archive(DeviceDirectory(root), key.verify_key, session=second_s)
    codes = {(p.code, p.where.split(" (")[0]) for p in second.problems}
    assert ("sequence_gap", f"entry {segs[1].seq + 1}") in codes
    assert "close_count_mismatch" in {code for code, _ in codes}
    assert ("resealed_file", resealed) in codes
    assert ("bad_signature", f"entry {segs[3].seq}") in codes
    assert ("missing_segment", gone) not in codes
    assert ("bad_signature", f"entry {a[0] + 1}") not in codes
    assert [s.id for s in second.sessions] == [second_s]
    everything = verify_archive(DeviceDirectory(root), key.verify_key)
    assert {p.code for p in first.problems + second.problems} <= {
        p.code for p in everything.problems
    }


def test_an_export_reads_each_segment_once(
    two_sessions: tuple[Path, list[str]], db: Database, tmp_path: Path
) -> None:
    root, key = _long(two_sessions, tmp_path / "long")
    ingest, directory = _store(db, tmp_path, root, key)
    device_id = _device_id(root)
    evidence_key: nacl.public.PrivateKey = stand_in_agency_key(tmp_path / "long")
    sid = two_sessions[1][1]
    blobs = sorted((tmp_path / "blobs").rglob("*"))
    before = {p: p.read_bytes() for p in blobs if p.is_file()}
    for name, archive in (
        ("device", CountingDirectory(root)),
        (
            "store",
            CountingStore(db, ingest.blobs, device_id, directory.device_keys(device_id), None),
        ),
    ):
        out = tmp_path / name
        result = export_session(archive, sid, out, pubkey=key.verify_key, evidence_key=evidence_key)
        assert result.summary.verified
        # every segment of the session opened (and so decrypted) once, no other's
        assert sorted(archive.opened) == sorted(_segment_files(archive, sid))
        # nothing written but the export: no view, no temporary directory, no partial
        assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in result.files)
    assert sorted((tmp_path / "blobs").rglob("*")) == blobs
    for path, data in before.items():
        assert path.read_bytes() == data and hashlib.sha256(data).hexdigest() == path.stem
    assert (tmp_path / "device" / result.files[0].name).read_bytes() == result.files[0].read_bytes()


def test_verify_reads_one_session_when_asked(
    two_sessions: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, ids = two_sessions
    key = root.parent / "dev.agency-evidence.key"
    args = ["verify", str(root), "--evidence-key", str(key), "--json"]
    assert main([*args, "--session", ids[1], "--decode"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["id"] for s in report["sessions"]] == [ids[1]] and report["ok"]
    assert main([*args, "--session", "nope"]) == 2
    err = capsys.readouterr().err
    assert "holds no session 'nope'" in err and ids[0] in err and "Traceback" not in err
