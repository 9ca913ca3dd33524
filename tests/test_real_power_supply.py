"""The sysfs battery on a power-supply tree laid out as the kernel lays it out: a directory
per supply of one-line text files (that is the kernel's whole interface)."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.power_supply import NoBattery, SysfsBattery, on_external_power


def _supply(root: Path, name: str, **files: str) -> Path:
    path = root / name
    path.mkdir(parents=True)
    for key, value in files.items():
        (path / key).write_text(f"{value}\n")
    return path


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    """A Pi with a UPS HAT: a battery and the USB-C input that charges it."""
    root = tmp_path / "power_supply"
    _supply(root, "BAT0", type="Battery", capacity="87", status="Discharging")
    _supply(root, "usb", type="USB", online="0")
    return root


def test_capacity_and_external_power_follow_the_kernel(sysfs: Path) -> None:
    battery = SysfsBattery(root=sysfs)
    assert battery.percent() == 87.0
    assert battery.external_power() is False
    (sysfs / "usb" / "online").write_text("1\n")  # plugged in
    (sysfs / "BAT0" / "status").write_text("Charging\n")
    (sysfs / "BAT0" / "capacity").write_text("88\n")
    assert battery.external_power() is True
    assert battery.percent() == 88.0


def test_a_named_battery_among_several(sysfs: Path) -> None:
    _supply(sysfs, "BAT1", type="Battery", capacity="12", status="Discharging")
    with pytest.raises(ValueError, match=r"2 batteries .*BAT0, BAT1.*name the one"):
        SysfsBattery(root=sysfs)
    assert SysfsBattery("BAT1", root=sysfs).percent() == 12.0


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("BAT9", r"no power supply 'BAT9' .*there are: BAT0, usb"),
        ("usb", "is a USB, not a Battery"),
    ],
)
def test_a_wrong_name_is_an_error_naming_it(sysfs: Path, name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SysfsBattery(name, root=sysfs)


def test_a_missing_tree_or_battery_is_an_error_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"no power supplies at {tmp_path / 'nope'}"):
        SysfsBattery(root=tmp_path / "nope")
    mains_only = tmp_path / "mains"
    _supply(mains_only, "AC", type="Mains", online="1")
    with pytest.raises(ValueError, match=r"0 batteries .*\(none\)"):
        SysfsBattery(root=mains_only)


def test_an_unreadable_capacity_is_an_error_at_start(sysfs: Path) -> None:
    (sysfs / "BAT0" / "capacity").write_text("lots\n")
    with pytest.raises(ValueError, match=r"cannot read battery .*BAT0.*lots"):
        SysfsBattery(root=sysfs)


def test_a_later_read_error_keeps_the_last_good_value(sysfs: Path) -> None:
    battery = SysfsBattery(root=sysfs)
    (sysfs / "BAT0" / "capacity").unlink()  # the gauge went away for a moment
    assert battery.percent() == 87.0
    (sysfs / "BAT0" / "capacity").write_text("150\n")  # nonsense from the gauge
    assert battery.percent() == 87.0


@pytest.mark.parametrize(
    ("status", "online", "external"),
    [
        ("Discharging", [], False),
        ("Discharging", [False, False], False),
        ("Discharging", [False, True], True),
        ("Charging", [], True),
        ("Full", [], True),
        ("Not charging", [], True),  # charger attached, charging held off (e.g. too warm)
        ("Unknown", [], False),
    ],
)
def test_external_power_decision(status: str, online: list[bool], external: bool) -> None:
    assert on_external_power(status, online) is external


def test_no_battery_is_mains_powered_and_full() -> None:
    assert NoBattery().external_power() is True
    assert NoBattery().percent() == 100.0
