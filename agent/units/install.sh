#!/bin/sh
# Install the recording agent as a service on Raspberry Pi OS (bookworm, 64-bit) or another
# Debian-based board: `sudo make install-pi` runs this from a clone of the project.
#
# What it does, in order: the system packages (picamera2 comes from Raspberry Pi OS's apt,
# so the venv sees the system's site packages); a dedicated user; the venv with the agent;
# the data directory, owned by that user and closed to others; the systemd unit, enabled.
# Then provision the device (docs/provisioning.md) and `systemctl start unbroken-agent`.
#
# Settings (environment): PREFIX (/opt/unbroken), DATA (/var/lib/unbroken),
# UNIT_DIR (/etc/systemd/system), AGENT_USER (unbroken); UNBROKEN_SKIP_APT=1 and
# UNBROKEN_SKIP_SYSTEMD=1 leave those steps out (a test, or a board set up by hand).
set -eu

SRC=$(cd "$(dirname "$0")/../.." && pwd)
PREFIX=${PREFIX:-/opt/unbroken}
DATA=${DATA:-/var/lib/unbroken}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
AGENT_USER=${AGENT_USER:-unbroken}

say() { printf '== %s\n' "$*"; }

if [ "${UNBROKEN_SKIP_APT:-0}" != 1 ]; then
    say "system packages"
    apt-get update -qq
    # python3-picamera2 exists only in Raspberry Pi OS's archive: elsewhere, no Pi camera.
    extra=""
    if apt-cache show python3-picamera2 >/dev/null 2>&1; then extra="python3-picamera2"; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip \
        fonts-wqy-microhei alsa-utils libportaudio2 gpsd tpm2-tools $extra
fi

if ! id "$AGENT_USER" >/dev/null 2>&1; then
    say "user $AGENT_USER"
    useradd --system --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin "$AGENT_USER"
fi
for group in video audio gpio dialout i2c tss; do  # tss: /dev/tpmrm0, for the TPM key store
    if getent group "$group" >/dev/null && [ "$AGENT_USER" != root ]; then
        usermod -a -G "$group" "$AGENT_USER" 2>/dev/null || true
    fi
done

say "venv $PREFIX/venv (with the system's site packages, for picamera2)"
python3 -m venv --system-site-packages "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install -q --upgrade pip
"$PREFIX/venv/bin/python" -m pip install -q "$SRC"

say "data directory $DATA"
install -d -m 0750 "$DATA"
chown "$AGENT_USER:" "$DATA" 2>/dev/null || chown "$AGENT_USER" "$DATA"

say "service unit in $UNIT_DIR"
install -d "$UNIT_DIR"
sed -e "s#/opt/unbroken/venv#$PREFIX/venv#g" -e "s#/var/lib/unbroken#$DATA#g" \
    -e "s#^User=unbroken#User=$AGENT_USER#" -e "s#^Group=unbroken#Group=$AGENT_USER#" \
    "$SRC/agent/units/unbroken-agent.service" > "$UNIT_DIR/unbroken-agent.service"
chmod 0644 "$UNIT_DIR/unbroken-agent.service"

if [ "${UNBROKEN_SKIP_SYSTEMD:-0}" != 1 ]; then
    systemctl daemon-reload
    systemctl enable unbroken-agent.service
    say "enabled: provision the device, then: systemctl start unbroken-agent"
fi
"$PREFIX/venv/bin/unbroken" --version
