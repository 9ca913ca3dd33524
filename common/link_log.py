"""A broker connection's changes told once, with their cause and the retry cadence, never
a line per retry: :class:`LinkLog` decides (pure), :class:`LinkWatch` feeds it paho's
callbacks. Both sides use it (the device's :mod:`agent.uplink`, the store's workers).

Example::

    c = tls_client("bwc-1", ca, cert, key)
    watch = LinkWatch(c, log, "10.0.0.5", 8883, min_delay=1, max_delay=15)
    # in on_connect: watch.connected(), or watch.refused(rc, "device bwc-1") on a refusal;
    # in on_disconnect: watch.disconnected(rc) -> the cause, unless this side closed it
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from common.mqtt import (
    Cause,
    alert_cause,
    certificate_valid_until,
    disconnect_cause,
    expired_whose,
    failure_cause,
    refusal_cause,
    taken_over,
)

REPEAT = 600.0  # seconds between reminders that the broker is still out of reach
# A connection the broker closes this soon after accepting it, this many times in a row
# with every reconnection accepted at once: another client is taking its session over
# (Mosquitto 2.0 closes the older connection without saying why).
FLAP_SECONDS, FLAPS = 5.0, 3


def retry_delay(failures: int, min_delay: float, max_delay: float) -> float:
    """paho's wait before its next attempt after ``failures`` failed ones in a row (it
    doubles from ``min_delay`` up to ``max_delay``, and starts again after a CONNACK)."""
    return float(min(min_delay * 2 ** max(0, failures - 1), max_delay))


class LinkLog:
    """Which connection events deserve a log line: a change of state or of cause, once,
    with the retry cadence — never every retry; a reminder every ``repeat`` seconds while
    the same cause lasts. Pure: returns ``(level, line)`` or None.

    Example::

        links = LinkLog("the broker at h:8883", min_delay=1, max_delay=15)
        gone = Cause("refused", "nothing listening")
        links.down(gone, now=0)     # (WARNING, "nothing listening (retrying in 1 s)")
        links.down(gone, now=1)     # None: nothing new
        links.up(now=30)            # (INFO, "connected to the broker at h:8883")
    """

    def __init__(
        self, where: str, min_delay: float, max_delay: float, repeat: float = REPEAT
    ) -> None:
        self.where = where
        self.min_delay, self.max_delay, self.repeat = min_delay, max_delay, repeat
        self.cause: Cause | None = None  # the cause in force (None: up, or never tried)
        self.ever_up = False
        self.failures = 0  # attempts in a row that failed, since the last connection
        self.down_since: float | None = None
        self.up_at: float | None = None  # when the connection in force was accepted
        self.flaps = 0  # connections in a row closed right after they were accepted
        self._said_at = 0.0

    def up(self, now: float) -> tuple[int, str] | None:
        self.up_at = now
        if self.cause is not None and self.cause.kind == "taken_over":
            self.failures, self.down_since = 0, None
            return None  # the duel goes on: said once, not at every round
        if not self.ever_up:
            line = f"connected to {self.where}"
        elif self.down_since is not None:
            line = (
                f"reconnected to {self.where} after {now - self.down_since:.0f} s "
                f"({self.failures} failed attempt{'s' if self.failures != 1 else ''})"
            )
        else:
            line = f"reconnected to {self.where}"
        self.ever_up, self.cause, self.failures, self.down_since = True, None, 0, None
        return logging.INFO, line

    def down(self, cause: Cause, now: float) -> tuple[int, str] | None:
        """A failed attempt, or a lost connection, because of ``cause``."""
        cause = self._flapping(cause, now)
        self.failures += 1
        retry = retry_delay(self.failures, self.min_delay, self.max_delay)
        if self.down_since is None:
            self.down_since = now
        if cause == self.cause:
            if now - self._said_at < self.repeat:
                return None
            self._said_at = now
            return logging.WARNING, (
                f"still not connected: {cause.text} ({self.failures} attempts in "
                f"{now - self.down_since:.0f} s; retrying every {retry:g} s)"
            )
        self.cause, self._said_at = cause, now
        return logging.WARNING, f"{cause.text} (retrying in {retry:g} s)"

    def _flapping(self, cause: Cause, now: float) -> Cause:
        """``cause``, or a session taken over if the broker keeps closing the connection
        right after accepting it."""
        brief = self.up_at is not None and now - self.up_at < FLAP_SECONDS
        self.up_at = None
        if cause.kind != "lost" or not brief:
            self.flaps = 0 if cause.kind != "taken_over" else self.flaps
            return cause
        self.flaps += 1
        return taken_over(self.where) if self.flaps >= FLAPS else cause

    def closed(self) -> tuple[int, str]:
        """This side closed the connection on purpose."""
        self.cause, self.failures, self.down_since, self.up_at = None, 0, None, None
        return logging.INFO, f"disconnected from {self.where}"


class LinkWatch:
    """Logs a client's connection changes with their causes (:class:`LinkLog`): installs
    ``on_connect_fail`` and ``on_log``; its owner calls :meth:`connected`, :meth:`refused`
    and :meth:`disconnected` from its own ``on_connect``/``on_disconnect``. ``cause`` is
    the cause in force, for status and tests. ``quiet_take_over``: a session taken over is
    the owner's to tell (a store worker stops)."""

    def __init__(
        self,
        client: mqtt.Client,
        logger: logging.Logger,
        host: str,
        port: int,
        min_delay: float,
        max_delay: float,
        quiet_take_over: bool = False,
        cert: Path | None = None,
    ) -> None:
        self.log, self.host, self.port = logger, host, port
        self.cert_until = certificate_valid_until(cert)  # to tell its expiry from the CRL's
        self.links = LinkLog(f"the broker at {host}:{port}", min_delay, max_delay)
        self.quiet = False  # this side is closing (or probing): a disconnect is no news
        self.quiet_take_over = quiet_take_over
        self._alert: Cause | None = None  # a TLS alert paho logged, before its disconnect
        self._refusal: Cause | None = None  # the CONNACK refusal, before its disconnect
        client.reconnect_delay_set(min_delay=int(min_delay), max_delay=int(max_delay))
        client.on_connect_fail = self._on_connect_fail
        client.on_log = self._on_log

    @property
    def cause(self) -> Cause | None:
        return self.links.cause

    def connected(self) -> None:
        self._alert = self._refusal = None
        self._say(self.links.up(time.time()))

    def refused(self, rc: ReasonCode, who: str) -> Cause:
        self._refusal = refusal_cause(rc, who)
        return self._refusal

    def disconnected(self, rc: ReasonCode) -> Cause | None:
        """The cause, if the connection ended against this side's will."""
        refusal, alert, self._refusal, self._alert = self._refusal, self._alert, None, None
        if self.quiet:
            self.links.closed()
            return None
        if not rc.is_failure and refusal is None and alert is None:
            self._say(self.links.closed())
            return None
        return self.down(refusal or disconnect_cause(rc, self.host, self.port, alert))

    def down(self, cause: Cause) -> Cause:
        """An attempt failed, or the connection ended, because of ``cause`` (logged if it
        is news); the cause as judged (a series of brief connections is a take-over)."""
        cause = expired_whose(cause, self.cert_until, time.time())
        said = self.links.down(cause, time.time())
        cause = self.links.cause or cause
        if not (self.quiet_take_over and cause.kind == "taken_over"):
            self._say(said)
        return cause

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        # paho calls this inside its ``except OSError``: the exception is the one in flight
        e = sys.exc_info()[1]
        self.down(failure_cause(e or OSError("connection failed"), self.host, self.port))

    def _on_log(self, _c: mqtt.Client, _u: Any, level: int, msg: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            # the broker's TLS alert arrives after the handshake: paho only logs it
            self._alert = alert_cause(msg, self.host, self.port) or self._alert

    def _say(self, said: tuple[int, str] | None) -> None:
        if said is not None:
            self.log.log(*said)
