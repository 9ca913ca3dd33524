"""Running a fleet without traps: the CRL is renewed before it runs out (by the shipped timer),
the broker's port lives in one place, and the shipped units are valid systemd units. Against a
real Mosquitto and systemd-analyze."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from importlib import resources
from pathlib import Path

import pytest

from common.bundle import Broker
from common.mqtt import (
    certificate_valid_until,
    expired_whose,
    probe,
    probe_cause,
    tls_client,
)
from provisioning.agency import Agency, init_agency
from provisioning.broker_config import crl_valid_until, renew_crl, write_broker_config
from simulator.mosquitto import Mosquitto, free_port
from tests.fixtures.system import need
from unbroken.cli import main

pytestmark = pytest.mark.slow  # a real Mosquitto

DAY = 86400.0


def _agency(root: Path, port: int, crl_days: int = 30, now: float | None = None) -> Agency:
    agency = init_agency(root, "Test", Broker(host="127.0.0.1", port=port), now or time.time())
    if crl_days != 30:
        toml = root / "agency.toml"
        toml.write_text(re.sub(r"(?m)^crl_days = \d+$", f"crl_days = {crl_days}", toml.read_text()))
        agency = Agency(root)
    return agency


def _store_can_connect(agency: Agency, tmp: Path, port: int) -> str | None:
    out = tmp / f"store-{time.monotonic_ns()}"
    name = out.name.removeprefix("store-")[-8:]
    agency.enroll_store(name, out, time.time())
    client = tls_client(f"store-{name}", out / "ca.pem", out / "store.pem", out / "store.key")
    try:
        return probe(client, "127.0.0.1", port, 15, 10)
    finally:
        client.disconnect()


def test_an_expired_crl_locks_everyone_out_until_it_is_renewed(tmp_path: Path) -> None:
    port = free_port()
    past = time.time() - 3 * DAY
    agency = _agency(tmp_path / "agency", port, crl_days=1, now=past)
    conf = tmp_path / "broker"
    write_broker_config(agency, conf, port, past)  # a CRL that ran out two days ago
    assert crl_valid_until(agency) < time.time()
    with Mosquitto(conf / "mosquitto.conf", port) as broker:
        refused = _store_can_connect(agency, tmp_path, port)
        assert refused is not None, "a broker with an expired CRL should refuse clients"
        # ... and says "expired" of a valid certificate: the client names the CRL instead
        store = tmp_path / "crl-store"
        agency.enroll_store("crl", store, time.time())
        pem = store / "store.pem"
        client = tls_client("store-crl", store / "ca.pem", pem, store / "store.key", True)
        try:
            cause = probe_cause(client, "127.0.0.1", port, 15, 10, "this client")
        finally:
            client.disconnect()
        assert cause is not None and cause.kind == "tls_expired", cause
        named = expired_whose(cause, certificate_valid_until(pem), time.time())
        assert named.kind == "tls_crl_expired" and "the broker's CRL has expired" in named.text
        code = main(
            [
                "provision", "renew-crl", "--agency", str(agency.root), "--out", str(conf),
                "--reload", f"kill -HUP {broker.proc.pid}", "--wait", "0.5",
            ]
        )  # fmt: skip
        assert code == 0
        assert crl_valid_until(agency) > time.time() + 0.5 * DAY
        assert (conf / "crl.pem").read_bytes() == (agency.root / "crl.pem").read_bytes()
        assert _store_can_connect(agency, tmp_path, port) is None


def test_renewal_waits_until_it_is_due(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port, now = free_port(), time.time()
    agency = _agency(tmp_path / "agency", port)
    conf = tmp_path / "broker"
    write_broker_config(agency, conf, port, now)
    before = crl_valid_until(agency)
    assert renew_crl(agency, conf, now, within_days=10) is None  # 30 days left
    assert crl_valid_until(agency) == before
    later = now + 25 * DAY
    renewed = renew_crl(agency, conf, later, within_days=10)
    assert renewed is not None and renewed > before + 20 * DAY
    assert (
        main(["provision", "renew-crl", "--agency", str(agency.root), "--out", str(tmp_path)]) == 2
    )
    assert "no broker configuration here" in capsys.readouterr().err


def test_the_broker_port_lives_in_the_agency(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agency = _agency(tmp_path / "agency", 18883)
    args = ["provision", "broker-config", "--agency", str(agency.root), "--out"]
    assert main([*args, str(tmp_path / "b1"), "--port", "1884"]) == 2
    err = capsys.readouterr().err
    assert "127.0.0.1:18883" in err and "port 1884" in err
    assert main([*args, str(tmp_path / "b2")]) == 0
    assert "listener 18883 127.0.0.1" in (tmp_path / "b2" / "mosquitto.conf").read_text()
    assert main([*args, str(tmp_path / "b3"), "--port", "18883"]) == 0
    agency.enroll_store("main", tmp_path / "store", time.time())
    assert "port = 18883" in (tmp_path / "store" / "broker.toml").read_text()


def _units(tmp_path: Path) -> Path:
    """The shipped units, with the install path pointed at this environment's command."""
    out = tmp_path / "units"
    out.mkdir()
    here = shutil.which("unbroken") or str(Path(sys.executable).parent / "unbroken")
    shipped = [resources.files(pkg).joinpath("units") for pkg in ("agent", "provisioning")]
    units = (u for folder in shipped for u in folder.iterdir())
    for unit in (u for u in units if u.name.endswith((".service", ".timer"))):
        text = unit.read_text()
        text = text.replace("/opt/unbroken/venv/bin/unbroken", here)
        text = text.replace("EnvironmentFile=/", "EnvironmentFile=-/")  # not installed here
        (out / unit.name).write_text(text)
    return out


