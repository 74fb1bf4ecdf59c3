# The client image: `streamer run` against a Triton server (e.g. the compose service `triton`).
# Only the package's base dependencies (PyAV, OpenCV, numpy, click, tritonclient[grpc]); no torch.
#
#   docker build -f docker/client.Dockerfile -t streamer-client .
#   docker run --rm -v "$PWD/samples:/data/in:ro" -v "$PWD/out:/data/out" streamer-client \
#       run /data/in/sample.mp4 --triton HOST:8001 --out /data/out/annotated.mp4
FROM python:3.11-slim-bookworm

# opencv-python (a base dependency; its GUI build) needs libGL and glib at import time.
# Debian replaces package versions on security updates, so a pinned version soon stops resolving.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/streamer
COPY pyproject.toml README.md ./
COPY streamer/ streamer/
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 1000 streamer

# Compose runs it as the host user (STREAMER_UID/STREAMER_GID) so that the outputs are yours.
USER 1000:1000
WORKDIR /data
ENTRYPOINT ["streamer"]
CMD ["--help"]
