"""The agency directory and what administrators do with it: enrol, assign, revoke, rotate,
issue panel and store certificates. The decisions are in the pure modules; this is the
I/O around them, with every change to the registry in one transaction.

The directory and what every job shares are in :mod:`provisioning.agency_directory`; the
jobs in :mod:`provisioning.enrolment`, :mod:`provisioning.assignment` and
:mod:`provisioning.revocation`. :class:`Agency` is all of them on one directory.

Example::

    agency = init_agency(Path("agency"), "Example PSB", Broker(host="mqtt.example", port=8883))
    agency.enroll(request_bytes, Path("bwc.bundle"), now=time.time())
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nacl.encoding
import nacl.signing
import tomli_w

from common import pki
from common.bundle import Broker
from common.files import write_atomic
from evidence.models import validate
from evidence.names import ProvisionError
from evidence.seal import key_id
from provisioning.agency_directory import (
    CA,
    CONFIG,
    CRL,
    PRIVATE,
    PUBLIC,
    REGISTRY,
    AgencyConfig,
    new_evidence_key,
)
from provisioning.assignment import Assignment
from provisioning.enrolment import Enrolment
from provisioning.registry import Registry
from provisioning.revocation import Revocation


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
        new_evidence_key(tmp)
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


class Agency(Enrolment, Assignment, Revocation):
    """An agency directory and everything an administrator does with it."""
