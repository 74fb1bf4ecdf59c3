# syntax=docker/dockerfile:1
# The Triton server image: NVIDIA's tritonserver with model_repository/fasterrcnn and
# model_repository/fasterrcnn_u8 served by the LibTorch (PyTorch) backend, CPU by default, GPU with
# `--model-config-name=gpu` (each model has its configs/gpu.pbtxt).
#
#   docker build -t triton-fasterrcnn .
#   docker run --rm -p 8000-8002:8000-8002 triton-fasterrcnn
#
# Why the model is exported in a build stage: a TorchScript file is only guaranteed to load in
# the LibTorch it was saved with (or a newer one). Triton's PyTorch backend of release YY.MM is
# built from the LibTorch (and TorchVision, whose nms/roi_align this model needs) of NGC's
# nvcr.io/nvidia/pytorch:YY.MM-py3 (Triton pytorch_backend README: "the PyTorch version compatible
# with the 25.09 release of Triton is available as nvcr.io/nvidia/pytorch:25.09-py3"). So stage
# `model-export` runs `streamer export-model` in that PyTorch image of the same NGC_RELEASE as the
# final stage: the pairing holds by construction, whatever torch the host has.
#
# Build arguments:
#   NGC_RELEASE   the NGC release of both images (26.11 = Triton 2.75.0, per Triton's GitHub
#                 release notes: "Release 2.75.0 corresponding to NGC container 26.11")
#   WEIGHTS       coco (downloads torchvision's weights at build time), random (untrained), or a
#                 .pth path inside the build context
#   EXPORT_ARGS   more export-model options, e.g. "--min-size 480 --max-size 640 --proposals 300"
#   MODEL_SOURCE  export (default) or context: copy the model_repository/ exported beforehand on
#                 the host with `streamer export-model` (no PyTorch image to pull); that
#                 model.pt must come from a torch no newer than this release's LibTorch.
ARG NGC_RELEASE=26.11
ARG MODEL_SOURCE=export

# --- model-export: streamer export-model with the torch that matches the server's LibTorch -------
FROM nvcr.io/nvidia/pytorch:${NGC_RELEASE}-py3 AS model-export
# The exporter needs torch and torchvision (in this image) plus the CLI's own small imports.
# (No `pip install .`: its numpy<2 pin is for the client; this image keeps its own numpy.)
RUN pip install --no-cache-dir "click>=8.1,<9" "tritonclient[grpc]>=2.50,<3"
COPY streamer/ /opt/streamer/streamer/
ENV PYTHONPATH=/opt/streamer
ARG WEIGHTS=coco
ARG EXPORT_ARGS=
# The build context is mounted read-only at the working directory, so that WEIGHTS may name a
# .pth file in it; the torch hub cache keeps the COCO download between builds.
WORKDIR /context
# EXPORT_ARGS is split into options on purpose.
RUN --mount=type=bind,target=/context \
    --mount=type=cache,target=/root/.cache/torch \
    python -c "import torch, torchvision; print('exporting with torch', torch.__version__, 'torchvision', torchvision.__version__)" \
    && python -m streamer export-model --weights "${WEIGHTS}" --repo /export/model_repository ${EXPORT_ARGS}

# --- model-context: the repository as exported beforehand on the host --------------------------
FROM scratch AS model-context
COPY model_repository/ /export/model_repository/

# --- the server -----------------------------------------------------------------------------------
# One of the two stages above, not an image to pull: it has no tag to pin.
# hadolint ignore=DL3006
FROM model-${MODEL_SOURCE} AS model

FROM nvcr.io/nvidia/tritonserver:${NGC_RELEASE}-py3
COPY --from=model /export/model_repository/ /models/
# The export's facts (arch, weights, sizes, class names) travel inside each model.pt; clients
# read them from the served config's parameters, so merge them into this image's configs
# (streamer/facts.py: standard library only; the committed configs hold the contract alone).
COPY streamer/facts.py /opt/streamer-facts.py
# Never a server that starts with nothing to serve: both models of one export (the seed's
# fasterrcnn and the batchable fasterrcnn_u8).
RUN test -f /models/fasterrcnn/1/model.pt && test -f /models/fasterrcnn_u8/1/model.pt || { \
      echo "error: /models/fasterrcnn/1/model.pt or /models/fasterrcnn_u8/1/model.pt is missing. Run 'streamer export-model' (it writes both) before building with MODEL_SOURCE=context, or build with the default MODEL_SOURCE=export." >&2; \
      exit 1; } \
    && python3 /opt/streamer-facts.py /models
# triton-server (uid and gid 1000), the non-root user NVIDIA's image provides for tritonserver.
USER 1000:1000
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4).status != 200)"]
# KIND_CPU from config.pbtxt; on a GPU add --model-config-name=gpu (configs/gpu.pbtxt, KIND_GPU).
CMD ["tritonserver", "--model-repository=/models", "--strict-readiness=true", "--exit-on-error=true"]
