# syntax=docker/dockerfile:1
# Pulse application image: one image for `pulse serve`, `pulse worker`, `pulse migrate`
# and `pulse purge` (compose.yml picks the command).
#
#   docker build -t pulse .
#   docker run --rm -p 8080:8080 -e PULSE_POSTGRES_DSN=... pulse

# ---- build: compile what has no wheel for this platform, install into a venv ----
FROM python:3.12.11-slim-bookworm AS build

# Wheels exist for the common platforms; the compiler is for the ones without
# (e.g. a dependency released as sdist only for arm64). It stays in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/pulse

WORKDIR /src
# Dependencies first, from pyproject.toml alone: that layer is rebuilt only when the
# dependency list changes, not on every code change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && /opt/pulse/bin/pip install -r requirements.txt

COPY README.md ./
COPY kernel ./kernel
COPY server ./server
COPY api ./api
COPY realtime ./realtime
COPY storage ./storage
RUN /opt/pulse/bin/pip install --no-deps .

# ---- runtime: the venv and nothing to build with ----
FROM python:3.12.11-slim-bookworm AS runtime

RUN groupadd --system --gid 10001 pulse \
 && useradd --system --uid 10001 --gid pulse --home-dir /home/pulse --create-home pulse

COPY --from=build /opt/pulse /opt/pulse
COPY deploy/healthcheck.py /opt/pulse/healthcheck.py

ENV PATH=/opt/pulse/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER pulse
WORKDIR /home/pulse
EXPOSE 8080

# GET /healthz on PULSE_PORT (default 8080, as in CMD). compose.yml replaces this
# check for `pulse worker`, which serves no HTTP.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "/opt/pulse/healthcheck.py", "http"]

CMD ["pulse", "serve", "--host", "0.0.0.0", "--port", "8080"]