def _verify(units: list[Path]) -> str:
    """What systemd-analyze has to say about the units: nothing, when they are right (it
    exits 0 even when it ignores a line it cannot parse, so its words are the verdict)."""
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return f"exit {done.returncode}: {done.stderr}" if done.returncode or done.stderr else ""


def test_the_shipped_units_verify(tmp_path: Path) -> None:
    need("/usr/bin/systemd-analyze", "systemd")  # fails under CI without it, as the others
    units = sorted(_units(tmp_path).iterdir())
    names = {u.name for u in units}
    assert names >= {
        "unbroken-agent.service",
        "unbroken-crl-renew.service",
        "unbroken-crl-renew.timer",
    }
    assert _verify(units) == ""
    broken = tmp_path / "units" / "unbroken-crl-renew.service"
    broken.write_text(broken.read_text().replace("Type=oneshot", "Type=oneshoot"))
    assert "oneshoot" in _verify([broken]), "the check must be able to fail"


def test_enrol_many_devices_in_one_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agency = _agency(tmp_path / "agency", 8883)
    requests = []
    for i in range(3):
        req = tmp_path / f"r{i}.json"
        keygen = ["agent", "keygen", "--data", str(tmp_path / f"d{i}"), "--out", str(req)]
        assert main([*keygen, "--serial", f"SN-{i}"]) == 0
        requests.append(str(req))
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    enroll = ["provision", "enroll", "--agency", str(agency.root), "--out", str(tmp_path / "out")]
    assert main([*enroll, *requests, str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main([*enroll, requests[0], requests[0]]) == 2
    assert "twice in this batch" in capsys.readouterr().err
    assert main([*enroll, *requests]) == 0  # none was enrolled by the refused batches
    bundles = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(bundles) == 3 and all(b.endswith(".bundle.json") for b in bundles)
    assert capsys.readouterr().out.count("enrolled ") == 3
    for i, bundle in enumerate(bundles):
        data = tmp_path / f"d{i}"
        device = bundle.removesuffix(".bundle.json")
        install = ["agent", "install", str(tmp_path / "out" / bundle), "--data"]
        # each bundle goes to the device whose request it answers
        target = next(
            d
            for d in (tmp_path / f"d{j}" for j in range(3))
            if device in (d / "identity.json").read_text()
        )
        assert main([*install, str(target)]) == 0, (data, device)
    assert main([*enroll, requests[1]]) == 2
    assert "already enrolled" in capsys.readouterr().err


def test_the_broker_refuses_messages_larger_than_the_protocol_sends(tmp_path: Path) -> None:
    """A device publishing a message larger than any the sync protocol sends is cut off
    (MQTT v5: disconnect, 149 packet too large), and the store never receives it."""

    from evidence import protocol
    from provisioning.broker_config import MESSAGE_LIMIT

    port, now = free_port(), time.time()
    agency = _agency(tmp_path / "agency", port)
    req, data = tmp_path / "r.json", tmp_path / "dev"
    assert main(["agent", "keygen", "--data", str(data), "--out", str(req), "--serial", "S"]) == 0
    bundle = tmp_path / "b.json"
    assert (
        main(["provision", "enroll", str(req), "--agency", str(agency.root), "--out", str(bundle)])
        == 0
    )
    assert main(["agent", "install", str(bundle), "--data", str(data)]) == 0
    device = next(p for p in (data / "provision").iterdir() if p.name == "client.pem")
    device_id = json.loads((data / "identity.json").read_text())["device_id"]
    agency.enroll_store("s", tmp_path / "store", now)
    conf = tmp_path / "broker"
    write_broker_config(agency, conf, port, now)
    assert f"message_size_limit {MESSAGE_LIMIT}" in (conf / "mosquitto.conf").read_text()
    got: list[int] = []
    with Mosquitto(conf / "mosquitto.conf", port):
        s = tmp_path / "store"
        store = tls_client("store-s", s / "ca.pem", s / "store.pem", s / "store.key")
        store.on_message = lambda _c, _u, m: got.append(len(m.payload))
        subscribed = threading.Event()
        store.on_subscribe = lambda *_: subscribed.set()
        assert probe(store, "127.0.0.1", port, 15, 10) is None
        store.subscribe("unbroken/d/#", qos=1)
        store.loop_start()
        assert subscribed.wait(10)  # before the device publishes: else nothing to deliver to
        key = data / "private" / "tls.key"
        dev = tls_client(device_id, data / "provision" / "ca.pem", device, key)
        assert probe(dev, "127.0.0.1", port, 15, 10) is None
        dev.loop_start()
        topic = f"unbroken/d/{device_id}/probe"
        ok = dev.publish(topic, b"x" * protocol.MAX_CHUNK, qos=1)
        ok.wait_for_publish(30)
        assert ok.is_published(), "the broker took the message within the limit"
        too_big = dev.publish(topic, b"x" * (MESSAGE_LIMIT + 1), qos=1)
        # a bound on waiting, not a measure: a loaded runner may take a while to deliver 4 MiB
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (got and not dev.is_connected()):
            time.sleep(0.05)
        dev.loop_stop()
        store.loop_stop()
        assert got == [protocol.MAX_CHUNK], "only the message within the limit reaches the store"
        assert not too_big.is_published()
