"""The key store (issue 15): the device key and the TLS key sealed by a real TPM 2.0
(Debian's swtpm, through tpm2-tools), or kept in files as before, marked weaker.

On swtpm: keygen, enrolment, recording, rotation and a restart; sealed blobs copied to
another TPM, or kept across a TPM clear, fail with a clear error. Without a TPM, or without
tpm2-tools, keygen says so and writes nothing. The store lists file-backed devices as
weaker, and a clone made from a copied file-backed card shows as a fork.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest

from agent import enrolment, provisioned
from agent.keys import key_store, load_or_create_key
from common import pki
from common.archive.device_directory import DeviceDirectory, load_chain, read_public_key
from common.archive.verify import verify_archive
from common.requests import check_request
from device.keystore import TpmKeyStore
from evidence import protocol as p
from evidence.names import ProvisionError
from evidence.seal import Entry, Moment, Sealer, key_id
from simulator.mosquitto import Mosquitto, free_port
from simulator.session import record_session
from store.blobs import FileBlobs
from store.db import Database
from store.ingest import Ingest
from store.report import build_report, format_report
from tests.fixtures.admin import ok, refused
from tests.fixtures.config import small_config
from tests.fixtures.fleet import Client, Creds
from tests.fixtures.store import NOW, Directory, ack_of
from tests.fixtures.swtpm import Swtpm, need_tpm_tools

PROJECT = Path(__file__).resolve().parents[1]
ANOTHER_TPM = "it was sealed by another TPM or the TPM was cleared"


@pytest.fixture
def tpm(tmp_path: Path) -> Iterator[Swtpm]:
    t = Swtpm(tmp_path / "tpm").start()
    yield t
    t.stop()


def keygen_tpm(dev: Path, tpm: Swtpm, extra: str = "") -> Path:
    req = dev.parent / f"{dev.name}.request.json"
    ok(
        f"agent keygen --data {dev} --out {req} --serial SN-{dev.name} --key-store tpm "
        f"--tcti {tpm.tcti} {extra}"
    )
    return req


def files(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in root.rglob("*") if f.is_file()}


def unbroken(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unbroken.cli", *argv],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=60,
        check=False,
    )


# -- keygen --------------------------------------------------------------------------------


def test_keygen_seals_both_keys_and_leaves_no_key_file(
    tpm: Swtpm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = tmp_path / "dev"
    req = keygen_tpm(dev, tpm)
    private = sorted(f.name for f in (dev / "private").iterdir())
    assert private == ["agent.lock", "device.key.sealed", "keystore.json", "tls.key.sealed"]
    for name in ("device.key.sealed", "tls.key.sealed", "keystore.json"):
        assert (dev / "private" / name).stat().st_mode & 0o777 == 0o600
    assert json.loads((dev / "private" / "keystore.json").read_text()) == {
        "backend": "tpm",
        "tcti": tpm.tcti,
    }

    store = key_store(dev)
    key, tls = store.signing_key(), store.tls_key()
    assert key is not None and tls is not None
    assert (dev / "device.pub").read_text().strip() == bytes(key.verify_key).hex()
    request = check_request(req.read_bytes(), time.time())
    assert bytes(request.verify_key) == bytes(key.verify_key)
    assert pki.same_key(tls.public_key(), request.csr.public_key())
    scalar = tls.private_numbers().private_value.to_bytes(32, "big")
    secrets = [bytes(key), bytes(key).hex().encode(), scalar, scalar.hex().encode()]
    for name, data in files(dev).items():  # the card holds no private key, in any form
        assert not any(s in data for s in secrets), name

    # keygen again keeps the sealed keys; asking for files instead is refused
    before = files(dev / "private")
    ok(f"agent keygen --data {dev} --out {req} --serial SN-dev")
    assert files(dev / "private") == before
    refused(
        "already sealed by a TPM",
        f"agent keygen --data {dev} --out {req} --serial S --key-store file",
    )
    capsys.readouterr()
    ok(f"agent status --data {dev} --json")
    status = json.loads(capsys.readouterr().out)
    assert status["key_store"] == {"backend": "tpm", "weaker": False, "tcti": tpm.tcti}
    ok(f"agent status --data {dev}")
    assert f"keys     tpm: sealed by this device's TPM ({tpm.tcti})" in capsys.readouterr().out


def test_an_interrupted_rotation_is_undone_in_the_tpm(tpm: Swtpm, tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    keygen_tpm(dev, tpm)
    pub = (dev / "device.pub").read_text()
    key_store(dev).save_signing_key(nacl.signing.SigningKey.generate(), "device.key.next")
    assert (dev / "private" / "device.key.next.sealed").exists()
    enrolment.finish_rotation(dev)  # never sealed in the chain: the pending key is dropped
    assert not (dev / "private" / "device.key.next.sealed").exists()
    assert (dev / "device.pub").read_text() == pub


def test_the_key_store_is_chosen_by_the_configuration(tpm: Swtpm, tmp_path: Path) -> None:
    config = tmp_path / "device.toml"
    config.write_text(f'[keys]\nbackend = "tpm"\ntcti = "{tpm.tcti}"\n')
    dev = tmp_path / "dev"
    ok(f"agent keygen --data {dev} --out {tmp_path / 'r.json'} --serial S --config {config}")
    assert isinstance(key_store(dev), TpmKeyStore) and key_store(dev).tcti == tpm.tcti
    assert not (dev / "private" / "device.key").exists()


def test_file_backend_is_as_before_and_marked_weaker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev, req = tmp_path / "dev", tmp_path / "req.json"
    ok(f"agent keygen --data {dev} --out {req} --serial SN-1")
    private = dev / "private"
    assert sorted(f.name for f in private.iterdir()) == ["agent.lock", "device.key", "tls.key"]
    key = nacl.signing.SigningKey(bytes.fromhex((private / "device.key").read_text()))
    assert (private / "device.key").read_bytes() == bytes(key).hex().encode() + b"\n"
    pki.load_key((private / "tls.key").read_bytes(), "tls.key")
    assert key_store(dev).tls_key_file() == private / "tls.key"  # what the uplink loads
    refused(
        "already in files",
        f"agent keygen --data {dev} --out {req} --serial S --key-store tpm --tcti swtpm:port=1",
    )
    capsys.readouterr()
    ok(f"agent status --data {dev} --json")
    status = json.loads(capsys.readouterr().out)
    assert status["key_store"] == {
        "backend": "file",
        "weaker": True,
        "note": "keys in files: a copied card can sign as this device",
    }
    ok(f"agent status --data {dev}")
    text = capsys.readouterr().out
    assert "keys     file (WEAKER: keys in files: a copied card can sign as this device)" in text


# -- no TPM, no tools ----------------------------------------------------------------------


def test_no_tpm_is_said_before_anything_is_written(tmp_path: Path) -> None:
    need_tpm_tools()
    dev, tcti = tmp_path / "dev", f"swtpm:host=127.0.0.1,port={free_port()}"
    message = refused(
        f"no TPM reachable at {tcti}",
        f"agent keygen --data {dev} --out {tmp_path / 'r.json'} --serial S --key-store tpm "
        f"--tcti {tcti}",
    )
    assert "Connection refused" in message
    assert sorted(f.name for f in (dev / "private").iterdir()) == ["agent.lock"]
    refused(
        "no TPM reachable at device:/dev/nothing",
        f"agent keygen --data {dev} --out {tmp_path / 'r.json'} --serial S --key-store tpm "
        "--tcti device:/dev/nothing",
    )


def test_missing_tpm2_tools_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    refused(
        "needs tpm2-tools (apt-get install tpm2-tools)",
        f"agent keygen --data {tmp_path / 'dev'} --out {tmp_path / 'r.json'} --serial S "
        "--key-store tpm",
    )


# -- the life of a TPM-backed device --------------------------------------------------------


@pytest.mark.slow
def test_enrol_record_rotate_restart_and_connect(tpm: Swtpm, tmp_path: Path) -> None:
    port = free_port()
    agency, dev = tmp_path / "agency", tmp_path / "dev"
    ok(f"provision init-agency --agency {agency} --broker 127.0.0.1:{port}")
    req = keygen_tpm(dev, tpm)
    bundle = tmp_path / "bundle.json"
    ok(f"provision enroll {req} --agency {agency} --out {bundle}")
    ok(f"agent install {bundle} --data {dev}")
    entries = [e for _, e in load_chain(dev) if isinstance(e, Entry)]
    assert entries[-1].kind == "install" and entries[-1].body["key_store"] == "tpm"
    first = (dev / "device.pub").read_text().strip()

    # the recorder unseals the key and seals its entries with it
    record_session(dev, small_config(prebuffer_seconds=1), 1)
    report = verify_archive(DeviceDirectory(dev), read_public_key(dev / "device.pub"))
    assert report.ok, report.problems

    # rotation: the new key is sealed too, and the old sealed blob is gone
    sealed_before = (dev / "private" / "device.key.sealed").read_bytes()
    rot = tmp_path / "rotation.json"
    ok(f"agent rotate-key --data {dev} --out {rot}")
    assert (dev / "private" / "device.key.sealed").read_bytes() != sealed_before
    assert not any((dev / "private").glob("device.key.next*"))
    assert not (dev / "private" / "device.key").exists()
    second = (dev / "device.pub").read_text().strip()
    assert second != first
    ok(f"provision rotate {rot} --agency {agency}")
    record_session(dev, small_config(prebuffer_seconds=1), 1)
    first_id = key_id(nacl.signing.VerifyKey(bytes.fromhex(first)))
    report = verify_archive(
        DeviceDirectory(dev), read_public_key(dev / "keys" / f"{first_id}.pub")
    )  # across the rotation
    assert report.ok, report.problems
    assert len(report.sessions) == 2

    # a restart of the TPM and a new process: the same key
    tpm.stop()
    tpm.start()
    code = "import sys; from pathlib import Path; from agent.keys import load_or_create_key;"
    code += "print(bytes(load_or_create_key(Path(sys.argv[1])).verify_key).hex())"
    done = subprocess.run(
        [sys.executable, "-c", code, str(dev)], capture_output=True, text=True, cwd=PROJECT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == second

    # the TLS key, unsealed into memory, opens the uplink's TLS connection to the broker
    settings = provisioned.broker_settings(dev)
    assert str(settings.key).startswith("/proc/self/fd/")
    ssl.create_default_context().load_cert_chain(settings.cert, settings.key)
    broker_dir = tmp_path / "broker"
    ok(f"provision broker-config --agency {agency} --out {broker_dir} --port {port}")
    broker = Mosquitto(broker_dir / "mosquitto.conf", port, log=tmp_path / "mosquitto.log")
    broker.start()
    try:
        did = json.loads((dev / "identity.json").read_text())["device_id"]
        client = Client(did, Creds(settings.ca, settings.cert, settings.key), port)
        assert client.connect() == "connected"
        assert client.publish(f"unbroken/d/{did}/status") < 0x80  # accepted by the ACL
        client.close()
    finally:
        broker.stop()


# -- a copied card, a cleared TPM -----------------------------------------------------------


@pytest.mark.slow
def test_sealed_keys_copied_to_another_tpm_do_not_load(tpm: Swtpm, tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    keygen_tpm(dev, tpm)
    other = Swtpm(tmp_path / "other-tpm").start()  # another device's TPM, fresh
    try:
        copy = tmp_path / "copy"
        shutil.copytree(dev, copy)
        # The card in another device: the same TCTI there reaches another TPM.
        record = {"backend": "tpm", "tcti": other.tcti}
        (copy / "private" / "keystore.json").write_text(json.dumps(record))
        sealed = copy / "private" / "device.key.sealed"
        message = refused(
            f"the sealed key in {sealed} does not load on this TPM",
            f"agent keygen --data {copy} --out {tmp_path / 'r.json'} --serial S",
        )
        assert ANOTHER_TPM in message
        with pytest.raises(ProvisionError, match=ANOTHER_TPM):
            load_or_create_key(copy)  # what the recorder does at start
        with pytest.raises(ProvisionError, match=ANOTHER_TPM):
            key_store(copy).tls_key()
        done = unbroken("agent", "status", "--data", str(copy))
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [f"unbroken: error: {message}"]
        assert not (copy / "private" / "device.key").exists()  # nothing made in its place
    finally:
        other.stop()


def test_a_cleared_tpm_no_longer_unseals(tpm: Swtpm, tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    keygen_tpm(dev, tpm)
    assert key_store(dev).signing_key() is not None
    subprocess.run(["tpm2_clear", "-T", tpm.tcti, "-c", "p"], check=True, capture_output=True)
    with pytest.raises(ProvisionError, match=ANOTHER_TPM):
        key_store(dev).signing_key()


# -- at the store ---------------------------------------------------------------------------


def test_the_store_lists_file_backed_devices_as_weaker_and_a_clone_forks(
    tmp_path: Path,
) -> None:
    db = Database.connect(f"sqlite:///{tmp_path / 'store.db'}")
    directory = Directory()
    keys = {d: nacl.signing.SigningKey.generate() for d in ("bwc-file", "bwc-old", "bwc-tpm")}
    for device, key in keys.items():
        directory.add(device, key.verify_key)
    ingest = Ingest(
        db, FileBlobs(tmp_path / "blobs"), directory, nacl.signing.SigningKey.generate(), "s"
    )

    def send(e: Entry) -> None:
        ((_, ack),) = ingest.handle(p.up(e.payload["device"], "entry"), e.to_json(), NOW)
        assert ack_of(ack).ok, ack

    body = {"bundle_sha256": "0" * 64, "agency_key_id": "a", "broker": {}}
    sealers = {}
    for device, store in (("bwc-file", "file"), ("bwc-old", None), ("bwc-tpm", "tpm")):
        sealer = Sealer(keys[device], device, None)
        extra = {"key_store": store} if store else {}  # an older device says nothing
        send(sealer.seal("install", {**body, "device_id": device, **extra}, Moment(NOW, 0, True)))
        sealers[device] = sealer
    # keys lifted from the file-backed card: the clone goes on with the chain, and so does
    # the device; the store keeps both and raises the fork
    head = sealers["bwc-file"].seal("event", {"what": "x"}, Moment(NOW, 1, True))
    send(head)
    clone = Sealer(keys["bwc-file"], "bwc-file", head)
    send(clone.seal("event", {"what": "clone"}, Moment(NOW, 2, True)))
    send(sealers["bwc-file"].seal("event", {"what": "genuine"}, Moment(NOW, 2, True)))

    report = build_report(db, NOW)
    assert report["weaker_key_stores"] == ["bwc-file", "bwc-old"]
    by = {d["device"]: d for d in report["devices"]}
    assert [by[d]["key_store"] for d in ("bwc-file", "bwc-old", "bwc-tpm")] == [
        "file",
        "file",
        "tpm",
    ]
    assert by["bwc-file"]["fork"]["alert"] == "this device's key is in two places"
    text = format_report(report)
    assert "keys in files (weaker: a copied card can sign): bwc-file, bwc-old" in text
    assert text.count("keys: file (WEAKER: a copied card can sign as this device)") == 2
    db.close()
