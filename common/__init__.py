"""What the agency side and the device side share, above the evidence format: provisioning
documents (requests, bundles, commands, certificates), the device settings schema, MQTT topics
and connections, written statements, and files. Imports only :mod:`evidence`."""
