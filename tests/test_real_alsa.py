"""The ALSA microphone against a real ALSA capture device: alsa-lib's ``file`` plugin,
which plays a raw file the test made into whoever captures from it.

The test's own ALSA configuration is added through ALSA_CONFIG_PATH (after the system's
alsa.conf), never through the user's home. Needs Debian's libportaudio2: missing, the tests
skip, or fail under CI=true.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from device.alsa import AlsaMicrophone, samples
from device.microphone import MicrophoneError
from tests.fixtures.real import tone, tone_pcm

RATE = 48000
TONE_HZ = 440.0
AMPLITUDE = 8000
SYSTEM_CONF = "/usr/share/alsa/alsa.conf"


@pytest.fixture
def tone_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[np.ndarray]:
    """A capture PCM called ``tone`` that delivers a 440 Hz tone; yields the tone."""
    played = tone(3.0, RATE, TONE_HZ, AMPLITUDE)
    config_path = tone_pcm(tmp_path, played)
    import sounddevice as sd

    monkeypatch.setenv("ALSA_CONFIG_PATH", config_path)
    sd._terminate()  # PortAudio lists devices when it starts: start it again to see ours
    sd._initialize()
    yield played
    monkeypatch.undo()
    sd._terminate()
    sd._initialize()


def test_reads_are_the_tone_and_continuous(tone_device: np.ndarray) -> None:
    mic = AlsaMicrophone("tone", rate=RATE)
    try:
        chunks = [mic.read(1600) for _ in range(30)]  # one second, as the recorder asks
    finally:
        mic.close()
    for chunk in chunks:
        assert chunk.shape == (1600,) and chunk.dtype == np.int16
    got = np.concatenate(chunks)
    # Continuous: the chunks in a row are the file's samples in a row, none lost or repeated.
    assert np.array_equal(got, tone_device[: got.size])
    spectrum = np.abs(np.fft.rfft(got.astype(np.float64)))
    peak_hz = np.argmax(spectrum) * RATE / got.size
    assert abs(peak_hz - TONE_HZ) <= 2.0
    rms = np.sqrt(np.mean(got.astype(np.float64) ** 2))
    assert rms == pytest.approx(AMPLITUDE / np.sqrt(2), rel=0.02)


def test_a_wrong_device_name_is_an_error_naming_it(tone_device: np.ndarray) -> None:
    with pytest.raises(MicrophoneError, match="'no-such-mic'") as info:
        AlsaMicrophone("no-such-mic", rate=RATE)
    assert "tone" in str(info.value)  # and it says which devices there are


def test_a_device_that_cannot_be_opened_is_an_error_naming_it(tone_device: np.ndarray) -> None:
    with pytest.raises(MicrophoneError, match="'broken'"):
        AlsaMicrophone("broken", rate=RATE).read(1600)


def test_an_overrun_is_an_error_saying_samples_were_lost() -> None:
    with pytest.raises(MicrophoneError, match="overrun"):
        samples(np.zeros((4, 1), np.int16), True, "hw:1,0")
    out = samples(np.arange(4, dtype=np.int16).reshape(4, 1), False, "hw:1,0")
    assert out.shape == (4,) and out.tolist() == [0, 1, 2, 3]


def test_a_bad_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        AlsaMicrophone("default", rate=0)
