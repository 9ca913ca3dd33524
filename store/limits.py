"""What one device may ask of the store: bounds on what it declares, and its quota of
uploads in progress. Pure decisions; :mod:`store.ingest` and :mod:`store.uploads` ask.

A refusal carries a reason code (:data:`evidence.protocol.REFUSALS`) so the device can tell
"fix nothing, back off" (``quota``, ``store_full``) from "this message is wrong".

Example::

    limits = Limits()
    limits.blob_refusal(size=10 * 2**30, seq=7, last_seq=6)
    # -> Refused('too_large', 'declared size 10737418240 B is more than ...')
"""

from __future__ import annotations

import math

from pydantic import Field

from evidence.models import Strict


class Refused(Exception):
    """A message refused with a reason code and a text; the sender is told where the
    protocol allows, and the refusal is counted in the report."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Refused) and (self.code, str(self)) == (other.code, str(other))

    def __hash__(self) -> int:
        return hash((self.code, str(self)))

    def __repr__(self) -> str:
        return f"Refused({self.code!r}, {str(self)!r})"


class Limits(Strict):
    """``[limits]`` in store.toml. The defaults fit every recording the device settings
    allow (segments of at most 60 s); a device declaring more is refused, not believed."""

    segment_seconds: int = Field(60, ge=1, description="Longest segment a device records.")
    bitrate: int = Field(
        40_000_000, ge=100_000, description="Highest bits per second of all tracks together."
    )
    uploads: int = Field(64, ge=1, description="Unfinished uploads a device may have at once.")
    upload_bytes: int = Field(
        4 * 2**30, ge=1, description="Bytes of unfinished uploads a device may have at once."
    )
    expire_hours: float = Field(
        48.0, gt=0, description="An upload unfinished this long is dropped (partial file too)."
    )
    seq_ahead: int = Field(
        100_000, ge=1, description="How far past the last entry seen a sequence number may go."
    )
    future_days: float = Field(
        30.0, gt=0, description="Entries dated further ahead of the receive time are refused."
    )
    skew_seconds: float = Field(
        300.0, gt=0, description="Device time this far from the receive time is flagged."
    )

    @property
    def blob_bytes(self) -> int:
        """The largest segment a device can have recorded: length × bitrate, doubled for
        container overhead and an encoder overshooting its target."""
        return self.segment_seconds * self.bitrate // 8 * 2

    def seq_refusal(self, seq: int, last_seq: int) -> Refused | None:
        if seq > last_seq + self.seq_ahead:
            return Refused(
                "out_of_range",
                f"seq {seq} is more than {self.seq_ahead} past the last ({last_seq})",
            )
        return None

    def wall_refusal(self, wall: float, received: float) -> Refused | None:
        """A device time that no clock, however wrong, can mean at ``received``."""
        if not math.isfinite(wall) or wall < 0:
            return Refused("out_of_range", f"wall time {wall} is not a time")
        if wall > received + self.future_days * 86400:
            return Refused(
                "out_of_range", f"wall time {wall:.0f} is over {self.future_days:g} days ahead"
            )
        return None

    def blob_refusal(self, size: int, seq: int, last_seq: int) -> Refused | None:
        if size > self.blob_bytes:
            return Refused(
                "too_large",
                f"declared size {size} B is more than a segment can be ({self.blob_bytes} B)",
            )
        return self.seq_refusal(seq, last_seq)

    def quota_refusal(self, in_progress: int, in_progress_bytes: int, size: int) -> Refused | None:
        """Whether one more upload of ``size`` bytes exceeds the device's quota."""
        if in_progress + 1 > self.uploads:
            return Refused("quota", f"{in_progress} uploads in progress, at most {self.uploads}")
        if in_progress_bytes + size > self.upload_bytes:
            return Refused(
                "quota",
                f"{in_progress_bytes} B in progress and {size} B more, at most {self.upload_bytes}",
            )
        return None
