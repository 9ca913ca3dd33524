#!/bin/sh
# Install the recording agent as a service on Raspberry Pi OS (bookworm, 64-bit) or another
# Debian-based board: `sudo make install-pi` runs this from a clone of the project. The
# whole route on a board, from keygen to the logs: docs/raspberry-pi.md.
#
# What it does, in order: the system packages, without recommended ones (pip's would bring
# a compiler; every Python dependency has an aarch64 wheel); picamera2 comes from Raspberry
# Pi OS's apt, so the venv sees the system's site packages. A dedicated user, in the device
# groups this system has (video, audio, gpio, ... : plain Debian has no gpio); the admin who
# ran sudo joins that user's group, to read `agent status`. The venv with the agent, and
# `unbroken` on PATH. The data directory, owned by that user, open to its group only. The
# systemd unit, enabled. Then provision the device and `systemctl start unbroken-agent`.
#
# Settings (environment): PREFIX (/opt/unbroken), DATA (/var/lib/unbroken),
# UNIT_DIR (/etc/systemd/system), BIN_DIR (/usr/local/bin), AGENT_USER (unbroken),
# ADMIN_USER (who ran sudo: $SUDO_USER; empty: nobody joins); UNBROKEN_SKIP_APT=1 and
# UNBROKEN_SKIP_SYSTEMD=1 leave those steps out (a test, or a board set up by hand).
set -eu

SRC=$(cd "$(dirname "$0")/../.." && pwd)
PREFIX=${PREFIX:-/opt/unbroken}
DATA=${DATA:-/var/lib/unbroken}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
BIN_DIR=${BIN_DIR:-/usr/local/bin}
AGENT_USER=${AGENT_USER:-unbroken}
ADMIN_USER=${ADMIN_USER-${SUDO_USER:-}}

say() { printf '== %s\n' "$*"; }

if [ "$(id -u)" != 0 ] && [ "${UNBROKEN_SKIP_APT:-0}" != 1 ]; then
    echo "install.sh: run as root (sudo make install-pi); you are $(id -un)" >&2
    exit 2
fi

if [ "${UNBROKEN_SKIP_APT:-0}" != 1 ]; then
    say "system packages (no recommended packages: no compiler)"
    apt-get update -qq
    # python3-picamera2 exists only in Raspberry Pi OS's archive: elsewhere, no Pi camera.
    extra=""
    if apt-cache show python3-picamera2 >/dev/null 2>&1; then extra="python3-picamera2"; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3-venv python3-pip fonts-wqy-microhei alsa-utils libportaudio2 gpsd \
        tpm2-tools $extra
fi

if ! id "$AGENT_USER" >/dev/null 2>&1; then
    say "user $AGENT_USER"
    useradd --system --user-group --home-dir "$DATA" --no-create-home \
        --shell /usr/sbin/nologin "$AGENT_USER"
fi
AGENT_GROUP=$(id -gn "$AGENT_USER")
# Only the groups this system has: the unit names none, so a missing one cannot stop it.
# tss: /dev/tpmrm0, for the TPM key store; i2c and dialout: fuel gauges, serial GNSS.
joined=""
for group in video audio gpio dialout i2c tss; do
    if getent group "$group" >/dev/null && [ "$AGENT_USER" != root ]; then
        usermod -a -G "$group" "$AGENT_USER" && joined="$joined $group"
    fi
done
[ -z "$joined" ] || say "user $AGENT_USER in groups:$joined"
if [ -n "$ADMIN_USER" ] && [ "$ADMIN_USER" != root ] && [ "$ADMIN_USER" != "$AGENT_USER" ] \
    && id "$ADMIN_USER" >/dev/null 2>&1; then
    usermod -a -G "$AGENT_GROUP" "$ADMIN_USER"
    say "$ADMIN_USER in group $AGENT_GROUP: \`unbroken agent status\` works after logging in again"
fi

say "venv $PREFIX/venv (with the system's site packages, for picamera2)"
python3 -m venv --system-site-packages "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install -q --upgrade pip
"$PREFIX/venv/bin/python" -m pip install -q "$SRC"
install -d "$BIN_DIR"
ln -sfn "$PREFIX/venv/bin/unbroken" "$BIN_DIR/unbroken"
say "command $BIN_DIR/unbroken -> $PREFIX/venv/bin/unbroken"

say "data directory $DATA ($AGENT_USER:$AGENT_GROUP, 0750)"
install -d -m 0750 "$DATA"
chown "$AGENT_USER:$AGENT_GROUP" "$DATA"

say "service unit in $UNIT_DIR"
install -d "$UNIT_DIR"
sed -e "s#/opt/unbroken/venv#$PREFIX/venv#g" -e "s#/var/lib/unbroken#$DATA#g" \
    -e "s#^User=unbroken#User=$AGENT_USER#" -e "s#^Group=unbroken#Group=$AGENT_GROUP#" \
    "$SRC/agent/units/unbroken-agent.service" > "$UNIT_DIR/unbroken-agent.service"
chmod 0644 "$UNIT_DIR/unbroken-agent.service"

if [ "${UNBROKEN_SKIP_SYSTEMD:-0}" != 1 ]; then
    systemctl daemon-reload
    systemctl enable unbroken-agent.service
    say "enabled; next, as in docs/raspberry-pi.md:"
    say "  sudo -u $AGENT_USER -- unbroken agent keygen --data $DATA --out - > request.json"
fi
"$BIN_DIR/unbroken" --version
