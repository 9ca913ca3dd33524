"""``unbroken demo``: the main job, end to end, on simulated hardware.

An officer arrives with a buffering body camera, presses record, shows the credential,
and closes the session with press-and-confirm; the evidence is then verified offline with
the device's public key, and a tampered copy is shown to fail.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from agent.config import DeviceConfig, Labels, Recording, Session, Watermark
from agent.evidence_dir import PUBKEY, verify_dir
from evidence.report import format_report
from simulator.session import record_session


def demo_config() -> DeviceConfig:
    return DeviceConfig(
        recording=Recording(width=1280, height=720, fps=30, prebuffer_seconds=10),
        watermark=Watermark(labels=Labels(badge="警号", device="设备", no_fix="无定位")),
        session=Session(badges=["340102"]),
    )


def run_demo(out: Path) -> int:
    device = out / "bwc"
    if device.exists():
        shutil.rmtree(device)
    print("== 1. A body-worn recorder records a session (simulated hardware, 1280x720@30)")
    print(record_session(device, demo_config(), 12, badges=["340102", "340117"]))

    print("\n== 2. Verify the evidence offline, pinning the device's public key")
    report = verify_dir(device, device / PUBKEY)
    print(format_report(report, str(device)))
    if not report.ok:
        return 1

    print("\n== 3. Tamper with a copy (flip one byte of one segment) and verify again")
    tampered = out / "bwc-tampered"
    if tampered.exists():
        shutil.rmtree(tampered)
    shutil.copytree(device, tampered)
    victim = sorted((tampered / "segments").rglob("*.mp4"))[3]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    bad = verify_dir(tampered, device / PUBKEY)
    for p in bad.problems:
        print(f"  caught: {p.code}: {p.where}: {p.message}")
    if bad.ok:
        print("  tampering was NOT caught")
        return 1
    print(f"\nDemo complete. Evidence: {device}")
    return 0
