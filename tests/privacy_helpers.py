"""Shared by the privacy tests: direct store access to seed data and to look for traces."""
from __future__ import annotations

import asyncpg
import orjson
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from server import appkeys
from server.services.privacy import PrivacyService, pseudonym


def privacy_of(server) -> PrivacyService:
    return server.app[appkeys.SERVICES].privacy


async def pg(settings) -> asyncpg.Connection:
    conn = await asyncpg.connect(settings.postgres_dsn)
    await conn.set_type_codec("jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
                              schema="pg_catalog")
    return conn


async def pg_traces(settings, needles: list[str]) -> dict[str, int]:
    """Rows of every table whose text form contains any needle (case-insensitive)."""
    conn = await pg(settings)
    try:
        tables = await conn.fetch("SELECT quote_ident(table_name) AS t FROM information_schema.tables "
                                  "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")
        found: dict[str, int] = {}
        for row in tables:
            # Table names come from the catalogue and are quoted by quote_ident.
            n = await conn.fetchval(
                f"SELECT count(*) FROM {row['t']} AS r WHERE EXISTS "
                "(SELECT 1 FROM unnest($1::text[]) x WHERE strpos(lower(r::text), lower(x)) > 0)",
                needles)
            if n:
                found[row["t"]] = n
        return found
    finally:
        await conn.close()


async def redis_traces(settings, needles: list[str]) -> list[str]:
    """Keys of the namespace whose name or (string, set, list, hash, zset) value names a needle."""
    client = aioredis.from_url(settings.redis_url)
    found = []
    try:
        async for key in client.scan_iter(match=f"{settings.namespace}:*", count=1000):
            kind = (await client.type(key)).decode()
            if kind == "string":
                value = await client.get(key) or b""
            elif kind == "set":
                value = b" ".join(await client.smembers(key))
            elif kind == "zset":
                value = b" ".join(await client.zrange(key, 0, -1))
            elif kind == "list":
                value = b" ".join(await client.lrange(key, 0, -1))
            elif kind == "stream":
                value = b" ".join(b" ".join(f.values()) for _, f in await client.xrange(key))
            elif kind == "hash":
                value = b" ".join(k + b"=" + v for k, v in (await client.hgetall(key)).items())
            else:
                value = b""
            text = (key + b" " + value).decode(errors="replace").lower()
            if any(n.lower() in text for n in needles):
                found.append(key.decode())
    finally:
        await client.aclose()
    return found


async def mongo_traces(settings, needles: list[str]) -> dict[str, int]:
    client = AsyncMongoClient(settings.mongo_url)
    found: dict[str, int] = {}
    try:
        db = client[settings.mongo_db]
        for name in await db.list_collection_names():
            async for doc in db[name].find({}):
                text = str(doc).lower()
                if any(n.lower() in text for n in needles):
                    found[name] = found.get(name, 0) + 1
    finally:
        await client.close()
    return found


def subject(settings, value: str) -> str:
    return pseudonym(settings.audit_key, value)
