"""Logs an admin can run a fleet with: why the broker is out of reach (a TLS alert, a
CONNACK refusal, nothing listening, a name that does not resolve, a timeout), said once per
change with the retry cadence; what the store says per device (online, first message,
refusals once, receipts per batch and session)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent import enrolment
from agent.provisioned import broker_settings
from agent.room import NO_ROOM
from agent.uplink import Uplink
from common.link_log import FLAP_SECONDS, FLAPS, LinkLog, retry_delay
from common.mqtt import (
    Cause,
    alert_cause,
    disconnect_cause,
    failure_cause,
    refusal_cause,
    tls_client,
)
from simulator.mosquitto import Mosquitto, free_port
from simulator.site import LocalSite
from store.config import load_store_config
from store.fleet_log import DeviceNews, receipt_lines
from store.worker import start_worker
from tests.fixtures.fleet import Broker, Creds, Fleet, build_fleet, run
from tests.fixtures.room import SMALL, entries
from tests.fixtures.session import synced_session
from tests.fixtures.waiting import messages, until

# -- causes, from real exceptions ----------------------------------------------------------


def tls_attempt(port: int, creds: Creds) -> BaseException:
    """A TLS connection with these files, read from until the broker has its say (with
    TLS 1.3 its alert follows the handshake); what it raised: the exceptions paho meets
    inside its loop."""
    ctx = ssl.create_default_context(cafile=str(creds.ca))
    ctx.check_hostname = False
    if creds.cert and creds.key:
        ctx.load_cert_chain(str(creds.cert), str(creds.key))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw) as tls,
        ):
            tls.recv(16)  # the broker's verdict on this client's certificate comes after
    except (OSError, ValueError) as e:
        return e
    raise AssertionError("the broker let this client in")


@pytest.fixture(scope="module")
def revoked_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, Mosquitto]]:
    """The fleet of tests/fixtures/fleet.py, body recorder b revoked (the broker's CRL)."""
    f = build_fleet(tmp_path_factory.mktemp("fleet"))
    run(f"provision revoke --device {f.device_id('b')} --agency {f.agency} --reason stolen")
    f.broker_config()
    broker = Broker(f).start()
    yield f, broker
    broker.stop()


def test_nothing_listening_is_named() -> None:
    port = free_port()
    with pytest.raises(OSError) as raised:
        socket.create_connection(("127.0.0.1", port), timeout=5)
    cause = failure_cause(raised.value, "127.0.0.1", port)
    assert cause.kind == "refused" and f"127.0.0.1:{port}" in cause.text
    assert "is the broker running" in cause.text


def test_a_name_that_does_not_resolve_is_named() -> None:
    with pytest.raises(OSError) as raised:
        socket.getaddrinfo("broker.invalid", 8883)
    cause = failure_cause(raised.value, "broker.invalid", 8883)
    assert cause.kind == "dns" and "does not resolve" in cause.text


def test_a_broker_that_does_not_answer_is_a_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never speaks TLS
        port = silent.getsockname()[1]
        ctx = ssl.create_default_context()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=0.3) as raw,
            pytest.raises(OSError) as raised,
        ):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    cause = failure_cause(raised.value, "127.0.0.1", port)
    assert cause.kind == "timeout" and "did not answer in time" in cause.text


@pytest.mark.slow
def test_tls_causes_from_the_real_broker(revoked_fleet: tuple[Fleet, Mosquitto]) -> None:
    """The broker's CA not the configured one; this client's certificate revoked, or from
    another agency: each named, from the exception and from the text paho logs."""
    f, _ = revoked_fleet
    a, b = f.device("a"), f.device("b")
    other = build_fleet(f.root / "other")  # another agency: its CA, its certificates
    untrusted = failure_cause(tls_attempt(f.port, Creds(other.ca, a.cert, a.key)), "h", 1)
    assert untrusted.kind == "tls_broker_untrusted" and "does not trust" in untrusted.text

    revoked = tls_attempt(f.port, b)
    assert isinstance(revoked, ssl.SSLError)
    cause = failure_cause(revoked, "127.0.0.1", f.port)
    assert cause.kind == "tls_revoked" and "revoked" in cause.text, (repr(revoked), cause)
    # paho only logs it: "failed to receive on socket: <the SSLError>"
    assert alert_cause(f"failed to receive on socket: {revoked}", "127.0.0.1", f.port) == cause

    theirs = other.device("a")
    foreign = tls_attempt(f.port, Creds(f.ca, theirs.cert, theirs.key))
    assert failure_cause(foreign, "h", 1).kind == "tls_unknown_ca"
    none = failure_cause(tls_attempt(f.port, Creds(f.ca, None, None)), "h", 1)
    assert none.kind == "tls_no_certificate", none


