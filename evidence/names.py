"""What every provisioning module shares: the user-error type, names, time.

Example::

    check_name("bwc-1a2b3c4d", "device id")    # returns it, or raises ProvisionError
    iso(1773451800.0)                           # '2026-03-14T01:30:00Z'
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# Clocks on devices and at the agency disagree a little; a document "issued" up to this
# far in the future is still accepted.
SKEW_SECONDS = 300.0

# Names become MQTT topic levels, ACL usernames (%u) and certificate subjects: no '/',
# '+', '#', '$', spaces or upper case, so that no name can widen an ACL rule.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
# Certificate subjects that are not devices; a device id may not take these forms.
RESERVED_PREFIXES = ("panel-", "store-", "broker")


class ProvisionError(Exception):
    """A user error (bad input, refused document, wrong state): one line, names the problem."""


def check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ProvisionError(
            f"{what} {value!r} is not valid: 1-63 of a-z 0-9 . _ -, starting with a letter or digit"
        )
    return value


def check_device_id(value: object) -> str:
    device_id = check_name(value, "device id")
    if device_id.startswith(RESERVED_PREFIXES):
        raise ProvisionError(
            f"device id {device_id!r} is reserved (ids starting with "
            f"{', '.join(RESERVED_PREFIXES)} name panels, stores and the broker)"
        )
    return device_id


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
