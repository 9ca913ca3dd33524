"""The command line: the documented commands work, and bad input gets one clear line."""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.cli import plain_text
from unbroken.cli import build_parser, log_formatter, main


def test_sim_session_then_verify_as_documented(tmp_path: Path) -> None:
    data = tmp_path / "dev"
    cfg = tmp_path / "device.toml"
    cfg.write_text("[recording]\nwidth = 320\nheight = 180\nfps = 10\nprebuffer_seconds = 2\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "unbroken.cli",
            "sim",
            "session",
            "--seconds",
            "3",
            "--data",
            str(data),
            "--badge",
            "012345",
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert (data / "device.pub").exists()
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "unbroken.cli",
            "verify",
            str(data),
            "--pubkey",
            str(data / "device.pub"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout
    assert "RESULT: OK" in verify.stdout and "012345" in verify.stdout


@pytest.mark.parametrize(
    "argv,message",
    [
        (["verify", "/nonexistent/evidence"], "no such directory"),
        (["verify", "{tmp}"], "public key file not found"),
        (["verify", "{tmp}", "--pubkey", "{tmp}/garbage.pub"], "not an Ed25519 public key"),
        (
            ["verify", "{tmp}/garbage.pub"],
            "garbage.pub is a file, not a directory: verify wants an evidence directory",
        ),
        (
            ["export", "{tmp}/garbage.pub", "--out", "{tmp}/o"],
            "is a file, not a directory: export wants an evidence directory",
        ),
        (
            ["sim", "session", "--seconds", "1", "--data", "{tmp}/d", "--config", "{tmp}/bad.toml"],
            "unknown_key: Extra inputs are not permitted",
        ),
        (["agent", "run", "--data", "{tmp}/d"], "hardware.cameras.main: backend 'picamera'"),
        (["agent", "run", "--data", "{tmp}/d", "--offline"], "need --sim"),
    ],
)
def test_bad_input_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "garbage.pub").write_text("zz")
    (tmp_path / "bad.toml").write_text("unknown_key = 1\n")
    (tmp_path / "chain").mkdir()
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unbroken: error:") and message in err


def test_unwritable_data_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["sim", "session", "--seconds", "1", "--data", str(blocker / "d")]) == 2
    assert "is not writable" in capsys.readouterr().err


def _parsers(p: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_help_is_plain_text_not_rest() -> None:
    """Every command's --help, as people read it: no ``literal`` or :role:`x` markup."""
    helps = [p.format_help() for p in _parsers(build_parser([]))]
    assert len(helps) > 30
    for text in helps:
        assert "``" not in text and not re.search(r":[a-z]+:`|::$", text, re.MULTILINE), text
    assert plain_text("The ``unbroken`` command, :mod:`store.report`. Example::") == (
        "The unbroken command, store.report. Example:"
    )


def test_foreground_logs_have_the_time_and_journald_its_own() -> None:
    record = logging.LogRecord("agent.run", logging.INFO, __file__, 1, "recording", None, None)
    record.created = 1773451800.5
    assert log_formatter({}).format(record) == "2026-03-14T01:30:00Z INFO agent.run: recording"
    assert log_formatter({"JOURNAL_STREAM": "8:1234"}).format(record) == (
        "INFO agent.run: recording"
    )
