"""A scenario's ``[[expect]]``: what must be true at the end of the run, one model per
check, extra fields refused (a misspelt expectation must not silently pass). Judged on the
run's facts by :mod:`simulator.scenario_checks`.

Example::

    [[expect]]
    check = "gap_explained"
    how = "voice"
    cause = "camera"
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.session import MarkerType
from evidence.gaps import CAUSES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Expect(_Strict):
    devices: str = Field("*", description="A device id or a pattern (fnmatch).")


class ChainVerifies(_Expect):
    check: Literal["chain_verifies"]
    strict: bool = Field(False, description="An unexplained gap fails it too.")


class GapExplained(_Expect):
    check: Literal["gap_explained"]
    how: Literal["voice", "written", "any"] = "any"
    cause: str | None = None
    at_least: int = Field(1, ge=0, description="This many such gaps must have happened.")

    @field_validator("cause")
    @classmethod
    def _known(cls, cause: str | None) -> str | None:
        if cause is not None and cause not in CAUSES:
            raise ValueError(f"unknown cause {cause!r}; one of {', '.join(CAUSES)}")
        return cause


class UploadedWithin(_Expect):
    check: Literal["uploaded_within_24h"]
    hours: float = Field(24.0, gt=0, le=24 * 30)


class FootageLost(_Expect):
    check: Literal["footage_lost_max_seconds"]
    seconds: float = Field(1.0, ge=0)


class AllTracksPresent(_Expect):
    check: Literal["all_tracks_present"]


class NoSilentGap(_Expect):
    check: Literal["no_silent_gap"]


class Continuous(_Expect):
    check: Literal["continuous"]


class Sessions(_Expect):
    check: Literal["sessions"]
    count: int = Field(ge=0, description="Sessions each matching device recorded.")
    closed: bool = Field(True, description="All of them closed.")


class DeadlineSeen(_Expect):
    check: Literal["deadline_seen"]
    level: Literal["warn", "urgent", "overdue"] = "warn"


class Markers(_Expect):
    check: Literal["markers"]
    type: MarkerType
    at_least: int = Field(1, ge=1)


Expectation = Annotated[
    ChainVerifies
    | GapExplained
    | UploadedWithin
    | FootageLost
    | AllTracksPresent
    | NoSilentGap
    | Continuous
    | Sessions
    | DeadlineSeen
    | Markers,
    Field(discriminator="check"),
]
REAL_TIME_CHECKS = {
    "uploaded_within_24h": "uploads need the broker and the store",
    "deadline_seen": "the deadline level is the uploader's",
    "footage_lost_max_seconds": "power cuts kill agent processes",
}
