# mypy: ignore-errors
# (MicroPython, not CPython: machine, network, umqtt and time.ticks_ms exist on the board.)
"""Unbroken interview-room panel: MicroPython firmware for an ESP32 or Pico W board.

Door contact and start/stop key switch in, RECORDING lamp and status LED out, over MQTT
with TLS (the panel's own P-256 certificate) to the room controller. See README.md here.

Topics, all under unbroken/p/<room>/:
  door   panel -> controller  closed | open      retained, QoS 1: on change, on (re)connect
  key    panel -> controller  start | stop      QoS 1: on each change of the key switch
  panel  panel -> controller  online | offline  retained; offline is the last will
  state  controller -> panel  idle | recording | confirm | fault   (retained)

The lamp is lit exactly while connected and the last state was `recording`, received
within `state_stale` seconds: the controller repeats its state every 5 s, so a controller
that died (its retained `recording` still at the broker) does not keep the lamp lit.
Status LED: steady = connected, idle or recording; slow blink = confirm; fast blink =
disconnected, fault, no state yet, or a stale one.

Time comes from a clock with MicroPython's ticks API (ticks_ms, ticks_add, ticks_diff):
the `time` module on a board; a test passes its own (`Panel(conf, board, clock)`) and
moves it. The decisions that depend on time (Debounced, Heartbeat, Indicator) decide from
the `now` they are given, so they also run under CPython.
"""

import json
import ssl
import sys
import time

import machine
from umqtt.simple import MQTTClient

try:
    import select
except ImportError:
    import uselect as select

try:
    import network
except ImportError:  # the unix port: the host's network is used as it is
    network = None

# Defaults for board.json (Pico W pin numbers; every key may be overridden).
BOARD = {
    "door": 14,  # door contact to ground, pull-up: low = door closed
    "key": 15,  # maintained key switch to ground, pull-up: low = start
    "lamp": 16,  # RECORDING lamp driver: high = lit
    "led": "LED",  # status LED: high = on
    "debounce_ms": 50,  # an input must hold a new level this long to count
    "keepalive": 30,  # s: ping every half of it; no byte from the broker for this long = dead
    "backoff_max": 30,  # s: reconnection delay doubles from 1 s up to this
    "state_stale": 20,  # s: a state not repeated for this long is not believed
    "wifi": None,  # {"ssid": "...", "password": "..."} on a board with Wi-Fi
    "ntp": None,  # NTP server for the clock (certificate dates), else ntptime's default
}
DOOR = (b"closed", b"open")  # by pin level
KEY = (b"start", b"stop")  # by pin level
STATES = (b"idle", b"recording", b"confirm", b"fault")
SLOW_MS, FAST_MS = 500, 100  # half periods of the status LED's blinks
WAIT_MS = 10000  # the longest wait for an answer from the broker (PUBACK, SUBACK)
LOOP_MS = 10


def log(*args):
    print("panel:", *args)


def ticks_due(clock, now, when):
    return clock.ticks_diff(now, when) >= 0


class Debounced:
    """An input pin whose `value` changes only after the level held for `ms`."""

    def __init__(self, pin, ms, clock=time):
        self.pin, self.ms, self.clock = pin, ms, clock
        self.value = self.raw = pin.value()
        self.since = clock.ticks_ms()

    def changed(self, now):
        v = self.pin.value()
        if v != self.raw:
            self.raw, self.since = v, now
        elif v != self.value and self.clock.ticks_diff(now, self.since) >= self.ms:
            self.value = v
            return True
        return False


