# syntax=docker/dockerfile:1
# bitnet edge image: for offline and small devices, linux/amd64 and linux/arm64.
#
#   docker buildx build -f infra/docker/bitnet-edge.Dockerfile \
#     --platform linux/amd64,linux/arm64 --build-arg VERSION=0.1.0 -t bitnet-edge .
#   docker run --rm -v /models:/models bitnet-edge --model /models/m.gguf -p "Hello" -n 32
#   # the HTTP server (HEALTHCHECK probes its /health):
#   docker run --rm -p 8080:8080 -v /models:/models --entrypoint python bitnet-edge \
#     /opt/bitnet/run_inference_server.py --model /models/m.gguf --host 0.0.0.0 --port 8080
#   # set up a model offline inside the device:
#   docker run --rm -v /models:/models -v /media/usb:/src:ro --entrypoint python bitnet-edge \
#     /opt/bitnet/setup_env.py --model-dir /models --from /src/model --cache-dir /models/.cache
#
# Portable CPU flags (GGML_NATIVE=OFF, no x86 extensions assumed): the image runs on any CPU of
# its architecture; our ternary kernels still choose AVX-512 VNNI / AVX2 / NEON / scalar at run
# time. The virtual environment /opt/venv stays in the final layer, so a device can upgrade
# packages in place (`/opt/venv/bin/pip install --upgrade ...`) without a rebuild.
#
# Base image pinned by tag; digest recorded when this file was written (multi-arch index):
#   python:3.11.9-slim-bookworm@sha256:2856e6af199e8128161abd320575eb9b341f3b76f017b5d0c9cd364f60d8a050
ARG PYTHON_IMAGE=python:3.11.9-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TARGETPLATFORM
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake ninja-build git \
 && rm -rf /var/lib/apt/lists/*
ARG VERSION=0.0.0+docker
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF" \
    SETUPTOOLS_SCM_PRETEND_VERSION=${VERSION} \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH}
WORKDIR /src
COPY . .
RUN echo "building for ${TARGETPLATFORM:-the host platform}" \
 && pip install --no-cache-dir build==1.2.2 \
 && pip wheel --no-cache-dir --wheel-dir /wheels llama-cpp-python==0.3.36 \
 && python -m build --wheel --outdir /wheels . \
 && pip install --no-cache-dir --find-links /wheels "$(ls /wheels/bitnet_cpu-*.whl)[server]" \
 && pip uninstall --yes build

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.0.0+docker
ARG REVISION=unknown
ARG SOURCE=https://github.com/bitnet/bitnet
LABEL org.opencontainers.image.title="bitnet-edge" \
      org.opencontainers.image.description="BitNet b1.58 on edge and offline CPUs (amd64, arm64)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT"
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --shell /usr/sbin/nologin bitnet \
 && mkdir -p /models /opt/bitnet \
 && chown bitnet:bitnet /models
COPY --from=build --chown=bitnet:bitnet /opt/venv /opt/venv
COPY run_inference.py run_inference_server.py setup_env.py /opt/bitnet/
ENV PATH=/opt/venv/bin:${PATH} \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BITNET_CACHE_DIR=/home/bitnet/.cache/bitnet
USER 10001
WORKDIR /home/bitnet
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
ENTRYPOINT ["python", "/opt/bitnet/run_inference.py"]
CMD ["--help"]
