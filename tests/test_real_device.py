"""``unbroken agent run`` without ``--sim``, on the real backends this machine has: a network
camera over RTSP (GStreamer's server on loopback), an ALSA microphone (alsa-lib's file plugin
playing a 440 Hz tone), gpsd fed a route moved to Beijing, no battery, no GPIO. It records,
seals and syncs end to end through a real Mosquitto and store; the manifests' positions are
the fed ones and the sealed audio is the tone."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from agent.journal.sync_ledger import SyncLedger
from common.archive.device_directory import DeviceDirectory, load_chain, read_public_key
from common.archive.media import plain_media
from common.archive.verify import verify_archive
from evidence.encryption import key_id
from evidence.seal import Entry
from simulator.mosquitto import free_port
from simulator.site import LocalSite
from tests.fixtures.nmea import ROUTE, moved_route
from tests.fixtures.real import RtspServer, gpsfake, tone, tone_pcm

pytestmark = pytest.mark.slow  # servers and an agent process, in real time

BEIJING = (39.9, 116.4)


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(float) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def test_a_body_recorder_on_real_backends_records_seals_and_syncs(tmp_path: Path) -> None:
    rtsp = RtspServer(free_port(), "/cam0:ball").start()
    route = tmp_path / "beijing.nmea"
    route.write_text("\n".join(moved_route(ROUTE, to=BEIJING)[:400]) + "\n", encoding="ascii")
    gps_port = free_port()
    site = LocalSite(tmp_path / "site")
    agency_key = site.agency.evidence_private_key()
    try:
        with gpsfake(route, gps_port, every=0.05):
            settings = {
                "recording": {"width": 320, "height": 180, "fps": 10, "prebuffer_seconds": 0},
                "gnss": {"backend": "gpsd", "gpsd_port": gps_port},
                "hardware": {
                    "cameras": {"main": {"backend": "rtsp", "url": rtsp.url("/cam0")}},
                    "microphone": {"device": "tone"},
                    "battery": {"backend": "none"},
                    "clock": "system",
                    "gpio": False,
                },
            }
            site.start_broker()
            site.start_store()
            data = site.provision_device("bwc-real-1", settings=settings)
            env = {
                **os.environ,
                "ALSA_CONFIG_PATH": tone_pcm(tmp_path, tone(30.0)),
                "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            }
            time.sleep(1.0)  # gpsd's first fix
            run = subprocess.run(
                [sys.executable, "-m", "unbroken.cli", "agent", "run", "--data", str(data),
                 "--open", "--seconds", "8"],
                env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
    finally:
        rtsp.stop()
        site.close()
    report = verify_archive(DeviceDirectory(data), read_public_key(data / "device.pub"))
    assert report.ok, report.problems[:3]
    segments = [e for _, e in load_chain(data) if isinstance(e, Entry) and e.kind == "segment"]
    assert len(segments) >= 3
    positions = [
        e.body["location"][end] for e in segments for end in ("start", "end") if e.body["location"]
    ]
    assert len(positions) >= 2 * (len(segments) - 1), "a manifest without its positions"
    for lat, lon in (p for p in positions if p):
        assert abs(lat - BEIJING[0]) < 0.1 and abs(lon - BEIJING[1]) < 0.1, (lat, lon)
    assert all(e.body["encryption"]["key"] == key_id(agency_key.public_key) for e in segments)
    with av.open(io.BytesIO(plain_media(data / segments[1].body["file"], agency_key))) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    assert _dominant_hz(audio, 48000) == pytest.approx(440, abs=5)
    receipted = {sha for sha, _ in SyncLedger(data).receipted_before(float("inf"))}
    assert receipted, "nothing reached the store"
    assert receipted <= {e.body["sha256"] for e in segments}


def test_a_room_on_two_network_cameras_interrupts_only_the_track_that_failed(
    tmp_path: Path,
) -> None:
    """A room controller on two RTSP cameras (two servers) and the ALSA microphone: one camera's
    server stops for 3 s — an interruption on that camera's tracks only, and recording goes on
    there once it is back."""
    subject = RtspServer(free_port(), "/cam:ball").start()
    room = RtspServer(free_port(), "/cam:smpte").start()
    site = LocalSite(tmp_path / "site")
    try:
        settings = {
            "recording": {"width": 320, "height": 180, "fps": 10, "prebuffer_seconds": 0},
            "gnss": {"backend": "none"},
            "room": {"cameras": ["subject", "room"]},
            "hardware": {
                "cameras": {
                    "subject": {"backend": "rtsp", "url": subject.url("/cam"), "timeout": 1.0},
                    "room": {"backend": "rtsp", "url": room.url("/cam"), "timeout": 1.0},
                },
                "microphone": {"device": "tone"},
                "battery": {"backend": "none"},
                "clock": "system",
                "gpio": False,
            },
        }
        data = site.provision_device("room-real-1", settings=settings, room="101")
        env = {
            **os.environ,
            "ALSA_CONFIG_PATH": tone_pcm(tmp_path, tone(60.0)),
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        }
        agent = subprocess.Popen(
            [sys.executable, "-m", "unbroken.cli", "agent", "run", "--data", str(data),
             "--open", "--seconds", "14", "--no-sync"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert agent.stdout is not None
        assert agent.stdout.readline().startswith("recording: recording")
        time.sleep(4)
        room.stop()  # the room camera's stream is gone for 3 s
        time.sleep(3)
        room.start()
        _, err = agent.communicate(timeout=60)
        assert agent.returncode == 0, err[-2000:]
    finally:
        subject.stop()
        room.stop()
        site.close()
    report = verify_archive(DeviceDirectory(data), read_public_key(data / "device.pub"))
    assert report.ok, report.problems[:3]
    (session,) = report.sessions
    cameras = [g for g in session.gaps if g["cause"] == "camera"]
    assert cameras, session.gaps
    for gap in cameras:
        assert "room" in gap["tracks"] and "subject" not in gap["tracks"], gap
        assert gap["end"] is not None, "recording resumed on the camera once it was back"
    segments = [e for _, e in load_chain(data) if isinstance(e, Entry) and e.kind == "segment"]
    last_room = max(e.body["end"]["wall"] for e in segments if e.body.get("track") == "room")
    assert last_room > cameras[-1]["end"], "room segments after the camera came back"
    assert "interruption " in err and "camera" in err  # the agent's log names it
