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
    retired: list[tuple[nacl.signing.VerifyKey, int]] = []  # (key, the rotation retiring it)
    for name, e in good:
        try:
            check_signature(e, key)
        except SealError:
            if (seq := _retired_by(e, retired)) is not None:
                problem("retired_key", f"entry {e.seq} ({name})", retired_key(e, seq), e.session)
            else:
                bad.append((name, e))
            continue
        if e.kind == "key_rotation":
            try:
                key, old = KeyRotation.from_body(e.body).verify_key(), key
                retired.append((old, e.seq))
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


def _retired_by(e: Entry, retired: Sequence[tuple[nacl.signing.VerifyKey, int]]) -> int | None:
    """The rotation that retired the key ``e`` is signed by, if it is one it retired."""
    for key, seq in retired:
        try:
            check_signature(e, key)
        except SealError:
            continue
        return seq
    return None


def retired_key(e: Entry, rotation_seq: int) -> str:
    """Why an entry signed by a key after the rotation that retired it is not evidence:
    whoever still holds the old key (a copy of the card) is not the device."""
    return (
        f"signed by key {e.payload.get('key')}, which the rotation at entry {rotation_seq} "
        f"retired: entry {e.seq} comes after it (a copy of the old key?)"
    )


def key_out_of_place(
    key_id: str, from_seq: int | None, until_seq: int | None, seq: int
) -> tuple[str, str] | None:
    """(code, why) if a registered key may not sign the entry at ``seq``: after the
    rotation entry that retired it, or before the entry after the rotation that
    introduced it; None if it may (or its place is not known)."""
    if until_seq is not None and seq > until_seq:
        return (
            "retired_key",
            f"key {key_id} was retired by the rotation at entry {until_seq}: entry {seq} "
            "signed by it comes after (a copy of the old key?)",
        )
    if from_seq is not None and seq < from_seq:
        return (
            "key_not_yet",
            f"key {key_id} signs from entry {from_seq} on (after the rotation that "
            f"introduced it): entry {seq} is before",
        )
    return None


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
