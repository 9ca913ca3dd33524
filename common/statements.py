"""Written statements for gaps that never resumed (R-Art 16): the statement's body and the
officers' attestations, checked against the agency-signed officer list. Both the device
(``agent explain``) and the agency (``store explain``) make them; sealing is each side's own."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import nacl.exceptions
import nacl.signing

from evidence import signed
from evidence.entries import Attested, Statement, WrittenExplanation
from evidence.gaps import written_statement_problem
from evidence.seal import key_id


class StatementError(ValueError):
    pass


@dataclass(frozen=True)
class Attestation:
    badge: str
    method: str
    proof: str


class CredentialChecker(Protocol):
    def check(self, a: Attestation) -> bool: ...


def pin_attestations(pins: dict[str, str]) -> list[Attestation]:
    """Officers' PINs by badge (typed at a prompt or read from a PIN file: common.pins),
    as attestations, in the order given."""
    return [Attestation(badge, "pin", pin) for badge, pin in pins.items()]


def pin_digest(pin: str, salt: bytes) -> str:
    return hashlib.scrypt(pin.encode(), salt=salt, n=2**14, r=8, p=1).hex()


def officer_credentials(agency_key: nacl.signing.SigningKey, pins: dict[str, str]) -> bytes:
    """The agency-signed credential list for officers (badge → salted PIN digest)."""
    officers = []
    for badge, pin in sorted(pins.items()):
        salt = os.urandom(16)
        officers.append({"badge": badge, "salt": salt.hex(), "scrypt": pin_digest(pin, salt)})
    payload = {"type": "officers", "agency": key_id(agency_key.verify_key), "officers": officers}
    return signed.sign(agency_key, payload)


class PinCredentials:
    def __init__(self, officers: dict[str, dict[str, str]]) -> None:
        self._officers = officers

    @staticmethod
    def load(path: Path, agency_key: nacl.signing.VerifyKey) -> PinCredentials:
        try:
            payload, sig = signed.parse(path.read_bytes(), "officer list")
            signed.verify(payload, sig, agency_key, "officer list")
            officers = payload["officers"]
            return PinCredentials({str(o["badge"]): o for o in officers})
        except FileNotFoundError:
            raise StatementError(f"{path}: no officer credentials on this device") from None
        except (signed.SignedError, KeyError, TypeError):
            raise StatementError(f"{path}: not an agency-signed officer list") from None

    def check(self, a: Attestation) -> bool:
        o = self._officers.get(a.badge)
        if a.method != "pin" or o is None:
            return False
        return hmac.compare_digest(pin_digest(a.proof, bytes.fromhex(o["salt"])), o["scrypt"])


def written_explanation(
    gap_id: str, reason: str, attestations: list[Attestation], checker: CredentialChecker
) -> WrittenExplanation:
    """Check every attestation and build the explanation entry; StatementError names the
    first problem (a wrong credential, one officer twice, too few)."""
    for a in attestations:
        if not checker.check(a):
            raise StatementError(f"officer {a.badge}: credential not accepted")
    # the proof (PIN) is never written down: only who attested, and how
    attested = tuple(Attested(a.badge, a.method) for a in attestations)
    statement = Statement(reason.strip(), attested)
    why = written_statement_problem(statement)
    if why:
        raise StatementError(why)
    return WrittenExplanation(gap_id, statement)
