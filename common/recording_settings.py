"""Device settings of the recording itself: picture size, frame rate, segments, the
encoder, and how the encoder steps its load down on a machine that cannot keep real time.
Part of :class:`common.settings.DeviceConfig` (``[recording]`` in device.toml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from evidence.models import Strict as _Strict


class LoadStep(_Strict):
    """One step down in the encoder's load, for a machine that cannot keep real time."""

    bitrate: int = Field(
        ge=100_000, description="H.264 bits per second (never more than video_bitrate)."
    )
    hold: int = Field(
        1,
        ge=1,
        le=10,
        description="Each picture is captured once and kept for this many frames: the "
        "picture rate is fps / hold, while the recording's frame rate and timeline stay.",
    )


class Overload(_Strict):
    """When the frame loop cannot keep real time (a slow board, a busy one): the encoder
    steps its load down before time is lost, and time that is lost anyway is sealed as an
    ``overload`` interruption. Each step is sealed as an event."""

    lost_seconds: float = Field(
        0.4,
        gt=0,
        le=0.45,
        description="A frame this many seconds later than the footage before it ends: the "
        "time between is lost, sealed as an interruption (under the verifier's half-second "
        "tolerance, so no hole goes unexplained).",
    )
    busy_high: float = Field(
        0.85,
        gt=0,
        le=1,
        description="Step down when the frames' work takes this share of the frame "
        "interval (averaged over about a second) for down_seconds.",
    )
    busy_low: float = Field(
        0.4,
        gt=0,
        lt=1,
        description="Step back up when it takes no more than this share for up_seconds.",
    )
    down_seconds: float = Field(2.0, gt=0, description="How long busy_high must hold.")
    up_seconds: float = Field(
        30.0,
        gt=0,
        description="How long busy_low must hold; doubled (up to 8 times) each time a "
        "step back up had to be undone within that long.",
    )
    steps: list[LoadStep] = Field(
        default_factory=lambda: [
            LoadStep(bitrate=1_000_000),
            LoadStep(bitrate=1_000_000, hold=2),
            LoadStep(bitrate=600_000, hold=3),
        ],
        max_length=8,
        description="The steps down, in order (none: the load is never stepped down).",
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> Overload:
        if self.busy_low >= self.busy_high:
            raise ValueError("busy_low must be below busy_high (or the load would swing)")
        return self


class Recording(_Strict):
    width: int = Field(1280, ge=64, le=3840, description="Picture width in pixels (even).")
    height: int = Field(720, ge=64, le=2160, description="Picture height in pixels (even).")
    fps: int = Field(30, ge=1, le=60, description="Frames per second.")
    segment_seconds: int = Field(
        2, ge=1, le=60, description="Length of a sealed segment; a multiple of the keyframe one."
    )
    keyframe_seconds: int = Field(1, ge=1, le=10, description="Keyframe (and fragment) interval.")
    prebuffer_seconds: int = Field(
        30, ge=0, le=120, description="Footage kept before a session opens, with audio (0: off)."
    )
    video_bitrate: int = Field(2_000_000, ge=100_000, description="H.264 target bits per second.")
    encoder: Literal["auto", "libx264", "h264_v4l2m2m"] = Field(
        "auto",
        description="H.264 encoder: auto takes the SoC's hardware encoder where it has one "
        "(Pi 4, Zero 2 W: h264_v4l2m2m), else software (libx264); a hardware encoder that "
        "fails to open falls back to software, logged and sealed as an event.",
    )
    encoder_preset: str = Field("ultrafast", description="x264 preset (software encoder only).")
    encoder_threads: int = Field(1, ge=0, le=16, description="x264 threads (0: automatic).")
    audio_rate: int = Field(48000, description="Microphone sample rate in Hz.")
    overload: Overload = Field(
        default_factory=Overload, description="Keeping real time on a slow or busy machine."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Recording:
        if self.width % 2 or self.height % 2:
            raise ValueError("width and height must be even for H.264 4:2:0")
        if self.segment_seconds % self.keyframe_seconds:
            raise ValueError("segment_seconds must be a multiple of keyframe_seconds")
        if self.audio_rate % self.fps:
            raise ValueError("audio_rate must be a multiple of fps (whole samples per frame)")
        return self
