"""Device settings of an interview-room controller: its camera tracks, the
picture-in-picture composite, what opens and closes a session, and the RECORDING lamp.
Part of :class:`common.settings.DeviceConfig` (``[room]`` in device.toml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from evidence.models import Strict as _Strict

TRACK = r"^[a-z][a-z0-9_]{0,15}$"


class PictureInPicture(_Strict):
    """A composite track: the close-up inset into the room view, watermarked."""

    track: str = Field("pip", pattern=TRACK, description="Name of the composite track.")
    main: str = Field("room", pattern=TRACK, description="Camera track filling the picture.")
    inset: str = Field("subject", pattern=TRACK, description="Camera track in the inset.")
    divisor: int = Field(3, ge=2, le=8, description="The inset is 1/divisor of the picture.")
    corner: Literal["top_left", "top_right", "bottom_left", "bottom_right"] = "bottom_right"


class Room(_Strict):
    """An interview-room controller: several cameras, sessions opened by the case system or
    the room panel, a RECORDING lamp outside the door (R3)."""

    cameras: list[str] = Field(
        ["subject", "room"],
        min_length=2,
        max_length=6,
        description="One track per camera, e.g. the person interviewed and the whole room.",
    )
    pip: PictureInPicture | None = Field(
        PictureInPicture(), description="Picture-in-picture composite track (None: none)."
    )
    triggers: list[Literal["command", "key", "door"]] = Field(
        ["command", "key", "door"],
        description="What opens and closes a session: the case system's signed command, "
        "the panel's key switch, or the door closing confirmed by the key.",
    )
    confirm_seconds: float = Field(
        60.0, gt=0, description="After the door closes, how long the key has to confirm."
    )
    lamp_pin: int = Field(24, description="BCM pin of the RECORDING lamp (if wired here).")

    @model_validator(mode="after")
    def _tracks(self) -> Room:
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError("camera track names must differ")
        if self.pip:
            for t in (self.pip.main, self.pip.inset):
                if t not in self.cameras:
                    raise ValueError(f"pip uses track {t!r}, which is not among the cameras")
            if self.pip.track in self.cameras:
                raise ValueError(f"pip track {self.pip.track!r} is also a camera track")
        return self

    @property
    def tracks(self) -> list[str]:
        return self.cameras + ([self.pip.track] if self.pip else [])
