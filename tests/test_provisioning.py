"""Provisioning: agency, enrolment, bundles, assignment, revocation, rotation (no broker).

Pure checks first, then the commands as an administrator and a device would run them, in
temporary directories. Every refusal names the problem and leaves nothing half-written.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import nacl.signing
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent import assignment, enrolment, provisioned
from agent.config import assigned_badges, device_config
from common import pki
from common.archive.device_directory import DeviceDirectory, load_chain, read_public_key
from common.archive.verify import verify_archive
from common.bundle import Broker, DeviceFacts, check_bundle, make_bundle
from common.commands import check_command, make_command
from common.identity import Identity
from common.requests import (
    check_request,
    check_rotation_request,
    make_request,
    make_rotation_request,
)
from evidence import signed
from evidence.names import ProvisionError
from evidence.seal import Entry, Moment, Sealer, canonical, key_id
from provisioning.agency import Agency
from provisioning.broker_config import render_acl
from simulator.session import record_session
from store.blobs import FileBlobs
from store.db import Database
from store.ingest import Ingest
from tests.fixtures.admin import ok, refused
from tests.fixtures.config import small_config
from tests.fixtures.store import ack_of

NOW = time.time()


# -- helpers ---------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and directory under root with its mode and content hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        data = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(root))] = (p.stat().st_mode, data)
    return out


def registry_dump(agency: Path) -> dict[str, list[dict[str, object]]]:
    reg = Agency(agency).registry
    tables = ("devices", "keys", "certificates", "assignments", "audit", "meta")
    try:
        return {t: list(reg.db.query(f"select * from {t}")) for t in tables}
    finally:
        reg.close()


def device_id(dev: Path) -> str:
    return str(json.loads((dev / "identity.json").read_text())["device_id"])


@pytest.fixture
def agency(tmp_path: Path) -> Path:
    ok(f"provision init-agency --dir {tmp_path / 'agency'} --name 'Test PSB'")
    return tmp_path / "agency"


@pytest.fixture
def make_device(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """keygen on a new device directory: (DATA, request)."""

    def make(name: str = "dev", extra: str = "") -> tuple[Path, Path]:
        dev, req = tmp_path / name, tmp_path / f"{name}.request.json"
        ok(f"agent keygen --data {dev} --out {req} --serial SN-{name} {extra}")
        return dev, req

    return make


@pytest.fixture
def enrolled(
    agency: Path, make_device: Callable[..., tuple[Path, Path]], tmp_path: Path
) -> tuple[Path, Path]:
    """A device enrolled at the agency, bundle not yet installed: (DATA, bundle)."""
    dev, req = make_device()
    bundle = tmp_path / "dev.bundle.json"
    ok(f"provision enroll {req} --agency {agency} --out {bundle}")
    return dev, bundle


@pytest.fixture
def installed(enrolled: tuple[Path, Path]) -> Path:
    dev, bundle = enrolled
    ok(f"agent install {bundle} --data {dev}")
    return dev


def resign(data: bytes, key: nacl.signing.SigningKey, **changes: object) -> bytes:
    payload = json.loads(data)["payload"]
    payload.update(changes)
    return signed.sign(key, payload)


# -- pure: signed documents ------------------------------------------------------------


def test_signed_document_round_trip_and_refusals() -> None:
    agency = nacl.signing.SigningKey.generate()
    payload = {
        "type": "command",
        "agency": key_id(agency.verify_key),
        "device": "bwc-1",
        "issued": NOW,
        "expires": NOW + 60,
    }
    data = signed.sign(agency, payload)
    assert signed.open_agency_doc(data, agency.verify_key, kind="command", now=NOW) == payload

    def refuses(doc: bytes, message: str, **kw: object) -> None:
        with pytest.raises(ProvisionError, match=message):
            signed.open_agency_doc(
                doc,
                kw.pop("key", agency.verify_key),  # type: ignore[arg-type]
                kind="command",
                now=kw.pop("now", NOW),  # type: ignore[arg-type]
                **kw,  # type: ignore[arg-type]
            )

    tampered = data.replace(b"bwc-1", b"bwc-2")
    refuses(tampered, "signature does not verify")
    refuses(data, "signed by another agency", key=nacl.signing.SigningKey.generate().verify_key)
    refuses(data, "expired at", now=NOW + 61)
    refuses(data, "issued in the future", now=NOW - 3600)
    refuses(data, "is for device 'bwc-1', this device is 'bwc-9'", device="bwc-9")
    refuses(b"\x00garbage", "not valid JSON")
    refuses(data[: len(data) // 2], "not valid JSON")
    refuses(b'{"payload": {}}', "not a command")


# -- pure: enrolment request -----------------------------------------------------------


def _request(device: str = "bwc-00000001", csr_cn: str | None = None) -> bytes:
    key = nacl.signing.SigningKey.generate()
    tls = pki.new_key()
    if csr_cn is None:
        return make_request(key, tls, Identity(device), serial="SN1", now=NOW)
    payload = json.loads(make_request(key, tls, Identity(device), "SN1", NOW))["payload"]
    payload["csr"] = pki.make_csr(tls, csr_cn).decode()
    return signed.sign(key, payload)


def test_request_checks() -> None:
    req = check_request(_request(), NOW)
    assert req.payload.device_id == "bwc-00000001"
    assert pki.common_name(req.csr.subject) == "bwc-00000001"
    data = _request()
    with pytest.raises(ProvisionError, match="not valid JSON"):
        check_request(data[:-40], NOW)
    with pytest.raises(ProvisionError, match="not valid JSON"):
        check_request(b"\xff\xfe garbage", NOW)
    altered = data.replace(b'"serial":"SN1"', b'"serial":"SN2"')
    with pytest.raises(ProvisionError, match="signature does not verify"):
        check_request(altered, NOW)
    with pytest.raises(ProvisionError, match="CSR subject 'bwc-other'"):
        check_request(_request(csr_cn="bwc-other"), NOW)
    with pytest.raises(ProvisionError, match="reserved"):
        check_request(_request(device="store-main"), NOW)
    with pytest.raises(ProvisionError, match="not an enrolment request"):
        check_request(signed.sign(nacl.signing.SigningKey.generate(), {"type": "x"}), NOW)


# -- pure: bundle ----------------------------------------------------------------------


class _Parts:
    """An agency, a device and what a bundle is made of."""

    def __init__(self) -> None:
        self.agency = nacl.signing.SigningKey.generate()
        self.ca_key, self.ca = pki.make_ca("Test", NOW - 30 * 86400)
        self.device = nacl.signing.SigningKey.generate()
        self.tls = pki.new_key()
        self.facts = DeviceFacts(
            "bwc-1", "body_recorder", bytes(self.device.verify_key).hex(), self.tls.public_key()
        )

    def cert(self, now: float = NOW, days: int = 365, cn: str = "bwc-1") -> x509.Certificate:
        return pki.issue(self.ca_key, self.ca, self.tls.public_key(), cn, "client", now, days)

    def bundle(self, **kw: object) -> bytes:
        args: dict[str, object] = {
            "device_id": "bwc-1",
            "role": "body_recorder",
            "model": "m",
            "serial": "s",
            "device_public_key": self.facts.public_key,
            "broker": Broker(host="127.0.0.1", port=8883),
            "ca": self.ca,
            "client": self.cert(),
            "settings": {"recording": {"fps": 25}},
            "now": NOW,
            "days": 7,
        }
        args.update(kw)
        return make_bundle(self.agency, **args)  # type: ignore[arg-type]


def test_bundle_checks() -> None:
    p = _Parts()
    good = p.bundle()
    b = check_bundle(good, p.facts, NOW, pinned=None)
    assert b.payload.settings == {"recording": {"fps": 25}}
    assert check_bundle(good, p.facts, NOW, pinned=p.agency.verify_key).sha256 == (
        hashlib.sha256(good).hexdigest()
    )

    def refuses(data: bytes, message: str, now: float = NOW, **kw: object) -> None:
        with pytest.raises(ProvisionError, match=message):
            check_bundle(data, kw.get("facts", p.facts), now, kw.get("pinned"))  # type: ignore[arg-type]

    refuses(good.replace(b'"fps":25', b'"fps":30'), "signature does not verify")
    other = _Parts()
    refuses(good, "signed by another agency", pinned=other.agency.verify_key)
    # another agency re-signing with its own key but claiming ours
    forged = json.loads(good)
    forged["signature"] = base64.b64encode(
        other.agency.sign(canonical(forged["payload"])).signature
    ).decode()
    refuses(json.dumps(forged).encode(), "signature does not verify")
    refuses(good, "expired at", now=NOW + 8 * 86400)
    refuses(p.bundle(device_public_key="ab" * 32), "for another device key")
    refuses(p.bundle(device_id="bwc-2"), "for device 'bwc-2'")
    refuses(p.bundle(role="room_controller"), "is for a room_controller")
    refuses(p.bundle(client=p.cert(now=NOW - 10 * 86400, days=1)), "client certificate expired")
    refuses(p.bundle(client=p.cert(cn="bwc-2")), "client certificate is for 'bwc-2'")
    refuses(p.bundle(ca=other.ca), "not issued by the agency CA")
    p2 = _Parts()
    p2.agency, p2.ca_key, p2.ca = p.agency, p.ca_key, p.ca
    refuses(p.bundle(client=p2.cert()), "not for this device's TLS key")
    refuses(p.bundle(settings={"recording": {"fsp": 25}}), "not a valid device configuration")
    refuses(good[:100], "not valid JSON")


# -- pure: commands, ACL, CRL ----------------------------------------------------------


def test_command_checks() -> None:
    agency = nacl.signing.SigningKey.generate()
    data, _ = make_command(agency, "bwc-1", "assign", {"badges": ["012345"]}, NOW, 3600)
    assert check_command(data, agency.verify_key, "bwc-1", NOW).args.badges == ["012345"]
    with pytest.raises(ProvisionError, match="is for device 'bwc-1'"):
        check_command(data, agency.verify_key, "bwc-2", NOW)
    with pytest.raises(ProvisionError, match="expired"):
        check_command(data, agency.verify_key, "bwc-1", NOW + 3601)
    with pytest.raises(ProvisionError, match="badge"):
        make_command(agency, "bwc-1", "assign", {"badges": ["a\nb"]}, NOW, 60)
    with pytest.raises(ProvisionError, match="room"):
        make_command(agency, "bwc-1", "assign", {"room": "a/#"}, NOW, 60)


def test_acl_grants_each_client_only_its_own_topics() -> None:
    acl = render_acl(["store-main"], ["101"], [("room-1", "101")])
    lines = [line for line in acl.splitlines() if line and not line.startswith("#")]
    assert lines == [
        "pattern write unbroken/d/%u/#",
        "pattern read unbroken/c/%u/#",
        "pattern read unbroken/r/%u/#",
        "user store-main",
        "topic deny unbroken/d/store-main/#",
        "topic read unbroken/d/#",
        "topic read unbroken/a/#",
        "topic write unbroken/c/#",
        "topic write unbroken/r/#",
        "topic write unbroken/a/#",
        "topic write unbroken/d/+/entry",
        "topic write unbroken/d/+/segment",
        "topic write unbroken/d/+/blob/#",
        "user panel-101",
        "topic deny unbroken/d/#",
        "topic readwrite unbroken/p/101/#",
        "user room-1",
        "topic readwrite unbroken/p/101/#",
    ]
    revoked = render_acl(["store-main"], ["101"], [("room-1", "101")], revoked=["room-1"])
    assert "user room-1\ntopic readwrite" not in revoked
    assert revoked.endswith("user room-1\ntopic deny #\n")


def test_crl_lists_revoked_serials() -> None:
    ca_key, ca = pki.make_ca("T", NOW)
    crl = x509.load_pem_x509_crl(pki.make_crl(ca_key, ca, [(12345, NOW)], NOW, 7, 30))
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(12345) is not None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7


# -- the agency ------------------------------------------------------------------------


def test_init_agency_keys_private_and_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "a"
    ok(f"provision init-agency --dir {root} --broker mqtt.example:8883")
    out = capsys.readouterr().out
    for private in ("agency.key", "ca.key"):
        path = root / "private" / private
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.read_text().strip().splitlines()[0][:40] not in out
    assert (root / "private").stat().st_mode & 0o777 == 0o700
    assert Agency(root).config.broker == Broker(host="mqtt.example", port=8883)
    x509.load_pem_x509_crl((root / "crl.pem").read_bytes())
    refused("already exists and is not empty", f"provision init-agency --dir {root}")
    refused("not an agency directory", f"provision devices --agency {tmp_path}")
    (root / "registry.db").write_bytes(b"not a database, " * 64)  # e.g. a file copied over it
    refused(
        f"{root / 'registry.db'}: not a registry database", f"provision devices --agency {root}"
    )


def test_enrolment_end_to_end(
    agency: Path, make_device: Callable[..., tuple[Path, Path]], tmp_path: Path
) -> None:
    dev, req = make_device()
    assert (dev / "private" / "device.key").stat().st_mode & 0o777 == 0o600
    assert (dev / "private" / "tls.key").stat().st_mode & 0o777 == 0o600
    settings = tmp_path / "settings.toml"
    settings.write_text("[recording]\nfps = 25\n\n[watermark.labels]\nbadge = '警号'\n")
    bundle = tmp_path / "bundle.json"
    ok(f"provision enroll {req} --agency {agency} --out {bundle} --settings {settings}")
    ok(f"agent install {bundle} --data {dev}")

    did = device_id(dev)
    assert device_config(dev).recording.fps == 25
    assert device_config(dev).watermark.labels.badge == "警号"
    client = x509.load_pem_x509_certificate((dev / "provision" / "client.pem").read_bytes())
    assert pki.common_name(client.subject) == did
    assert (dev / "provision" / "agency.pub").read_text() == (agency / "agency.pub").read_text()
    entries = [e for _, e in load_chain(dev) if isinstance(e, Entry)]
    assert entries[0].kind == "install"  # provenance starts at enrolment
    assert entries[0].body["bundle_sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert entries[0].body["device_id"] == did
    assert verify_archive(DeviceDirectory(dev), None).ok
    broker = provisioned.broker_settings(dev)
    assert (broker.host, broker.port) == ("127.0.0.1", 8883)

    reg = Agency(agency).registry
    assert reg.device(did)["serial"] == "SN-dev"  # type: ignore[index]
    assert [k.key_id for k in reg.device_keys(did)] == [entries[0].payload["key"]]
    assert reg.revoked_at(did) is None


def test_enroll_refuses_bad_requests_and_writes_nothing(
    agency: Path, make_device: Callable[..., tuple[Path, Path]], tmp_path: Path
) -> None:
    dev, req = make_device()
    bundle = tmp_path / "b.json"
    garbage, truncated = tmp_path / "garbage", tmp_path / "truncated"
    garbage.write_bytes(b"\x89PNG\r\n not a request")
    truncated.write_bytes(req.read_bytes()[:-200])
    before = registry_dump(agency)
    for path, message in (
        (garbage, "not valid JSON"),
        (truncated, "not valid JSON"),
        (tmp_path / "absent", "no such enrolment request"),
    ):
        refused(message, f"provision enroll {path} --agency {agency} --out {bundle}")
    bad = tmp_path / "bad.toml"
    bad.write_text("[recording]\nprebufer_seconds = 3\n")
    enroll = f"provision enroll {req} --agency {agency}"
    refused("recording.prebufer_seconds", f"{enroll} --out {bundle} --settings {bad}")
    # a failure while writing the bundle rolls the registry back
    refused("No such file or directory", f"{enroll} --out {tmp_path / 'no' / 'b.json'}")
    assert registry_dump(agency) == before
    assert not bundle.exists()

    ok(f"provision enroll {req} --agency {agency} --out {bundle}")
    after = registry_dump(agency)
    refused("already enrolled", f"provision enroll {req} --agency {agency} --out {bundle}")
    # the same key under another id, and the same hardware serial under another key
    shutil.copytree(dev, tmp_path / "clone")
    (tmp_path / "clone" / "identity.json").unlink()
    shutil.rmtree(tmp_path / "clone" / "chain", ignore_errors=True)
    ok(
        f"agent keygen --data {tmp_path / 'clone'} --out {tmp_path / 'c.json'} "
        "--serial SN-other --device-id bwc-clone"
    )
    refused(
        "is already enrolled (device",
        f"provision enroll {tmp_path / 'c.json'} --agency {agency} --out {bundle}",
    )
    _, req2 = make_device("dev2")
    ok(f"agent keygen --data {tmp_path / 'dev2'} --out {req2} --serial SN-dev")
    refused(
        "serial 'SN-dev' is already enrolled",
        f"provision enroll {req2} --agency {agency} --out {bundle}",
    )
    assert registry_dump(agency) == after


def test_enroll_refuses_with_an_expired_ca(
    agency: Path, make_device: Callable[..., tuple[Path, Path]], tmp_path: Path
) -> None:
    _, req = make_device()
    later = NOW + 11 * 365 * 86400
    with pytest.raises(ProvisionError, match="agency CA certificate expired on"):
        Agency(agency).enroll(req.read_bytes(), tmp_path / "b.json", later)
    assert not (tmp_path / "b.json").exists()


# -- install -----------------------------------------------------------------------------


def test_install_refuses_and_leaves_the_device_unchanged(
    agency: Path,
    enrolled: tuple[Path, Path],
    make_device: Callable[..., tuple[Path, Path]],
    tmp_path: Path,
) -> None:
    dev, bundle = enrolled
    # another device's bundle, and the same device enrolled by another agency
    _, req2 = make_device("other")
    other_bundle = tmp_path / "other.bundle.json"
    ok(f"provision enroll {req2} --agency {agency} --out {other_bundle}")
    ok(f"provision init-agency --dir {tmp_path / 'agency2'}")
    foreign = tmp_path / "foreign.bundle.json"
    ok(
        f"provision enroll {tmp_path / 'dev.request.json'} --agency {tmp_path / 'agency2'} "
        f"--out {foreign}"
    )
    doc = json.loads(bundle.read_bytes())
    doc["payload"]["broker"]["host"] = "evil.example"
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    truncated = tmp_path / "truncated.json"
    truncated.write_bytes(bundle.read_bytes()[:300])

    before = snapshot(dev)
    for path, message in (
        (tampered, "signature does not verify"),
        (truncated, "not valid JSON"),
        (other_bundle, "bundle is for another device key"),
        (tmp_path / "dev.request.json", "not a bundle (type 'enrolment_request')"),
        (tmp_path / "nothing", "no such bundle"),
    ):
        refused(message, f"agent install {path} --data {dev}")
        assert snapshot(dev) == before, path
    refused(
        "signed by another agency",
        f"agent install {foreign} --data {dev} --agency-key {agency / 'agency.pub'}",
    )
    with pytest.raises(ProvisionError, match="bundle expired at"):
        enrolment.install(dev, bundle.read_bytes(), NOW + 8 * 86400)
    with pytest.raises(ProvisionError, match="client certificate expired"):
        enrolment.install(
            dev,
            resign(bundle.read_bytes(), _agency_key(agency), expires=NOW + 2 * 365 * 86400),
            NOW + 400 * 86400,
        )
    assert snapshot(dev) == before

    # once installed, the device belongs to that agency
    ok(f"agent install {bundle} --data {dev}")
    before = snapshot(dev)
    refused("signed by another agency", f"agent install {foreign} --data {dev}")
    assert snapshot(dev) == before
    ok(f"agent install {bundle} --data {dev}")  # reinstalling the same agency's bundle is fine
    kinds = [e.kind for _, e in load_chain(dev) if isinstance(e, Entry)]
    assert kinds == ["install", "install"]


def _agency_key(agency: Path) -> nacl.signing.SigningKey:
    return Agency(agency).signing_key


def test_install_without_keygen_is_refused(tmp_path: Path, enrolled: tuple[Path, Path]) -> None:
    _, bundle = enrolled
    (tmp_path / "empty").mkdir()
    refused(
        "run `unbroken agent keygen` first", f"agent install {bundle} --data {tmp_path / 'empty'}"
    )
    assert list((tmp_path / "empty").iterdir()) == []


# -- assignment ----------------------------------------------------------------------------


def test_assignment_reaches_the_device_and_the_manifests(
    agency: Path, installed: Path, tmp_path: Path
) -> None:
    dev, did = installed, device_id(installed)
    cmd = tmp_path / "assign.json"
    ok(
        f"provision assign --agency {agency} --device {did} --badge 012345 --badge 067890 "
        f"--name 'Li Lei' --unit Traffic --out {cmd}"
    )
    ok(f"agent apply {cmd} --data {dev}")
    assert assigned_badges(dev) == ["012345", "067890"]
    entry = [e for _, e in load_chain(dev) if isinstance(e, Entry)][-1]
    assert entry.kind == "assignment"
    assert entry.body["badges"] == ["012345", "067890"] and entry.body["unit"] == "Traffic"

    record_session(dev, small_config(prebuffer_seconds=1), 1)  # badges from the assignment
    report = verify_archive(DeviceDirectory(dev), None)
    assert report.ok, report.problems
    assert report.sessions[0].badges == ["012345", "067890"]

    out = tmp_path / "unassign.json"
    ok(f"provision unassign --agency {agency} --device {did} --out {out}")
    ok(f"agent apply {out} --data {dev}")
    assert assigned_badges(dev) == []
    refused("has no assignment", f"provision unassign --agency {agency} --device {did}")
    history = Agency(agency).registry.assignment_history(did)
    assert [h["command"] for h in history] == ["assign", "unassign"]
    assert history[0]["badges"] == ["012345", "067890"]


def test_bad_assignment_commands_are_refused(
    agency: Path,
    installed: Path,
    make_device: Callable[..., tuple[Path, Path]],
    tmp_path: Path,
) -> None:
    dev, did = installed, device_id(installed)
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    ok(f"provision assign --agency {agency} --device {did} --badge 1 --out {first}")
    time.sleep(0.01)
    ok(f"provision assign --agency {agency} --device {did} --badge 2 --out {second}")
    ok(f"agent apply {second} --data {dev}")
    before = snapshot(dev)

    forged = tmp_path / "forged.json"  # right agency id, wrong key
    forged.write_bytes(
        resign(second.read_bytes(), nacl.signing.SigningKey.generate(), nonce="0" * 32)
    )
    doc = json.loads(second.read_bytes())
    doc["payload"]["args"]["badges"] = ["999"]
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    ok(f"provision init-agency --dir {tmp_path / 'agency2'}")
    foreign = tmp_path / "foreign.json"
    foreign.write_bytes(
        make_command(
            _agency_key(tmp_path / "agency2"), did, "assign", {"badges": ["7"]}, NOW, 3600
        )[0]
    )
    other_dev, other_req = make_device("other")
    ok(f"provision enroll {other_req} --agency {agency} --out {tmp_path / 'ob.json'}")
    elsewhere = tmp_path / "elsewhere.json"
    ok(
        f"provision assign --agency {agency} --device {device_id(other_dev)} --badge 3 "
        f"--out {elsewhere}"
    )
    for path, message in (
        (second, "already applied: replay refused"),
        (first, "superseded"),
        (forged, "signature does not verify"),
        (tampered, "signature does not verify"),
        (foreign, "signed by another agency"),
        (elsewhere, f"is for device {device_id(other_dev)!r}"),
    ):
        refused(message, f"agent apply {path} --data {dev}")
        assert snapshot(dev) == before, path
    third = tmp_path / "third.json"
    ok(f"provision assign --agency {agency} --device {did} --badge 3 --out {third}")
    with pytest.raises(ProvisionError, match="expired at"):
        assignment.apply_command(dev, third.read_bytes(), NOW + 2 * 86400)
    assert assigned_badges(dev) == ["2"]


def test_assign_rules(
    agency: Path, make_device: Callable[..., tuple[Path, Path]], tmp_path: Path
) -> None:
    refused(
        "unknown device 'bwc-nobody'",
        f"provision assign --agency {agency} --device bwc-nobody --badge 1",
    )
    refused(
        "unknown device 'bwc-nobody'",
        f"provision reissue --agency {agency} --device bwc-nobody --out {tmp_path / 'x.json'}",
    )
    room, req = make_device("room", "--role room_controller")
    bundle = tmp_path / "room.bundle.json"
    ok(f"provision enroll {req} --agency {agency} --out {bundle}")
    ok(f"agent install {bundle} --data {room}")
    rid = device_id(room)
    assert rid.startswith("room-")
    refused("name its --room", f"provision assign --agency {agency} --device {rid}")
    refused("is not valid", f"provision assign --agency {agency} --device {rid} --room '1/#'")
    ok(f"provision assign --agency {agency} --device {rid} --room 101")
    (out,) = (agency / "outbox" / rid).iterdir()  # without --out: the agency's outbox
    ok(f"agent apply {out} --data {room}")
    assert json.loads((room / "assignment.json").read_text())["room"] == "101"
    assert Agency(agency).registry.room_controllers() == [(rid, "101")]
    body, breq = make_device("body")
    ok(f"provision enroll {breq} --agency {agency} --out {tmp_path / 'b.json'}")
    refused(
        "serves no room",
        f"provision assign --agency {agency} --device {device_id(body)} --room 101",
    )
    refused("needs a --badge", f"provision assign --agency {agency} --device {device_id(body)}")


# -- revocation ------------------------------------------------------------------------


def test_revoke_marks_registry_and_crl(agency: Path, installed: Path, tmp_path: Path) -> None:
    did = device_id(installed)
    refused(
        "unknown device 'bwc-nobody'", f"provision revoke bwc-nobody --agency {agency} --reason x"
    )
    ok(f"provision revoke {did} --agency {agency} --reason 'lost on duty'")
    reg = Agency(agency).registry
    revoked = reg.revoked_at(did)
    assert revoked is not None and abs(revoked - time.time()) < 60
    serial = int(
        reg.db.query("select serial from certificates where device_id = ?", [did]).__next__()[
            "serial"
        ],
        16,
    )
    crl = x509.load_pem_x509_crl((agency / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    refused("was revoked on", f"provision revoke {did} --agency {agency} --reason x")
    refused("was revoked on", f"provision assign --agency {agency} --device {did} --badge 1")
    # its id is never enrolled again
    refused(
        "already enrolled",
        f"provision enroll {tmp_path / 'dev.request.json'} --agency {agency} "
        f"--out {tmp_path / 'again.json'}",
    )

    ok(f"provision enroll-panel --agency {agency} --room 101 --out {tmp_path / 'p'}")
    ok(f"provision revoke panel-101 --agency {agency} --reason replaced")
    refused(
        "no live certificate for 'panel-101'",
        f"provision revoke panel-101 --agency {agency} --reason x",
    )
    listed = {c.serial_number for c in x509.load_pem_x509_crl((agency / "crl.pem").read_bytes())}
    kinds = {
        int(r["serial"], 16): r["kind"]
        for r in Agency(agency).registry.db.query("select serial, kind from certificates")
    }
    # the device and the panel, and the probe of each CRL so far (provisioning.crl_probe)
    assert sorted(kinds[s] for s in listed if kinds[s] != "crl-probe") == ["device", "panel"]
    assert [kinds[s] for s in listed].count("crl-probe") == 2


def test_store_refuses_everything_received_after_revocation(
    agency: Path, installed: Path, tmp_path: Path
) -> None:
    """The registry is the store's device directory."""
    dev, did = installed, device_id(installed)
    record_session(dev, small_config(prebuffer_seconds=1), 1)
    entries = [e for _, e in load_chain(dev) if isinstance(e, Entry)]
    a = Agency(agency)
    db = Database.connect(str(tmp_path / "store.db"))
    ingest = Ingest(db, FileBlobs(tmp_path / "blobs"), a.registry, a.signing_key, "store-t")

    def send(e: Entry) -> dict[str, object]:
        ((_, reply),) = ingest.handle(f"unbroken/d/{did}/entry", e.to_json(), time.time())
        return ack_of(reply).model_dump()

    assert send(entries[0])["ok"]
    ok(f"provision revoke {did} --agency {agency} --reason stolen")
    # judged by the receive time: recorded before, but received after the revocation
    assert not any(send(e)["ok"] for e in entries[1:])
    key = nacl.signing.SigningKey(
        (dev / "private" / "device.key").read_bytes().strip(), encoder=nacl.encoding.HexEncoder
    )
    late = Sealer(key, did, entries[-1]).seal(
        "event", {"what": "x"}, Moment(time.time() + 60, 1e6, True)
    )
    reply = send(late)
    assert not reply["ok"] and "after the device was revoked" in str(reply["reason"])
    assert reply["code"] == "revoked"
    db.close()


