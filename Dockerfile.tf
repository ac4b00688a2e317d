# syntax=docker/dockerfile:1
# The tf image: Wide&Deep, FM, DeepFM, YouTubeRanking, AutoInt and DIN served by gunicorn, which
# asks TF Serving for scores (TensorFlow is here for training, the SavedModel export and the
# in-process fallback). The tf training and loading Jobs run in it too (`python -m jobs.train`,
# `python -m jobs.load`, `python -m jobs.trigger`).
#
#   docker build -f Dockerfile.tf -t libreco/libreco-tf:0.1.0 .
#
# It runs as user 10001 with a read-only root filesystem: /tmp and PROMETHEUS_MULTIPROC_DIR are
# the only places it writes, and the chart mounts an emptyDir on each.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# -- dependencies, in a layer that changes only with pyproject.toml ----------------------------
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /build
COPY pyproject.toml README.md ./
# Empty packages let pip resolve the extras from pyproject.toml alone; the project itself is
# removed again, the source is copied into the final image below.
RUN mkdir -p libreco services jobs \
    && touch libreco/__init__.py services/__init__.py jobs/__init__.py \
    && pip install --upgrade pip \
    && pip install ".[serving,k8s,tf]" \
    && pip uninstall --yes libreco \
    && python -m compileall -q /opt/venv/lib

# -- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 libreco \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin libreco \
    && mkdir -p /var/run/libreco/metrics /models \
    && chown 10001:10001 /var/run/libreco/metrics /models
COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
COPY libreco ./libreco
COPY services ./services
COPY jobs ./jobs
RUN python -m compileall -q /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    PROMETHEUS_MULTIPROC_DIR=/var/run/libreco/metrics \
    LIBRECO_PORT=5000 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    KERAS_HOME=/tmp/.keras
USER 10001:10001
EXPOSE 5000
CMD ["gunicorn", "-c", "python:services.gunicorn_conf", "services.tf.tf_deploy:app"]
