"""The reference agency store: receives, verifies and keeps what devices upload (R7–R11)."""
