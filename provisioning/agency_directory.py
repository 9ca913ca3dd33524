"""The agency directory on disk: where its keys, CA, CRL and registry are, its editable
configuration, and the base every administrator's job builds on (keys read when needed,
the registry, one transaction for a change and the files it writes). The jobs themselves
are :mod:`provisioning.enrolment`, :mod:`provisioning.assignment` and
:mod:`provisioning.revocation`; :mod:`provisioning.agency` composes them.

Layout::

    AGENCY/agency.toml          name, broker address, validity periods (editable)
    AGENCY/agency.pub           the agency's Ed25519 public key (hex)
    AGENCY/ca.pem               the broker CA certificate
    AGENCY/crl.pem              its current CRL
    AGENCY/crl-probe.pem        the certificate revoked first in it (provisioning.crl_probe)
    AGENCY/registry.db          devices, keys, certificates, assignments, audit trail
    AGENCY/private/agency.key   Ed25519 signing key (hex, 0600)
    AGENCY/private/ca.key       CA key (PEM, 0600)
    AGENCY/private/crl-probe.key the CRL probe's key (0600)
    AGENCY/private/evidence.key X25519 key devices encrypt footage to (hex, 0600): the store
                                uses it to export; it is never on a device
    AGENCY/evidence.pub         its public key (hex), put in every device's bundle

"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cached_property
from pathlib import Path
from typing import Any

import nacl.encoding
import nacl.public
import nacl.signing
from cryptography import x509
from pydantic import Field

from common import pki
from common.bundle import Broker
from common.files import write_atomic
from evidence.models import Strict, validate
from evidence.names import ProvisionError, iso
from provisioning.crl_probe import PROBE_CERT, PROBE_KEY, PROBE_SUBJECT, new_probe
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


EVIDENCE_PUBLIC, EVIDENCE_PRIVATE = "evidence.pub", "evidence.key"


def new_evidence_key(root: Path) -> None:
    key = nacl.public.PrivateKey.generate()
    (root / PRIVATE).mkdir(mode=0o700, exist_ok=True)
    write_atomic(root / PRIVATE / EVIDENCE_PRIVATE, bytes(key).hex().encode() + b"\n", 0o600)
    write_atomic(root / EVIDENCE_PUBLIC, bytes(key.public_key).hex().encode() + b"\n")


class AgencyDirectory:
    """An existing agency directory, read lazily: what every job on it shares."""

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
            new_evidence_key(self.root)
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
        return Registry(path)  # ProvisionError if it is not a registry

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

    def crl(self, now: float) -> tuple[bytes, list[tuple[Path, bytes, int]]]:
        """A fresh CRL of every revoked certificate (inside a transaction: it is numbered),
        and the files to write: AGENCY/crl.pem and the probe revoked in it first, by which
        :mod:`provisioning.crl_probe` asks the broker whether it holds this CRL."""
        probe, probe_key = new_probe(self.ca_key, self.ca, now, self.config.crl_days)
        row = self.certificate_row(probe, PROBE_SUBJECT, now)
        self.registry.add_certificate({**row, "revoked_at": now, "revoke_reason": "CRL probe"})
        crl = pki.make_crl(
            self.ca_key,
            self.ca,
            self.registry.revoked_serials(),
            now,
            self.registry.next_crl_number(),
            self.config.crl_days,
        )
        return crl, [
            (self.root / CRL, crl, 0o644),
            (self.root / PROBE_CERT, pki.cert_pem(probe), 0o644),
            (self.root / PRIVATE / PROBE_KEY, probe_key, 0o600),
        ]

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
