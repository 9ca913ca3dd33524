"""The device runtime: sessions, recorder, sealing, journal (and later sync)."""
