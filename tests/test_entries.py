"""Every entry kind's body is a type (evidence.entries, evidence.manifest): each body a real
device sealed parses and turns back into exactly the dict it sealed; a wrong field is a
ManifestError naming the entry and the field."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest

from agent.enrolment import rotate_key
from agent.statement import seal_statement
from common.archive.device_directory import load_chain
from common.settings import Continuity, DeviceConfig, StorageLimits
from common.statements import Attestation, PinCredentials, officer_credentials
from evidence.body_fields import ManifestError
from evidence.custody import custody_summary
from evidence.entries import (
    Assignment,
    Event,
    Install,
    KeyRotation,
    Shutdown,
    WrittenExplanation,
    body_of,
    explanation,
)
from evidence.gaps import gap_body
from evidence.seal import KINDS, Entry, Moment, Sealer
from evidence.session_bodies import SessionOpen
from evidence.verify import verify_chain
from simulator.device import SimDevice
from tests.fixtures.config import small_config
from tests.fixtures.fleet import build_fleet


def _entries(root: Path) -> list[Entry]:
    return [e for _, e in load_chain(root) if isinstance(e, Entry)]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session with a camera gap explained by voice, the disk filling (events), and a
    second gap that never resumed, explained in writing by two officers."""
    root = tmp_path_factory.mktemp("interrupted") / "d"
    cfg: DeviceConfig = small_config(prebuffer_seconds=0)
    limits = StorageLimits(min_free_bytes=1_000, degrade_fraction=0.95, degrade_bitrate=200_000)
    cfg = cfg.model_copy(update={"continuity": Continuity(explain_seconds=3), "storage": limits})
    dev = SimDevice(root, cfg)
    dev.start()
    dev.recorder.open_session()
    dev.run(1)
    dev.camera.fail()
    dev.run(1)
    dev.camera.fail(False)
    dev.run(4)  # resumed: the spoken explanation
    dev.storage.filler = int(dev.storage.capacity * 0.96)
    dev.run(1)
    dev.camera.fail()
    dev.run(1)
    dev.recorder.close_session()  # the camera never came back
    dev.stop()
    data = dev.recorder.root
    gap = [e for e in _entries(data) if e.kind == "interruption" and not e.body["end"]][-1]
    agency = nacl.signing.SigningKey.generate()
    creds_file = root.parent / "officers.json"
    creds_file.write_bytes(officer_credentials(agency, {"340102": "4711", "340117": "0815"}))
    seal_statement(
        data,
        gap.body["id"],
        "camera destroyed",
        [Attestation("340102", "pin", "4711"), Attestation("340117", "pin", "0815")],
        PinCredentials.load(creds_file, agency.verify_key),
        Moment(dev.clock.wall() + 3600, 5.0, True),
    )
    return data


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Entry]]:
    """The chains of provisioned devices: installs, a room assignment, a key rotation."""
    fleet = build_fleet(tmp_path_factory.mktemp("fleet"))
    a = fleet.devices["a"]
    rotate_key(a, a.parent / "rotation.req", time.time())
    yield [e for d in fleet.devices.values() for e in _entries(d)]


def _round_trips(entries: list[Entry]) -> set[str]:
    kinds = set()
    for e in entries:
        assert body_of(e).to_body() == e.body, (e.kind, e.body)
        kinds.add(e.kind)
    return kinds


def test_every_body_a_recording_sealed_reads_back_as_sealed(
    recorded: Path, interrupted: Path
) -> None:
    kinds = _round_trips(_entries(recorded)) | _round_trips(_entries(interrupted))
    assert {"boot", "config", "shutdown", "event", "marker"} <= kinds
    assert {"interruption", "interruption_end", "explanation"} <= kinds
    explained = [explanation(e.body) for e in _entries(interrupted) if e.kind == "explanation"]
    assert {type(x).__name__ for x in explained} == {"VoiceExplanation", "WrittenExplanation"}
    events = [Event.from_body(e.body).type for e in _entries(interrupted) if e.kind == "event"]
    assert "storage_degraded" in events
    assert Shutdown.from_body(_entries(recorded)[-1].body).reason


def test_every_body_a_provisioned_device_sealed_reads_back_as_sealed(
    provisioned: list[Entry],
) -> None:
    assert {"install", "assignment", "key_rotation"} <= _round_trips(provisioned)
    (room,) = [Assignment.from_body(e.body) for e in provisioned if e.kind == "assignment"]
    assert (room.command, room.room) == ("assign", "101")
    installs = [Install.from_body(e.body) for e in provisioned if e.kind == "install"]
    assert len(installs) == 3 and all(i.key_store for i in installs)
    (rotation,) = [KeyRotation.from_body(e.body) for e in provisioned if e.kind == "key_rotation"]
    assert len(rotation.new_key) == 64