def test_connack_and_disconnect_reasons_are_named() -> None:
    denied = ReasonCode(PacketTypes.CONNACK, "Not authorized")
    assert refusal_cause(denied, "device bwc-1").kind == "not_authorized"
    assert "ACL" in refusal_cause(denied, "device bwc-1").text
    bad = ReasonCode(PacketTypes.CONNACK, "Bad user name or password")
    assert refusal_cause(bad, "store-1").kind == "bad_credentials"
    taken = ReasonCode(PacketTypes.DISCONNECT, identifier=142)  # a broker that says so
    assert disconnect_cause(taken, "h", 1, None).kind == "taken_over"
    assert "session taken over" in disconnect_cause(taken, "h", 1, None).text
    lost = ReasonCode(PacketTypes.DISCONNECT, identifier=128)
    assert disconnect_cause(lost, "h", 1, None).kind == "lost"
    alert = Cause("tls_revoked", "revoked")
    assert disconnect_cause(lost, "h", 1, alert) == alert  # what paho logged just before
    assert alert_cause("Connection lost", "h", 1) is None


# -- once per change -------------------------------------------------------------------------


def test_a_cause_is_told_once_with_its_retry_cadence_then_reminded() -> None:
    links = LinkLog("the broker at h:1", min_delay=1, max_delay=15, repeat=600)
    gone = Cause("refused", "nothing listening at h:1")
    assert links.down(gone, now=0) == (
        logging.WARNING,
        "nothing listening at h:1 (retrying in 1 s)",
    )
    assert [links.down(gone, now=t) for t in (1, 3, 7, 15, 30)] == [None] * 5
    said = links.down(gone, now=601)
    assert said is not None and "still not connected: nothing listening" in said[1]
    assert "7 attempts in 601 s; retrying every 15 s" in said[1]
    revoked = Cause("tls_revoked", "revoked")  # a new cause is news at once
    assert links.down(revoked, now=602) == (logging.WARNING, "revoked (retrying in 15 s)")
    assert links.up(now=700) == (
        logging.INFO,
        "connected to the broker at h:1",
    )  # never up before: connected, not reconnected
    lost = Cause("lost", "lost the connection")
    assert links.down(lost, now=800) == (logging.WARNING, "lost the connection (retrying in 1 s)")
    assert links.down(gone, now=801) is not None
    back = "reconnected to the broker at h:1 after 30 s (2 failed attempts)"
    assert links.up(now=830) == (logging.INFO, back)
    assert links.closed() == (logging.INFO, "disconnected from the broker at h:1")


def test_a_connection_closed_right_after_each_acceptance_is_a_session_taken_over() -> None:
    """Mosquitto 2.0 closes the older of two connections under one name without a reason:
    brief connections in a row, each reconnection accepted at once, say it."""
    links = LinkLog("the broker at h:1", min_delay=1, max_delay=10)
    lost = Cause("lost", "lost the connection to the broker at h:1 (closed by the broker)")
    said = []
    t = 0.0
    for _ in range(FLAPS + 3):
        said += [links.up(t), links.down(lost, t + FLAP_SECONDS / 5)]
        t += 1.5
    told = [line for s in said if s for _, line in [s]]
    assert links.cause is not None and links.cause.kind == "taken_over"
    taken = [line for line in told if "session taken over" in line]
    assert len(taken) == 1 and "another client connecting with the same name" in taken[0]
    assert len(told) == 2 * (FLAPS - 1) + 2  # connected, lost, reconnected, ..., taken over
    # a connection that holds, then a loss: that is news again, and no take-over
    assert links.up(t) is None
    assert links.down(lost, t + 60) == (logging.WARNING, f"{lost.text} (retrying in 1 s)")
    assert links.cause == lost


