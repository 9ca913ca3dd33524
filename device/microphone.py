"""The microphone port and its simulated backend.

A microphone hands out mono signed 16-bit samples at a fixed rate. The recorder asks for
exactly the samples that cover each video frame, so audio and video stay aligned.

Example::

    mic = SimMicrophone(rate=48000)
    chunk = mic.read(1600)      # 1/30 s of a 440 Hz tone with a little noise
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray

Samples = NDArray[np.int16]


class MicrophoneError(RuntimeError):
    """The microphone failed; the recorder logs it as an interruption."""


class Microphone(Protocol):
    rate: int

    def read(self, n: int) -> Samples:
        """The next ``n`` samples, shape ``(n,)``."""


class SimMicrophone:
    """A tone with noise: real audio samples, different in every chunk. ``fail()`` makes
    the next reads raise :class:`MicrophoneError`, as a dead capsule would."""

    def __init__(self, rate: int = 48000, tone_hz: float = 440.0, seed: int = 7) -> None:
        self.rate = rate
        self._tone = tone_hz
        self._t = 0
        self._rng = np.random.default_rng(seed)
        self._failed = False

    def fail(self, failed: bool = True) -> None:
        """A tester's switch: ``fail()`` kills the microphone, ``fail(False)`` mends it."""
        self._failed = failed

    @property
    def failed(self) -> bool:
        return self._failed

    def read(self, n: int) -> Samples:
        if self._failed:
            raise MicrophoneError("simulated microphone fault")
        t = (np.arange(n) + self._t) / self.rate
        self._t += n
        wave = 6000 * np.sin(2 * np.pi * self._tone * t) + self._rng.normal(0, 300, n)
        return wave.astype(np.int16)
