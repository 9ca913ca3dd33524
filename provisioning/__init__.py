"""Provisioning: the agency's keys, CA and device registry; enrolment, assignment,
revocation, key rotation and the broker's configuration (docs/provisioning.md).

Pure decisions (requests, bundles, signed commands, certificates, ACLs) are separate from
the thin I/O around them (:mod:`provisioning.agency`, :mod:`provisioning.cli`).
"""
