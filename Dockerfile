# syntax=docker/dockerfile:1
# perseid-jobs worker image. Build from the repository root:
#   docker build -t perseid-jobs:0.1.0 .
# See docs/deploy.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build stage: turn the repository into wheels (the package and every
# dependency), so the runtime stage needs neither a compiler nor the sources.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY . .
RUN pip wheel --wheel-dir /wheels .

# Runtime stage.
FROM ${PYTHON_IMAGE}
ARG UID=10001
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/perseid \
    PATH=/opt/perseid/bin:$PATH \
    PERSEID_JOBS_DIR=/app/jobs \
    PERSEID_LOGS_DIR=/var/lib/perseid/logs \
    PERSEID_METRICS_PORT=9464

# A fixed numeric UID/GID, so Kubernetes can check runAsNonRoot and set
# fsGroup without reading /etc/passwd.
RUN groupadd --system --gid "${UID}" perseid \
    && useradd --system --uid "${UID}" --gid perseid --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin perseid \
    && mkdir -p /app/jobs /var/lib/perseid/logs \
    && chown -R perseid:perseid /var/lib/perseid

# Only the wheels cross from the build stage; --no-index keeps this step from
# resolving anything the build stage did not already pin down.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv "${VIRTUAL_ENV}" \
    && pip install --no-index --find-links=/wheels /wheels/perseid_jobs-*.whl

WORKDIR /app
COPY --chown=root:root jobs/ /app/jobs/

# The spool keeps task logs whose upload has not succeeded yet; mount a volume
# here so it survives the container (docs/deploy.md, "Log spool").
VOLUME ["/var/lib/perseid/logs"]
USER ${UID}:${UID}
EXPOSE 9464

HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PERSEID_METRICS_PORT', '9464'), timeout=2)"]

# The worker drains on SIGTERM: it stops claiming, lets running tasks finish
# within --drain-timeout, then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["perseid-jobs"]
CMD ["worker"]
