"""The agency's device registry (SQLite through sqlite-utils, ``AGENCY/registry.db``).

It keeps every device with every key it ever had and each key's validity period, every
certificate the CA issued (and which are revoked), the history of assignments, and an
audit trail of what the administrators did. Changes run inside :meth:`Registry.transaction`
so that a refused or failed command leaves the registry as it was.

The store asks it two things (:class:`store.ingest.DeviceDirectory`): which keys a device
has had, with their validity, and when it was revoked.

Example::

    reg = Registry(agency / "registry.db")
    reg.device_keys("bwc-1a2b3c4d")     # [RegisteredKey(key_id, verify_key, from, until)]
    reg.revoked_at("bwc-1a2b3c4d")      # None, or the revocation time
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing
import sqlite_utils

from evidence.names import ProvisionError

_SCHEMA: dict[str, tuple[dict[str, Any], str]] = {
    "meta": ({"name": str, "value": int}, "name"),
    "devices": (
        {
            "device_id": str,
            "serial": str,
            "model": str,
            "role": str,
            "enrolled_at": float,
            "request_sha256": str,
            "settings": str,  # JSON: the recording settings its bundles carry
            "revoked_at": float,
            "revoke_reason": str,
        },
        "device_id",
    ),
    "keys": (
        {
            "key_id": str,
            "device_id": str,
            "public_key": str,
            "valid_from": float,
            "valid_until": float,
            # by chain position, which a device cannot back-date: the rotation entry that
            # retired the key is its last (until_seq), the one after it the next key's first
            "from_seq": int,
            "until_seq": int,
        },
        "key_id",
    ),
    "certificates": (
        {
            "serial": str,  # hex: SQLite integers are 64-bit, X.509 serials up to 159 bits
            "subject": str,
            "kind": str,  # device, panel, store, broker
            "device_id": str,
            "room": str,
            "issued_at": float,
            "not_after": float,
            "pem": str,
            "revoked_at": float,
            "revoke_reason": str,
        },
        "serial",
    ),
    "assignments": (
        {
            "id": int,
            "device_id": str,
            "command": str,  # assign, unassign
            "badges": str,  # JSON list
            "name": str,
            "unit": str,
            "room": str,
            "issued": float,
            "expires": float,
            "nonce": str,
            "command_sha256": str,
        },
        "id",
    ),
    "audit": ({"id": int, "at": float, "action": str, "subject": str, "detail": str}, "id"),
}


class Registry:
    """The registry at ``path`` (made there if new); ProvisionError naming a file that is
    not a database."""

    def __init__(self, path: Path) -> None:
        # isolation_level None: transactions are explicit (transaction()). Not tied to a thread:
        # the store reads it from its MQTT network thread.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA foreign_keys=ON")
            self.db = sqlite_utils.Database(conn)
            if not self.db.table("devices").exists():
                self._create()
            self._key_places()
        except sqlite3.DatabaseError as e:
            conn.close()
            raise ProvisionError(f"{path}: not a registry database ({e})") from None

    def _create(self) -> None:
        with self.db.atomic():
            for name, (columns, pk) in _SCHEMA.items():
                self.db.table(name).create(columns, pk=pk, not_null={pk})
            self.db.table("devices").create_index(["serial"])
            self.db.table("keys").create_index(["device_id"])
            self.db.table("keys").create_index(["public_key"], unique=True)
            self.db.table("certificates").create_index(["subject"])
            self.db.table("assignments").create_index(["device_id"])

    def _key_places(self) -> None:
        """A registry made before keys had places in the chain gets their columns."""
        have = {c.name for c in self.db.table("keys").columns}
        for column in ("from_seq", "until_seq"):
            if column not in have:
                self.db.execute(f"alter table keys add column {column} integer")

    def changes(self) -> int:
        """A number that changes when another connection commits to the registry (SQLite's
        data_version): what a reader keeping answers checks them against."""
        return int(self.db.execute("pragma data_version").fetchone()[0])

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[Registry]:
        """All or nothing; BEGIN IMMEDIATE so that two administrators do not interleave."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.conn.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> dict[str, Any] | None:
        rows = list(self.db.query(sql, args))
        return rows[0] if rows else None

    # -- devices and keys -------------------------------------------------------------

    def device(self, device_id: str) -> dict[str, Any] | None:
        return self._one("select * from devices where device_id = ?", (device_id,))

    def devices(self) -> list[dict[str, Any]]:
        return list(self.db.query("select * from devices order by device_id"))

    def device_certificate(self, device_id: str) -> dict[str, Any] | None:
        """The device's newest live client certificate."""
        return self._one(
            "select * from certificates where device_id = ? and revoked_at is null "
            "order by issued_at desc limit 1",
            (device_id,),
        )

    def set_settings(self, device_id: str, settings: dict[str, Any]) -> None:
        self.db.execute(
            "update devices set settings = ? where device_id = ?",
            (json.dumps(settings), device_id),
        )

    def devices_with_serial(self, serial: str) -> list[dict[str, Any]]:
        return list(self.db.query("select * from devices where serial = ?", (serial,)))

    def key_owner(self, public_key: str) -> str | None:
        row = self._one("select device_id from keys where public_key = ?", (public_key,))
        return None if row is None else str(row["device_id"])

    def current_key(self, device_id: str) -> dict[str, Any] | None:
        return self._one(
            "select * from keys where device_id = ? and valid_until is null", (device_id,)
        )

    def add_device(self, row: dict[str, Any]) -> None:
        self.db.table("devices").insert(row)

    def add_key(
        self,
        device_id: str,
        key_id: str,
        public_key: str,
        valid_from: float,
        from_seq: int | None = None,
    ) -> None:
        self.db.table("keys").insert(
            {
                "key_id": key_id,
                "device_id": device_id,
                "public_key": public_key,
                "valid_from": valid_from,
                "valid_until": None,
                "from_seq": from_seq,
                "until_seq": None,
            }
        )

    def end_key(self, key_id: str, until: float, until_seq: int) -> None:
        self.db.execute(
            "update keys set valid_until = ?, until_seq = ? where key_id = ?",
            (until, until_seq, key_id),
        )

    def device_keys(self, device: str) -> list[RegisteredKey]:
        """Every key the device has had, oldest first: footage signed by a retired key
        still verifies for the time that key was valid."""
        return [
            RegisteredKey(
                r["key_id"],
                nacl.signing.VerifyKey(bytes.fromhex(r["public_key"])),
                float(r["valid_from"]),
                None if r["valid_until"] is None else float(r["valid_until"]),
                None if r["from_seq"] is None else int(r["from_seq"]),
                None if r["until_seq"] is None else int(r["until_seq"]),
            )
            for r in self.db.query(
                "select * from keys where device_id = ? order by valid_from", (device,)
            )
        ]

    def revoked_at(self, device: str) -> float | None:
        row = self.device(device)
        return None if row is None or row["revoked_at"] is None else float(row["revoked_at"])

    def revoke_device(self, device_id: str, at: float, reason: str) -> None:
        self.db.execute(
            "update devices set revoked_at = ?, revoke_reason = ? where device_id = ?",
            (at, reason, device_id),
        )

    # -- certificates ------------------------------------------------------------------

    def add_certificate(self, row: dict[str, Any]) -> None:
        self.db.table("certificates").insert(row)

    def live_certificates(self, subject: str) -> list[dict[str, Any]]:
        return list(
            self.db.query(
                "select * from certificates where subject = ? and revoked_at is null", (subject,)
            )
        )

    def revoke_certificates(
        self, at: float, reason: str, *, subject: str | None = None, device_id: str | None = None
    ) -> int:
        column, value = ("subject", subject) if subject is not None else ("device_id", device_id)
        cur = self.db.execute(
            f"update certificates set revoked_at = ?, revoke_reason = ? "
            f"where {column} = ? and revoked_at is null",
            (at, reason, value),
        )
        return int(cur.rowcount)

    def revoked_serials(self) -> list[tuple[int, float]]:
        return [
            (int(r["serial"], 16), float(r["revoked_at"]))
            for r in self.db.query(
                "select serial, revoked_at from certificates where revoked_at is not null "
                "order by revoked_at"
            )
        ]

    def subjects(self, kind: str, now: float) -> list[dict[str, Any]]:
        """Subjects of a kind holding a certificate that is neither revoked nor expired."""
        return list(
            self.db.query(
                "select subject, room from certificates where kind = ? and revoked_at is null "
                "and not_after > ? group by subject order by subject",
                (kind, now),
            )
        )

    def next_crl_number(self) -> int:
        row = self._one("select value from meta where name = 'crl_number'")
        number = 1 if row is None else int(row["value"]) + 1
        self.db.table("meta").upsert({"name": "crl_number", "value": number}, pk="name")
        return number

    # -- assignments -------------------------------------------------------------------

    def assignment(self, device_id: str) -> dict[str, Any] | None:
        """The assignment in force (the latest command), or None."""
        row = self._one(
            "select * from assignments where device_id = ? order by issued desc, id desc limit 1",
            (device_id,),
        )
        if row is None or row["command"] == "unassign":
            return None
        return {**row, "badges": json.loads(row["badges"])}

    def assignment_history(self, device_id: str) -> list[dict[str, Any]]:
        return [
            {**r, "badges": json.loads(r["badges"])}
            for r in self.db.query(
                "select * from assignments where device_id = ? order by issued, id", (device_id,)
            )
        ]

    def add_assignment(self, row: dict[str, Any]) -> None:
        self.db.table("assignments").insert({**row, "badges": json.dumps(row["badges"])})

    def room_controllers(self) -> list[tuple[str, str]]:
        """(device, room) for every room controller assigned to a room and not revoked."""
        out = []
        for d in self.db.query(
            "select device_id from devices where role = 'room_controller' and revoked_at is null"
        ):
            a = self.assignment(d["device_id"])
            if a and a["room"]:
                out.append((str(d["device_id"]), str(a["room"])))
        return out

    # -- audit -------------------------------------------------------------------------

    def audit(self, at: float, action: str, subject: str, **detail: Any) -> None:
        self.db.table("audit").insert(
            {"at": at, "action": action, "subject": subject, "detail": json.dumps(detail)}
        )

    def audit_log(self) -> list[dict[str, Any]]:
        return list(self.db.query("select * from audit order by id"))


@dataclass(frozen=True)
class RegisteredKey:
    """A device key and when it is in force: from ``valid_from`` (wall time) and, once
    rotated, until ``valid_until``; by chain position from ``from_seq`` and until
    ``until_seq`` (the rotation entry, the last the key signs), where known."""

    key_id: str
    verify_key: nacl.signing.VerifyKey
    valid_from: float
    valid_until: float | None
    from_seq: int | None = None
    until_seq: int | None = None
