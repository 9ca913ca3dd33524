"""Hardware ports of a recorder and their real and simulated backends.

Each port is a small interface (a :class:`typing.Protocol`) with a simulated backend that
tests and the simulator drive, and a real backend for the Raspberry Pi where one exists.
"""
