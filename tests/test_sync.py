"""Sync end to end: real Mosquitto from the provisioning config, real store workers,
real uploader — and the faults the issue names."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.journal.sync_ledger import SyncLedger
from agent.run import take_commands
from agent.sync import backlog
from common.archive.device_directory import DeviceDirectory, load_chain
from common.settings import Sync
from device.clock import SimClock
from evidence import protocol as p
from evidence.receipt import check_receipt
from evidence.seal import Entry
from simulator.device import SimDevice
from simulator.site import LocalSite
from store.pinning import owner
from store.report import build_report
from tests.fixtures.config import small_config

pytestmark = pytest.mark.slow  # a real Mosquitto and store workers, with faults in real time


@pytest.fixture
def site(tmp_path: Path) -> Iterator[LocalSite]:
    with LocalSite(tmp_path / "site") as s:
        s.start_broker()
        yield s


def _record(data: Path, seconds: float = 4) -> SimDevice:
    dev = SimDevice(data, small_config(prebuffer_seconds=2))
    dev.start()
    dev.run(2)
    dev.recorder.open_session()
    dev.run(seconds)
    dev.recorder.close_session()
    return dev


def _segments(data: Path) -> list[Entry]:
    return [e for _, e in load_chain(data) if isinstance(e, Entry) and e.kind == "segment"]


def _receipts_verified(data: Path, site: LocalSite) -> int:
    n = 0
    for e in _segments(data):
        r = DeviceDirectory(data).stored_receipt(e.body["sha256"]) or b""
        payload = check_receipt(
            r, site.agency.verify_key, device=e.payload["device"], sha256=e.body["sha256"]
        )
        assert payload["entry_hash"] == e.hash
        n += 1
    return n


def _receipted(data: Path) -> int:
    return len(SyncLedger(data).receipted_before(time.time() + 1e9))


def test_session_synced_end_to_end(site: LocalSite) -> None:
    site.start_store()
    data = site.provision_device("bwc-0001")
    dev = _record(data)
    up = site.uploader(data, dev.clock)
    up.start()
    assert up.wait_idle(60), backlog(SyncLedger(data))
    up.stop()
    dev.stop()
    assert _receipts_verified(data, site) == len(_segments(data)) > 0
    report = build_report(site.db(), time.time())
    (d,) = report["devices"]
    assert d["chain"] == "ok"
    # stopped cleanly: the retained status says offline, with nothing left to send
    assert d["status"]["online"] is False and d["status"]["backlog"]["blobs"] == 0
    (s,) = d["sessions"]
    assert s["receipted"] == s["segments"]


# Segments travel whole (one message each) unless larger than the whole limit; a limit of
# 0 sends every one in chunks, the path a segment larger than the broker takes.
WHOLE_OR_CHUNKED = pytest.mark.parametrize(
    "whole_limit", [p.WHOLE_LIMIT, 0], ids=["whole", "chunked"]
)


@WHOLE_OR_CHUNKED
def test_broker_restart_mid_transfer(site: LocalSite, whole_limit: int) -> None:
    site.start_store()
    data = site.provision_device("bwc-0002")
    dev = _record(data, 8)
    up = site.uploader(
        data,
        dev.clock,
        Sync(chunk_size=16 * 1024, bandwidth=200_000, retry_seconds=2, whole_limit=whole_limit),
    )
    up.start()
    deadline = time.monotonic() + 20
    while not _receipted(data) and time.monotonic() < deadline:
        time.sleep(0.05)
    site.stop_broker()  # mid-transfer: some receipts, most not
    time.sleep(1)
    site.start_broker()
    assert up.wait_idle(90)
    up.stop()
    dev.stop()
    assert _receipts_verified(data, site) == len(_segments(data))


@WHOLE_OR_CHUNKED
def test_store_killed_mid_blob_and_restarted(site: LocalSite, whole_limit: int) -> None:
    site.start_store()
    data = site.provision_device("bwc-0003")
    dev = _record(data, 6)
    up = site.uploader(
        data,
        dev.clock,
        Sync(chunk_size=8 * 1024, bandwidth=150_000, retry_seconds=2, whole_limit=whole_limit),
    )
    up.start()
    time.sleep(1.5)
    site.stop_store()
    time.sleep(1)
    site.start_store()
    assert up.wait_idle(90)
    up.stop()
    dev.stop()
    assert _receipts_verified(data, site) == len(_segments(data))
    # nothing stored twice: one receipt row per blob
    db = site.db()
    assert db.query("select count(*) as n from receipts")[0]["n"] == len(_segments(data))


def _one_each(names: list[str], n: int = 2) -> list[str]:
    """Device ids such that each of ``names``' workers serves ``n`` of them."""
    out: list[str] = []
    for w in names:
        out += [d for d in (f"bwc-01{i:02d}" for i in range(100)) if owner(d, names) == w][:n]
    return out


def test_two_workers_share_the_load_by_device(site: LocalSite) -> None:
    workers = site.start_store(workers=2)
    names = [w.config.name for w in workers]
    devices = [site.provision_device(d) for d in _one_each(names)]
    site.start_broker()  # reload: ACL with both store certificates and all devices
    ups, devs = [], []
    for data in devices:
        dev = _record(data, 3)
        up = site.uploader(data, dev.clock)
        up.start()
        ups.append(up)
        devs.append(dev)
    for up in ups:
        assert up.wait_idle(90)
        up.stop()
    for dev in devs:
        dev.stop()
    assert all(w.handled > 0 for w in workers), [w.handled for w in workers]
    # one device, one worker: each device's messages went to the worker that serves it
    ids = [d.name for d in devices]
    for w in workers:
        assert w.serves == {d for d in ids if owner(d, names) == w.config.name}
    expected = sum(len(_segments(d)) for d in devices)
    db = site.db()
    assert db.query("select count(*) as n from receipts")[0]["n"] == expected
    report = build_report(db, time.time())
    assert all(d["chain"] == "ok" for d in report["devices"])


