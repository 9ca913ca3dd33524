"""`verify` on hostile input (issue 14): links, huge and pathological files, empty
directories. Each is a named problem and exit 1, never a traceback nor an endless read."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.evidence_dir import load_chain, verify_dir
from evidence.bounded_json import BoundedJSONError, loads
from evidence.seal import Entry, Moment, Sealer, SealError
from unbroken.cli import main


def _problems(root: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in verify_dir(root, root / "device.pub").problems:
        out.setdefault(p.code, []).append(f"{p.where}: {p.message}")
    return out


def _segment(root: Path, index: int = 0) -> Entry:
    segs = [e for _, e in load_chain(root) if isinstance(e, Entry) and e.kind == "segment"]
    return segs[index]


def test_a_chain_file_linked_to_dev_zero_is_not_read(evidence: Path) -> None:
    target = evidence / "chain" / "0000000005.json"
    target.unlink()
    target.symlink_to("/dev/zero")
    problems = _problems(evidence)
    assert any("symbolic link" in m for m in problems["malformed_entry"])


def test_a_huge_chain_file_is_refused_unread(evidence: Path) -> None:
    with open(evidence / "chain" / "0000009999.json", "wb") as f:
        f.truncate(1 << 30)  # sparse: a gigabyte on paper
    problems = _problems(evidence)
    assert any("more than an entry may have" in m for m in problems["malformed_entry"])


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"payload": {"size": 1e400}, "signature": ""}', "not finite"),
        (b'{"payload": {"seq": ' + b"9" * 100_000 + b"}}", "out of range"),
        (b"[" * 100_000 + b"]" * 100_000, "nested more than"),
        (b'{"a": NaN}', "not a JSON number"),
    ],
)
def test_pathological_json_is_a_malformed_entry(
    evidence: Path, content: bytes, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (evidence / "chain" / "0000009999.json").write_bytes(content)
    problems = _problems(evidence)
    assert any(says in m for m in problems["malformed_entry"]), problems
    assert main(["verify", str(evidence), "--pubkey", str(evidence / "device.pub")]) == 1
    assert "malformed_entry" in capsys.readouterr().out


def test_a_segment_reached_through_a_link_is_named_as_such(evidence: Path) -> None:
    e = _segment(evidence)
    media = evidence / e.body["file"]
    outside = evidence.parent / "elsewhere.mp4"
    shutil.move(media, outside)
    media.symlink_to(outside)
    problems = _problems(evidence)
    assert "missing_segment" not in problems
    assert any(e.body["file"] in m for m in problems["unsafe_path"])


def test_a_segment_directory_linked_elsewhere_is_named(evidence: Path) -> None:
    e = _segment(evidence)
    folder = (evidence / e.body["file"]).parent
    moved = evidence.parent / "moved"
    shutil.move(folder, moved)
    os.symlink(moved, folder)
    assert "unsafe_path" in _problems(evidence)


@pytest.mark.parametrize("layout", ["empty chain", "no chain", "no directory"])
def test_no_evidence_is_not_intact_evidence(
    tmp_path: Path, evidence: Path, layout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "run"
    if layout != "no directory":
        root.mkdir()
        shutil.copy(evidence / "device.pub", root / "device.pub")
    if layout == "empty chain":
        (root / "chain").mkdir()
    code = main(["verify", str(root), "--pubkey", str(evidence / "device.pub")])
    out = capsys.readouterr()
    assert code != 0
    assert "RESULT: OK" not in out.out
    if layout == "empty chain":
        assert "no_evidence" in out.out


def test_bounded_json_keeps_what_evidence_holds() -> None:
    doc = {"seq": 2**53, "wall": 1.7e9, "nested": [[{"a": None}]], "t": True, "s": "é"}
    assert loads(json.dumps(doc), "doc") == doc
    with pytest.raises(BoundedJSONError, match="more than 10"):
        loads(b"{" * 11, "doc", max_bytes=10)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=400)
    | st.recursive(
        st.none() | st.integers() | st.floats() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    ).map(lambda d: json.dumps(d).encode())
)
def test_fuzz_entry_parsing_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(SealError):
        Entry.from_json(data)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=st.binary(max_size=2000), name=st.sampled_from(["0000000003.json", "zz.json"]))
def test_fuzz_verify_on_a_damaged_chain_file(evidence: Path, content: bytes, name: str) -> None:
    original = evidence / "chain" / name
    kept = original.read_bytes() if original.exists() else None
    original.write_bytes(content)
    try:
        report = verify_dir(evidence, evidence / "device.pub")
        assert not report.ok
    finally:
        if kept is None:
            original.unlink()
        else:
            original.write_bytes(kept)


@pytest.mark.parametrize("kind", [["segment"], {"k": 1}, 7, None, "x" * 10_000])
def test_an_entry_whose_kind_is_no_string_is_refused_as_an_entry(kind: object) -> None:
    """A kind that is a list or an object is unhashable: refused with a SealError (the
    store's malformed, not a store failure the device would retry for ever)."""
    key = nacl.signing.SigningKey.generate()
    good = Sealer(key, "bwc-1", None).seal("boot", {}, Moment(1.0, 1.0, True))
    doc = json.loads(good.to_json())
    doc["payload"]["kind"] = kind
    with pytest.raises(SealError, match="unknown entry kind") as e:
        Entry.from_json(json.dumps(doc).encode())
    assert len(str(e.value)) < 100