class Heartbeat:
    """MQTT keepalive as the panel keeps it: a PINGREQ every half `keepalive_ms`, and a
    broker that sent no byte (not even a PINGRESP) for `keepalive_ms` is taken for dead."""

    def __init__(self, keepalive_ms, clock=time):
        self.ms, self.clock = keepalive_ms, clock
        self.ping_at = clock.ticks_ms()

    def start(self, now):
        self.ping_at = self.clock.ticks_add(now, self.ms // 2)

    def ping_due(self, now):
        """True once per half keepalive; the next ping is then counted from `now`."""
        if not ticks_due(self.clock, now, self.ping_at):
            return False
        self.start(now)
        return True

    def silent(self, now, rx):
        """Whether nothing has come in since `rx` for longer than the keepalive."""
        return self.clock.ticks_diff(now, rx) > self.ms


class Indicator:
    """The RECORDING lamp and the status LED, from the controller's last state and when it
    came: a state not repeated within `stale_ms` is not believed."""

    def __init__(self, stale_ms, clock=time):
        self.stale_ms, self.clock = stale_ms, clock
        self.state, self.at = None, clock.ticks_ms()

    def heard(self, msg, now):
        self.state = msg if msg in STATES else None
        self.at = now

    def forget(self):
        self.state = None

    def levels(self, now, up=True):
        """(lamp, led) to show at `now`; `up` is whether the panel is connected."""
        state = self.state if up else None
        if state and self.clock.ticks_diff(now, self.at) > self.stale_ms:
            state = None  # the controller stopped saying it: it may be gone
        if state in (b"idle", b"recording"):
            led = 1
        else:
            half = SLOW_MS if state == b"confirm" else FAST_MS
            led = (now // half) % 2
        return (1 if state == b"recording" else 0), led


class Link:
    """The TLS socket as umqtt.simple uses it, plus what it lacks: a read that waits for the
    broker gives up after `wait` ms (a dead path raises instead of hanging), and `rx` is
    when the last byte came in (PINGRESP too). The socket itself stays non-blocking."""

    def __init__(self, sock, wait, clock=time):
        self.sock, self.wait, self.clock = sock, wait, clock
        self.blocking = True
        self.rx = clock.ticks_ms()
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        sock.setblocking(False)

    def setblocking(self, flag):
        self.blocking = flag

    def read(self, n):
        if not self.blocking:
            data = self.sock.read(n)
        else:
            data = b""
            deadline = self.clock.ticks_add(self.clock.ticks_ms(), self.wait)
            while len(data) < n:
                part = self.sock.read(n - len(data))
                if part == b"":
                    break  # closed by the broker
                if part:
                    data += part
                elif ticks_due(self.clock, self.clock.ticks_ms(), deadline):
                    raise OSError(110)  # ETIMEDOUT
                else:
                    self.poller.poll(LOOP_MS)
        if data:
            self.rx = self.clock.ticks_ms()
        return data

    def write(self, buf, n=None):
        self.sock.setblocking(True)  # never a short write
        try:
            return self.sock.write(buf if n is None else memoryview(buf)[:n])
        finally:
            self.sock.setblocking(False)

    def close(self):
        self.sock.close()


class Tls:
    """What umqtt.simple wraps its socket with: the panel's TLS context, checking the
    broker's certificate against the agency CA and its name, within a time limit."""

    def __init__(self, ctx, host):
        self.ctx, self.host = ctx, host

    def wrap_socket(self, sock, **_):
        sock.settimeout(WAIT_MS / 1000)  # the handshake and CONNACK; Link takes over after
        return self.ctx.wrap_socket(sock, server_hostname=self.host)


class Panel:
    def __init__(self, conf, board, clock=time):
        self.board, self.clock = board, clock
        room = conf["room"]
        self.prefix = "unbroken/p/" + room + "/"
        self.t_state = (self.prefix + "state").encode()
        pin, ms = machine.Pin, board["debounce_ms"]
        self.door = Debounced(pin(board["door"], pin.IN, pin.PULL_UP), ms, clock)
        self.key = Debounced(pin(board["key"], pin.IN, pin.PULL_UP), ms, clock)
        self.lamp = pin(board["lamp"], pin.OUT, value=0)
        self.led = pin(board["led"], pin.OUT, value=0)
        self.shown = (0, 0)
        self.heartbeat = Heartbeat(board["keepalive"] * 1000, clock)
        self.indicator = Indicator(board["state_stale"] * 1000, clock)
        self.backoff, self.backoff_max = 1000, board["backoff_max"] * 1000
        self.up = False
        self.retry = self.wifi_at = self.time_at = clock.ticks_ms()
        self.time_ok = False
        self.wlan = None
        if network and board["wifi"]:
            self.wlan = network.WLAN(network.STA_IF)
            self.wlan.active(True)
        self.mqtt = self.client(conf)

    def client(self, conf):
        host, port = conf["broker"]["host"], conf["broker"]["port"]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(read(conf["cert"]), read(conf["key"]))
        ctx.load_verify_locations(cadata=read(conf["ca"]))
        tls = Tls(ctx, host)
        c = MQTTClient(conf["client_id"], host, port, keepalive=self.board["keepalive"], ssl=tls)
        if hasattr(c, "ssl_params"):
            # umqtt.simple < 1.4 (the one on PyPI) calls `ussl.wrap_socket(sock)`: the
            # same Tls answers it, so both versions connect the same way.
            sys.modules["ussl"] = tls
        c.set_callback(self.on_message)
        c.set_last_will(self.prefix + "panel", b"offline", True, 1)
        return c

    def on_message(self, topic, msg):
        if topic == self.t_state:
            if msg != self.indicator.state:
                log("state", msg)
            self.indicator.heard(msg, self.clock.ticks_ms())

    # -- the connection -----------------------------------------------------------------

    def wifi(self, now):
        """True when the network is there (always, without a Wi-Fi radio)."""
        w = self.wlan
        if w is None or w.isconnected():
            return True
        if ticks_due(self.clock, now, self.wifi_at):
            log("joining Wi-Fi", self.board["wifi"]["ssid"])
            try:  # noqa: SIM105  (no contextlib on a microcontroller)
                w.disconnect()
            except OSError:
                pass
            w.connect(self.board["wifi"]["ssid"], self.board["wifi"]["password"])
            self.wifi_at = self.clock.ticks_add(now, 20000)
        return False

    def sync_time(self, now):
        """TLS checks certificate dates: set a board's clock from NTP once."""
        if self.time_ok or self.wlan is None or not ticks_due(self.clock, now, self.time_at):
            return
        try:
            import ntptime

            if self.board["ntp"]:
                ntptime.host = self.board["ntp"]
            ntptime.settime()
            self.time_ok = True
        except Exception as e:
            log("no time from NTP:", repr(e))
            self.time_at = self.clock.ticks_add(now, 10000)

    def connect(self, now):
        c = self.mqtt
        log("connecting to", c.server, c.port)
        try:
            c.connect()
            c.sock = Link(c.sock, WAIT_MS, self.clock)
            c.subscribe(self.t_state, 1)
            c.publish(self.prefix + "panel", b"online", True, 1)
            c.publish(self.prefix + "door", DOOR[self.door.value], True, 1)
        except Exception as e:
            self.drop("connect failed", e)
            return
        log("connected")
        self.up, self.backoff = True, 1000
        self.heartbeat.start(now)

    def drop(self, why, e=None):
        """Close the connection (if any) and try again after the backoff."""
        log(why, repr(e) if e else "", "; retry in", self.backoff, "ms")
        try:  # noqa: SIM105
            self.mqtt.sock.close()
        except Exception:
            pass
        self.up = False
        self.indicator.forget()
        self.retry = self.clock.ticks_add(self.clock.ticks_ms(), self.backoff)
        self.backoff = min(self.backoff * 2, self.backoff_max)

    def send(self, topic, payload, retain):
        if not self.up:
            log("not connected:", topic, payload, "not sent")  # the door is sent on connect
            return
        try:
            self.mqtt.publish(self.prefix + topic, payload, retain, 1)
        except Exception as e:
            self.drop("disconnected", e)

    def service(self, now):
        c = self.mqtt
        try:
            if self.heartbeat.ping_due(now):
                c.ping()
            c.check_msg()
            if self.heartbeat.silent(now, c.sock.rx):
                raise OSError(110)  # not even a PINGRESP
        except Exception as e:
            self.drop("disconnected", e)

    # -- the loop -----------------------------------------------------------------------

    def step(self, now):
        if not self.wifi(now):
            if self.up:
                self.drop("Wi-Fi lost")
        else:
            self.sync_time(now)
            if not self.up and ticks_due(self.clock, now, self.retry):
                self.connect(now)
        if self.door.changed(now):
            log("door", DOOR[self.door.value])
            self.send("door", DOOR[self.door.value], True)
        if self.key.changed(now):
            log("key", KEY[self.key.value])
            self.send("key", KEY[self.key.value], False)
        if self.up:
            self.service(now)
        self.show(now)

    def show(self, now):
        lamp, led = self.indicator.levels(now, self.up)
        if (lamp, led) != self.shown:
            self.lamp.value(lamp)
            self.led.value(led)
            self.shown = (lamp, led)

    def run(self):
        while True:
            self.step(self.clock.ticks_ms())
            time.sleep_ms(LOOP_MS)  # real time: only the pace of the loop


def read(name):
    with open(name, "rb") as f:
        return f.read()


def main():
    conf = json.loads(read("panel.json"))
    board = dict(BOARD)
    try:  # noqa: SIM105
        board.update(json.loads(read("board.json")))
    except OSError:
        pass  # no board.json: the defaults
    try:
        Panel(conf, board).run()
    except Exception as e:  # a bug, or out of memory: start again rather than freeze the lamp
        sys.print_exception(e)
        if not hasattr(machine, "reset"):
            raise
        time.sleep(5)
        machine.reset()


if __name__ == "__main__":
    main()
