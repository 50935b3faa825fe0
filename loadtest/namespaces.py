"""A run's own namespaces in the machine's shared stores, made and removed the same way by
the test sessions (``tests/helpers/stores.py``) and the benchmarks (``loadtest/bench.py``,
``loadtest/realtime_perf/bench.py``), so that runs never collide:

- PostgreSQL: a database of the run's own,
- Redis: a db number claimed in db 0 (``pulse-test:claim:<db>``) that no other running
  session or bench holds,
- RabbitMQ: a vhost of the run's own (``rabbitmqctl``).

Servers of a run's own (SecantusDB, Redis) are started with ``storage.embedded.processes``.
"""
from __future__ import annotations

import os
import socket
import subprocess
from typing import Iterable

import asyncpg
import redis as sync_redis

REDIS_CLAIM_KEY = "pulse-test:claim:{db}"
REDIS_DBS = range(1, 16)  # db 0 holds the claims


def with_database(dsn: str, database: str) -> str:
    return dsn.rpartition("/")[0] + "/" + database


# --- PostgreSQL --------------------------------------------------------------------------

async def create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')  # the name is ours: pulse_test_<hex>, pulse_bench_<hex>
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# --- Redis -------------------------------------------------------------------------------

_TAKE_OVER_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


def redis_claim(label: str) -> str:
    """What a claim holds: the run's label, this host and this process (so that a claim
    left by a killed run can be recognised as dead)."""
    return f"{label}:{socket.gethostname()}:{os.getpid()}"


def _take_over_dead_claim(admin: sync_redis.Redis, key: str, claim: str, ttl: int) -> bool:
    """A run killed before its teardown leaves its claim until it expires: the claim names
    its host and pid, so a claim of this host whose process is gone is taken over
    (atomically: only if nobody changed it since it was read)."""
    held = admin.get(key)
    if held is None:
        return False
    _, _, rest = held.decode().partition(":")
    host, _, pid = rest.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
        return False  # alive
    except ProcessLookupError:
        pass
    except PermissionError:
        return False  # alive, another user's
    return bool(admin.eval(_TAKE_OVER_CLAIM, 1, key, held, claim, ttl))


def claim_redis_db(base_url: str, claim: str, *, dbs: Iterable[int] = REDIS_DBS, ttl: int = 3 * 3600) -> int | None:
    """The first db number of ``dbs`` that no other run holds, claimed for ``ttl`` seconds
    and emptied; None when every one is held. ``base_url`` has no db number."""
    admin = sync_redis.Redis.from_url(base_url + "/0")
    try:
        for db in dbs:
            key = REDIS_CLAIM_KEY.format(db=db)
            if admin.set(key, claim, nx=True, ex=ttl) or _take_over_dead_claim(admin, key, claim, ttl):
                flush_redis_db(f"{base_url}/{db}")
                return db
        return None
    finally:
        admin.close()


def release_redis_db(base_url: str, db: int, claim: str) -> None:
    """Empties the db and gives the claim back (unless another run has taken it over)."""
    flush_redis_db(f"{base_url}/{db}")
    admin = sync_redis.Redis.from_url(base_url + "/0")
    try:
        key = REDIS_CLAIM_KEY.format(db=db)
        if admin.get(key) == claim.encode():
            admin.delete(key)
    finally:
        admin.close()


def flush_redis_db(url: str) -> None:
    client = sync_redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


# --- RabbitMQ ----------------------------------------------------------------------------

def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def add_vhost(vhost: str, user: str = "guest") -> None:
    """A new vhost on which ``user`` may do everything."""
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")


def delete_vhost(vhost: str) -> None:
    rabbitmqctl("delete_vhost", vhost)
