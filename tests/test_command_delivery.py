"""Agency commands arrive and are answered (issue 23): the store keeps each command until its
device answers or it expires, delivers it when the device comes online, and records the
device's signed answer; ``store send`` says applied, refused: reason, or pending."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nacl.signing
import pytest

from common.commands import CommandAnswer, make_answer, make_command, open_answer
from common.mqtt import tls_client
from device.clock import SimClock
from evidence import protocol as p
from evidence import signed
from evidence.names import ProvisionError
from evidence.seal import key_id
from provisioning.registry import RegisteredKey
from simulator.device import SimDevice
from simulator.site import LocalSite, device_config
from store.commands import APPLIED, PENDING, REFUSED, outcome
from store.config import load_store_config
from store.db import Database
from store.delivery import Delivery
from store.mailbox import RESEND_SECONDS, Mailbox, QueuedCommand, delivery_due, state_at
from tests.fixtures.room import SMALL, entries
from unbroken.cli import main

AGENCY = nacl.signing.SigningKey(bytes(range(32)))
DEVICE = nacl.signing.SigningKey(bytes(range(1, 33)))


def _queued(**kw: object) -> QueuedCommand:
    base: dict[str, object] = {
        "nonce": "0" * 32,
        "device": "room-1",
        "command": "session_open",
        "data": b"{}",
        "issued": 100.0,
        "expires": 700.0,
        "queued": 100.0,
        "sent": None,
        "sends": 0,
        "state": "pending",
        "reason": None,
        "seq": None,
        "answered": None,
        "case": "A-1",
    }
    return QueuedCommand(**{**base, **kw})  # type: ignore[arg-type]


# -- the rules, pure ------------------------------------------------------------------------


def test_a_command_nobody_answered_expires_with_its_validity() -> None:
    assert state_at("pending", expires=700, now=699.9) == "pending"
    assert state_at("pending", expires=700, now=700) == "expired"
    assert state_at("applied", expires=700, now=9999) == "applied"  # an answer stands


def test_delivery_is_due_when_never_sent_on_coming_online_or_after_the_resend_time() -> None:
    assert delivery_due(_queued(), now=100, came_online=False)
    sent = _queued(sent=200.0, sends=1)
    assert not delivery_due(sent, now=200 + RESEND_SECONDS - 1, came_online=False)
    assert delivery_due(sent, now=200 + RESEND_SECONDS, came_online=False)
    assert delivery_due(sent, now=201, came_online=True)
    assert not delivery_due(_queued(state="applied"), now=201, came_online=True)
    assert not delivery_due(_queued(state="expired"), now=201, came_online=True)


def test_what_store_send_says_of_each_outcome() -> None:
    applied = outcome(_queued(state="applied", seq=12), online=True)
    assert applied.status == APPLIED and applied.text.startswith("applied: session_open")
    assert "chain entry 12" in applied.text
    refused = outcome(_queued(state="refused", reason="no session is open"), online=True)
    assert refused.status == REFUSED and refused.text.startswith("refused: no session is open")
    offline = outcome(_queued(), online=False)
    assert offline.status == PENDING
    assert offline.text.startswith("pending: device offline, queued until 1970-01-01")
    never = outcome(_queued(), online=None).text
    assert never.startswith("pending: device offline (no status from it yet), queued until")
    assert "online but has not answered" in outcome(_queued(), online=True).text
    away = outcome(_queued(), online=None, unreachable="the broker at h:1: refused")
    assert away.status == PENDING and "broker not reachable" in away.text
    expired = outcome(_queued(state="expired"), online=False)
    assert expired.status == REFUSED and expired.text.startswith("expired: room-1 never answered")


def test_signing_refuses_what_a_room_would_refuse_naming_the_allowed_values() -> None:
    with pytest.raises(ProvisionError, match="'penalty', 'coercive_measure', 'inspection'"):
        make_command(
            AGENCY, "room-1", "session_open", {"case": "A", "category": "interview"}, 0, 60
        )
    with pytest.raises(ProvisionError, match=r"args\.case: Field required"):
        make_command(AGENCY, "room-1", "session_open", {"badges": ["1"]}, 0, 60)


def test_an_answer_verifies_with_the_device_key_and_names_its_device() -> None:
    answer = make_answer("room-1", "a" * 32, "session_open", "applied", "", 7, 5.0)
    data = signed.sign(DEVICE, answer.model_dump())
    assert open_answer(data, [DEVICE.verify_key], "room-1") == answer
    with pytest.raises(ProvisionError, match="does not verify"):
        open_answer(data, [AGENCY.verify_key], "room-1")
    with pytest.raises(ProvisionError, match="for device 'room-1' sent by 'room-2'"):
        open_answer(data, [DEVICE.verify_key], "room-2")
    bad = signed.sign(DEVICE, {**answer.model_dump(), "outcome": "maybe"})
    with pytest.raises(ProvisionError, match="outcome"):
        open_answer(bad, [DEVICE.verify_key], "room-1")


# -- the mailbox, on SQLite and PostgreSQL ----------------------------------------------------


def _command(device: str, ttl: float = 600, now: float = 1000.0) -> tuple[bytes, object]:
    return make_command(AGENCY, device, "session_open", {"case": "A-1"}, now, ttl)


def _answer(device: str, nonce: str, outcome: str = "applied", reason: str = "") -> bytes:
    a = make_answer(device, nonce, "session_open", outcome, reason, 9, 1001.0)  # type: ignore[arg-type]
    return signed.sign(DEVICE, a.model_dump())


def _keys(device: str) -> list[RegisteredKey]:
    return [RegisteredKey(key_id(DEVICE.verify_key), DEVICE.verify_key, 0.0, None)]


def test_the_mailbox_delivers_on_coming_online_and_keeps_the_first_answer(db: Database) -> None:
    box = Mailbox(db)
    data, cmd = _command("room-1")
    kept = box.queue(cmd, data, 1000)  # type: ignore[arg-type]
    assert kept.state == "pending" and kept.case == "A-1" and kept.data == data
    box.queue(cmd, data, 1001)  # type: ignore[arg-type]  # the same command again: one row
    assert len(box.listing(1001)) == 1
    desk = Delivery(box, _keys, lambda d: None)
    online = p.dumps({"device": "room-1", "online": True})
    offline = p.dumps({"device": "room-1", "online": False})
    status = (p.up("room-1", "status"), offline, {})
    rest, out = desk.take([status], 1002)
    assert rest == [status] and out == []  # offline: nothing sent, the status goes to Ingest
    rest, out = desk.take([(p.up("room-1", "status"), online, {})], 1003)
    assert out == [(p.command("room-1", "session_open"), data)]
    _, out = desk.take([(p.up("room-1", "status"), online, {})], 1013)
    assert out == []  # sent 10 s ago, still online: not yet again
    _, out = desk.take([(p.up("room-1", "status"), online, {})], 1003 + RESEND_SECONDS)
    assert len(out) == 1  # no answer for a while: delivered again
    nonce = cmd.nonce  # type: ignore[attr-defined]
    answer = (p.up("room-1", "answer"), _answer("room-1", nonce), {})
    rest, out = desk.take([answer], 1040)
    assert rest == [] and out == [(p.answer("room-1", nonce), answer[1])]
    got = box.get(nonce, 1041)
    assert got is not None and got.state == "applied" and got.seq == 9 and got.sends == 2
    desk.take([(p.up("room-1", "answer"), _answer("room-1", nonce, "refused", "x"), {})], 1050)
    got = box.get(nonce, 1051)
    assert got is not None and got.state == "applied"  # the first answer stands
    _, out = desk.take(
        [(p.up("room-1", "status"), offline, {}), (p.up("room-1", "status"), online, {})], 1060
    )
    assert out == []  # answered: never delivered again


def test_forged_foreign_and_unsolicited_answers_change_nothing(db: Database) -> None:
    box = Mailbox(db)
    data, cmd = _command("room-1")
    box.queue(cmd, data, 1000)  # type: ignore[arg-type]
    nonce = cmd.nonce  # type: ignore[attr-defined]
    forged = make_answer("room-1", nonce, "session_open", "refused", "forged", None, 1.0)
    desk = Delivery(box, _keys, lambda d: None)
    bad = [
        (p.up("room-1", "answer"), signed.sign(AGENCY, forged.model_dump()), {}),
        (p.up("room-2", "answer"), _answer("room-1", nonce), {}),  # another device's
        (p.up("room-1", "answer"), _answer("room-1", "b" * 32), {}),  # never sent
        (p.up("room-1", "answer"), b"\x00garbage", {}),
    ]
    rest, out = desk.take(bad, 1001)
    assert rest == [] and out == []
    got = box.get(nonce, 1002)
    assert got is not None and got.state == "pending"
    revoked = Delivery(box, _keys, lambda d: 5.0)
    _, out = revoked.take([(p.up("room-1", "answer"), _answer("room-1", nonce), {})], 1003)
    assert out == [] and box.get(nonce, 1004).state == "pending"  # type: ignore[union-attr]
    assert revoked.deliver("room-1", 1005, came_online=True) == []


def test_expired_session_opens_are_interviews_not_recorded(db: Database) -> None:
    box = Mailbox(db)
    data, cmd = _command("room-1", ttl=60)
    box.queue(cmd, data, 1000)  # type: ignore[arg-type]
    assert box.not_recorded(1059) == []
    [lost] = box.not_recorded(1061)
    assert lost.state == "expired" and lost.case == "A-1" and lost.device == "room-1"
    assert Delivery(box, _keys, lambda d: None).deliver("room-1", 1061, came_online=True) == []


# -- the device answers every command -----------------------------------------------------


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
def test_the_room_answers_applied_refused_and_a_repeat_applied_again(
    tmp_path: Path, background: bool
) -> None:
    """Sealing on the chain's own thread (as the device does in real time), the pre-event
    segments are sealed after the session opens: the answer still names the open."""
    with LocalSite(tmp_path / "site") as site:
        settings = {"recording": {**SMALL, "prebuffer_seconds": 2}}
        data = site.provision_device("room-0104", settings=settings, room="104")
        dev = SimDevice(
            data,
            device_config(data),
            clock=SimClock(wall_start=time.time()),
            seal_in_background=background,
        )
        answers: list[bytes] = []
        dev.recorder.commands.answers = answers.append
        dev.start()
        try:
            dev.run(3)
            rec = dev.recorder
            key = [k.verify_key for k in site.agency.registry.device_keys("room-0104")]
            opening = site.session_command("room-0104", "session_open", case="C-1")
            entry = rec.apply_command(opening)
            assert entry is not None and entry.kind == "session_open"
            first = open_answer(answers[-1], key, "room-0104")
            assert (first.outcome, first.seq, first.command) == (
                "applied",
                entry.seq,
                "session_open",
            )
            assert rec.apply_command(opening) is None  # delivered again: not applied again
            again = open_answer(answers[-1], key, "room-0104")
            assert (again.outcome, again.nonce, again.reason, again.seq) == (
                "applied",
                first.nonce,
                "delivered again: applied once, before",
                entry.seq,  # the entry sealed when it was applied
            )
            assert len(entries(data, "session_open")) == 1
            wrong = site.session_command("room-0104", "session_close", case="Z-9")
            rec.apply_command(wrong)
            refused = open_answer(answers[-1], key, "room-0104")
            assert refused.outcome == "refused" and "case 'C-1'" in refused.reason
            assert rec.session is not None  # still recording
            foreign = site.session_command("room-0104", "session_close", case="C-1")
            tampered = foreign.replace(b'"C-1"', b'"C-2"')
            rec.apply_command(tampered)
            forged = open_answer(answers[-1], key, "room-0104")
            assert forged.outcome == "refused" and "signature" in forged.reason
            assert isinstance(forged, CommandAnswer)
        finally:
            dev.stop()


# -- end to end: a real broker, a store worker, the room's own process --------------------------


def _send(config: Path, command: Path, wait: float) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["store", "send", "--config", str(config), str(command), "--wait", str(wait)])
    return code, out.getvalue()


def _report(config: Path) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["store", "report", "--config", str(config)]) == 0
    return out.getvalue()


@pytest.mark.slow
def test_a_room_started_after_the_send_records_the_session(tmp_path: Path) -> None:
    with LocalSite(tmp_path / "site") as site:
        site.start_broker()
        site.start_store()
        data = site.provision_device("room-0107", settings={"recording": SMALL}, room="107")
        case_system = load_store_config(site.store_config("case"))  # the broker learns it
        site.start_broker()
        # the case system: a client of its own with a store certificate, reading answers
        heard: list[tuple[str, bytes]] = []
        b = case_system.broker
        client = tls_client("case-system", b.ca, b.cert, b.key)
        client.on_message = lambda _c, _u, m: heard.append((m.topic, bytes(m.payload)))
        client.connect("127.0.0.1", b.port)
        client.subscribe("unbroken/a/#", qos=1)
        client.loop_start()
        outbox = tmp_path / "outbox"
        outbox.mkdir()
        opening = outbox / "open.cmd"
        opening.write_bytes(site.session_command("room-0107", "session_open", case="D-7"))
        config = site.store_config()
        code, said = _send(config, opening, wait=1)
        assert code == PENDING, said
        assert said.startswith("pending: device offline (no status from it yet), queued"), said
        # a command that expires before the room ever connects: an interview not recorded
        lost = outbox / "lost.cmd"
        site.agency.session_command(
            "room-0107", "session_open", {"case": "E-8"}, lost, time.time(), ttl=2
        )
        assert _send(config, lost, wait=0)[0] == PENDING
        time.sleep(2.5)
        room = subprocess.Popen(
            [sys.executable, "-m", "unbroken.cli", "agent", "run", "--data", str(data), "--sim"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            box = Mailbox(site.db())
            nonce = json.loads(opening.read_bytes())["payload"]["nonce"]
            deadline = time.monotonic() + 60
            while (got := box.get(nonce, time.time())) is not None and got.state == "pending":
                assert time.monotonic() < deadline, "the room never answered"
                assert room.poll() is None, room.stderr.read().decode() if room.stderr else ""
                time.sleep(0.2)
            assert got is not None and got.state == "applied", got
            deadline = time.monotonic() + 10
            while not heard:
                assert time.monotonic() < deadline, "the case system heard no answer"
                time.sleep(0.1)
            [(topic, answer)] = heard[:1]
            assert topic == p.answer("room-0107", nonce)
            keys = [k.verify_key for k in site.agency.registry.device_keys("room-0107")]
            assert open_answer(answer, keys, "room-0107").outcome == "applied"
            code, said = _send(config, opening, wait=5)  # sent again: the answer it has
            assert code == APPLIED and said.startswith("applied: session_open on room-0107")
            wrong = outbox / "wrong.cmd"
            wrong.write_bytes(site.session_command("room-0107", "session_close", case="Z-1"))
            code, said = _send(config, wrong, wait=30)
            assert code == REFUSED, said
            assert said.startswith("refused: session_close for case 'Z-1'"), said
            listing = io.StringIO()
            with contextlib.redirect_stdout(listing):
                main(["store", "commands", "--config", str(config), "--device", "room-0107"])
            rows = listing.getvalue()
            assert "session_open case D-7  applied" in rows and "case E-8  expired" in rows
            deadline = time.monotonic() + 30
            while "room 107 (room-0107)" not in (said := _report(config)):
                assert time.monotonic() < deadline, said  # the room's assignment syncs
                time.sleep(0.5)
            assert "INTERVIEW NOT RECORDED: case E-8, room 107 (room-0107)" in said
            assert "expired" in said and "1 interview NOT RECORDED" in said
            assert "case D-7" not in said.split("Device")[0]  # recorded: not listed as lost
        finally:
            room.send_signal(signal.SIGTERM)
            room.wait(30)
            client.loop_stop()
            client.disconnect()
        opened = entries(data, "session_open")
        assert [e.body["case"] for e in opened] == ["D-7"]
        assert opened[0].body["room"] == "107"
        assert [c.case for c in box.not_recorded(time.time())] == ["E-8"]


def test_send_with_no_broker_keeps_the_command_and_blames_the_broker(tmp_path: Path) -> None:
    with LocalSite(tmp_path / "site") as site:  # no broker started: nothing listens
        site.provision_device("room-0108", settings={"recording": SMALL}, room="108")
        opening = tmp_path / "open.cmd"
        opening.write_bytes(site.session_command("room-0108", "session_open", case="F-1"))
        code, said = _send(site.store_config(), opening, wait=5)
        assert code == PENDING, said
        assert said.startswith("pending: broker not reachable (the broker at 127.0.0.1:"), said
        assert "open.cmd" not in said  # the command file is not what failed
        kept = Mailbox(site.db()).listing(time.time(), "room-0108")
        assert [(c.case, c.state, c.sends) for c in kept] == [("F-1", "pending", 0)]


def test_a_session_command_for_a_room_controller_with_no_room_is_not_signed(
    tmp_path: Path,
) -> None:
    from agent import enrolment

    with LocalSite(tmp_path / "site") as site:
        request = tmp_path / "request.json"
        enrolment.keygen(
            tmp_path / "d", request, time.time(), "room-0109", "room-0109", role="room_controller"
        )
        site.agency.enroll(request.read_bytes(), tmp_path / "bundle.json", time.time())
        with pytest.raises(ProvisionError, match="room-0109 serves no room yet: assign it one"):
            site.agency.session_command(
                "room-0109", "session_open", {"case": "G-1"}, tmp_path / "o.cmd", time.time()
            )
        assert not (tmp_path / "o.cmd").exists()
