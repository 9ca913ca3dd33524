"""`machine` for the panel firmware on the MicroPython unix port (tests/test_panel.py).

Each pin is a file named by the pin's id in the directory $PANEL_PINS, holding "0" or "1".
An input reads its file (missing: 1, the pulled-up idle level; unreadable: the last value
read); an output writes its file on every change (written aside, then renamed, so that a
reader never sees half a file). This file shadows the unix port's own `machine`, which has
no Pin.
"""

import os

PINS = os.getenv("PANEL_PINS") or "."


class Pin:
    IN, OUT, OPEN_DRAIN = 0, 1, 2
    PULL_UP, PULL_DOWN = 1, 2

    def __init__(self, id, mode=IN, pull=None, value=None):
        self.path = PINS + "/" + str(id)
        self.mode, self.last = mode, 1
        if mode == Pin.OUT:
            self.last = None
            self.value(0 if value is None else value)

    def value(self, v=None):
        if v is None:
            if self.mode == Pin.OUT:
                return self.last
            try:
                with open(self.path) as f:
                    self.last = int(f.read())
            except OSError:
                self.last = 1
            except ValueError:
                pass
            return self.last
        v = 1 if v else 0
        if v != self.last:
            with open(self.path + ".new", "w") as f:
                f.write(str(v))
            os.rename(self.path + ".new", self.path)
            self.last = v
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __call__(self, v=None):
        return self.value(v)
