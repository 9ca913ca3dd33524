"""The hardware simulator: real agents on simulated hardware, for testers and tests."""