# -- rotation ------------------------------------------------------------------------------


def test_rotation_keeps_old_footage_verifiable(
    agency: Path, recorded: Path, tmp_path: Path
) -> None:
    """A device that recorded before provisioning, is enrolled, rotates its key and
    records again: the whole chain verifies from its first key, and the registry knows
    which key was valid when."""
    dev = tmp_path / "dev"
    shutil.copytree(recorded, dev)
    old_pub = (dev / "device.pub").read_text().strip()
    req, bundle, rot = tmp_path / "req.json", tmp_path / "b.json", tmp_path / "rot.json"
    ok(f"agent keygen --data {dev} --out {req} --serial SN-R")
    assert (dev / "device.pub").read_text().strip() == old_pub  # the chain's key is kept
    ok(f"provision enroll {req} --agency {agency} --out {bundle}")
    ok(f"agent install {bundle} --data {dev}")
    ok(f"agent rotate-key --data {dev} --out {rot}")
    new_pub = (dev / "device.pub").read_text().strip()
    assert new_pub != old_pub
    assert not (dev / "private" / "device.key.next").exists()
    assert old_pub not in (dev / "private" / "device.key").read_text()
    old_id = key_id(nacl.signing.VerifyKey(bytes.fromhex(old_pub)))
    new_id = key_id(nacl.signing.VerifyKey(bytes.fromhex(new_pub)))
    assert (dev / "keys" / f"{old_id}.pub").read_text().strip() == old_pub

    ok(f"provision rotate {rot} --agency {agency}")
    refused("not the current key", f"provision rotate {rot} --agency {agency}")
    # a bundle issued before the rotation names the old key; a reissued one the new key
    refused("bundle is for another device key", f"agent install {bundle} --data {dev}")
    settings, bundle2 = tmp_path / "s.toml", tmp_path / "b2.json"
    settings.write_text("[recording]\nfps = 15\nwidth = 640\nheight = 360\n")
    ok(
        f"provision reissue --agency {agency} --device {device_id(dev)} --out {bundle2} "
        f"--settings {settings}"
    )
    ok(f"agent install {bundle2} --data {dev}")
    assert device_config(dev).recording.fps == 15
    record_session(dev, small_config(prebuffer_seconds=1), 1)  # sealed by the new key

    entries = [e for _, e in load_chain(dev) if isinstance(e, Entry)]
    rotation = next(e for e in entries if e.kind == "key_rotation")
    assert rotation.payload["key"] == old_id and rotation.body["new_key_id"] == new_id
    assert entries[-1].payload["key"] == new_id
    report = verify_archive(
        DeviceDirectory(dev), read_public_key(dev / "keys" / f"{old_id}.pub")
    )  # pinned to the first key
    assert report.ok, report.problems
    assert len(report.sessions) == 2

    did = device_id(dev)
    keys = Agency(agency).registry.device_keys(did)
    assert [(k.key_id, k.valid_until) for k in keys] == [
        (old_id, rotation.payload["at"]["wall"]),
        (new_id, None),
    ]
    assert keys[1].valid_from == rotation.payload["at"]["wall"]
    # and by place in the chain: the old key's last entry is the rotation
    assert (keys[0].until_seq, keys[1].from_seq) == (rotation.seq, rotation.seq + 1)


