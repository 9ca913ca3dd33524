"""Enrolment: a device's request becomes a registry entry and a signed bundle, an enrolled
device gets a fresh bundle, a room panel or a store worker gets its certificate and keys.
Each is one registry transaction with the files it writes (:class:`AgencyDirectory`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing
import tomli_w
from cryptography import x509

from common import pki
from common.bundle import Broker, check_settings, make_bundle
from common.requests import check_request
from evidence.names import ProvisionError, check_name, iso
from evidence.receipt import certify_receipt_key
from evidence.seal import key_id
from provisioning.agency_directory import AgencyDirectory


@dataclass(frozen=True)
class Enrolled:
    device_id: str
    role: str
    certificate_serial: str
    bundle_sha256: str


class Enrolment(AgencyDirectory):
    """The agency's enrolment jobs (a part of :class:`provisioning.agency.Agency`)."""

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
