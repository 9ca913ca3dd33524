"""One convention per kind of argument, old spellings kept for a release with a note, and the
usual command-line manners: --version, a closed pipe is not an error, errors name the cause."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from evidence.verify_report import Problem, Report, format_report
from unbroken.cli import main


def unbroken(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "unbroken.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_version() -> None:
    done = unbroken("--version")
    assert done.returncode == 0 and done.stdout.startswith("unbroken 0.")


@pytest.mark.slow
def test_a_closed_pipe_is_not_an_error() -> None:
    done = subprocess.run(
        f"{sys.executable} -m unbroken.cli provision --help | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout == "usage: unb" and "Broken pipe" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_agency_directory_is_always_agency(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["provision", "init-agency", "--agency", str(tmp_path / "a")]) == 0
    assert "note" not in capsys.readouterr().err
    assert main(["provision", "init-agency", "--dir", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "--dir is deprecated" in err and "use --agency" in err
    assert (tmp_path / "b" / "agency.toml").exists()
    assert main(["provision", "init-agency"]) == 2
    assert "init-agency needs --agency DIR" in capsys.readouterr().err


def test_revoke_names_the_device_with_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agency = str(tmp_path / "a")
    assert main(["provision", "init-agency", "--agency", agency]) == 0
    assert (
        main(["provision", "revoke", "--device", "bwc-nobody", "--agency", agency, "--reason", "x"])
        == 2
    )
    assert "unknown device 'bwc-nobody'" in capsys.readouterr().err
    assert main(["provision", "revoke", "bwc-nobody", "--agency", agency, "--reason", "x"]) == 2
    err = capsys.readouterr().err
    assert "positional argument is deprecated" in err and "--device bwc-nobody" in err
    assert main(["provision", "revoke", "--agency", agency, "--reason", "x"]) == 2
    assert "revoke needs --device" in capsys.readouterr().err
    args = [
        "provision",
        "revoke",
        "bwc-a",
        "--device",
        "bwc-b",
        "--agency",
        agency,
        "--reason",
        "x",
    ]
    assert main(args) == 2
    assert "two devices" in capsys.readouterr().err


def test_explain_on_an_unprovisioned_device_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["agent", "explain", "--data", str(tmp_path), "--gap", "g", "--reason", "r"]
    pins = tmp_path / "pins.txt"
    pins.write_text("1:1111\n2:2222\n")
    pins.chmod(0o600)
    assert main([*args, "--attest", "1", "--attest", "2", "--pins", str(pins)]) == 2
    err = capsys.readouterr().err
    assert "this device is not provisioned" in err and "agency.pub" not in err


@pytest.mark.slow
def test_json_options_say_what_they_do() -> None:
    for command in (["provision", "devices"], ["store", "report"], ["verify"]):
        assert "machine-readable" in unbroken(*command, "--help").stdout, command


def test_one_problem_is_one_problem() -> None:
    one = Report(None, "k", False, entries=1, problems=[Problem("bad_signature", "chain/1", "x")])
    assert "RESULT: FAILED (1 problem)" in format_report(one, "d")
