"""The store's tables, declared for Django's migrations, which own the schema
(``store/migrations``, applied by :mod:`store.schema`).

The store reads and writes them with its own SQL (:mod:`store.db`, one owner module per
table); these declarations say what the tables are, for the migrations and for the evidence
library that sits beside them. Types are the portable ones the store's SQL relies on: times
are seconds since the epoch (double precision), documents JSON text, sequence numbers bigint.
The two logs without a natural key (refusals, access) are numbered by ``id``.
"""

from __future__ import annotations

from django.db import models


class _Entry(models.Model):
    """A sealed chain entry as the store received it."""

    device = models.TextField()
    seq = models.BigIntegerField()
    hash = models.TextField()
    prev = models.TextField()
    kind = models.TextField()
    session = models.TextField(null=True)
    wall = models.FloatField()
    entry = models.TextField()  # the entry's JSON, as signed
    received = models.FloatField()
    flag = models.TextField(null=True)

    class Meta:
        abstract = True


class Entry(_Entry):
    pk = models.CompositePrimaryKey("device", "seq")

    class Meta:
        db_table = "entries"
        # What the store report asks per device (store.report), so a device costs what it
        # holds, not what the store holds: its last entry of a kind (install, assignment);
        # a session's segments, asked for each new segment (a file sealed twice is
        # refused); its flagged entries (few of many).
        indexes = [
            models.Index(fields=["device", "kind", "seq"], name="entries_by_kind"),
            models.Index(fields=["device", "session", "kind"], name="entries_by_session"),
            models.Index(
                fields=["device", "flag"],
                name="entries_flagged",
                condition=models.Q(flag__isnull=False),
            ),
        ]


class Fork(_Entry):
    """The second branch of a fork (the key in two places): kept, never thrown away."""

    pk = models.CompositePrimaryKey("device", "seq", "hash")

    class Meta:
        db_table = "forks"


class ChainProblem(models.Model):
    pk = models.CompositePrimaryKey("device", "seq", "code")
    device = models.TextField()
    seq = models.BigIntegerField()
    code = models.TextField()
    detail = models.TextField()
    at = models.FloatField()

    class Meta:
        db_table = "chain_problems"


class Blob(models.Model):
    """Per device: two devices may upload identical bytes (stored once, receipted twice)."""

    pk = models.CompositePrimaryKey("device", "sha256")
    device = models.TextField()
    sha256 = models.TextField()
    seq = models.BigIntegerField()
    size = models.BigIntegerField()
    chunk_size = models.BigIntegerField()
    chunks = models.TextField()  # JSON list of the chunks' hashes
    complete = models.FloatField(null=True)

    class Meta:
        db_table = "blobs"


class Upload(models.Model):
    """When each upload began: one unfinished for too long is expired (store.uploads)."""

    pk = models.CompositePrimaryKey("device", "sha256")
    device = models.TextField()
    sha256 = models.TextField()
    started = models.FloatField()

    class Meta:
        db_table = "uploads"


class Chunk(models.Model):
    pk = models.CompositePrimaryKey("device", "sha256", "off")
    device = models.TextField()
    sha256 = models.TextField()
    off = models.BigIntegerField()

    class Meta:
        db_table = "chunks"


class Receipt(models.Model):
    pk = models.CompositePrimaryKey("device", "sha256")
    device = models.TextField()
    sha256 = models.TextField()
    seq = models.BigIntegerField()
    stored_at = models.FloatField()
    receipt = models.TextField()

    class Meta:
        db_table = "receipts"
        # a device's receipts since its last status (store.report)
        indexes = [models.Index(fields=["device", "stored_at"], name="receipts_by_time")]


class Rejection(models.Model):
    id = models.BigAutoField(primary_key=True)
    device = models.TextField()
    topic = models.TextField()
    reason = models.TextField()
    at = models.FloatField()

    class Meta:
        db_table = "rejections"
        # a device's refusals counted by reason from the index alone (store.report)
        indexes = [models.Index(fields=["device", "reason"], name="rejections_by_device")]


class Statement(models.Model):
    pk = models.CompositePrimaryKey("device", "gap")
    device = models.TextField()
    gap = models.TextField()
    at = models.FloatField()
    doc = models.TextField()

    class Meta:
        db_table = "statements"


class Worker(models.Model):
    """Store workers' heartbeats, per group: which one serves which device (store.pinning)."""

    pk = models.CompositePrimaryKey("grp", "name")
    grp = models.TextField()
    name = models.TextField()
    seen = models.FloatField()

    class Meta:
        db_table = "workers"


class DeviceStatus(models.Model):
    device = models.TextField(primary_key=True)
    status = models.TextField()  # the device's last status document (JSON)
    at = models.FloatField()

    class Meta:
        db_table = "statuses"


class Access(models.Model):
    """Every time footage leaves the store (decrypted to export, or laid out): who, what,
    when."""

    id = models.BigAutoField(primary_key=True)
    at = models.FloatField()
    who = models.TextField()
    action = models.TextField()
    device = models.TextField()
    session = models.TextField(null=True)
    detail = models.TextField()

    class Meta:
        db_table = "access_log"


class Command(models.Model):
    """An agency command kept for its device until it answers or it expires
    (store.mailbox)."""

    nonce = models.TextField(primary_key=True)
    device = models.TextField()
    command = models.TextField()
    data = models.TextField()
    issued = models.FloatField()
    expires = models.FloatField()
    queued = models.FloatField()
    sent = models.FloatField(null=True)
    sends = models.IntegerField(db_default=0)
    state = models.TextField()
    reason = models.TextField(null=True)
    seq = models.BigIntegerField(null=True)
    answer = models.TextField(null=True)
    answered = models.FloatField(null=True)
    case_id = models.TextField(null=True)

    class Meta:
        db_table = "commands"
        indexes = [models.Index(fields=["device", "state"], name="commands_by_device")]
