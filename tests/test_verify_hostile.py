"""`verify` on hostile input (issue 14): links, huge and pathological files, empty
directories. Each is a named problem and exit 1, never a traceback nor an endless read."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.archive.device_directory import DeviceDirectory, load_chain, read_public_key
from common.archive.verify import verify_archive
from evidence.body_fields import ManifestError
from evidence.bounded_json import BoundedJSONError, loads
from evidence.custody import custody_summary
from evidence.gaps import gap_body
from evidence.seal import Entry, Moment, Sealer, SealError
from evidence.session_bodies import Interruption, InterruptionEnd, SessionOpen, VoiceExplanation
from evidence.verify import verify_chain
from unbroken.cli import main


def _problems(root: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in verify_archive(DeviceDirectory(root), read_public_key(root / "device.pub")).problems:
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
        report = verify_archive(DeviceDirectory(evidence), read_public_key(evidence / "device.pub"))
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


# -- interruptions and their explanations, whatever their bodies hold --------------------

_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)  # what any JSON reader keeps exactly
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=6,
)
_GONE = object()  # the field is left out


def _gap_bodies() -> list[tuple[str, dict[str, Any]]]:
    """An interruption, its end, a spoken and a written explanation, as devices seal them."""
    start, end, spoken = (Moment(1.7e9 + t, 10.0 + t, True) for t in (1, 2, 5))
    written = {
        "interruption": "g1",
        "kind": "written",
        "statement": {
            "reason": "camera lost",
            "attestations": [{"badge": "1", "method": "pin"}, {"badge": "2", "method": "pin"}],
        },
    }
    return [
        ("interruption", Interruption("g1", "camera", ["video"], start, tracks=("a",)).to_body()),
        ("interruption_end", InterruptionEnd("g1", end).to_body()),
        ("explanation", VoiceExplanation("g1", end, spoken).to_body()),
        ("explanation", written),
    ]


_PATHS = [
    ("id",), ("cause",), ("affects",), ("start",), ("start", "wall"), ("end",), ("detail",),
    ("tracks",), ("end", "mono"), ("interruption",), ("kind",), ("clip",), ("clip", "start"),
    ("statement",), ("statement", "reason"), ("statement", "attestations"),
    ("statement", "attestations", 0), ("statement", "attestations", 1, "badge"),
]  # fmt: skip


def _mutated(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    """``body`` with the field at ``path`` set to ``value`` (or left out), where it is."""
    *above, last = path
    out = json.loads(json.dumps(body))
    node = out
    for step in above:
        if not isinstance(node, dict | list) or not _has(node, step):
            return out
        node = node[step]
    if value is _GONE and isinstance(node, dict | list) and _has(node, last):
        del node[last]
    elif value is not _GONE and (isinstance(node, dict) or _has(node, last)):
        node[last] = value
    return out


def _has(node: dict[str, Any] | list[Any], step: Any) -> bool:
    if isinstance(node, dict):
        return step in node
    return isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)


def _chain_with(bodies: list[tuple[str, Any]]) -> list[Entry]:
    sealer = Sealer(_GAP_KEY, "bwc-1", None)
    at = iter(Moment(1.7e9 + n, 10.0 + n, True) for n in range(100))
    opened = SessionOpen("patrol", ["1"], 0.0, ["main", "a"]).to_body()
    entries = [
        sealer.seal("boot", {}, next(at)),
        sealer.seal("session_open", opened, next(at), "s"),
    ]
    entries += [sealer.seal(kind, body, next(at), "s") for kind, body in bodies]
    close = {"segments": 0, "tracks": {}}
    return [*entries, sealer.seal("session_close", close, next(at), "s")]


_GAP_KEY = nacl.signing.SigningKey.generate()


@settings(max_examples=300, deadline=None)
@given(
    which=st.integers(0, 3),
    path=st.sampled_from(_PATHS),
    value=_VALUES | st.just(_GONE),
    whole=st.none() | _VALUES,
)
def test_fuzz_verify_names_any_interruption_body_it_cannot_read(
    which: int, path: tuple[Any, ...], value: Any, whole: Any
) -> None:
    """An interruption, its end or its explanation with any field of any type (or any
    body at all): verify and the custody summary name it, never a traceback."""
    bodies = _gap_bodies()
    kind, body = bodies[which]
    bodies[which] = (kind, _mutated(body, path, value) if whole is None else whole)
    if not isinstance(bodies[which][1], dict):
        return  # no entry holds a body that is not an object (Entry.from_json refuses it)
    entries = _chain_with(bodies)
    report = verify_chain([(f"chain/{e.seq}.json", e) for e in entries], _GAP_KEY.verify_key, {})
    malformed = {p.where: p.message for p in report.problems if p.code == "malformed_entry"}
    for e in entries[2:-1]:
        try:
            gap_body(e)
        except ManifestError as err:
            assert malformed.pop(f"entry {e.seq}") in str(err)
    assert not malformed, "only what does not read is named malformed"
    summary = custody_summary(entries, report, "s", {}, 1.8e9).as_dict()
    assert summary["verification"]["ok"] == report.ok


@pytest.mark.parametrize(
    ("which", "path", "value", "says"),
    [
        (0, ("affects",), None, None),  # optional: an interruption that names none
        (0, ("start", "wall"), 1e12, None),  # a time no calendar holds: shown as sealed
        (1, ("end", "wall"), -1e300, None),
        (0, ("affects",), "video", "interruption: 'affects' is not a list"),
        (0, ("start", "wall"), "x", "interruption.start: 'wall' is not a number"),
        (0, ("tracks",), 5, "interruption: 'tracks' is not a list"),
        (1, ("end",), None, "interruption_end: 'end' is not an object"),
        (2, ("clip",), [], "explanation: 'clip' is not an object"),
        (
            3,
            ("statement", "attestations", 0),
            "1",
            "explanation.statement.attestations[0]: not an object",
        ),
        (3, ("statement", "reason"), 7, "explanation.statement: 'reason' is not a string"),
        (3, ("kind",), "sung", "explanation: 'kind' is 'sung', neither voice nor written"),
    ],
)
def test_verify_says_which_field_of_an_interruption_is_wrong(
    which: int, path: tuple[Any, ...], value: Any, says: str | None
) -> None:
    bodies = _gap_bodies()
    kind, body = bodies[which]
    bodies[which] = (kind, _mutated(body, path, value))
    entries = _chain_with(bodies)
    report = verify_chain([(f"chain/{e.seq}.json", e) for e in entries], _GAP_KEY.verify_key, {})
    named = [(p.where, p.message, p.session) for p in report.problems]
    summary = custody_summary(entries, report, "s", {}, 1.8e9).as_dict()
    if says is None:
        assert report.ok, named
        (gap,) = summary["interruptions"]
        assert f"{value} (no date)" in (gap["start"], gap["end"]) or gap["affects"] == []
        return
    assert named == [(f"entry {which + 3}", says, "s")]
    (session,) = report.sessions
    assert [p.code for p in session.problems] == ["malformed_entry"]
    assert [p["message"] for p in summary["verification"]["problems"]] == [says]
    if which < 2:  # an interruption or its end that does not read counts as none
        assert summary["interruptions"] == [] or summary["interruptions"][0]["end"] is None
