"""Where each file of a device's data directory lives: the layout's one owner. Pure.

Layout (see docs/evidence-format.md)::

    DIR/device.pub                      the device's Ed25519 public key (hex)
    DIR/keys/<key id>.pub               every public key the device has had
    DIR/chain/0000000001.json           one signed entry per file, by sequence number
    DIR/segments/<session>/000000.mp4   sealed media, named by session and index
    DIR/journal.db                      the device's index (SQLite), and the store's
                                        receipts: needed only to verify media freed
    DIR/provision/agency.pub            the agency's key the device was provisioned with
    DIR/private/                        the device key (0600); never part of evidence
    DIR/spool/                          the pre-event buffer and the segment being written
"""

from __future__ import annotations

from evidence.manifest import MAIN_TRACK

PUBKEY = "device.pub"
CHAIN = "chain"
SEGMENTS = "segments"
SPOOL = "spool"
PRIVATE = "private"
KEYS = "keys"  # every public key the device has had, by key id
JOURNAL = "journal.db"
AGENCY_PUB = "provision/agency.pub"
LEGACY_RECEIPTS = "receipts"  # where earlier versions kept receipts, one file per SHA-256


def entry_name(seq: int) -> str:
    return f"{CHAIN}/{seq:010d}.json"


def key_name(key_id: str) -> str:
    return f"{KEYS}/{key_id}.pub"


def segment_name(session: str, index: int, track: str = MAIN_TRACK) -> str:
    """A body recorder's one track sits in the session's folder; a room's tracks each in
    a folder of their own."""
    if track == MAIN_TRACK:
        return f"{SEGMENTS}/{session}/{index:06d}.mp4"
    return f"{SEGMENTS}/{session}/{track}/{index:06d}.mp4"