def test_rotation_requests_are_checked(agency: Path, installed: Path, tmp_path: Path) -> None:
    rot = tmp_path / "rot.json"
    ok(f"agent rotate-key --data {installed} --out {rot}")
    doc = json.loads(rot.read_bytes())
    doc["payload"]["new_key"] = "00" * 32
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    refused("not signed by the old key", f"provision rotate {bad} --agency {agency}")
    key = nacl.signing.SigningKey.generate()
    doc = json.loads(rot.read_bytes())["payload"]
    doc["old_key"] = bytes(key.verify_key).hex()
    refused(
        "entry is not valid",
        f"provision rotate {_write(tmp_path, signed.sign(key, doc))} --agency {agency}",
    )
    ok(f"provision init-agency --dir {tmp_path / 'agency2'}")
    refused("unknown device", f"provision rotate {rot} --agency {tmp_path / 'agency2'}")
    refused("keygen` first", f"agent rotate-key --data {tmp_path / 'x'} --out {rot}")
    ok(f"agent keygen --data {tmp_path / 'y'} --out {tmp_path / 'y.json'} --serial 1")
    refused("not provisioned", f"agent rotate-key --data {tmp_path / 'y'} --out {rot}")


def test_a_rotation_request_whose_entry_does_not_read_is_refused_by_name() -> None:
    old, new = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    body = {"new_key": "not hex", "new_key_id": key_id(new.verify_key)}
    entry = Sealer(old, "bwc-1", None).seal("key_rotation", body, Moment(time.time(), 1, True))
    with pytest.raises(ProvisionError, match="'new_key' is not a public key"):
        check_rotation_request(make_rotation_request(old, new, entry, time.time()))


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"{hashlib.sha256(data).hexdigest()[:8]}.json"
    path.write_bytes(data)
    return path


