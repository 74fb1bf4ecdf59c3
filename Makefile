# Two commands do all set-up on a fresh machine:
#   make demo    install, export the model, serve it, write out/sample_annotated.mp4
#   make test    install, run the test suite (make check: lint and unit tests only, for contributors)
# Offline (no COCO weights reachable): make demo WEIGHTS=random  (untrained: boxes are meaningless)

VENV    ?= .venv
PYTHON  ?= python3
WEIGHTS ?= coco
BIN      = $(VENV)/bin

# What the tests drive for real: a virtual display and key presses for the --show window, an
# RTSP camera (gst-rtsp-server through Debian's python3-gi), docker-compose to parse the compose files,
# a Prometheus server scraping the metrics endpoints and evaluating deploy/kubernetes' prometheus-adapter rule,
# Chromium and its driver for the web view (selenium, offline), an MQTT broker (mosquitto; openssl makes
# the certificates of its TLS listener).
TEST_DEBS = xvfb xdotool python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad docker-compose prometheus libnss-wrapper chromium chromium-driver \
	mosquitto mosquitto-clients openssl

# The suite on several workers (pytest-xdist): tests that wait on real time (cameras at 25 fps,
# outages, timeouts) overlap with the CPU-bound ones. Each worker starts its own servers when a
# test asks for one; exports are shared (tests/conftest.py). `make test PYTEST_WORKERS=0` runs it
# in one process. docs/tests.md has the measured times.
PYTEST_WORKERS ?= 3
SUITE_BUDGET_S ?= 600

.PHONY: demo test check install system-deps test-deps benchmark live-benchmark clean

install: $(VENV)/.installed

# opencv-python (GUI build) needs libGL and glib at import time; a fresh Debian lacks libGL.
system-deps:
	@if ! ldconfig -p | grep -q 'libGL.so.1' || ! ldconfig -p | grep -q 'libglib-2.0.so.0'; then \
		echo "installing libgl1 libglib2.0-0 (needed by opencv-python)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends libgl1 libglib2.0-0; \
	fi

test-deps:
	@missing=$$(for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing for the tests:" $$missing; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[server,test]'
	touch $@

demo: install
	mkdir -p out
	# v2 at the sample's own 480-line size and 300 proposals: about 0.6 s a frame on 2 CPU cores.
	$(BIN)/streamer export-model --weights $(WEIGHTS) --min-size 480 --max-size 640 --proposals 300 \
		|| { code=$$?; echo "offline? run the demo untrained: make demo WEIGHTS=random"; exit $$code; }
	$(BIN)/streamer run samples/sample.mp4 --out out/sample_annotated.mp4 \
		--detections out/sample_detections.jsonl --overwrite

test: install test-deps
	$(BIN)/ruff check streamer tests scripts samples
	STREAMER_SUITE_BUDGET_S=$(SUITE_BUDGET_S) $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup --durations=10

# The contributor tier: lint and the unit tests (no server, no model, no torch needed), under 2 minutes.
check: install
	$(BIN)/ruff check streamer tests scripts samples
	$(BIN)/python -m pytest -q -n 2 tests/unit

benchmark: install
	$(BIN)/python scripts/benchmark.py

# Several minutes of a 25 fps RTSP camera with a model slower than the stream: frame age stays flat.
live-benchmark: install test-deps
	$(BIN)/python scripts/live_benchmark.py

clean:
	rm -rf out .pytest_cache
