# Images of the platform, two targets of one file:
#
#   serving   one image per registered model version, the model baked in at /opt/model,
#             `mlops serve` on port 8000 (MLflow-compatible /invocations, /health, /ready, /metrics)
#   training  the image the docker and kubernetes training backends run (`python -m mlops.training`)
#
# The context is the repository layout plus folders that `mlops.packaging.context.prepare_context` fills:
#   model/                          the MLflow model of the version (serving only; from MLflow)
#   infra/images/wheels/serving/    the wheels of requirements-serving.txt    } optional, see
#   infra/images/wheels/training/   the rest of requirements-training.txt     } PIP_OFFLINE
# `make image MODEL=churn VERSION=3` (mlops.packaging.engine.build_and_push) does all of it. By hand, with
# PyPI reachable from the build and no wheelhouse:
#   docker build --target training --build-arg PIP_OFFLINE=0 -t mlops-train .
#
# Python packages come from infra/images/requirements-<target>.txt: small locks (no Airflow, no MLflow
# server) constrained by the platform lock, installed with --require-hashes (bit-for-bit PyPI files).
# No ENTRYPOINT in either image: the training backends replace the command (CMD) with their argv.
# No `RUN --mount`: the file builds with the classic Docker builder, BuildKit and Buildah/Podman.

# Any Debian-like image with python3 (+ the venv module), groupadd and useradd. No registry is
# reachable in this project's CI: .ci/setup-podman.sh makes localhost/mlops-python-base:bookworm with
# mmdebstrap. Elsewhere e.g. --build-arg BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm.
ARG BASE_IMAGE=localhost/mlops-python-base:bookworm

# ------------------------------------------------------------------------------------------- base
FROM ${BASE_IMAGE} AS base
ENV LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# uid/gid 10001: the uid the kubernetes training pod runs as (mlops_airflow.backends.POD_RUN_AS_USER).
RUN groupadd --system --gid 10001 mlops \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/mlops --create-home \
            --shell /usr/sbin/nologin mlops

# ---------------------------------------------------------------------------------------- builders
# A venv in /opt/venv from the target's lock; the final stages copy only the venv (no wheels, pip,
# setuptools or the test suites of numpy/scipy/pandas/scikit-learn, ~110 MB never imported at run time).
# The training lock is the serving lock plus pyarrow and DVC (same pins: both are constrained by the
# platform lock), so the training venv starts from the serving dependency layer: built once, shared.
# PIP_OFFLINE=1: only the wheelhouse of the context (what mlops.packaging does: hermetic, the RUN steps
# get no network); 0: PyPI too (hashes still enforced), for a plain `docker build` with no wheelhouse.
FROM base AS deps-serving
ARG PIP_OFFLINE=0
COPY infra/images/requirements-serving.txt /build/
COPY infra/images/wheels/serving/ /build/wheels/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-deps --require-hashes --find-links /build/wheels \
      $( [ "$PIP_OFFLINE" = 1 ] && echo --no-index ) -r /build/requirements-serving.txt

FROM deps-serving AS deps-training
ARG PIP_OFFLINE=0
COPY infra/images/requirements-training.txt /build/
COPY infra/images/wheels/training/ /build/wheels-training/
RUN /opt/venv/bin/pip install --no-deps --require-hashes --find-links /build/wheels \
      --find-links /build/wheels-training $( [ "$PIP_OFFLINE" = 1 ] && echo --no-index ) \
      -r /build/requirements-training.txt

# The mlops package itself (non-editable), then what the final image does not need goes.
FROM deps-serving AS build-serving
COPY pyproject.toml README.md /build/src/
COPY include/ /build/src/include/
RUN /opt/venv/bin/pip install --no-deps --no-index --no-build-isolation /build/src \
 && /opt/venv/bin/pip uninstall --yes --quiet setuptools pip \
 && find /opt/venv/lib/python3*/site-packages/pandas /opt/venv/lib/python3*/site-packages/scipy \
         /opt/venv/lib/python3*/site-packages/numpy /opt/venv/lib/python3*/site-packages/sklearn \
         -depth -type d -name tests -exec rm -rf {} +

FROM deps-training AS build-training
COPY pyproject.toml README.md /build/src/
COPY include/ /build/src/include/
RUN /opt/venv/bin/pip install --no-deps --no-index --no-build-isolation /build/src \
 && /opt/venv/bin/pip uninstall --yes --quiet setuptools pip \
 && find /opt/venv/lib/python3*/site-packages/pandas /opt/venv/lib/python3*/site-packages/scipy \
         /opt/venv/lib/python3*/site-packages/numpy /opt/venv/lib/python3*/site-packages/sklearn \
         /opt/venv/lib/python3*/site-packages/pyarrow -depth -type d -name tests -exec rm -rf {} +

# ----------------------------------------------------------------------------------------- serving
FROM base AS serving
COPY --from=build-serving /opt/venv /opt/venv
# MLOPS_IMAGE_DIGEST is set by whoever runs the image (the digest is not known inside the build).
ENV PATH=/opt/venv/bin:$PATH \
    MLOPS_HOME=/var/lib/mlops \
    MLOPS_SERVE_HOST=0.0.0.0 \
    MLOPS_SERVING_PORT=8000 \
    MLOPS_SERVE_WORKERS=1
USER 10001:10001
WORKDIR /var/lib/mlops
EXPOSE 8000
# No curl in the image: the venv's Python asks /health (liveness; /ready is the readiness probe).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('MLOPS_SERVING_PORT', '8000'), timeout=4)"]
# Shell form for the variables, `exec` so the server is PID 1 and gets SIGTERM (graceful drain).
CMD exec mlops serve --model-uri /opt/model --host "$MLOPS_SERVE_HOST" --port "$MLOPS_SERVING_PORT" \
         --workers "$MLOPS_SERVE_WORKERS"
# Per model version from here on (everything above is cached across versions). Owned by root,
# readable by all: the server cannot change the model it serves.
COPY model/ /opt/model/
ARG MODEL_NAME=""
ARG MODEL_VERSION=""
ARG MODEL_RUN_ID=""
ARG SOURCE_URL=""
ARG REVISION=""
ENV MLOPS_MODEL_NAME=${MODEL_NAME} \
    MLOPS_MODEL_VERSION=${MODEL_VERSION} \
    MLOPS_SERVE_MODEL_NAME=${MODEL_NAME} \
    MLOPS_SERVE_MODEL_VERSION=${MODEL_VERSION}
LABEL org.opencontainers.image.title="mlops-serving" \
      org.opencontainers.image.description="MLflow model served by mlops serve (MLflow-compatible /invocations)" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${MODEL_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.mlops.component="serving" \
      io.mlops.model.name="${MODEL_NAME}" \
      io.mlops.model.version="${MODEL_VERSION}" \
      io.mlops.model.run_id="${MODEL_RUN_ID}"

# ---------------------------------------------------------------------------------------- training
FROM base AS training
COPY --from=build-training /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    MLOPS_HOME=/var/lib/mlops \
    GIT_PYTHON_REFRESH=quiet
USER 10001:10001
WORKDIR /var/lib/mlops
# The backends run `python -m mlops.training --model ...` as the whole command line (no ENTRYPOINT).
CMD ["python", "-m", "mlops.training", "--help"]
ARG SOURCE_URL=""
ARG REVISION=""
LABEL org.opencontainers.image.title="mlops-train" \
      org.opencontainers.image.description="Training entrypoint of the MLOps platform (python -m mlops.training)" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.mlops.component="training"