def test_the_retry_delay_doubles_up_to_its_bound() -> None:
    assert [retry_delay(n, 1, 10) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


# -- per device, at the store ------------------------------------------------------------


def test_the_store_says_each_device_change_once() -> None:
    news = DeviceNews()
    assert news.status("bwc-1", online=True) == "bwc-1 is online"
    assert news.status("bwc-1", online=True) is None
    assert news.message("bwc-1", "segment") == "bwc-1: first message since it came online (segment)"
    assert news.message("bwc-1", "entry") is None
    assert news.refused("bwc-1", "revoked") == logging.WARNING
    assert news.refused("bwc-1", "revoked") == logging.DEBUG
    assert news.refused("bwc-1", "too_large") == logging.WARNING
    news.accepted("bwc-1")
    assert news.refused("bwc-1", "revoked") == logging.WARNING
    assert news.status("bwc-1", online=False) == "bwc-1 is offline"
    assert news.status("bwc-1", online=True) == "bwc-1 is online"
    assert news.message("bwc-1", "status") is not None  # back online: news again


def test_receipts_are_summed_per_device_and_session() -> None:
    made = [("bwc-1", "s-1")] * 3 + [("bwc-2", "s-9"), ("bwc-1", None)]
    assert receipt_lines(made) == [
        "receipted 1 segment outside any session from bwc-1",
        "receipted 3 segments of session s-1 from bwc-1",
        "receipted 1 segment of session s-9 from bwc-2",
    ]
    assert receipt_lines([]) == []


# -- against the real broker: the wiring -----------------------------------------------------


@pytest.mark.slow
def test_a_revoked_device_says_so_once_while_it_retries(
    revoked_fleet: tuple[Fleet, Mosquitto], caplog: pytest.LogCaptureFixture
) -> None:
    f, _ = revoked_fleet
    caplog.set_level(logging.DEBUG, logger="agent.uplink")
    link = Uplink(f.device_id("b"), broker_settings(f.devices["b"]), window=8)
    link.connect()
    try:
        until(lambda: link.watch.links.failures >= 3, "three refused attempts")
    finally:
        link.close()
    lines = messages(caplog, "agent.uplink")
    revoked = [m for m in lines if "revoked" in m]
    assert len(revoked) == 1, lines
    assert revoked[0].endswith("(retrying in 1 s)") and f"127.0.0.1:{f.port}" in revoked[0]
    assert not any("Unspecified error" in m for m in lines)


@pytest.mark.slow
def test_a_device_with_no_broker_listening_says_so_once(
    revoked_fleet: tuple[Fleet, Mosquitto], caplog: pytest.LogCaptureFixture
) -> None:
    """The agent used to log nothing at all while the broker was unreachable."""
    f, _ = revoked_fleet
    caplog.set_level(logging.DEBUG, logger="agent.uplink")
    settings = dataclasses.replace(broker_settings(f.devices["a"]), port=free_port())
    link = Uplink(f.device_id("a"), settings, window=8)
    link.connect()
    try:
        until(lambda: link.watch.links.failures >= 3, "three attempts")
        assert link.watch.cause is not None and link.watch.cause.kind == "refused"
    finally:
        link.close()
    lines = messages(caplog, "agent.uplink")
    assert lines == [
        f"the broker at 127.0.0.1:{settings.port} refused the connection: is the broker "
        "running on that port? (retrying in 1 s)"
    ]


@pytest.mark.slow
def test_a_store_says_why_it_waits_and_that_it_reconnected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Started before its broker: nothing listening, said once; then connected; the broker
    restarted: the loss, and the reconnection with how long it took."""
    caplog.set_level(logging.INFO, logger="store.worker")
    with LocalSite(tmp_path / "site") as site:
        config = load_store_config(site.store_config("1"))
        worker = start_worker(config)
        try:
            assert worker.problem and "refused the connection" in worker.problem
            until(lambda: worker.watch.links.failures >= 3, "three attempts")
            site.start_broker()
            assert worker.ready.wait(30)
            assert worker.problem is None
            site.stop_broker()
            until(lambda: not worker.ready.is_set(), "the loss to be noticed")
            site.start_broker()
            assert worker.ready.wait(30)
        finally:
            worker.stop()
            worker.ingest.db.close()
    lines = messages(caplog, "store.worker")
    refused = [m for m in lines if "refused the connection" in m]
    assert 1 <= len(refused) <= 2, lines  # at start; maybe again after the restart's loss
    assert refused[0].endswith("(retrying in 1 s)")
    assert f"connected to the broker at 127.0.0.1:{site.port}" in lines
    lost = [m for m in lines if m.startswith("lost the connection")]
    assert len(lost) == 1, lines
    back = [m for m in lines if m.startswith("reconnected to the broker")]
    assert len(back) == 1 and "failed attempt" in back[0], lines


@pytest.mark.slow
def test_the_store_tells_each_device_once_and_receipts_per_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="store.ingest")
    with LocalSite(tmp_path / "site") as site:
        site.start_broker()
        site.start_store()
        dev = site.start_device("bwc-0001")
        sid = synced_session(dev, 6)
    lines = messages(caplog, "store.ingest")
    assert lines.count("bwc-0001 is online") == 1, lines
    assert len([m for m in lines if m.startswith("bwc-0001: first message")]) == 1
    segments = [e for e in entries(dev.recorder.root, "segment") if e.session == sid]
    ours = [m for m in lines if m.endswith(f"of session {sid} from bwc-0001")]
    counted = sum(int(m.split()[1]) for m in ours)
    assert counted == len(segments) and len(ours) <= len(segments), lines
    info = [r for r in caplog.records if r.name == "store.ingest" and r.levelno >= logging.INFO]
    assert len(info) < len(segments) + 4  # a line a batch, not a line a segment


@pytest.mark.slow
def test_agent_run_on_a_room_controller_with_no_room_keeps_running(tmp_path: Path) -> None:
    """`agent run` used to die with an AssertionError the moment it connected."""
    with LocalSite(tmp_path / "site") as site:
        site.store_config("1")  # (its certificate reads the status, as the store would)
        site.start_broker()
        data, request, bundle = tmp_path / "room", tmp_path / "room.req", tmp_path / "room.b"
        enrolment.keygen(
            data, request, time.time(), device_id="room-0104", serial="R4", role="room_controller"
        )
        site.agency.enroll(request.read_bytes(), bundle, time.time(), settings={"recording": SMALL})
        enrolment.install(data, bundle.read_bytes(), time.time())
        site.start_broker()  # the ACL now names the controller
        agent = subprocess.Popen(
            [sys.executable, "-m", "unbroken.cli", "agent", "run", "--data", str(data), "--sim"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        said: list[str] = []
        assert agent.stderr is not None
        reader = threading.Thread(target=lambda: said.extend(agent.stderr or []), daemon=True)
        reader.start()
        try:
            connected = f"connected to the broker at 127.0.0.1:{site.port}"
            until(lambda: any(connected in line for line in said), "the connection", 60)
            until(lambda: any(NO_ROOM in line for line in said), "what it lacks", 30)
            # and it goes on: its status, published after it connected, says it is online
            config = load_store_config(site.store_config("1"))
            b = config.broker
            store = tls_client("store-1", b.ca, b.cert, b.key)
            statuses: list[dict[str, object]] = []
            store.on_message = lambda _c, _u, m: statuses.append(json.loads(m.payload))
            store.connect(b.host, b.port)
            store.subscribe("unbroken/d/room-0104/status", qos=1)
            store.loop_start()
            try:
                until(lambda: any(s.get("online") for s in statuses), "an online status", 30)
            finally:
                store.disconnect()
                store.loop_stop()
            assert agent.poll() is None, "".join(said)
            online = next(s for s in statuses if s.get("online"))
            assert online["room"] is None and online["panel"] == "idle"
        finally:
            agent.terminate()
            agent.wait(30)
            reader.join(10)
        assert "Traceback" not in "".join(said), "".join(said)
        assert sum(NO_ROOM in line for line in said) == 1, "".join(said)
