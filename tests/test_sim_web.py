"""``unbroken sim panel``: the page, driven in Debian's Chromium by Playwright.

The panel runs in this process (one device, syncing if Mosquitto is installed); a Node
script (tests/browser/panel.mjs, playwright-core) opens it, presses record, sees the LED
and the preview change, and closes the session with press-and-confirm. Then the device's
own chain must hold that session's open and close: the page really pressed the pin.

Needs node, /usr/bin/chromium and ``npm ci`` in tests/browser (``make pytest`` does all
three): missing, the browser test is skipped, or fails under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.evidence_dir import load_chain
from evidence.seal import Entry
from simulator.web import Fleet, PanelServer, mosquitto_available, summarize
from tests.conftest import small_config

BROWSER_DIR = Path(__file__).parent / "browser"
CHROMIUM = Path("/usr/bin/chromium")


def _browser_or_skip() -> str:
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node")
    if not CHROMIUM.exists():
        missing.append(str(CHROMIUM))
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("playwright-core (npm ci in tests/browser)")
    if missing:
        message = f"browser test needs {', '.join(missing)}: run `make pytest`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    assert node
    return node


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_panel_in_chromium(tmp_path: Path) -> None:
    node = _browser_or_skip()
    sync = mosquitto_available()
    config = small_config(prebuffer_seconds=2)
    with Fleet(tmp_path / "fleet", 1, config, sync=sync) as fleet:
        (live,) = fleet.devices
        with PanelServer(fleet) as server:
            result = subprocess.run(
                [node, str(BROWSER_DIR / "panel.mjs"), server.url, str(tmp_path)],
                cwd=BROWSER_DIR,
                capture_output=True,
                text=True,
                timeout=90,
            )
            print(result.stdout, result.stderr)
            assert result.returncode == 0, result.stdout + result.stderr
            view = json.loads(_get(server.url + "api/fleet")[1])["devices"][0]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["device"] == live.id
    assert (tmp_path / "panel.png").stat().st_size > 10_000
    assert view["sync"]["enabled"] is sync and view["sync"]["segments_sealed"] > 0
    # The page pressed the pin: the device sealed the session's open and close.
    entries = [e for _, e in load_chain(live.root) if isinstance(e, Entry)]
    kinds = [(e.kind, e.session) for e in entries]
    assert ("session_open", report["session"]) in kinds
    assert ("session_close", report["session"]) in kinds
    assert kinds[-1][0] == "shutdown"  # stopped cleanly


def test_panel_endpoints(tmp_path: Path) -> None:
    """The JSON, the picture and the actions, without a browser (no sync: quick)."""
    with (
        Fleet(tmp_path / "fleet", 2, small_config(prebuffer_seconds=2), sync=False) as fleet,
        PanelServer(fleet) as server,
    ):
        status, page = _get(server.url)
        assert status == 200 and b"/static/app.js" in page
        for name in ("app.js", "style.css"):
            assert _get(server.url + "static/" + name)[0] == 200
        assert _get(server.url + "static/../web.py")[0] == 404
        fleet_view = json.loads(_get(server.url + "api/fleet")[1])
        assert fleet_view["sync"] is False and len(fleet_view["devices"]) == 2
        d = fleet_view["devices"][0]
        assert d["led"] == {"pin": False, "indicator": "off"}
        assert {"battery", "storage", "gps", "events", "sync", "clock"} <= d.keys()
        assert [e["kind"] for e in d["events"]][-2:] == ["config", "boot"]
        status, jpeg = _get(server.url + d["preview"].lstrip("/"))
        assert status == 200 and jpeg[:2] == b"\xff\xd8"
        assert _post(server.url + f"api/devices/{d['id']}/no-such")[0] == 400
        assert _post(server.url + "api/devices/nobody/record")[0] == 404
        for action in ("gps-lost", "camera-fault"):
            assert _post(server.url + f"api/devices/{d['id']}/{action}")[0] == 200
        live = fleet.device(d["id"])
        assert live is not None
        _wait(lambda: live.snapshot["gps"]["jammed"])  # applied on the device's thread
        view = live.view()
        assert view["gps"]["fix"] is False and view["camera_fault"] is True
        # Open, then press and confirm from two requests at once: two presses, not one.
        other = fleet.devices[1]
        assert _post(server.url + f"api/devices/{other.id}/record")[0] == 200
        _wait(lambda: other.snapshot["status"]["session"] is not None)
        with ThreadPoolExecutor(2) as pool:
            url = server.url + f"api/devices/{other.id}/record"
            assert [s for s, _ in pool.map(_post, [url, url])] == [200, 200]
        _wait(lambda: other.snapshot["status"]["session"] is None)
        assert not other.dev.led()


def _wait(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_summaries() -> None:
    assert summarize("session_close", {"segments": 3}) == "3 segments"
    assert summarize("marker", {"type": "credential_shown", "note": ""}) == "credential_shown"
    assert summarize("interruption", {"cause": "camera", "detail": ""}) == "camera"
    assert summarize("something_new", {"a": 1}) == '{"a": 1}'
