# syntax=docker/dockerfile:1
# The payments worker image. `docker compose up` builds it; see docker-compose.yml.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A compiler only in this stage, in case a dependency has no wheel for the platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY . .
RUN pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PAYMENTS_WEB_PORT=6066 \
    PAYMENTS_DATA_DIR=/data
# /data is created here, owned by the service user, so a named volume mounted on it
# starts with that ownership (the worker keeps its table state there).
RUN groupadd --system --gid 10001 payments \
    && useradd --system --uid 10001 --gid payments --create-home \
       --home-dir /home/payments --shell /usr/sbin/nologin payments \
    && mkdir -p /data \
    && chown payments:payments /data
COPY --from=build /opt/venv /opt/venv
USER payments
WORKDIR /home/payments
EXPOSE 6066
# The port is fixed here; a container run with another PAYMENTS_WEB_PORT overrides
# the healthcheck as well (docker-compose.yml spells its own out).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6066/healthz', timeout=4)"]
ENTRYPOINT ["payments"]
CMD ["worker"]