def test_a_dead_workers_devices_are_taken_over_and_told_to_resend(site: LocalSite) -> None:
    workers = site.start_store(workers=2)
    names = [w.config.name for w in workers]
    data = site.provision_device(_one_each(names, 1)[0])  # served by the first worker
    site.start_broker()
    dev = _record(data, 8)
    up = site.uploader(data, dev.clock, Sync(bandwidth=300_000))
    up.start()
    deadline = time.monotonic() + 20
    while not _receipted(data) and time.monotonic() < deadline:
        time.sleep(0.05)
    workers[0].stop()  # dies mid-transfer: no more heartbeats
    assert up.wait_idle(60)
    up.stop()
    dev.stop()
    assert data.name in workers[1].serves
    assert _receipts_verified(data, site) == len(_segments(data))


def test_commands_over_mqtt_forged_and_replayed_are_ignored(
    site: LocalSite, tmp_path: Path
) -> None:
    site.start_store()
    data = site.provision_device("bwc-0009")
    dev = SimDevice(data, small_config(prebuffer_seconds=0), clock=SimClock(wall_start=time.time()))
    dev.start()
    rec = dev.recorder
    up = site.uploader(data, dev.clock)
    take_commands(up, rec)
    answers: list[bytes] = []  # what the device answered, as it goes to the store
    publish = rec.commands.answers
    assert publish is not None
    rec.commands.answers = lambda a: (answers.append(a), publish(a))[1]
    up.start()
    assert up.connected.wait(10)
    rec.open_session()

    def run_until(cond: object, timeout: float = 15) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dev.run(0.2)
            if callable(cond) and cond():
                return True
            time.sleep(0.02)
        return False

    cmd = tmp_path / "assign.cmd"
    site.agency.assign("bwc-0009", cmd, time.time(), badges=["777001"])
    good = cmd.read_bytes()
    site.send_command("bwc-0009", "assign", good)
    assert run_until(lambda: rec.badges == ["777001"]), rec.last_error
    site.send_command("bwc-0009", "assign", good)  # delivered again: answered, applied once
    assert run_until(lambda: len(answers) == 2)
    assert [json.loads(a)["payload"]["reason"] for a in answers] == [
        "",
        "delivered again: applied once, before",
    ]
    forged = good.replace(b"777001", b"666666")  # altered after signing
    site.send_command("bwc-0009", "assign", forged)
    assert run_until(
        lambda: (
            "command refused" in (rec.last_error or "") and "replay" not in (rec.last_error or "")
        )
    )
    site.send_command("bwc-0009", "assign", b"\x00garbage")
    assert run_until(lambda: "not valid JSON" in (rec.last_error or ""))
    rec.close_session()
    up.stop()
    dev.stop()
    assignments = [
        e for _, e in load_chain(data) if isinstance(e, Entry) and e.kind == "assignment"
    ]
    assert [e.body["badges"] for e in assignments] == [["777001"]]
    segs = _segments(data)
    assert segs[-1].body["badges"] == ["777001"], "the new badge is in the manifests"


def test_written_statement_added_at_the_agency(
    site: LocalSite, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from unbroken.cli import main

    site.start_store()
    data = site.provision_device("bwc-0010")
    dev = SimDevice(data, small_config(prebuffer_seconds=0))
    dev.start()
    dev.recorder.open_session()
    dev.run(1)
    dev.camera.fail()  # and it never comes back: the device is handed in broken
    dev.run(1)
    dev.recorder.close_session()
    up = site.uploader(data, dev.clock)
    up.start()
    assert up.wait_idle(60)
    up.stop()
    dev.stop()
    (gap,) = build_report(site.db(), time.time())["devices"][0]["sessions"][0]["gaps"]
    assert gap["explanation"] is None and gap["end"] is None
    officers = tmp_path / "officers.json"
    pins = tmp_path / "pins.txt"  # PINs never on the command line: a file of mode 0600
    pins.write_text("340102:4711\n340117:0815\n")
    pins.chmod(0o600)
    assert (
        main(
            [
                "provision",
                "officers",
                "--agency",
                str(site.agency.root),
                "--pins",
                str(pins),
                "--out",
                str(officers),
            ]
        )
        == 0
    )
    store_toml = str(site.store_config("1"))
    base = [
        "store",
        "explain",
        "--config",
        store_toml,
        "--device",
        "bwc-0010",
        "--gap",
        gap["id"],
        "--reason",
        "camera destroyed",
        "--credentials",
        str(officers),
    ]
    base += ["--pins", str(pins)]
    assert main([*base, "--attest", "340102", "--attest", "340102"]) == 2
    assert "2 distinct officers, has 1" in capsys.readouterr().err
    wrong = tmp_path / "wrong-pins.txt"
    wrong.write_text("340102:4711\n340117:9999\n")
    wrong.chmod(0o600)
    assert main([*base, "--attest", "340102", "--attest", "340117", "--pins", str(wrong)]) == 2
    assert main([*base, "--attest", "340102", "--attest", "340117"]) == 0
    (gap,) = build_report(site.db(), time.time())["devices"][0]["sessions"][0]["gaps"]
    assert gap["explanation"] == "written"
    assert [a["badge"] for a in gap["statement"]["attestations"]] == ["340102", "340117"]
