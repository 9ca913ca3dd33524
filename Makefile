# Unbroken: `make demo` runs the main job end to end, `make test` runs every check, and
# `make check` the quick tier (static checks and the tests not marked slow) while you work.
# Both work from a fresh clone on Debian/Ubuntu with Python 3.11: they install what is
# missing (system packages through apt, Python packages into .venv).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages the project needs at run or test time, and a file each one installs.
APT_NEEDS := mosquitto:/usr/sbin/mosquitto \
             fonts-wqy-microhei:/usr/share/fonts/truetype/wqy/wqy-microhei.ttc \
             chromium:/usr/bin/chromium \
             nodejs:/usr/bin/node \
             npm:/usr/bin/npm \
             python3-gi:/usr/lib/python3/dist-packages/gi/__init__.py \
             gir1.2-gst-rtsp-server-1.0:/usr/share/doc/gir1.2-gst-rtsp-server-1.0/copyright \
             gstreamer1.0-rtsp:/usr/share/doc/gstreamer1.0-rtsp/copyright \
             gstreamer1.0-plugins-base:/usr/share/doc/gstreamer1.0-plugins-base/copyright \
             gstreamer1.0-plugins-good:/usr/share/doc/gstreamer1.0-plugins-good/copyright \
             gstreamer1.0-plugins-ugly:/usr/share/doc/gstreamer1.0-plugins-ugly/copyright \
             libportaudio2:/usr/share/doc/libportaudio2/copyright \
             gpsd:/usr/sbin/gpsd \
             gpsd-clients:/usr/bin/gpsfake \
             ffmpeg:/usr/bin/ffprobe \
             swtpm:/usr/bin/swtpm \
             swtpm-tools:/usr/bin/swtpm_setup \
             tpm2-tools:/usr/bin/tpm2_unseal \
             libtss2-tcti-swtpm0:/usr/share/doc/libtss2-tcti-swtpm0/copyright
# playwright-core for the browser test of `unbroken sim panel` (driving Debian's chromium)
BROWSER := tests/browser

.PHONY: demo test check lint typecheck pytest bench soak system clean install-pi

demo: $(BIN)/.installed
	$(BIN)/unbroken demo --workdir out/demo

test: lint typecheck pytest

# Under a minute: no broker, no MicroPython, no browser, nothing in real time for seconds.
check: lint typecheck
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(BIN)/.installed
	$(BIN)/mypy

pytest: $(BIN)/.installed $(BROWSER)/node_modules/.installed
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python -m bench

# 200 random power cuts (SIGKILL) while recording; `make test` runs 30.
soak: $(BIN)/.installed
	UNBROKEN_POWER_CUTS=200 $(BIN)/python -m pytest -q -s --timeout=3600 tests/test_power_cuts.py

# Every shipped scenario through `unbroken sim run`, in real time (pytest runs the quick
# ones); reports in out/scenarios/<name>/report.html. Fails if any expectation fails.
.PHONY: scenarios
scenarios: $(BIN)/.installed
	@fail=0; for s in simulator/scenarios/*.toml; do \
	  name=$$(basename $$s .toml); echo "== $$name"; \
	  $(BIN)/unbroken sim run $$s --report out/scenarios/$$name || fail=1; \
	done; exit $$fail

system:
	@missing=""; for need in $(APT_NEEDS); do \
	  pkg=$${need%%:*}; file=$${need#*:}; [ -e "$$file" ] || missing="$$missing $$pkg"; \
	done; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing with apt:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BIN)/.installed: pyproject.toml | system
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[agency,dev]'
	touch $@

$(BROWSER)/node_modules/.installed: $(BROWSER)/package.json $(BROWSER)/package-lock.json | system
	cd $(BROWSER) && npm ci --no-audit --no-fund
	touch $@

# On the board, as root: the agent as a systemd service (agent/units/install.sh: packages
# without recommended ones, user in the device groups the system has, venv with the system's
# site packages, `unbroken` on PATH, data directory, unit enabled). docs/raspberry-pi.md.
install-pi:
	sh agent/units/install.sh

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache *.egg-info $(BROWSER)/node_modules
