# Two commands do all set-up on a fresh machine:
#   make demo    install, export the model, serve it, write out/sample_annotated.mp4
#   make test    install, run the test suite
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

.PHONY: demo test install system-deps test-deps benchmark live-benchmark clean

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
	$(BIN)/python -m pytest -q

benchmark: install
	$(BIN)/python scripts/benchmark.py

# Several minutes of a 25 fps RTSP camera with a model slower than the stream: frame age stays flat.
live-benchmark: install test-deps
	$(BIN)/python scripts/live_benchmark.py

clean:
	rm -rf out .pytest_cache
