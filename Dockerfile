# syntax=docker/dockerfile:1
# CPU image of the translation service:
#   docker build -t nmt-service:cpu .
#   docker run --rm -p 8000:8000 nmt-service:cpu
# Without Docker Hub or PyTorch's index: a stand-in base with Python 3.11 as `python` (e.g.
# Debian bookworm from debootstrap, `docker import`ed) and a local torch wheel, as
# tests/test_docker_image.py builds it (docs/deploy.md, "Building the image offline"):
#   --build-arg PYTHON_IMAGE=nmt-base:bookworm-python3.11 \
#   --build-arg TORCH_FIND_LINKS=http://127.0.0.1:8765/ --network host
# The shipped models (models/*) are baked in and their ONNX graphs exported at build time.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------- build: a virtual environment with the runtime dependencies, and ONNX graphs
FROM ${PYTHON_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src

# Every dependency but torch from PIP_INDEX_URL: PyPI, or a mirror of it.
ARG PIP_INDEX_URL=https://pypi.org/simple
# torch's CPU wheel from PyTorch's own index: the PyPI torch would pull GBs of CUDA libraries.
# TORCH_FIND_LINKS instead (a URL listing wheels, e.g. `python -m http.server` over a wheel
# directory, with `docker build --network host`) takes the CPU wheel from there and torch's
# own dependencies from PIP_INDEX_URL.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=""
RUN if [ -n "$TORCH_FIND_LINKS" ]; then \
        pip install --find-links "$TORCH_FIND_LINKS" torch==2.13.0+cpu; \
    else \
        pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0; \
    fi

# Dependencies before the source, so that a code change does not reinstall them.
COPY pyproject.toml deploy/requirements.py ./
RUN python requirements.py > requirements.txt \
    && pip install -r requirements.txt

COPY README.md ./
COPY model/ model/
COPY export/ export/
COPY service/ service/
COPY loadtest/ loadtest/
RUN pip install --no-deps .

COPY models/ /app/models/
# ONNX graphs exported here, so that a container starts without exporting. They go where the
# engine looks for them, $NMT_ARTIFACTS_DIR/<pair>-<model hash>/<precision>/: fp32 (what the
# service uses on a CPU) and int8 (for NMT_PRECISION=int8). loadtest-results is where
# `python -m loadtest` writes in the image (a volume in docker-compose.yml).
ENV NMT_ARTIFACTS_DIR=/app/artifacts
RUN for model in /app/models/*/; do \
        python -m export --model "$model" --int8; \
    done \
    && mkdir -p /app/loadtest-results

# ---------- runtime: the environment and the models, no compilers, no build files
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NMT_MODELS_DIR=/app/models \
    NMT_ARTIFACTS_DIR=/app/artifacts \
    NMT_DEVICE=cpu \
    MPLCONFIGDIR=/tmp/matplotlib
RUN groupadd --system --gid 10001 nmt \
    && useradd --system --uid 10001 --gid nmt --create-home --home-dir /home/nmt nmt
COPY --from=build /opt/venv /opt/venv
# Owned by the service user: the engine may re-export a graph it finds stale.
COPY --from=build --chown=10001:10001 /app /app
WORKDIR /app
# Numeric, so that runtimes can verify non-root (e.g. Kubernetes runAsNonRoot).
USER 10001:10001
EXPOSE 8000
# urllib rather than curl, which the slim image lacks; any non-2xx answer raises -> unhealthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"]
CMD ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