AT = Moment(1.7e9, 1.0, True)
MOMENT = AT.as_dict()


@pytest.mark.parametrize(
    ("kind", "body", "says"),
    [
        ("boot", {"software": 7}, "boot: 'software' is not a string"),
        ("config", {"sha256": "x", "settings": []}, "config: 'settings' is not an object"),
        ("shutdown", {}, "shutdown: 'reason' is missing"),
        ("install", {"bundle_sha256": "x"}, "install: 'agency_key_id' is missing"),
        ("key_rotation", {"new_key": "zz", "new_key_id": "x"}, "'new_key' is not a public key"),
        ("event", {"type": "storage_warning", "used": "full"}, "'used' is not a number"),
        ("event", {"type": "gnss_lost", "x": 1}, "a gnss_lost event has no field 'x'"),
        ("event", {"type": "case", "case": "c1"}, "a case event names no 'command'"),
        ("explanation", {"interruption": "g", "kind": "sung"}, "neither voice nor written"),
        (
            "explanation",
            {"interruption": "g", "kind": "written", "statement": {"reason": "r"}},
            "explanation.statement: 'attestations' is missing",
        ),
        (
            "explanation",
            {
                "interruption": "g",
                "kind": "written",
                "statement": {"reason": "r", "attestations": ["340102"]},
            },
            "explanation.statement.attestations[0]: not an object",
        ),
        ("interruption", {"id": "g", "cause": "camera", "start": 5}, "'start' is not an object"),
        ("interruption_end", {"id": None, "end": MOMENT}, "'id' is not a string"),
    ],
)
def test_a_wrong_field_is_named_with_its_entry(kind: str, body: dict, says: str) -> None:
    entry = Sealer(nacl.signing.SigningKey.generate(), "bwc-1", None).seal(kind, body, AT, "s")
    with pytest.raises(ManifestError, match=r"^entry 1: ") as e:
        body_of(entry)
    assert says in str(e.value)
    if kind in ("interruption", "interruption_end", "explanation"):
        with pytest.raises(ManifestError, match=r"^entry 1: "):
            gap_body(entry)


def test_every_kind_has_an_owner() -> None:
    sealer = Sealer(nacl.signing.SigningKey.generate(), "bwc-1", None)
    for kind in KINDS:
        try:
            body_of(sealer.seal(kind, {}, AT))  # an empty body: malformed, but never unowned
        except ManifestError as e:
            assert "no entry is a" not in str(e), kind


def test_a_written_explanation_builds_the_body_devices_seal() -> None:
    from common.statements import written_explanation

    class Anyone:
        def check(self, a: Attestation) -> bool:
            return True

    said = [Attestation("1", "pin", "p"), Attestation("2", "pin", "q")]
    written = written_explanation("g1", " lost ", said, Anyone())
    body = written.to_body()
    assert body == {
        "interruption": "g1",
        "kind": "written",
        "statement": {
            "reason": "lost",
            "attestations": [{"badge": "1", "method": "pin"}, {"badge": "2", "method": "pin"}],
        },
    }
    assert WrittenExplanation.from_body(body) == written


@pytest.mark.parametrize(
    ("badges", "assigned"),
    [
        (["340102"], {"badges": ["340102"], "name": "Li Wei", "unit": None, "room": None}),
        ([340102], {"unreadable": "assignment: 'badges' is not a list of strings"}),
    ],
)
def test_the_custody_summary_reads_the_assignment_through_its_owner(
    badges: list[object], assigned: dict[str, object]
) -> None:
    key = nacl.signing.SigningKey.generate()
    sealer = Sealer(key, "bwc-1", None)
    doc = {"command": "assign", "badges": badges, "name": "Li Wei", "unit": None, "room": None}
    doc |= {"nonce": "0" * 32, "issued": 1.7e9, "agency": "a1", "expires": 1.8e9}
    opened = SessionOpen("patrol", ["340102"], 0.0, ["main"]).to_body()
    entries = [
        sealer.seal("assignment", doc, AT),
        sealer.seal("session_open", opened, AT, "s"),
    ]
    report = verify_chain([(f"chain/{e.seq}.json", e) for e in entries], key.verify_key, {})
    summary = custody_summary(entries, report, "s", {}, 1.8e9)
    got = summary.as_dict()["collector"]["assigned"]
    assert {k: got[k] for k in assigned} == assigned
    if "unreadable" in assigned:
        assert f"Assigned:    UNREADABLE ({assigned['unreadable']})" in summary.text()
    else:
        assert "Assigned:    Li Wei (-), badges 340102" in summary.text()
