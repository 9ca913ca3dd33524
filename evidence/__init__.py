"""The evidence format and its verification: pure code, no I/O.

Shared by the device agent (which seals), the agency store (which checks what arrives) and
``unbroken verify`` (which checks an evidence directory offline). See docs/evidence-format.md.
"""
