"""The agency directory and what administrators do with it: enrol, assign, revoke, rotate,
issue panel and store certificates. The decisions are in the pure modules; this is the
I/O around them, with every change to the registry in one transaction.

Layout::

    AGENCY/agency.toml          name, broker address, validity periods (editable)
    AGENCY/agency.pub           the agency's Ed25519 public key (hex)
    AGENCY/ca.pem               the broker CA certificate
    AGENCY/crl.pem              its current CRL
    AGENCY/registry.db          devices, keys, certificates, assignments, audit trail
    AGENCY/private/agency.key   Ed25519 signing key (hex, 0600)
    AGENCY/private/ca.key       CA key (PEM, 0600)
    AGENCY/private/evidence.key X25519 key devices encrypt footage to (hex, 0600): the store
                                uses it to export; it is never on a device
    AGENCY/evidence.pub         its public key (hex), put in every device's bundle

Example::

    agency = init_agency(Path("agency"), "Example PSB", Broker(host="mqtt.example", port=8883))
    agency.enroll(request_bytes, Path("bwc.bundle"), now=time.time())
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import nacl.encoding
import nacl.public
import nacl.signing
import tomli_w
from cryptography import x509
from pydantic import Field

from common import pki
from common.bundle import Broker, check_settings, make_bundle
from common.commands import AgencyCommand, Name, make_command
from common.files import write_atomic
from common.requests import check_request, check_rotation_request
from evidence.models import Strict, validate
from evidence.names import SKEW_SECONDS, ProvisionError, check_name, iso
from evidence.receipt import certify_receipt_key
from evidence.seal import key_id
from provisioning.registry import Registry

CONFIG = "agency.toml"
PUBLIC = "agency.pub"
CA = "ca.pem"
CRL = "crl.pem"
REGISTRY = "registry.db"
PRIVATE = "private"


class AgencyConfig(Strict):
    name: str = Field(min_length=1, max_length=100)
    broker: Broker = Field(description="Where devices reach the broker (written into bundles).")
    bundle_days: float = Field(7, gt=0, le=365, description="How long a bundle may be installed.")
    cert_days: int = Field(365, ge=1, le=3650, description="Client certificate validity.")
    command_hours: float = Field(24, gt=0, le=720, description="How long a command is valid.")
    crl_days: int = Field(
        30, ge=1, le=365, description="CRL validity: rerun broker-config before it runs out."
    )


@dataclass(frozen=True)
class Enrolled:
    device_id: str
    role: str
    certificate_serial: str
    bundle_sha256: str


EVIDENCE_PUBLIC, EVIDENCE_PRIVATE = "evidence.pub", "evidence.key"


def _new_evidence_key(root: Path) -> None:
    key = nacl.public.PrivateKey.generate()
    (root / PRIVATE).mkdir(mode=0o700, exist_ok=True)
    write_atomic(root / PRIVATE / EVIDENCE_PRIVATE, bytes(key).hex().encode() + b"\n", 0o600)
    write_atomic(root / EVIDENCE_PUBLIC, bytes(key.public_key).hex().encode() + b"\n")


def init_agency(root: Path, name: str, broker: Broker, now: float) -> Agency:
    """Create AGENCY: keys, CA, empty CRL, registry. Built in a temporary directory beside
    it and renamed into place, so an interrupted run leaves no half an agency."""
    config = validate(AgencyConfig, {"name": name, "broker": broker.model_dump()}, "agency")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ProvisionError(f"{root} already exists and is not empty: an agency is created once")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        (tmp / PRIVATE).mkdir(mode=0o700)
        signing = nacl.signing.SigningKey.generate()
        write_atomic(
            tmp / PRIVATE / "agency.key", signing.encode(nacl.encoding.HexEncoder) + b"\n", 0o600
        )
        write_atomic(tmp / PUBLIC, bytes(signing.verify_key).hex().encode() + b"\n")
        _new_evidence_key(tmp)
        ca_key, ca = pki.make_ca(name, now)
        write_atomic(tmp / PRIVATE / "ca.key", pki.key_pem(ca_key), 0o600)
        write_atomic(tmp / CA, pki.cert_pem(ca))
        write_atomic(tmp / CONFIG, tomli_w.dumps(config.model_dump()).encode())
        registry = Registry(tmp / REGISTRY)
        with registry.transaction():
            crl = pki.make_crl(ca_key, ca, [], now, registry.next_crl_number(), config.crl_days)
            registry.audit(now, "init-agency", name, agency_key=key_id(signing.verify_key))
        registry.close()
        write_atomic(tmp / CRL, crl)
        os.chmod(tmp, 0o750)
        if root.exists():
            root.rmdir()
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Agency(root)


class Agency:
    def __init__(self, root: Path) -> None:
        self.root = root
        path = root / CONFIG
        if not path.is_file():
            raise ProvisionError(
                f"{root} is not an agency directory (no {CONFIG}; create one with "
                f"`unbroken provision init-agency --agency {root}`)"
            )
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ProvisionError(f"{path}: not valid TOML: {e}") from None
        self.config = validate(AgencyConfig, data, str(path))

    # -- keys and CA (read when needed: most commands need only some) -------------------

    @cached_property
    def signing_key(self) -> nacl.signing.SigningKey:
        path = self.root / PRIVATE / "agency.key"
        try:
            return nacl.signing.SigningKey(path.read_bytes().strip(), nacl.encoding.HexEncoder)
        except (OSError, ValueError) as e:
            raise ProvisionError(f"{path}: cannot read the agency signing key ({e})") from None

    @property
    def verify_key(self) -> nacl.signing.VerifyKey:
        return self.signing_key.verify_key

    @cached_property
    def evidence_public_key(self) -> nacl.public.PublicKey:
        """The key footage is encrypted to (made now for an agency created before it)."""
        path = self.root / EVIDENCE_PUBLIC
        if not path.is_file():
            _new_evidence_key(self.root)
        try:
            return nacl.public.PublicKey(bytes.fromhex(path.read_text().strip()))
        except (OSError, ValueError) as e:
            raise ProvisionError(f"{path}: cannot read the agency evidence key ({e})") from None

    def evidence_private_key(self) -> nacl.public.PrivateKey:
        """The key that decrypts footage (the store's exports)."""
        path = self.root / PRIVATE / EVIDENCE_PRIVATE
        try:
            return nacl.public.PrivateKey(bytes.fromhex(path.read_text().strip()))
        except (OSError, ValueError) as e:
            raise ProvisionError(f"{path}: cannot read the agency evidence key ({e})") from None

    @cached_property
    def ca(self) -> x509.Certificate:
        return pki.load_cert((self.root / CA).read_bytes(), str(self.root / CA))

    @cached_property
    def ca_key(self) -> pki.PrivateKey:
        path = self.root / PRIVATE / "ca.key"
        return pki.load_key(path.read_bytes(), str(path))

    @cached_property
    def registry(self) -> Registry:
        path = self.root / REGISTRY
        if not path.is_file():
            raise ProvisionError(f"{path}: the registry is missing")
        try:
            return Registry(path)
        except sqlite3.DatabaseError as e:
            raise ProvisionError(f"{path}: not a registry database ({e})") from None

    def close(self) -> None:
        if "registry" in self.__dict__:
            self.registry.close()

    @contextmanager
    def change(self) -> Iterator[list[tuple[Path, bytes, int]]]:
        """A registry transaction, plus files written only if everything before succeeded.
        The body lists ``(path, bytes, mode)``; they are written atomically just before
        the commit, and new ones removed again if the commit fails."""
        files: list[tuple[Path, bytes, int]] = []
        created: list[Path] = []
        try:
            with self.registry.transaction():
                yield files
                for path, data, mode in files:
                    if not path.exists():
                        created.append(path)
                    write_atomic(path, data, mode)
        except BaseException:
            for path in created:
                with suppress(OSError):
                    path.unlink()
            raise

    def crl(self, now: float) -> bytes:
        """A fresh CRL of every revoked certificate (inside a transaction: it is numbered)."""
        return pki.make_crl(
            self.ca_key,
            self.ca,
            self.registry.revoked_serials(),
            now,
            self.registry.next_crl_number(),
            self.config.crl_days,
        )

    def _live_device(self, device_id: str) -> dict[str, Any]:
        device = self.registry.device(device_id)
        if device is None:
            raise ProvisionError(f"unknown device {device_id!r} (not in the registry)")
        if device["revoked_at"] is not None:
            raise ProvisionError(
                f"device {device_id!r} was revoked on {iso(device['revoked_at'])} "
                f"({device['revoke_reason']})"
            )
        return device

    def certificate_row(
        self, cert: x509.Certificate, kind: str, now: float, **extra: str | None
    ) -> dict[str, Any]:
        return {
            "serial": format(cert.serial_number, "x"),
            "subject": pki.common_name(cert.subject),
            "kind": kind,
            "device_id": extra.get("device_id"),
            "room": extra.get("room"),
            "issued_at": now,
            "not_after": cert.not_valid_after_utc.timestamp(),
            "pem": pki.cert_pem(cert).decode(),
            "revoked_at": None,
            "revoke_reason": None,
        }

    # -- enrolment ---------------------------------------------------------------------

    def enroll(
        self,
        request: bytes,
        out: Path,
        now: float,
        settings: dict[str, Any] | None = None,
        broker: Broker | None = None,
    ) -> Enrolled:
        req = check_request(request, now)
        p = req.payload
        settings = settings or {}
        check_settings(settings, role=p.role)
        pki.check_valid(self.ca, now, "agency CA certificate")
        reg = self.registry
        with self.change() as files:
            if (existing := reg.device(p.device_id)) is not None:
                raise ProvisionError(
                    f"device {p.device_id!r} is already enrolled (since "
                    f"{iso(existing['enrolled_at'])})"
                )
            if (owner := reg.key_owner(p.public_key)) is not None:
                raise ProvisionError(
                    f"device key {key_id(req.verify_key)} is already enrolled (device {owner!r})"
                )
            live = [d for d in reg.devices_with_serial(p.serial) if d["revoked_at"] is None]
            if live:
                raise ProvisionError(
                    f"serial {p.serial!r} is already enrolled as device "
                    f"{live[0]['device_id']!r} (revoke it first to re-enrol the hardware)"
                )
            cert = pki.issue(
                self.ca_key,
                self.ca,
                req.csr.public_key(),
                p.device_id,
                "client",
                now,
                self.config.cert_days,
            )
            bundle = make_bundle(
                self.signing_key,
                device_id=p.device_id,
                role=p.role,
                model=p.model,
                serial=p.serial,
                device_public_key=p.public_key,
                broker=broker or self.config.broker,
                ca=self.ca,
                client=cert,
                settings=settings,
                now=now,
                days=self.config.bundle_days,
                evidence_public_key=bytes(self.evidence_public_key).hex(),
            )
            reg.add_device(
                {
                    "device_id": p.device_id,
                    "serial": p.serial,
                    "model": p.model,
                    "role": p.role,
                    "enrolled_at": now,
                    "request_sha256": req.sha256,
                    "settings": json.dumps(settings),
                    "revoked_at": None,
                    "revoke_reason": None,
                }
            )
            # The first key signs the chain from its first entry, which may predate
            # enrolment (a device used before it was provisioned): valid from 0.
            reg.add_key(p.device_id, key_id(req.verify_key), p.public_key, 0.0)
            row = self.certificate_row(cert, "device", now, device_id=p.device_id)
            reg.add_certificate(row)
            reg.audit(now, "enroll", p.device_id, serial=p.serial, certificate=row["serial"])
            files.append((out, bundle, 0o644))
        return Enrolled(p.device_id, p.role, row["serial"], hashlib.sha256(bundle).hexdigest())

    def reissue(
        self,
        device_id: str,
        out: Path,
        now: float,
        settings: dict[str, Any] | None = None,
        broker: Broker | None = None,
    ) -> Enrolled:
        """A fresh bundle for an enrolled device: new settings, a renewed certificate (same
        TLS key), its current device key (after a rotation), or just a bundle that expired
        before it was installed. The previous certificate stays valid until it expires."""
        pki.check_valid(self.ca, now, "agency CA certificate")
        reg = self.registry
        with self.change() as files:
            device = self._live_device(device_id)
            if settings is not None:
                check_settings(settings, role=device["role"])
            key, old = reg.current_key(device_id), reg.device_certificate(device_id)
            if key is None or old is None:
                raise ProvisionError(f"device {device_id!r} has no current key or certificate")
            tls_key = pki.load_cert(old["pem"], "registered certificate").public_key()
            cert = pki.issue(
                self.ca_key, self.ca, tls_key, device_id, "client", now, self.config.cert_days
            )
            if settings is None:
                settings = json.loads(device["settings"] or "{}")
            else:
                reg.set_settings(device_id, settings)
            bundle = make_bundle(
                self.signing_key,
                device_id=device_id,
                role=device["role"],
                model=device["model"],
                serial=device["serial"],
                device_public_key=key["public_key"],
                broker=broker or self.config.broker,
                ca=self.ca,
                client=cert,
                settings=settings or {},
                now=now,
                days=self.config.bundle_days,
                evidence_public_key=bytes(self.evidence_public_key).hex(),
            )
            row = self.certificate_row(cert, "device", now, device_id=device_id)
            reg.add_certificate(row)
            reg.audit(now, "reissue", device_id, certificate=row["serial"])
            files.append((out, bundle, 0o644))
        return Enrolled(
            device_id, device["role"], row["serial"], hashlib.sha256(bundle).hexdigest()
        )

    def enroll_panel(self, room: str, out: Path, now: float) -> str:
        """A P-256 key and certificate in DER for a MicroPython room panel (CN panel-ROOM)."""
        check_name(room, "room")
        key, cert = self._leaf(f"panel-{room}", now)
        info = {
            "room": room,
            "client_id": f"panel-{room}",
            "broker": self.config.broker.model_dump(),
            "topics": f"unbroken/p/{room}/#",
            "key": "panel.key.der",
            "cert": "panel.crt.der",
            "ca": "ca.crt.der",
        }
        self._prepare_dir(out, "panel.key.der")
        with self.change() as files:
            self.registry.add_certificate(self.certificate_row(cert, "panel", now, room=room))
            self.registry.audit(now, "enroll-panel", f"panel-{room}", room=room)
            files += [
                (out / "panel.key.der", pki.key_der(key), 0o600),
                (out / "panel.crt.der", pki.cert_der(cert), 0o644),
                (out / "ca.crt.der", pki.cert_der(self.ca), 0o644),
                (out / "panel.json", json.dumps(info, indent=2).encode() + b"\n", 0o644),
            ]
        return f"panel-{room}"

    def enroll_store(self, name: str, out: Path, now: float) -> str:
        """A client certificate for a store worker (CN store-NAME), in PEM, and its
        receipt key with the agency's certificate for it: the store host then holds a
        key that signs receipts and nothing else."""
        check_name(name, "store name")
        key, cert = self._leaf(f"store-{name}", now)
        receipt_key = nacl.signing.SigningKey.generate()
        receipt_cert = certify_receipt_key(
            self.signing_key, f"store-{name}", receipt_key.verify_key, now
        )
        b = self.config.broker
        snippet = tomli_w.dumps(
            {
                "broker": {
                    "host": b.host,
                    "port": b.port,
                    "ca": "ca.pem",
                    "cert": "store.pem",
                    "key": "store.key",
                },
                "receipts": {"key": "receipt.key", "certificate": "receipt.cert"},
            }
        )
        self._prepare_dir(out, "store.key")
        with self.change() as files:
            self.registry.add_certificate(self.certificate_row(cert, "store", now))
            self.registry.audit(now, "enroll-store", f"store-{name}")
            files += [
                (out / "store.key", pki.key_pem(key), 0o600),
                (out / "store.pem", pki.cert_pem(cert), 0o644),
                (out / "ca.pem", pki.cert_pem(self.ca), 0o644),
                (out / "broker.toml", snippet.encode(), 0o644),
                (out / "receipt.key", bytes(receipt_key).hex().encode() + b"\n", 0o600),
                (out / "receipt.cert", receipt_cert, 0o644),
            ]
        return f"store-{name}"

    def _leaf(self, cn: str, now: float) -> tuple[pki.PrivateKey, x509.Certificate]:
        key = pki.new_key()
        cert = pki.issue(
            self.ca_key, self.ca, key.public_key(), cn, "client", now, self.config.cert_days
        )
        return key, cert

    @staticmethod
    def _prepare_dir(out: Path, marker: str) -> None:
        if (out / marker).exists():
            raise ProvisionError(f"{out} already holds {marker}: refusing to overwrite a key")
        out.mkdir(parents=True, exist_ok=True)

    # -- assignment --------------------------------------------------------------------

    def assign(
        self,
        device_id: str,
        out: Path,
        now: float,
        badges: list[str] | None = None,
        name: str | None = None,
        unit: str | None = None,
        room: str | None = None,
    ) -> AgencyCommand:
        badges = badges or []
        with self.change() as files:
            device = self._live_device(device_id)
            if device["role"] == "room_controller":
                if room is None:
                    raise ProvisionError(f"{device_id} is a room controller: name its --room")
                check_name(room, "room")
            else:
                if room is not None:
                    raise ProvisionError(f"{device_id} is a body recorder: it serves no room")
                if not badges:
                    raise ProvisionError(f"assigning body recorder {device_id} needs a --badge")
            args = {"badges": badges, "name": name, "unit": unit, "room": room}
            return self._command(device_id, "assign", args, out, now, files)

    def unassign(self, device_id: str, out: Path, now: float) -> AgencyCommand:
        with self.change() as files:
            self._live_device(device_id)
            if self.registry.assignment(device_id) is None:
                raise ProvisionError(f"device {device_id!r} has no assignment")
            args: dict[str, Any] = {"badges": [], "name": None, "unit": None, "room": None}
            return self._command(device_id, "unassign", args, out, now, files)

    def session_command(
        self,
        device_id: str,
        name: Literal["session_open", "session_close"],
        args: dict[str, Any],
        out: Path,
        now: float,
        ttl: float = 600.0,
    ) -> AgencyCommand:
        """The case system opens or closes an interview-room session: a command signed by
        the agency, for one room controller, valid ``ttl`` seconds (short: it acts now)."""
        with self.change() as files:
            device = self._live_device(device_id)
            if device["role"] != "room_controller":
                raise ProvisionError(f"{device_id} is a body recorder: sessions open by button")
            assigned = self.registry.assignment(device_id)
            if assigned is None or not assigned.get("room"):  # the room would refuse it
                raise ProvisionError(
                    f"{device_id} serves no room yet: assign it one first "
                    f"(unbroken provision assign --device {device_id} --room ROOM)"
                )
            data, cmd = make_command(self.signing_key, device_id, name, args, now, ttl)
            self.registry.audit(now, name, device_id, **args, nonce=cmd.nonce)
            files.append((out, data, 0o644))
            return cmd

    def _command(
        self,
        device_id: str,
        name: Name,
        args: dict[str, Any],
        out: Path,
        now: float,
        files: list[tuple[Path, bytes, int]],
    ) -> AgencyCommand:
        data, cmd = make_command(
            self.signing_key, device_id, name, args, now, self.config.command_hours * 3600
        )
        self.registry.add_assignment(
            {
                "device_id": device_id,
                "command": name,
                **args,
                "issued": cmd.issued,
                "expires": cmd.expires,
                "nonce": cmd.nonce,
                "command_sha256": hashlib.sha256(data).hexdigest(),
            }
        )
        self.registry.audit(now, name, device_id, **args, nonce=cmd.nonce)
        files.append((out, data, 0o644))
        return cmd

    # -- revocation and rotation -------------------------------------------------------

    def revoke(self, subject: str, reason: str, now: float) -> int:
        """Revoke a device (for good: its id is never enrolled again) or a panel's or
        store's certificates; rewrite the CRL. Returns how many certificates it revoked."""
        if not reason.strip():
            raise ProvisionError("a revocation needs a --reason")
        reg = self.registry
        with self.change() as files:
            if subject.startswith(("panel-", "store-")):
                count = reg.revoke_certificates(now, reason, subject=subject)
                if count == 0:
                    raise ProvisionError(
                        f"no live certificate for {subject!r} (unknown or revoked)"
                    )
            else:
                self._live_device(subject)
                reg.revoke_device(subject, now, reason)
                count = reg.revoke_certificates(now, reason, device_id=subject)
            reg.audit(now, "revoke", subject, reason=reason, certificates=count)
            files.append((self.root / CRL, self.crl(now), 0o644))
        return count

    def rotate(self, request: bytes, now: float) -> tuple[str, str, str]:
        """Import a device's key rotation: the old key is valid until the rotation entry's
        time, the new one from then on. Returns (device, old key id, new key id)."""
        rot = check_rotation_request(request)
        old_hex, new_hex = bytes(rot.old_key).hex(), bytes(rot.new_key).hex()
        reg = self.registry
        with self.change():
            self._live_device(rot.device_id)
            current = reg.current_key(rot.device_id)
            if current is None or current["public_key"] != old_hex:
                raise ProvisionError(
                    f"rotation request is from key {key_id(rot.old_key)}, which is not the "
                    f"current key of {rot.device_id} "
                    f"({current['key_id'] if current else 'none'}): already imported?"
                )
            if (owner := reg.key_owner(new_hex)) is not None:
                raise ProvisionError(
                    f"new key {key_id(rot.new_key)} is already registered (device {owner!r})"
                )
            if rot.rotated_at < float(current["valid_from"]) or rot.rotated_at > now + SKEW_SECONDS:
                raise ProvisionError(
                    f"rotation is dated {iso(rot.rotated_at)}, outside the old key's validity"
                )
            reg.end_key(current["key_id"], rot.rotated_at)
            reg.add_key(rot.device_id, key_id(rot.new_key), new_hex, rot.rotated_at)
            reg.audit(
                now,
                "rotate",
                rot.device_id,
                old=current["key_id"],
                new=key_id(rot.new_key),
                rotated_at=rot.rotated_at,
            )
        return rot.device_id, str(current["key_id"]), key_id(rot.new_key)
