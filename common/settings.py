"""Device settings: strict, self-documenting models, read from TOML on the device and checked
by the agency before it signs them into a bundle.

Unknown keys are errors (a misspelt ``prebufer_seconds`` must not silently fall back to a
default on evidence equipment). Every field says what it is for.

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

from pydantic import Field, model_validator

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


class Gnss(_Strict):
    backend: Literal["replay", "gpsd", "serial", "none"] = Field(
        "replay",
        description="replay: an NMEA route (the simulator); gpsd: the gpsd daemon; serial: an "
        "NMEA receiver on a tty; none: no receiver (a room: every position is 'no fix').",
    )
    route: Path | None = Field(None, description="NMEA file to replay; None: the shipped route.")
    gpsd_host: str = Field("127.0.0.1", description="backend gpsd: its host.")
    gpsd_port: int = Field(2947, ge=1, le=65535, description="backend gpsd: its port.")
    serial_device: Path | None = Field(None, description="backend serial: e.g. /dev/ttyAMA0.")
    serial_baud: int = Field(9600, description="backend serial: the receiver's baud rate.")

    @model_validator(mode="after")
    def _used_keys(self) -> Gnss:
        if self.backend == "serial" and self.serial_device is None:
            raise ValueError("backend 'serial' needs serial_device (e.g. /dev/ttyAMA0)")
        if self.backend != "serial" and self.serial_device is not None:
            raise ValueError(f"serial_device is for backend 'serial', not {self.backend!r}")
        if self.backend != "replay" and self.route is not None:
            raise ValueError(f"route is for backend 'replay', not {self.backend!r}")
        return self


class CameraSource(_Strict):
    """Where one camera track's picture comes from, on a real device."""

    backend: Literal["picamera", "v4l2", "rtsp"] = Field(
        "picamera",
        description="picamera: a Raspberry Pi camera module; v4l2: a USB camera; rtsp: a "
        "network camera (an interview room's usual camera).",
    )
    camera_num: int = Field(0, ge=0, le=7, description="picamera: which camera connector.")
    device: Path | None = Field(None, description="v4l2: the device node, e.g. /dev/video0.")
    input_format: str | None = Field(None, description="v4l2: e.g. 'mjpeg' (None: the default).")
    url: str | None = Field(None, description="rtsp: rtsp://[user:password@]host[:port]/path.")
    timeout: float = Field(
        2.0, gt=0, le=60, description="No frame for this long is a camera fault (interruption)."
    )

    @model_validator(mode="after")
    def _used_keys(self) -> CameraSource:
        needs = {"v4l2": "device", "rtsp": "url"}
        for backend, key in needs.items():
            given = getattr(self, key) is not None
            if self.backend == backend and not given:
                raise ValueError(f"backend {backend!r} needs {key}")
            if self.backend != backend and given:
                raise ValueError(f"{key} is for backend {backend!r}, not {self.backend!r}")
        if self.input_format is not None and self.backend != "v4l2":
            raise ValueError(f"input_format is for backend 'v4l2', not {self.backend!r}")
        if self.camera_num and self.backend != "picamera":
            raise ValueError(f"camera_num is for backend 'picamera', not {self.backend!r}")
        return self


class MicrophoneSource(_Strict):
    backend: Literal["alsa"] = Field("alsa", description="alsa: an ALSA capture device.")
    device: str = Field("default", description="ALSA device name: default, hw:1,0, a PCM name.")


class BatterySource(_Strict):
    backend: Literal["sysfs", "none"] = Field(
        "sysfs",
        description="sysfs: Linux power_supply (UPS HATs, fuel gauges); none: mains-powered.",
    )
    name: str | None = Field(None, description="sysfs: which supply (None: the only battery).")
    root: Path = Field(Path("/sys/class/power_supply"), description="sysfs: where to look.")

    @model_validator(mode="after")
    def _used_keys(self) -> BatterySource:
        if self.backend == "none" and self.name is not None:
            raise ValueError("name is for backend 'sysfs'")
        return self


class HardwareSettings(_Strict):
    """The real device's backends (``agent run`` without ``--sim``; the simulator ignores
    this section and says so). Each camera track names its source."""

    cameras: dict[str, CameraSource] = Field(
        default_factory=dict,
        description="By track: 'main' on a body recorder (default: the Pi camera); each of a "
        "room's cameras (no default: say where each comes from).",
    )
    microphone: MicrophoneSource = MicrophoneSource()
    battery: BatterySource = BatterySource()
    clock: Literal["kernel", "system"] = Field(
        "kernel", description="kernel: the sync state from adjtimex; system: never synced."
    )
    gpio: bool = Field(
        True, description="Buttons, LED, buzzer and a room's lamp on GPIO (false: none here)."
    )


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
