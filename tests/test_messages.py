"""Every ``ack``, ``rejected``, ``resend`` and retained status is built and parsed by one
owner (:mod:`evidence.messages`), a chunked segment's ``blob/init``, ``blob/finish`` and
``missing`` by :mod:`evidence.blob_messages`: what devices and stores in the field send
today still reads, what does not fit is refused naming the field, and the store reads a
status the same way wherever it reads one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import sync_plan as plan
from common.commands import make_command
from evidence import protocol as p
from evidence.blob_messages import BlobFinish, BlobInit, Missing
from evidence.messages import RECORDER_FIELDS, Ack, Rejected, Resend, Status
from store.commands import device_online
from store.db import Database
from store.delivery import Delivery
from store.mailbox import Mailbox
from store.report import build_report
from tests.fixtures.store import DEV, NOW, _codes, _store

# What a recording body camera published before the model (agent.sync_plan.status
# with the recorder's status beside it), as a store receives it from a device in the field.
TODAYS_STATUS = (
    b'{"device":"bwc-0042","online":true,"state":"recording","session":"s-1",'
    b'"close_armed":false,"led":"on","badges":["012345"],"chain_head":7,"last_error":null,'
    b'"interrupted":[],"tracks":["main","audio"],"room":null,"panel":null,'
    b'"room_problem":null,"explain_prompt":false,"unexplained":[],"load":{"frame":0.4},'
    b'"backlog":{"entries":2,"blobs":1,"bytes":5000,"oldest_unsynced_end":1773400000.0},'
    b'"oldest_unsynced_age":3600.0,"deadline":"ok"}'
)
TODAYS_WILL = b'{"device":"bwc-0042","online":false}'  # the broker's, for a device gone


# -- rejected ------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(p.REFUSALS))
def test_a_refusal_round_trips_with_every_code(code: str) -> None:
    sent = Rejected.of(p.up(DEV, "entry"), code, "why")
    assert Rejected.parse(sent.to_bytes()) == sent
    assert (sent.code, sent.text, sent.topic) == (code, "why", p.up(DEV, "entry"))


def test_refusals_of_older_stores_still_read() -> None:
    assert Rejected.parse(b"entry 4: bad signature") == Rejected(reason="entry 4: bad signature")
    older = Rejected.parse(b'{"topic":"unbroken/d/bwc-1/entry","reason":"fork"}')
    assert older == Rejected(topic="unbroken/d/bwc-1/entry", reason="fork", code="")


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b'{"reason":"x","code":"nope"}', "rejected: 'code' is 'nope', not 'malformed'"),
        (b'{"reason":"x","code":7}', "rejected: 'code' is a number, not 'malformed'"),
        (b'{"reason":["x"]}', "rejected: 'reason' is a list, not a string"),
        (b'{"code":"quota"}', "rejected: 'reason' is missing"),
        (b'{"reason":"x","by":"store-1"}', "rejected: 'by' is no field of this message"),
        (json.dumps({"reason": "x" * 501}).encode(), "rejected: 'reason': String should"),
    ],
)
def test_a_refusal_that_does_not_fit_is_refused_naming_the_field(payload: bytes, says: str) -> None:
    with pytest.raises(p.ProtocolError) as e:
        Rejected.parse(payload)
    assert str(e.value).startswith(says), e.value


def test_the_store_says_a_code_of_its_own_making_as_its_own_fault() -> None:
    sent = Rejected.of("t" * 1000, "disk_on_fire", "y" * 1000)
    assert sent.code == "store_error" and sent.reason.startswith("disk_on_fire: y")
    assert len(sent.topic) == 300 and len(sent.reason) == 500


# -- resend --------------------------------------------------------------------------


def test_a_resend_reads_as_stores_send_it_and_round_trips() -> None:
    assert Resend.parse(b'{"retry": 0}') == Resend() == Resend.parse(Resend().to_bytes())
    assert Resend().to_bytes() == b'{"retry":0}'  # as stores have always sent it
    assert Resend.parse(b"{}").retry == 0


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b'{"retry": -1}', "resend: 'retry': Input should be greater than or equal to 0"),
        (b'{"retry": "now"}', "resend: 'retry' is a string, not an integer"),
        (b'{"retry": 0, "all": true}', "resend: 'all' is no field of this message"),
        (b"[0]", "resend: not a JSON object"),
    ],
)
def test_a_resend_that_does_not_fit_is_refused(payload: bytes, says: str) -> None:
    with pytest.raises(p.ProtocolError) as e:
        Resend.parse(payload)
    assert str(e.value).startswith(says), e.value


# -- acks and a segment in chunks ----------------------------------------------------

H = "ab" * 32


def test_acks_and_chunk_messages_read_as_stores_and_devices_send_them() -> None:
    # the bytes stores and devices have always sent
    assert Ack(seq=4, ok=True).to_bytes() == b'{"seq":4,"ok":true,"reason":"","code":""}'
    assert Ack.parse(b'{"seq":4,"ok":false,"reason":"fork","code":"refused_entry"}') == Ack(
        seq=4, ok=False, reason="fork", code="refused_entry"
    )
    init = BlobInit(sha256=H, size=2500, chunk_size=1024, seq=7, chunks=(H, H, H))
    assert json.loads(init.to_bytes())["chunks"] == [H, H, H]
    assert BlobInit.parse(init.to_bytes()) == init
    assert (init.offsets(), init.lacking({1024}), init.chunk_length(2048)) == (
        [0, 1024, 2048],
        [0, 2048],
        452,
    )
    missing = Missing(sha256=H, offsets=[0], reason="incomplete", retry=1)
    assert (
        missing.to_bytes()
        == b'{"sha256":"%s","offsets":[0],"reason":"incomplete","retry":1.0}' % H.encode()
    )
    assert Missing.parse(missing.to_bytes()) == missing
    assert BlobFinish.parse(b'{"sha256":"%s"}' % H.encode()).sha256 == H


def test_a_store_refusal_with_a_code_of_its_own_is_its_own_fault() -> None:
    ack = Ack.refused(9, "disk_on_fire", "x" * 900)
    assert (ack.ok, ack.code, len(ack.reason)) == (False, "store_error", 500)


@pytest.mark.parametrize(
    ("message", "payload", "says"),
    [
        (Ack, b'{"seq":0,"ok":true}', "ack: 'seq': Input should be greater than or equal to 1"),
        (Ack, b'{"seq":1,"ok":"yes"}', "ack: 'ok' is a string, not true or false"),
        (Ack, b'{"seq":1,"ok":false,"code":"nope"}', "ack: 'code' is 'nope', not 'malformed'"),
        (Ack, b'{"seq":1}', "ack: 'ok' is missing"),
        (BlobInit, b'{"sha256":"AB","size":1,"chunk_size":1024,"seq":1,"chunks":[]}',
         "blob init: 'sha256': not a lowercase hex SHA-256"),
        (BlobInit, b'{"sha256":"%s","size":1,"chunk_size":1024,"seq":1,"chunks":[]}' % H.encode(),
         "blob init: the message: 0 chunk hashes for 1 chunks"),
        (BlobInit, b'{"sha256":"%s","size":5000,"chunk_size":10,"seq":1,"chunks":[]}' % H.encode(),
         "blob init: the message: chunk_size 10 is below 1024 bytes"),
        (BlobInit, b'{"sha256":"x","size":true,"chunk_size":1024,"seq":1,"chunks":[]}',
         "blob init: 'sha256': not a lowercase hex SHA-256; 'size' is true, not an integer"),
        (Missing, b'{"sha256":"%s","offsets":[-1]}' % H.encode(),
         "missing: 'offsets.0': Input should be greater than or equal to 0"),
        (Missing, b'{"sha256":"%s","offsets":[],"retry":7200}' % H.encode(),
         "missing: 'retry': Input should be less than or equal to 3600"),
        (BlobFinish, b'{"sha256":"%s","size":1}' % H.encode(), "finish: 'size' is no field"),
    ],
)  # fmt: skip
def test_an_ack_or_chunk_message_that_does_not_fit_is_refused_naming_the_field(
    message: type[Ack | BlobInit | Missing | BlobFinish], payload: bytes, says: str
) -> None:
    with pytest.raises(p.ProtocolError) as e:
        message.parse(payload)
    assert str(e.value).startswith(says), e.value


# -- the status ----------------------------------------------------------------------


def test_todays_status_and_will_read_and_write_back_the_same_document() -> None:
    status = Status.parse(TODAYS_STATUS)
    assert status.online and status.backlog is not None and status.backlog.blobs == 1
    assert status.deadline == "ok" and status.recorder["state"] == "recording"
    assert status.to_doc() == json.loads(TODAYS_STATUS)
    will = Status.parse(TODAYS_WILL)
    assert not will.online and will.backlog is None and will.recorder == {}
    assert will.to_bytes() == TODAYS_WILL


def test_a_recording_device_builds_a_status_the_store_reads(tmp_path: Path) -> None:
    from simulator.device import SimDevice
    from tests.fixtures.config import small_config

    dev = SimDevice(tmp_path / "d", small_config(prebuffer_seconds=0))
    dev.start()
    try:
        dev.recorder.open_session()
        dev.run(1)
        recorder = dev.recorder.status()
    finally:
        dev.stop()
    backlog = plan.backlog(3, [plan.Segment(3, "a" * 64, 10, "s/1.mp4", NOW - 7200)])
    sent = plan.status(DEV, True, backlog, NOW, (12.0, 20.0), recorder)
    status = Status.parse(sent.to_bytes())
    assert status.device == DEV and status.recorder["state"] == recorder["state"]
    assert status.oldest_unsynced_age == 7200.0 and status.deadline == "ok"
    assert status == sent
    offline = plan.status(DEV, False, backlog, NOW, (12.0, 20.0), recorder)
    assert Status.parse(offline.to_bytes()).recorder == {}


def _todays(**changes: Any) -> dict[str, Any]:
    doc = json.loads(TODAYS_STATUS)
    doc.update(changes)
    return {k: v for k, v in doc.items() if v != "-"}


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        (_todays(online="yes"), "status: 'online' is a string, not true or false"),
        (_todays(device="-"), "status: 'device' is missing"),
        (_todays(device=""), "status: 'device': String should have at least 1 character"),
        (_todays(backlog=[1]), "status: 'backlog' is a list, not an object"),
        (_todays(backlog={"entries": 0, "blobs": -1, "bytes": 0, "oldest_unsynced_end": None}),
         "status: 'backlog.blobs': Input should be greater than or equal to 0"),
        (_todays(backlog={"entries": 0, "blobs": 1, "bytes": 0}),
         "status: 'backlog.oldest_unsynced_end' is missing"),
        (_todays(backlog={"entries": 0, "blobs": 1.5, "bytes": 0, "oldest_unsynced_end": None}),
         "status: 'backlog.blobs' is a number, not an integer"),
        (_todays(oldest_unsynced_age="old"), "status: 'oldest_unsynced_age' is a string, not"),
        (_todays(deadline={"level": "ok"}), "status: 'deadline' is an object, not a string"),
        ({"device": DEV, "online": True} | {f"f{i}": i for i in range(RECORDER_FIELDS + 1)},
         f"status: 'recorder': {RECORDER_FIELDS + 1} recorder fields, more than"),
    ],
)  # fmt: skip
def test_a_status_that_does_not_fit_is_refused_naming_the_field(
    doc: dict[str, Any], says: str
) -> None:
    with pytest.raises(p.ProtocolError) as e:
        Status.parse(p.dumps(doc))
    assert str(e.value).startswith(says), e.value


@pytest.mark.parametrize("payload", [b"[]", b'"online"', b"{", b'{"online": NaN}'])
def test_a_status_that_is_no_object_is_refused(payload: bytes) -> None:
    with pytest.raises(p.ProtocolError, match=r"^status: "):
        Status.parse(payload)


def test_a_reader_that_takes_what_it_can_keeps_what_fits() -> None:
    kept, problems = Status.fitting(_todays(online=1, backlog={"blobs": "many", "bytes": 9}))
    assert problems == [
        "'online' is a number, not true or false",
        "'backlog.blobs' is a string, not an integer",
    ]
    assert "online" not in kept and kept["backlog"] == {"bytes": 9} and kept["state"]
    assert Status.fitting({"online": False}) == ({"online": False}, [])  # absent: no problem


# -- the store reads a status through the model ---------------------------------------


def _stored(db: Database) -> list[str]:
    return [r["status"] for r in db.query("select status from statuses where device = ?", (DEV,))]


def test_the_store_keeps_a_status_that_fits_and_refuses_one_that_does_not(
    db: Database, tmp_path: Path
) -> None:
    ingest, _ = _store(db, tmp_path)
    assert ingest.handle(p.up(DEV, "status"), TODAYS_STATUS, NOW) == []
    assert [json.loads(s) for s in _stored(db)] == [json.loads(TODAYS_STATUS)]
    assert device_online(db, DEV) is True
    hostile = p.dumps(_todays(online="yes"))
    (reply,) = ingest.handle(p.up(DEV, "status"), hostile, NOW + 1)
    refusal = Rejected.parse(reply[1])
    assert reply[0] == p.reply(DEV, "rejected") and refusal.code == "malformed"
    assert refusal.reason == "status: 'online' is a string, not true or false"
    other = p.dumps(_todays(device="bwc-9"))
    assert _codes(ingest.handle(p.up(DEV, "status"), other, NOW + 2)) == ["malformed"]
    assert [json.loads(s) for s in _stored(db)] == [json.loads(TODAYS_STATUS)]  # the last fit
    ingest.handle(p.up(DEV, "status"), TODAYS_WILL, NOW + 3)
    assert device_online(db, DEV) is False
    (device,) = build_report(db, NOW + 4)["devices"]
    assert device["status"]["online"] is False and device["status_unreadable"] is None


def test_a_stored_status_that_does_not_read_is_no_online_device(db: Database) -> None:
    with db.transaction():
        db.execute("insert into statuses values (?, ?, ?)", (DEV, '{"online": true}', NOW))
    assert device_online(db, DEV) is None


def test_commands_go_to_a_device_only_on_its_own_status_saying_online(db: Database) -> None:
    agency = nacl.signing.SigningKey.generate()
    data, cmd = make_command(agency, DEV, "session_open", {"case": "A-1"}, NOW, 600)
    Mailbox(db).queue(cmd, data, NOW)
    desk = Delivery(Mailbox(db), lambda d: [], lambda d: None)
    for payload in (p.dumps(_todays(device="bwc-9")), b'{"online": true}', b"online"):
        rest, out = desk.take([(p.up(DEV, "status"), payload, {})], NOW + 1)
        assert len(rest) == 1 and out == []  # on to Ingest, which refuses it
    _, out = desk.take([(p.up(DEV, "status"), TODAYS_STATUS, {})], NOW + 2)
    assert out == [(p.command(DEV, "session_open"), data)]


# -- fuzzed: any JSON where a field of a message was ----------------------------------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=10,
)
_FIELDS = ["device", "online", "backlog", "oldest_unsynced_age", "deadline", "state"]
_FIELDS += ["reason", "code", "topic", "retry", "seq", "ok", "sha256", "offsets", "chunks"]
_MESSAGES: list[tuple[Any, str]] = [(Rejected, "rejected"), (Resend, "resend"), (Status, "status")]
_MESSAGES += [(Ack, "ack"), (BlobInit, "blob init"), (Missing, "missing"), (BlobFinish, "finish")]


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(_FIELDS), value=_JSON, drop=st.booleans(), noise=st.binary(max_size=30))
def test_fuzz_every_message_is_read_or_refused_naming_it(
    key: str, value: Any, drop: bool, noise: bytes
) -> None:
    doc = _todays() | {"reason": "r", "code": "quota", "topic": "t"}
    if drop:
        doc.pop(key, None)
    else:
        doc[key] = value
    for payload in (p.dumps(doc), p.dumps({key: value}), noise):
        for message, name in _MESSAGES:
            try:
                message.parse(payload)
            except p.ProtocolError as e:
                assert str(e).startswith(f"{name}: "), e
    kept, _ = Status.fitting(doc)
    assert Status.fitting(kept) == (kept, [])  # what is kept fits
