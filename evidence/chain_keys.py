"""Which key signs each entry of a chain: the pinned key, then whichever key a signed
``key_rotation`` entry hands over to.

A chain checked against a key it rotated to later is named as such (``later_key``: pin
the first), not as every early entry's bad signature.
"""

from __future__ import annotations

from collections.abc import Sequence

import nacl.exceptions
import nacl.signing

from evidence.body_fields import ManifestError
from evidence.entries import KeyRotation
from evidence.seal import Entry, SealError, check_signature
from evidence.verify_report import NameProblem


def check_signatures(
    good: Sequence[tuple[str, Entry]],
    pinned_key: nacl.signing.VerifyKey,
    pinned_id: str,
    problem: NameProblem,
) -> None:
    """Check each entry against the key in force at its place in the chain: the pinned
    key, then whichever key a verified key_rotation entry hands over to."""
    key = pinned_key
    bad = []
    for name, e in good:
        try:
            check_signature(e, key)
        except SealError:
            bad.append((name, e))
            continue
        if e.kind == "key_rotation":
            try:
                key = KeyRotation.from_body(e.body).verify_key()
            except (ManifestError, nacl.exceptions.CryptoError) as err:
                problem("malformed_entry", f"entry {e.seq} ({name})", str(err))
    if good and len(bad) == len(good):
        signer = good[0][1].payload.get("key")
        problem(
            "wrong_key",
            "chain",
            f"no entry verifies with key {pinned_id}; entries name key {signer}",
        )
        return
    pinned = bytes(pinned_key).hex()
    handover = next(
        (e for _, e in good if e.kind == "key_rotation" and e.body.get("new_key") == pinned),
        None,
    )
    if bad and handover is not None and all(e.seq <= handover.seq for _, e in bad):
        first = good[0][1].payload.get("key")
        problem(
            "later_key",
            "chain",
            f"the pinned key {pinned_id} takes over at entry {handover.seq} by a signed "
            f"rotation; entries 1..{handover.seq} are signed by key {first}: pin the chain's "
            f"first key (keys/{first}.pub, the one registered at enrolment) to verify them all",
        )
        return
    for name, e in bad:
        problem("bad_signature", f"entry {e.seq} ({name})", "signature does not verify", e.session)


def key_in_force(
    rotations: Sequence[tuple[str, Entry]],
    pinned_key: nacl.signing.VerifyKey,
    problem: NameProblem,
) -> nacl.signing.VerifyKey:
    """The key that signs the entries after ``rotations`` (the chain's key_rotation
    entries before them, in order): the pinned key, handed over by each rotation signed
    by the key in force. One that does not verify hands nothing over, and is named."""
    key = pinned_key
    ordered = sorted(rotations, key=lambda ne: ne[1].seq)
    pinned = bytes(pinned_key).hex()
    for n, (name, e) in enumerate(ordered):
        try:
            check_signature(e, key)
        except SealError:
            if key is pinned_key and any(r.body.get("new_key") == pinned for _, r in ordered[n:]):
                continue  # a key pinned later than this rotation: not yet in force here
            problem("bad_signature", f"entry {e.seq} ({name})", "signature does not verify")
            continue
        try:
            key = KeyRotation.from_body(e.body).verify_key()
        except (ManifestError, nacl.exceptions.CryptoError) as err:
            problem("malformed_entry", f"entry {e.seq} ({name})", str(err))
    return key
