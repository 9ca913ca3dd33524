"""Officers' PINs never on the command line: asked at a terminal, or read from a file only
its owner can read; the old BADGE:PIN arguments are refused saying how to do it now."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.pins import PinError, mode_problem, parse_pins, read_pins, refuse_pin_in_argv
from unbroken.cli import main


def _pin_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_pin_in_an_argument_is_refused_without_repeating_it() -> None:
    assert refuse_pin_in_argv("--attest", "340102") == "340102"
    with pytest.raises(PinError) as e:
        refuse_pin_in_argv("--attest", "340102:4711")
    assert "--attest 340102 and type each PIN when asked" in str(e.value)
    assert "--pins FILE" in str(e.value) and "4711" not in str(e.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_pin_file_others_can_read_is_refused_naming_it_and_its_mode(
    tmp_path: Path, mode: int
) -> None:
    path = _pin_file(tmp_path / "pins.txt", "1:1111\n", mode)
    assert mode_problem(path, 0o100600) is None
    with pytest.raises(PinError, match=rf"pins.txt has mode 0{mode:o}: others can read it"):
        read_pins(["1"], path)


def test_a_pin_file_gives_each_officer_asked_for(tmp_path: Path) -> None:
    path = _pin_file(tmp_path / "pins.txt", "# officers\n1:1111\n\n2 : 2222\n")
    assert read_pins(["2"], path) == {"2": "2222"}
    assert read_pins([], path) == {"1": "1111", "2": "2222"}
    with pytest.raises(PinError, match="has no PIN for officer 3"):
        read_pins(["1", "3"], path)
    with pytest.raises(PinError, match="line 2: expected BADGE:PIN"):
        parse_pins("1:1111\n2222\n", path)
    with pytest.raises(PinError, match="line 2: officer 1 is there twice"):
        parse_pins("1:1111\n1:2222\n", path)


def test_pins_are_asked_for_at_a_terminal_and_never_without_one() -> None:
    typed = iter(["1111", "2222", "2222"])
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return next(typed)

    assert read_pins(["1"], None, prompt=prompt, interactive=True) == {"1": "1111"}
    assert read_pins(["2"], None, confirm=True, prompt=prompt, interactive=True) == {"2": "2222"}
    assert asked == ["PIN for officer 1: ", "PIN for officer 2: ", "PIN for officer 2 again: "]
    with pytest.raises(PinError, match=r"stdin is not a terminal.*--pins FILE"):
        read_pins(["1"], None, interactive=False)


def test_the_commands_take_badges_and_refuse_the_old_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agency = tmp_path / "agency"
    assert main(["provision", "init-agency", "--dir", str(agency)]) == 0
    capsys.readouterr()
    officers = tmp_path / "officers.json"
    base = ["provision", "officers", "--agency", str(agency), "--out", str(officers)]
    assert main([*base, "--officer", "340102:4711"]) == 2
    err = capsys.readouterr().err
    assert "--officer 340102:...: a PIN on the command line" in err and "4711" not in err
    loose = _pin_file(tmp_path / "pins.txt", "340102:4711\n340117:0815\n", 0o644)
    assert main([*base, "--pins", str(loose)]) == 2
    assert f"{loose} has mode 0644" in capsys.readouterr().err
    loose.chmod(0o600)
    assert main([*base, "--pins", str(loose)]) == 0
    assert "officer list for 2 officers" in capsys.readouterr().out
    short = _pin_file(tmp_path / "short.txt", "1:12\n")
    assert main([*base, "--pins", str(short)]) == 2
    assert "officer 1: a PIN needs at least 4 characters" in capsys.readouterr().err
    args = ["agent", "explain", "--data", str(tmp_path), "--gap", "g", "--reason", "r"]
    assert main([*args, "--attest", "340102:4711", "--attest", "340117:0815"]) == 2
    assert "--attest 340102:...: a PIN on the command line" in capsys.readouterr().err
