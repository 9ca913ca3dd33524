"""The typed bodies of evidence/manifest.py and evidence/session_bodies.py: the bytes sealed
are today's, to the byte."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from evidence.body_fields import ManifestError
from evidence.manifest import Location, SegmentManifest, segment
from evidence.seal import Moment, Sealer, canonical
from evidence.session_bodies import (
    CaseCommand,
    Interruption,
    InterruptionEnd,
    Marker,
    SessionClose,
    SessionOpen,
    VoiceExplanation,
)

# As the recorder sealed them before the types existed (a body recorder's session).
SEGMENT: dict[str, Any] = {
    "badges": ["012345"],
    "end": {"mono": 1002, "synced": True, "wall": 1773451802},
    "file": "segments/83006a8f-2273-4fe5-b028-ae0638bf8933/000000.mp4",
    "index": 0,
    "location": {
        "end": [31.820606666666666, 117.22722666666667],
        "fix": "ok",
        "max_fix_age": None,
        "start": [31.820603333333334, 117.22721333333334],
    },
    "media": {
        "audio": {"channels": 1, "codec": "aac", "rate": 48000, "samples": 96000},
        "container": "mp4/fragmented",
        "video": {
            "bitrate": 2000000,
            "codec": "h264",
            "first_frame": 0,
            "fps": 15,
            "frames": 30,
            "height": 360,
            "keyframe_seconds": 1,
            "width": 640,
        },
    },
    "prebuffer": True,
    "prebuffer_seconds": 4,
    "sha256": "e414e85b09a4cead466678a5540960c8257672b8076fc930e17fa02eadeac00e",
    "size": 299780,
    "start": {"mono": 1000, "synced": True, "wall": 1773451800},
    "track": "main",
}
COMMAND = {"nonce": "n-1", "issued": 1773451700.5, "agency": "agency-1"}
BODIES: list[tuple[type[Any], dict[str, Any]]] = [
    (SegmentManifest, SEGMENT),
    (
        SegmentManifest,
        {
            **SEGMENT,
            "recovered": True,
            "location": {"fix": "unknown", "start": None, "end": None, "max_fix_age": None},
        },
    ),
    (SegmentManifest, {**SEGMENT, "media": {**SEGMENT["media"], "audio": None}}),
    (
        SessionOpen,
        {
            "badges": ["012345"],
            "category": "inspection",
            "prebuffer_seconds": 4,
            "tracks": ["main"],
        },
    ),
    (
        SessionOpen,
        {
            "badges": [],
            "category": "interview",
            "prebuffer_seconds": 0,
            "tracks": ["subject", "room", "pip"],
            "room": "room-0101",
            "case": "X-1",
            "person": None,
            "command": COMMAND,
            "trigger": "command",
        },
    ),
    (
        SessionOpen,
        {
            "badges": [],
            "category": "interview",
            "prebuffer_seconds": 0,
            "tracks": ["room"],
            "room": None,
            "trigger": "key",
        },
    ),
    (SessionClose, {"segments": 4, "tracks": {"main": 4}}),
    (SessionClose, {"segments": 2, "tracks": {"room": 2}, "trigger": "door"}),
    (
        SessionClose,
        {
            "segments": 0,
            "tracks": {},
            "case": "X-1",
            "person": "P",
            "command": COMMAND,
            "trigger": "command",
        },
    ),
    (
        Interruption,
        {
            "id": "g-1",
            "cause": "camera",
            "affects": ["video"],
            "start": {"wall": 1773451801.25, "mono": 1001.25, "synced": True},
            "end": None,
            "detail": "no frame",
            "tracks": ["room", "pip"],
        },
    ),
    (
        Interruption,
        {
            "id": "g-2",
            "cause": "power_loss",
            "affects": ["video", "audio", "location"],
            "start": {"wall": 1773451801.25, "mono": 5.5, "synced": False},
            "end": {"wall": 1773451900, "mono": 5.5, "synced": True},
            "detail": "found at boot",
        },
    ),
    (InterruptionEnd, {"id": "g-1", "end": {"wall": 1773451805, "mono": 1005, "synced": True}}),
    (
        VoiceExplanation,
        {
            "interruption": "g-1",
            "kind": "voice",
            "clip": {
                "start": {"wall": 1773451805, "mono": 1005, "synced": True},
                "end": {"wall": 1773451815, "mono": 1015, "synced": True},
            },
        },
    ),
    (
        Marker,
        {
            "type": "credential_shown",
            "note": "",
            "location": {"fix": True, "lat": 31.8, "lon": 117.2, "age": 0.1},
        },
    ),
]


@pytest.mark.parametrize(("kind", "body"), BODIES)
def test_a_body_parses_and_turns_back_into_the_same_bytes(
    kind: type[Any], body: dict[str, Any]
) -> None:
    typed = kind.from_body(copy.deepcopy(body))
    assert canonical(typed.to_body()) == canonical(body)
    assert kind.from_body(typed.to_body()) == typed


def test_a_segment_built_from_its_parts_is_what_the_recorder_sealed() -> None:
    m = SegmentManifest.from_body(SEGMENT)
    assert (m.track_name, m.index, m.duration, m.prebuffer) == ("main", 0, 2, True)
    assert m.location == Location(
        "ok", (31.820603333333334, 117.22721333333334), (31.820606666666666, 117.22722666666667)
    )
    rebuilt = SegmentManifest(
        index=0,
        file=SEGMENT["file"],
        sha256=SEGMENT["sha256"],
        size=299780,
        start=Moment(1773451800.0, 1000.0, True),
        end=Moment(1773451802.0, 1002.0, True),
        video=m.video,
        audio=m.audio,
        prebuffer_seconds=4.0,
        location=m.location,
        badges=["012345"],
    )
    assert canonical(rebuilt.to_body()) == canonical(SEGMENT)


def test_a_room_session_names_its_case_command() -> None:
    _, body = BODIES[4]
    opened = SessionOpen.from_body(body)
    assert opened.case == CaseCommand("X-1", None, "n-1", 1773451700.5, "agency-1")
    assert (opened.room, opened.trigger, opened.first_track) == ("room-0101", "command", "subject")


def test_a_segment_sealed_before_tracks_were_named_is_on_the_main_track() -> None:
    old = {k: v for k, v in SEGMENT.items() if k != "track"}
    m = SegmentManifest.from_body(old)
    assert m.track is None and m.track_name == "main"
    assert "track" not in m.to_body()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda b: b.pop("sha256"), "'sha256' is missing"),
        (lambda b: b.update(index="0"), "'index' is not an integer"),
        (lambda b: b.update(index=True), "'index' is not an integer"),
        (lambda b: b["media"]["video"].pop("frames"), "media.video: 'frames' is missing"),
        (lambda b: b["start"].update(wall="noon"), "start: 'wall' is not a number"),
        (lambda b: b.update(location={"fix": "ok", "start": [1]}), "'start' is not [lat, lon]"),
        (lambda b: b.update(badges=[1]), "'badges' is not a list of strings"),
        (lambda b: b.update(media=[]), "'media' is not an object"),
    ],
)
def test_a_malformed_manifest_is_named(change: Any, named: str) -> None:
    body = copy.deepcopy(SEGMENT)
    change(body)
    with pytest.raises(ManifestError, match="segment manifest") as e:
        SegmentManifest.from_body(body)
    assert named in str(e.value)


def test_a_body_that_is_not_an_object_is_named() -> None:
    with pytest.raises(ManifestError, match="interruption: not an object"):
        Interruption.from_body(["g-1"])
    with pytest.raises(ManifestError, match="not a voice explanation"):
        VoiceExplanation.from_body({"interruption": "g-1", "kind": "written", "statement": {}})


def test_segment_of_an_entry_names_the_entry() -> None:
    import nacl.signing

    sealer = Sealer(nacl.signing.SigningKey.generate(), "bwc-1", None)
    at = Moment(1773451800.0, 1.0, True)
    good = sealer.seal("segment", SEGMENT, at, "s")
    assert segment(good) == SegmentManifest.from_body(SEGMENT)
    bad = sealer.seal("segment", {**SEGMENT, "size": "big"}, at, "s")
    with pytest.raises(ManifestError, match=f"entry {bad.seq}: segment manifest: 'size'"):
        segment(bad)
    with pytest.raises(ManifestError, match="is a boot, not a segment"):
        segment(sealer.seal("boot", {}, at))


TYPES = {
    "segment": SegmentManifest,
    "session_open": SessionOpen,
    "session_close": SessionClose,
    "interruption": Interruption,
    "interruption_end": InterruptionEnd,
    "marker": Marker,
}


def test_every_body_the_recorder_sealed_is_its_type_to_the_byte(recorded: Any) -> None:
    from common.archive.device_directory import load_chain
    from evidence.seal import Entry

    kinds = set()
    for _, e in load_chain(recorded):
        assert isinstance(e, Entry)
        if e.kind in TYPES:
            kinds.add(e.kind)
            assert canonical(TYPES[e.kind].from_body(e.body).to_body()) == canonical(e.body)
    assert {"segment", "session_open", "session_close", "marker"} <= kinds
