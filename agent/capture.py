"""Capture and picture: one frame from every camera, and each track's watermarked
picture — the cameras' own, and the picture-in-picture composite of a room.

A failed camera gives a black frame (its error is the caller's to log as a fault), so
the other tracks and the audio go on.

Example::

    cap = Capture(config, {"main": camera}, device_id)
    frames, failed = cap.read(now)                    # failed: camera -> error
    fields = cap.label(clock, gnss, frames["main"].captured, badges, room=None)
    images = cap.pictures_of(frames, failed, fields)  # track -> watermarked picture
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from agent.room import compose_pip
from agent.watermark import Watermark, find_font, watermark_fields
from common.settings import MAIN_TRACK, DeviceConfig
from device import yuv
from device.camera import Camera, CameraError, VideoFrame
from device.clock import Clock
from device.gnss import GnssState


class Capture:
    def __init__(self, config: DeviceConfig, cameras: Mapping[str, Camera], device_id: str) -> None:
        names = config.room.cameras if config.room else [MAIN_TRACK]
        if sorted(cameras) != sorted(names):
            raise ValueError(f"cameras {sorted(cameras)} do not match tracks {names}")
        self.config = config
        self.cameras = cameras
        self.device_id = device_id
        self.feeds = {name: fed_by(config, name) for name in names}  # camera -> tracks
        rec = config.recording
        font = find_font(config.watermark.font)
        self.watermarks = {t: Watermark(rec.width, rec.height, font) for t in config.tracks}
        self._black = yuv.blank(rec.width, rec.height)
        # The last watermarked picture of each track, for a live preview (simulator panel).
        self.pictures: dict[str, np.ndarray] = {}

    def start(self) -> None:
        for camera in self.cameras.values():
            camera.start()

    def stop(self) -> None:
        for camera in self.cameras.values():
            camera.stop()

    def read(self, now: float) -> tuple[dict[str, VideoFrame], dict[str, str]]:
        """A frame from every camera (black from a failed one), and the failed ones' errors."""
        frames: dict[str, VideoFrame] = {}
        failed: dict[str, str] = {}
        for name, camera in self.cameras.items():
            try:
                frames[name] = camera.read()
            except CameraError as e:
                failed[name] = str(e)
                frames[name] = VideoFrame(self._black.copy(), now, -1)
        return frames, failed

    def label(
        self, clock: Clock, gnss: GnssState, captured: float, badges: list[str], room: str | None
    ) -> tuple[str, ...]:
        """The watermark's fields for a frame captured at ``captured`` (monotonic)."""
        labels = self.config.watermark.labels
        wall = clock.wall() - (clock.monotonic() - captured)
        place = f"{labels.room} {room or '-'}" if self.config.room else None
        return watermark_fields(
            wall,
            clock.utc_offset(),
            clock.synced(),
            gnss,
            captured,
            badges,
            self.device_id,
            labels,
            place=place,
        )

    def pictures_of(
        self, frames: Mapping[str, VideoFrame], failed: Mapping[str, str], fields: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Each track's watermarked picture: the cameras', and the composite if any; a
        failed camera's track (and a composite it is part of) says so first."""
        images = {name: f.image for name, f in frames.items()}
        faulty = set(failed)
        room = self.config.room
        fault = (self.config.watermark.labels.camera_fault,)
        if room and room.pip:
            pip = room.pip
            if faulty & {pip.main, pip.inset}:
                faulty.add(pip.track)
            wm = self.watermarks[pip.track]
            wm.prepare((*fault, *fields) if pip.track in faulty else fields)
            images[pip.track] = compose_pip(
                images[pip.main], images[pip.inset], pip.divisor, pip.corner, top=wm.strip_height
            )
        for track, image in images.items():
            self.watermarks[track].apply(image, (*fault, *fields) if track in faulty else fields)
        self.pictures = images
        return images


def fed_by(config: DeviceConfig, camera: str) -> tuple[str, ...]:
    """The tracks a camera feeds: itself, and the composite it is part of. A body
    recorder's one camera feeds everything: its interruptions name no track."""
    room = config.room
    if room is None:
        return ()
    if room.pip and camera in (room.pip.main, room.pip.inset):
        return (camera, room.pip.track)
    return (camera,)