def test_rotation_interrupted_before_the_key_swap_completes(installed: Path) -> None:
    """A pending key whose rotation was sealed becomes the key; one never sealed is dropped."""
    dev = installed
    pending = dev / "private" / "device.key.next"
    stray = nacl.signing.SigningKey.generate()
    pending.write_bytes(stray.encode(nacl.encoding.HexEncoder))
    enrolment.finish_rotation(dev)
    assert not pending.exists()
    assert (dev / "device.pub").read_text().strip() != bytes(stray.verify_key).hex()


# -- keygen --------------------------------------------------------------------------------


def test_keygen_keeps_an_identity_the_chain_depends_on(installed: Path, tmp_path: Path) -> None:
    did = device_id(installed)
    again = tmp_path / "again.json"
    ok(f"agent keygen --data {installed} --out {again} --serial SN-dev")
    assert check_request(again.read_bytes(), time.time()).payload.device_id == did
    refused(
        "keygen cannot change it",
        f"agent keygen --data {installed} --out {again} --serial SN-dev --device-id bwc-renamed",
    )
    refused(
        "reserved",
        f"agent keygen --data {tmp_path / 'n'} --out {again} --serial 1 --device-id panel-1",
    )


def test_panel_and_store_credentials(agency: Path, tmp_path: Path) -> None:
    ok(f"provision enroll-panel --agency {agency} --room 101 --out {tmp_path / 'p'}")
    p = tmp_path / "p"
    cert = x509.load_der_x509_certificate((p / "panel.crt.der").read_bytes())
    key = serialization.load_der_private_key((p / "panel.key.der").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert pki.same_key(key.public_key(), cert.public_key())
    assert pki.common_name(cert.subject) == "panel-101"
    ca = x509.load_der_x509_certificate((p / "ca.crt.der").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert (p / "panel.key.der").stat().st_mode & 0o777 == 0o600
    assert json.loads((p / "panel.json").read_text())["topics"] == "unbroken/p/101/#"
    refused(
        "refusing to overwrite", f"provision enroll-panel --agency {agency} --room 101 --out {p}"
    )

    ok(f"provision enroll-store --agency {agency} --name main --out {tmp_path / 's'}")
    store = x509.load_pem_x509_certificate((tmp_path / "s" / "store.pem").read_bytes())
    assert pki.common_name(store.subject) == "store-main"
    assert Agency(agency).registry.subjects("store", time.time())[0]["subject"] == "store-main"
