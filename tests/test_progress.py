"""Progress of what a user waits for: shown on a terminal, as lines when asked for off
one, never with --quiet; and every long command reports it (counted, not looked at)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from common.progress import progress_shown, worth_a_line
from unbroken.cli import main


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_shown_on_a_terminal_only_unless_asked() -> None:
    with progress_shown(None, io.StringIO()) as progress:
        assert progress is None  # a pipe or a file, not asked for
    with progress_shown(False, _Terminal()) as progress:
        assert progress is None  # --quiet
    terminal = _Terminal()
    with progress_shown(None, terminal) as progress:
        assert progress is not None
        for i in range(4):
            progress("exporting", i, 3)
    assert "exporting" in terminal.getvalue() and "/3" in terminal.getvalue()
    log = io.StringIO()
    with progress_shown(True, log) as progress:  # --progress, into a log
        assert progress is not None
        progress("verifying", 0, None)
        progress("verifying", 1, None)
        for i in range(21):
            progress("exporting", i, 20)
    lines = log.getvalue().splitlines()
    assert lines[0] == "verifying: 0"
    assert lines[1:] == [f"exporting: {i}/20" for i in range(0, 21, 2)]


@pytest.mark.parametrize(
    ("done", "total", "said", "line"),
    [
        (0, 10, -1, True),  # a phase begins
        (5, None, 0, False),  # of unknown length: its start only
        (1, 100, 0, False),
        (10, 100, 9, True),  # a tenth of the way
        (100, 100, 99, True),  # its end
        (100, 100, 100, False),
    ],
)
def test_a_line_per_tenth_off_a_terminal(
    done: int, total: int | None, said: int, line: bool
) -> None:
    assert worth_a_line(done, total, said) is line


@pytest.mark.slow
def test_verify_reports_progress_when_asked_and_not_with_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "dev"
    cfg = tmp_path / "device.toml"
    cfg.write_text("[recording]\nwidth = 160\nheight = 90\nfps = 5\nprebuffer_seconds = 0\n")
    args = ["sim", "session", "--seconds", "2", "--data", str(data), "--config", str(cfg)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["verify", str(data), "--progress"]) == 0
    assert capsys.readouterr().err.startswith("verifying: ")
    assert main(["verify", str(data), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
