"""``unbroken agent run``: the device process — recorder in real time, plus sync when the
device is provisioned.

The hardware comes from the caller, built by a factory (:mod:`device.hardware`): the
board's, or the simulator's (``agent run --sim``, :mod:`simulator.process`), which is what
the simulator's fleets and the power-cut tests start and kill. The frames are stepped by
the one frame loop (:mod:`agent.loop`).

SIGTERM or SIGINT stops it cleanly (the open session is closed); SIGKILL is a power cut:
the next start recovers and resumes the session.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from nacl.public import PublicKey

from agent.journal.sync_ledger import SyncLedger
from agent.loop import FrameLoop
from agent.recorder import Recorder
from agent.service import ServiceNotifier
from agent.status_file import StatusFile
from agent.sync import Uploader
from agent.sync import backlog as sync_backlog
from common.settings import DeviceConfig
from device.clock import Clock
from device.controls import Controls, RecordingLamp
from device.hardware import Hardware, HardwareError
from evidence.messages import Backlog

if TYPE_CHECKING:
    from gpiozero import Factory

log = logging.getLogger(__name__)


def room_lamp(config: DeviceConfig, pin_factory: Factory | None = None) -> RecordingLamp | None:
    """A room controller's RECORDING lamp (None for a body recorder)."""
    if config.room is None:
        return None
    return RecordingLamp(config.room.lamp_pin, pin_factory=pin_factory)


class Attach(Protocol):
    """Something started beside the recorder (the simulator's control channel)."""

    def start(self) -> object: ...

    def close(self) -> None: ...


def make_uploader(
    root: Path, recorder: Recorder, config: DeviceConfig, clock: Clock
) -> Uploader | None:
    """The uploader, once the device is provisioned (None before: nothing to sync to)."""
    from agent.provisioned import PROVISION, broker_settings

    if not (root / PROVISION / "bundle.json").exists():
        log.warning("not provisioned: recording without sync")
        return None
    uploader = Uploader(
        root,
        recorder.device_id,
        broker_settings(root),
        clock,
        config.sync,
        status_source=recorder.status,
        # the room assigned now: an assignment at run time moves the panel topics
        room=(lambda: recorder.room_id) if recorder.room else None,
        on_panel=recorder.room_input,
    )
    take_commands(uploader, recorder)
    return uploader


def take_commands(uploader: Uploader, recorder: Recorder) -> None:
    """Agency commands arriving on the uploader are applied on the recorder's thread, and
    each answer (applied, or refused with the reason) goes back to the store."""
    uploader.on_command = lambda data: recorder.post(lambda: recorder.apply_command(data))
    recorder.commands.answers = uploader.answer


class _Backlog:
    """What is left to sync, for ``status.json``: through one connection to the journal
    for the agent's life, so that each manifest waiting is read once, not every time the
    frame loop asks (every few seconds, for as long as the device is offline)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ledger: SyncLedger | None = None

    def __call__(self) -> Backlog:
        self._ledger = self._ledger or SyncLedger(self.root)
        return sync_backlog(self._ledger)

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()


def run_agent(
    root: Path,
    config: DeviceConfig,
    hardware: Hardware,
    clock: Clock,
    lamp: RecordingLamp | None = None,
    open_session: bool = False,
    seconds: float | None = None,
    sync: bool = True,
    attach: Callable[[Recorder, Uploader | None], Attach] | None = None,
    gpio: bool = False,
    pins: Factory | None = None,
    evidence_key: PublicKey | None = None,
) -> int:
    """Record in real time on ``hardware`` until stopped. ``attach`` starts something beside
    the recorder that takes over starting the uploader (the simulator's control channel).
    ``evidence_key``: the agency key footage is encrypted to (default: the bundle's).
    ``gpio``: the officer's buttons, LED and buzzer (a body recorder) or the RECORDING lamp
    (a room) on ``pins`` (None: gpiozero's default, the board's own)."""
    made: list[Recorder] = []  # the recorder, once made: a press before that is dropped

    def press(event: str) -> None:
        if made:
            made[0].post(event)

    controls = None
    if gpio:
        try:
            if config.room is None:
                controls = Controls(config.controls, press, pin_factory=pins)
            else:
                lamp = room_lamp(config, pins)
        except Exception as e:  # gpiozero: no pin library, or not a board with GPIO
            raise HardwareError(
                f"hardware.gpio: the buttons, LED and lamp need GPIO, which this machine does "
                f"not offer ({type(e).__name__}: {e}); set hardware.gpio = false where there is "
                "none"
            ) from None
    recorder = Recorder(root, config, hardware, clock, evidence_key, seal_in_background=True)
    made.append(recorder)
    uploader = make_uploader(root, recorder, config, clock) if sync else None
    channel = attach(recorder, uploader) if attach is not None else None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    recorder.start()
    if channel is not None:
        channel.start()  # listening, and the uploader started if the device is online
    elif uploader is not None:
        uploader.start()
    if open_session and recorder.session is None:
        recorder.open_session()
    state = f"recording: {recorder.status()['state']} session {recorder.status()['session']}"
    print(state, flush=True)
    service = ServiceNotifier.from_environment()
    service.ready(state)
    backlog = _Backlog(root)
    status = StatusFile(root, recorder, hardware, clock, uploader, backlog=backlog)
    loop = FrameLoop(
        recorder,
        config.recording.fps,
        controls=controls,
        lamp=lamp,
        uploader=uploader,
        stop=stop,
        service=service,
        status=status,
    )
    try:
        loop.run(seconds=seconds)
    finally:
        service.stopping()
        if channel is not None:
            channel.close()
        if not recorder.powered_off:
            recorder.stop()
        loop.show()
        if uploader is not None:
            uploader.stop()
        if lamp is not None:
            lamp.close()
        if controls is not None:
            controls.close()
        status.maybe_write(float("inf"))  # the last word: stopped
        backlog.close()
        service.close()
    return 0
