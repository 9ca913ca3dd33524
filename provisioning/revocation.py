"""Revocation and rotation: revoking a device, panel or store (and rewriting the CRL), and
importing a device's key rotation, so the registry says which key signed when."""

from __future__ import annotations

from common.requests import check_rotation_request
from evidence.names import SKEW_SECONDS, ProvisionError, iso
from evidence.seal import key_id
from provisioning.agency_directory import AgencyDirectory


class Revocation(AgencyDirectory):
    """The agency's revocation jobs (a part of :class:`provisioning.agency.Agency`)."""

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
            files += self.crl(now)[1]
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
            seq = rot.entry.seq  # the rotation entry: the old key's last
            reg.end_key(current["key_id"], rot.rotated_at, seq)
            reg.add_key(rot.device_id, key_id(rot.new_key), new_hex, rot.rotated_at, seq + 1)
            reg.audit(
                now,
                "rotate",
                rot.device_id,
                old=current["key_id"],
                new=key_id(rot.new_key),
                rotated_at=rot.rotated_at,
            )
        return rot.device_id, str(current["key_id"]), key_id(rot.new_key)
