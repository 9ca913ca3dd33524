"""An ALSA microphone: the :class:`~device.microphone.Microphone` port on a sound card.

:class:`AlsaMicrophone` captures mono signed 16-bit samples at the configured rate from an
ALSA device through PortAudio, bound by ``sounddevice`` (cffi, a pure-Python wheel; the
library is Debian's ``libportaudio2``). The device is named as ALSA names it (``default``,
``hw:1,0``, a PCM from ``asound.conf``), matched against PortAudio's list of input devices.

A buffer overrun (the recorder fell behind and the card dropped samples) and a device that
vanished (a USB microphone pulled out) are both :class:`~device.microphone.MicrophoneError`
saying so; after a failure the next ``read()`` opens the device again, so a microphone that
comes back is used again without anyone restarting the recorder.

Example::

    mic = AlsaMicrophone("default", rate=48000)   # MicrophoneError naming a wrong device
    chunk = mic.read(1600)                        # 1/30 s, shape (1600,), int16
    mic.close()
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

import numpy as np

from device.microphone import MicrophoneError, Samples

NOT_INSTALLED = "PortAudio is missing: the ALSA microphone needs Debian's libportaudio2"


def samples(data: Any, overflowed: bool, device: str) -> Samples:
    """One read's frames as the port's samples, or the overrun it reported as an error.

    The one place that fixes the sample format: mono int16, shape ``(n,)``.
    """
    if overflowed:
        raise MicrophoneError(
            f"microphone {device!r}: buffer overrun, samples were lost (the recorder fell behind)"
        )
    return np.ascontiguousarray(np.asarray(data, dtype=np.int16).reshape(-1))


class AlsaMicrophone:
    """A capture device read through PortAudio's ALSA host API; see the module docstring.

    ``device`` is the ALSA name from configuration, ``rate`` the sample rate in Hz. The
    stream is opened on the first ``read()`` (and again after a failure), so constructing
    one only checks that the device exists.
    """

    def __init__(self, device: str, rate: int = 48000) -> None:
        if rate <= 0:
            raise ValueError(f"the sample rate must be positive, not {rate}")
        self.device, self.rate = device, rate
        self._sd = _load_sounddevice()
        self._index = self._find(device)
        self._stream: Any = None

    def read(self, n: int) -> Samples:
        """The next ``n`` samples, blocking until the card has captured them."""
        try:
            stream = self._open()
            data, overflowed = stream.read(n)
        except MicrophoneError:
            raise
        except Exception as exc:  # sounddevice.PortAudioError mostly; the device went away
            self.close()
            raise MicrophoneError(_describe(f"microphone {self.device!r} failed", exc)) from exc
        return samples(data, overflowed, self.device)

    def close(self) -> None:
        """Stop capturing and release the device. Harmless when not open."""
        stream, self._stream = self._stream, None
        if stream is not None:
            # Closing a device that vanished can fail; it is gone anyway.
            with contextlib.suppress(Exception):
                stream.close()

    def _open(self) -> Any:
        if self._stream is None:
            try:
                stream = self._sd.InputStream(
                    device=self._index, samplerate=self.rate, channels=1, dtype="int16"
                )
                stream.start()
            except Exception as exc:
                raise MicrophoneError(
                    _describe(f"cannot open microphone {self.device!r} at {self.rate} Hz", exc)
                ) from exc
            self._stream = stream
        return self._stream

    def _find(self, device: str) -> int:
        """PortAudio's index of the ALSA input device named ``device``."""
        inputs = {
            d["name"]: d["index"]
            for d in self._sd.query_devices()
            if d["max_input_channels"] > 0 and d["hostapi"] == self._alsa()
        }
        # PortAudio names hardware "USB Audio: - (hw:1,0)" and config PCMs plainly.
        for name, index in inputs.items():
            if name == device or name.endswith(f"({device})"):
                return int(index)
        known = ", ".join(sorted(inputs)) or "none"
        raise MicrophoneError(f"no ALSA capture device {device!r} (there are: {known})")

    def _alsa(self) -> int:
        for index, api in enumerate(self._sd.query_hostapis()):
            if api["name"] == "ALSA":
                return index
        raise MicrophoneError("PortAudio was built without ALSA")


def _load_sounddevice() -> Any:
    try:
        return importlib.import_module("sounddevice")
    except OSError as exc:  # sounddevice raises OSError when it cannot load libportaudio
        raise MicrophoneError(NOT_INSTALLED) from exc


def _describe(what: str, exc: BaseException) -> str:
    detail = str(exc)
    return f"{what}: {detail}" if detail else f"{what}: {type(exc).__name__}"
