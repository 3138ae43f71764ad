# syntax=docker/dockerfile:1
# bitnet runtime image: the wheel built once, installed into a slim layer, run as a non-root user.
#
#   docker build -f infra/docker/bitnet-runtime.Dockerfile \
#     --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) -t bitnet-runtime .
#   docker run --rm -v $PWD/models:/models bitnet-runtime --model /models/m.gguf -p "Hello" -n 32
#   # the HTTP server (HEALTHCHECK probes its /health):
#   docker run --rm -p 8080:8080 -v $PWD/models:/models --entrypoint python bitnet-runtime \
#     /opt/bitnet/run_inference_server.py --model /models/m.gguf --host 0.0.0.0 --port 8080
#
# Base image pinned by tag; digest recorded when this file was written (multi-arch index):
#   python:3.11.9-slim-bookworm@sha256:2856e6af199e8128161abd320575eb9b341f3b76f017b5d0c9cd364f60d8a050
# CI prints the digest it resolved (`docker buildx imagetools inspect`), so a drift is visible.
ARG PYTHON_IMAGE=python:3.11.9-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Compilers for llama-cpp-python (llama.cpp) and our extension.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake ninja-build git \
 && rm -rf /var/lib/apt/lists/*
# ggml's CPU flags for this image: x86-64-v3 (AVX2/FMA/F16C). `bitnet diagnose` refuses a CPU
# without them with a clear error; the edge image uses portable flags instead. Our own ternary
# kernels pick AVX-512 VNNI / AVX2 / scalar at run time either way.
ARG GGML_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
ARG VERSION=0.0.0+docker
ENV CMAKE_ARGS=${GGML_CMAKE_ARGS} \
    SETUPTOOLS_SCM_PRETEND_VERSION=${VERSION} \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# Build once: llama-cpp-python and bitnet wheels side by side, then `python -m build` for ours.
RUN python -m pip install --no-cache-dir build==1.2.2 \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels llama-cpp-python==0.3.36 \
 && python -m build --wheel --outdir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.0.0+docker
ARG REVISION=unknown
ARG SOURCE=https://github.com/bitnet/bitnet
LABEL org.opencontainers.image.title="bitnet-runtime" \
      org.opencontainers.image.description="BitNet b1.58 ternary models on CPU: CLI and OpenAI-compatible server" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BITNET_CACHE_DIR=/home/bitnet/.cache/bitnet
# libgomp: ggml's OpenMP threads.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /tmp/wheels
# Install from the wheels built above (llama-cpp-python's included), with the server extra;
# the other dependencies come from PyPI at the versions pyproject.toml allows.
RUN python -m pip install --no-cache-dir --find-links /tmp/wheels \
      "$(ls /tmp/wheels/bitnet_cpu-*.whl)[server]" \
 && rm -rf /tmp/wheels \
 && useradd --system --uid 10001 --create-home --shell /usr/sbin/nologin bitnet \
 && mkdir -p /models /opt/bitnet \
 && chown bitnet:bitnet /models
COPY run_inference.py run_inference_server.py /opt/bitnet/
USER 10001
WORKDIR /home/bitnet
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
ENTRYPOINT ["python", "/opt/bitnet/run_inference.py"]
CMD ["--help"]
