"""Device settings: strict, self-documenting models, read from TOML on the device and checked
by the agency before it signs them into a bundle.

Unknown keys are errors (a misspelt ``prebufer_seconds`` must not silently fall back to a
default on evidence equipment). Every field says what it is for.

The recording's own settings are in :mod:`common.recording_settings`, the real
hardware's in :mod:`common.hardware_settings`, an interview room's in
:mod:`common.room_settings`; the rest, and :class:`DeviceConfig` that holds them all,
are here.

Example ``device.toml``::

    [recording]
    prebuffer_seconds = 30
    segment_seconds = 2

    [watermark.labels]
    badge = "警号"
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Literal

from pydantic import Field

from common.hardware_settings import Gnss, HardwareSettings
from common.recording_settings import Recording
from common.room_settings import Room
from evidence.manifest import MAIN_TRACK as MAIN_TRACK
from evidence.models import Strict as _Strict
from evidence.protocol import MAX_CHUNK, WHOLE_LIMIT


class Category(enum.StrEnum):
    """Enforcement categories of R-Art 2."""

    PENALTY = "penalty"
    COERCIVE_MEASURE = "coercive_measure"
    INSPECTION = "inspection"
    EXPROPRIATION = "expropriation"
    LICENSING = "licensing"


class Labels(_Strict):
    badge: str = Field("BADGE", description="Label before the badge numbers, e.g. 警号.")
    device: str = Field("DEV", description="Label before the device id, e.g. 设备.")
    room: str = Field("ROOM", description="Label before an interview room's name, e.g. 审讯室.")
    no_fix: str = Field("NO FIX", description="Shown instead of a position without a fix.")
    synced: str = Field("CLOCK SYNCED", description="Shown while the clock is synced.")
    unsynced: str = Field("CLOCK UNSYNCED", description="Shown when the clock is not synced.")
    camera_fault: str = Field(
        "CAMERA FAULT", description="Shown on a failed camera's (black) picture."
    )


class Watermark(_Strict):
    font: Path | None = Field(
        None, description="TrueType/OpenType font with CJK glyphs; None: search the system."
    )
    labels: Labels = Labels()


class Controls(_Strict):
    record_pin: int = Field(17, description="BCM pin of the record button (to ground).")
    marker_pin: int = Field(27, description="BCM pin of the marker button.")
    record_led_pin: int = Field(22, description="BCM pin of the red recording LED.")
    buzzer_pin: int = Field(23, description="BCM pin of the buzzer.")
    hold_seconds: float = Field(2.0, gt=0, description="A press this long closes a session.")
    bounce_seconds: float = Field(
        0.03,
        ge=0.005,
        le=0.2,
        description="A button counts once it has settled this long (switches bounce 1-20 ms).",
    )
    confirm_seconds: float = Field(
        3.0, gt=0, description="A second press within this window confirms a close."
    )
    marker_type: str = Field("credential_shown", description="Marker dropped by the marker button.")


class Session(_Strict):
    category: Category = Field(Category.INSPECTION, description="Default enforcement category.")
    badges: list[str] = Field(default_factory=list, description="Officers carrying this device.")


class Continuity(_Strict):
    """How gaps are explained (R-Art 16)."""

    explain_mode: Literal["auto", "button"] = Field(
        "auto",
        description="auto: the first explain_seconds after resuming are the spoken "
        "explanation; button: the officer presses the explain (marker) control first.",
    )
    explain_seconds: float = Field(10.0, gt=0, description="Length of the explanation clip.")
    explain_timeout: float = Field(
        120.0, gt=0, description="button mode: a gap not explained by then stays unexplained."
    )
    clock_jump_seconds: float = Field(
        2.0, gt=0, description="A wall-clock step larger than this is logged."
    )


class Power(_Strict):
    critical_percent: float = Field(
        3.0, ge=0, le=50, description="At or below this the device seals and shuts down."
    )


class StorageLimits(_Strict):
    encrypt: bool = Field(
        True,
        description="Encrypt footage to the agency's evidence key as it is written (R7); "
        "false only on a test bench: every manifest then says it is stored in the clear.",
    )
    warn_fraction: float = Field(0.9, gt=0, le=1, description="Warn when this full.")
    degrade_fraction: float | None = Field(
        None, gt=0, le=1, description="From this full, record at degrade_bitrate (None: never)."
    )
    degrade_bitrate: int = Field(
        600_000, ge=100_000, description="H.264 bits per second while degraded."
    )
    min_free_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="Below this, media is not written (storage_full)."
    )


class Sync(_Strict):
    """How the device sends what it sealed to the agency store (docs/protocol.md): the one
    set of sync settings, read by the uploader as they are."""

    chunk_size: int = Field(
        256 * 1024, ge=1024, le=MAX_CHUNK, description="Chunk of a segment sent in chunks."
    )
    whole_limit: int = Field(
        WHOLE_LIMIT,
        ge=0,
        le=WHOLE_LIMIT,
        description="A segment up to this size travels whole, with its manifest entry, in "
        "one message; a larger one in chunks (0: always in chunks).",
    )
    bandwidth: int | None = Field(None, ge=1000, description="Upload cap, bytes/s; None: none.")
    window: int = Field(64, ge=1, le=1024, description="QoS 1 publishes in flight at once.")
    parallel_blobs: int = Field(
        6,
        ge=1,
        le=64,
        description="Segments in flight at once. A fleet's share must stay within the "
        "broker's queue for a busy store client, or the broker drops messages that are sent "
        "again only after retry_seconds.",
    )
    retry_seconds: float = Field(
        10.0, gt=0, le=3600, description="Ask the store again when it has not answered."
    )
    status_seconds: float = Field(
        10.0, ge=1, le=3600, description="How often the retained status is published."
    )
    keep_after_receipt_hours: float | None = Field(
        None, ge=0, description="Delete local media this long after its receipt; None: keep."
    )
    warn_hours: tuple[float, float] = Field(
        (12.0, 20.0), description="Deadline warnings (hours after recording) before 24 h."
    )


class Keys(_Strict):
    """Where keygen keeps the device's private keys (the device key and the TLS key)."""

    backend: Literal["file", "tpm"] = Field(
        "file",
        description="file: files in DATA/private (a copied card can sign as this device); "
        "tpm: sealed by the device's TPM 2.0 (a copied card is useless elsewhere). Read by "
        "`agent keygen` for a device without keys; existing keys stay where they are.",
    )
    tcti: str = Field(
        "device:/dev/tpmrm0",
        min_length=1,
        description="backend tpm: how tpm2-tools reach the TPM (swtpm:host=…,port=… for a "
        "simulator); recorded at keygen in DATA/private/keystore.json.",
    )


class DeviceConfig(_Strict):
    recording: Recording = Recording()
    watermark: Watermark = Watermark()
    controls: Controls = Controls()
    gnss: Gnss = Gnss()
    session: Session = Session()
    continuity: Continuity = Continuity()
    power: Power = Power()
    storage: StorageLimits = StorageLimits()
    sync: Sync = Sync()
    room: Room | None = Field(None, description="Set on an interview-room controller.")
    hardware: HardwareSettings = HardwareSettings()
    keys: Keys = Keys()

    @property
    def tracks(self) -> list[str]:
        """The tracks every segment of a session is recorded on."""
        return self.room.tracks if self.room else [MAIN_TRACK]

    def for_room_controller(self) -> DeviceConfig:
        """These settings on a room controller: its ``[room]``, or the default room when
        they have none (the one rule, wherever a controller's settings are made)."""
        return self if self.room is not None else self.model_copy(update={"room": Room()})
