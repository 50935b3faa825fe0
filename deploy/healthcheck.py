"""Container health check for the Pulse image (standard library only).

    python healthcheck.py http     GET /healthz on this container's port; healthy on 200
    python healthcheck.py stores   every store named in the PULSE_*_URL/DSN variables
                                   accepts a TCP connection (for `pulse worker`, which
                                   serves no HTTP)

Exit status 0 means healthy, 1 unhealthy (what Docker's HEALTHCHECK expects).
A `pulse worker` whose process dies ends the container, so the worker check only has
to say whether the worker can reach the stores it drains and writes to.
"""
from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

TIMEOUT_SECONDS = 3.0

# The store variables and the port each URL scheme defaults to.
STORE_VARIABLES = (
    "PULSE_POSTGRES_DSN",
    "PULSE_MONGO_URL",
    "PULSE_REDIS_URL",
    "PULSE_AMQP_URL",
)
DEFAULT_PORTS = {
    "postgres": 5432,
    "postgresql": 5432,
    "mongodb": 27017,
    "redis": 6379,
    "rediss": 6379,
    "amqp": 5672,
    "amqps": 5671,
}


def check_http(environ: dict[str, str]) -> str | None:
    """None when GET /healthz answers 200, else why not."""
    port = environ.get("PULSE_PORT") or "8080"
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            if response.status == 200:
                return None
            return f"{url} answered {response.status}"
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except OSError as exc:
        return f"{url}: {exc}"


def store_addresses(url: str) -> list[tuple[str, int]]:
    """(host, port) pairs in a store URL; a MongoDB URL may list several hosts."""
    parts = urlsplit(url)
    default_port = DEFAULT_PORTS.get(parts.scheme, 0)
    hosts = parts.netloc.rpartition("@")[2]
    addresses = []
    for host in hosts.split(","):
        one = urlsplit("//" + host)
        addresses.append((one.hostname or "", one.port or default_port))
    return addresses


def check_stores(environ: dict[str, str]) -> str | None:
    """None when every configured store accepts a TCP connection, else which does not."""
    configured = [environ[name] for name in STORE_VARIABLES if environ.get(name)]
    if not configured:
        return "no store is configured (PULSE_POSTGRES_DSN, PULSE_MONGO_URL, ...)"
    for url in configured:
        for host, port in store_addresses(url):
            try:
                socket.create_connection((host, port), timeout=TIMEOUT_SECONDS).close()
            except OSError as exc:
                return f"{host}:{port}: {exc}"
    return None


CHECKS = {"http": check_http, "stores": check_stores}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in CHECKS:
        print(f"usage: {argv[0]} {'|'.join(CHECKS)}", file=sys.stderr)
        return 2
    problem = CHECKS[argv[1]](dict(os.environ))
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
