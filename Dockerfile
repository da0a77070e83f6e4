# tg-parser image: the `tg-parser` command with its SQL, migrations, prompts and JSON schemas inside the
# installed package. Build stage: compile the wheel (with the migrator's two C extensions) and install it
# into a virtual environment. Runtime stage: that environment on a slim Python, run as a non-root user.
# Used by docker-compose.yml; see docs/PRODUCTION_DEPLOYMENT.md.

ARG PYTHON_VERSION=3.12

# --- build ---------------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS build

# A C compiler for tg_parser/transfer/_jsonb.c (the Python headers come with the image).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps everything else out of the context).
COPY pyproject.toml hatch_build.py README.md ./
COPY tg_parser ./tg_parser
COPY sql ./sql
COPY migrations ./migrations

RUN python -m pip wheel . -w /dist --no-deps
RUN python -m venv /opt/venv \
    && /opt/venv/bin/python -m pip install /dist/*.whl
# The image must carry the compiled fast paths: fail the build rather than ship the slow fallback.
RUN /opt/venv/bin/python -c "import tg_parser.transfer._jsonb"

# --- runtime -------------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="tg-parser" \
      org.opencontainers.image.description="Telegram channels to a knowledge base: CLI, scheduled pipeline, run worker and HTTP API" \
      org.opencontainers.image.licenses="MIT"

RUN groupadd --system --gid 10001 tgparser \
    && useradd --system --uid 10001 --gid tgparser --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin tgparser

COPY --from=build /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# The working directory holds ./data (SQLite, if used), ./out (exports) and ./session (a Telegram session
# file, if used). They belong to the runtime user, so named volumes mounted there are writable by it.
WORKDIR /app
RUN mkdir -p /app/data /app/out /app/session \
    && chown -R tgparser:tgparser /app

USER 10001:10001

EXPOSE 8000

# `tg-parser run --every` and `tg-parser worker` stop cleanly on SIGTERM (after the current step);
# `serve` shuts down gracefully on it.
STOPSIGNAL SIGTERM

# Liveness of `tg-parser serve` on its default port. /health is open to loopback clients
# (API_PROBES_OPEN=loopback), and a health check runs inside the container. Proxies are bypassed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8000/health', timeout=4).status != 200)"]

CMD ["tg-parser", "serve", "--host", "0.0.0.0", "--port", "8000"]
