"""Tampering with an evidence directory is caught, each with its own named failure."""

from __future__ import annotations

import shutil
from pathlib import Path

import nacl.encoding
import nacl.signing
import pytest

from common.archive.device_directory import DeviceDirectory, load_chain, read_public_key
from common.archive.verify import verify_archive
from evidence.seal import Entry
from simulator.session import record_session
from tests.fixtures.config import small_config
from unbroken.cli import main


def _codes(root: Path, pubkey: Path | None = None) -> set[str]:
    return {
        p.code
        for p in verify_archive(
            DeviceDirectory(root), read_public_key(pubkey or root / "device.pub")
        ).problems
    }


def _segment_entries(root: Path) -> list[tuple[Path, Entry]]:
    return [
        (root / name, e)
        for name, e in load_chain(root)
        if isinstance(e, Entry) and e.kind == "segment"
    ]


def test_flipped_byte(evidence: Path) -> None:
    _, e = _segment_entries(evidence)[2]
    media = evidence / e.body["file"]
    data = bytearray(media.read_bytes())
    data[len(data) // 2] ^= 0x01
    media.write_bytes(bytes(data))
    assert _codes(evidence) == {"hash_mismatch"}


def test_deleted_segment(evidence: Path) -> None:
    path, e = _segment_entries(evidence)[2]
    path.unlink()
    (evidence / e.body["file"]).unlink()
    assert {"sequence_gap", "segment_gap"} <= _codes(evidence)


def test_deleted_media_only(evidence: Path) -> None:
    _, e = _segment_entries(evidence)[1]
    (evidence / e.body["file"]).unlink()
    assert _codes(evidence) == {"missing_segment"}


def test_two_segments_swapped(evidence: Path) -> None:
    segs = _segment_entries(evidence)
    a, b = evidence / segs[1][1].body["file"], evidence / segs[2][1].body["file"]
    tmp = a.with_suffix(".tmp")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    assert _codes(evidence) == {"swapped_segment"}


def test_two_entries_swapped(evidence: Path) -> None:
    (pa, _), (pb, _) = _segment_entries(evidence)[1:3]
    da, db = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(db)
    pb.write_bytes(da)
    assert "misplaced_entry" in _codes(evidence)


def test_truncated_segment(evidence: Path) -> None:
    _, e = _segment_entries(evidence)[-1]
    media = evidence / e.body["file"]
    media.write_bytes(media.read_bytes()[: media.stat().st_size * 2 // 3])
    assert _codes(evidence) == {"truncated_segment"}


def test_manifest_from_another_session(tmp_path: Path) -> None:
    root = tmp_path / "dev"
    config = small_config(prebuffer_seconds=0)
    record_session(root, config, 4, arrival=0)
    record_session(root, config, 4, arrival=0)
    segs = _segment_entries(root)
    first_session = segs[0][1].session
    victim = next(p for p, e in segs if e.session == first_session and e.body["index"] == 1)
    intruder_path, intruder = next(
        (p, e) for p, e in segs if e.session != first_session and e.body["index"] == 1
    )
    # the other session's manifest (and media) put in place of this session's segment 1
    victim.write_bytes(intruder_path.read_bytes())
    assert "foreign_session" in _codes(root)
    assert intruder.session


def test_different_key(evidence: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pub"
    other.write_bytes(
        nacl.signing.SigningKey.generate().verify_key.encode(nacl.encoding.HexEncoder)
    )
    assert _codes(evidence, other) == {"wrong_key"}
    assert main(["verify", str(evidence), "--pubkey", str(other)]) == 1


def test_forged_entry(evidence: Path) -> None:
    path, _ = _segment_entries(evidence)[0]
    path.write_bytes(path.read_bytes().replace(b'"prebuffer":true', b'"prebuffer":false'))
    assert "bad_signature" in _codes(evidence)


@pytest.mark.parametrize(
    "name,content",
    [("chain/0000009999.json", b"not json at all"), ("segments/extra.mp4", b"\x00" * 100)],
)
def test_foreign_or_corrupt_file(evidence: Path, name: str, content: bytes) -> None:
    (evidence / name).write_bytes(content)
    codes = _codes(evidence)
    assert codes == ({"malformed_entry"} if name.startswith("chain") else {"unexpected_file"})


def test_exit_code_and_named_problem_in_text_report(evidence: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    _, e = _segment_entries(evidence)[0]
    (evidence / e.body["file"]).unlink()
    assert main(["verify", str(evidence), "--pubkey", str(evidence / "device.pub")]) == 1
    out = capsys.readouterr().out
    assert "missing_segment" in out and e.body["file"] in out and "RESULT: FAILED" in out


def test_copy_is_independent(recorded: Path, evidence: Path) -> None:
    # guard for the fixtures above: tampering with the copy leaves the original intact
    shutil.rmtree(evidence / "segments")
    assert verify_archive(DeviceDirectory(recorded), read_public_key(recorded / "device.pub")).ok
