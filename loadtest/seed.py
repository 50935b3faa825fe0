"""Seed a Pulse deployment with a non-trivial dataset, fast.

    python -m loadtest.seed --users 10000 --dsn postgresql://... --base-url http://127.0.0.1:8080

With ``--dsn``: users, profiles, follows and posts go straight into PostgreSQL with
COPY (one argon2id hash computed once for the shared password; counters filled in to
match the rows). The small parts that live behind services (group conversations in
MongoDB, events) go through the REST API at ``--base-url``. Without ``--dsn`` everything
goes through REST (for a deployment whose database is out of reach; slower, so use
fewer users). Credentials and ids for the locust users are written to ``--out``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp

from loadtest.graph import chat_groups, follow_graph, large_accounts, posts_per_user, sentences
from loadtest.seeddata import API, DEFAULT_SEED_FILE, pool_index

PASSWORD = "pulse-load-test-1"


def log(message: str) -> None:
    print(f"seed: {message}", file=sys.stderr, flush=True)


def username_of(index: int) -> str:
    return f"lt{index:06d}"


def email_of(index: int) -> str:
    return f"lt{index:06d}@loadtest.pulse.test"


def large_username_of(number: int) -> str:
    return f"ltbig{number:02d}"


def audience_username_of(number: int) -> str:
    return f"ltaud{number:06d}"


def hash_password(password: str) -> str:
    """argon2id with the server's configured cost (the hash carries its own parameters)."""
    from argon2 import PasswordHasher

    hasher = PasswordHasher(
        time_cost=int(os.environ.get("PULSE_ARGON2_TIME_COST", "3")),
        memory_cost=int(os.environ.get("PULSE_ARGON2_MEMORY_KIB", "65536")),
        parallelism=int(os.environ.get("PULSE_ARGON2_PARALLELISM", "4")),
    )
    return hasher.hash(password)


class Dataset:
    """Everything the seed will create, in memory, before touching a store."""

    def __init__(self, n_users: int, *, mean_following: float, mean_posts: float,
                 chat_members: int, group_size: int, seed: int = 1, large: int = 0,
                 large_followers: int = 100_000, large_posts: int = 40):
        self.n_users = n_users
        rng = random.Random(seed)
        self.user_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4))
                         for _ in range(n_users)]
        # Spread account creation over the last 90 days, oldest first.
        now = datetime.now(timezone.utc)
        self.now = now
        self.created_at = [now - timedelta(days=90) + timedelta(seconds=i * 60)
                           for i in range(n_users)]
        self.graph = follow_graph(n_users, mean_following=mean_following, seed=seed)
        counts = posts_per_user(n_users, mean_posts=mean_posts, seed=seed + 1)
        self.post_authors = [u for u, c in enumerate(counts) for _ in range(c)]
        self.post_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4))
                         for _ in self.post_authors]
        bodies = sentences(min(len(self.post_authors), 5000), seed=seed + 2)
        self.post_bodies = [bodies[i % len(bodies)] for i in range(len(self.post_authors))] \
            if bodies else []
        # Posts spread over the last 30 days.
        span = 30 * 24 * 3600
        step = span / max(len(self.post_authors), 1)
        self.post_created = [now - timedelta(seconds=span - i * step)
                             for i in range(len(self.post_authors))]
        self.chat_members = min(chat_members, max(n_users - 2, 0))
        self.groups = chat_groups(self.chat_members, group_size) if self.chat_members >= 2 else []
        self.followers_count = self.graph.in_degree()
        self.following_count = self.graph.out_degree()
        self.posts_count = counts
        # Large accounts (hybrid fan-out): new users followed by every regular user and an
        # audience of their own, to ``large_followers`` each.
        self.large = large_accounts(n_users, large, large_followers, seed=seed + 3)
        self.large_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(large)]
        self.audience_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4))
                             for _ in range(self.large.audience)]
        for follower in self.large.regular_followers:
            self.following_count[follower] += large
        self.large_post_ids = [[str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(large_posts)]
                               for _ in range(large)]
        self.large_post_created = [now - timedelta(seconds=span - (k + 0.5) * span / max(large_posts, 1))
                                   for k in range(large_posts)]

    def popular(self, top: int = 500) -> list[int]:
        degree = self.followers_count
        return sorted(range(self.n_users), key=lambda i: -degree[i])[:top]


# --- PostgreSQL -----------------------------------------------------------------------

async def table_columns(conn, table: str) -> dict[str, tuple[bool, bool]]:
    """column → (nullable, has_default) for ``public.table``; {} if there is no such table."""
    rows = await conn.fetch(
        "SELECT column_name, is_nullable, column_default, is_identity"
        " FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1",
        table)
    return {r["column_name"]: (r["is_nullable"] == "YES",
                               r["column_default"] is not None or r["is_identity"] == "YES")
            for r in rows}


def pick(columns: dict, *candidates: str) -> str | None:
    return next((c for c in candidates if c in columns), None)


async def copy_table(conn, table: str, columns: dict, values: dict[str, list]) -> int:
    """COPY the given columns (those the table has) and check nothing required is missing."""
    use = [c for c in values if c in columns]
    missing = [c for c, (nullable, has_default) in columns.items()
               if not nullable and not has_default and c not in use]
    if missing:
        raise RuntimeError(f"seed does not know how to fill {table}.{', '.join(missing)}")
    rows = list(zip(*(values[c] for c in use)))
    if rows:
        await conn.copy_records_to_table(table, records=rows, columns=use)
    return len(rows)


async def seed_postgres(dsn: str, data: Dataset) -> dict[str, int]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    counts: dict[str, int] = {}
    try:
        password_hash = hash_password(PASSWORD)
        users_cols = await table_columns(conn, "users")
        profiles_cols = await table_columns(conn, "profiles")
        if not users_cols:
            raise RuntimeError("no users table: run the migrations first (pulse migrate)")
        n = data.n_users
        async with conn.transaction():
            counts["users"] = await copy_table(conn, "users", users_cols, {
                "id": [uuid.UUID(u) for u in data.user_ids],
                "email": [email_of(i) for i in range(n)],
                "username": [username_of(i) for i in range(n)],
                "password_hash": [password_hash] * n,
                "status": ["active"] * n,
                "created_at": data.created_at,
            })
            if profiles_cols:
                counts["profiles"] = await copy_table(conn, "profiles", profiles_cols, {
                    "user_id": [uuid.UUID(u) for u in data.user_ids],
                    "display_name": [f"Load Tester {i}" for i in range(n)],
                    "bio": [""] * n,
                    "followers_count": data.followers_count,
                    "following_count": data.following_count,
                    "posts_count": data.posts_count,
                    "updated_at": data.created_at,
                })
            follows_cols = await table_columns(conn, "follows")
            if follows_cols:
                follower = pick(follows_cols, "follower_id", "user_id")
                followee = pick(follows_cols, "followee_id", "following_id", "followed_id",
                                "target_id")
                ids = [uuid.UUID(u) for u in data.user_ids]
                counts["follows"] = await copy_table(conn, "follows", follows_cols, {
                    follower: [ids[i] for i in data.graph.follower],
                    followee: [ids[i] for i in data.graph.followee],
                    "created_at": [data.now - timedelta(days=1)] * len(data.graph),
                })
            else:
                log("no follows table yet: follow graph skipped")
            posts_cols = await table_columns(conn, "posts")
            if posts_cols:
                author = pick(posts_cols, "author_id", "user_id")
                ids = [uuid.UUID(u) for u in data.user_ids]
                m = len(data.post_ids)
                counts["posts"] = await copy_table(conn, "posts", posts_cols, {
                    "id": [uuid.UUID(p) for p in data.post_ids],
                    author: [ids[a] for a in data.post_authors],
                    "body": data.post_bodies,
                    "created_at": data.post_created,
                    "updated_at": data.post_created,
                    "like_count": [0] * m,
                    "comment_count": [0] * m,
                })
            else:
                log("no posts table yet: posts skipped")
        if data.large.accounts:
            t = time.perf_counter()
            async with conn.transaction():
                counts.update(await seed_large_accounts(conn, data, password_hash, users_cols, profiles_cols,
                                                        follows_cols, posts_cols))
            log(f"large accounts: {data.large.accounts} × {data.large.followers} followers "
                f"({len(data.large)} follows, {data.large.audience} audience accounts) "
                f"in {time.perf_counter() - t:.1f}s")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return counts


async def seed_large_accounts(conn, data: Dataset, password_hash: str, users_cols: dict, profiles_cols: dict,
                              follows_cols: dict, posts_cols: dict) -> dict[str, int]:
    """The large accounts, their audience, their follows (``len(data.large)`` rows in one
    COPY: 300k take seconds) and posts; and, when the server keeps fan-out modes, the
    accounts above its threshold marked as not pushed (what crossing it by follows would
    have done; PULSE_FANOUT_PUSH_MAX_FOLLOWERS as the servers get it)."""
    large, n_large, n_audience = data.large, data.large.accounts, data.large.audience
    import asyncpg

    try:
        # The rows are consistent by construction: skip the per-row foreign-key checks
        # (a third of the time for 300k follows) when allowed to (a superuser, as in make bench).
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
    except asyncpg.InsufficientPrivilegeError:
        pass
    ids = [uuid.UUID(u) for u in data.large_ids] + [uuid.UUID(u) for u in data.audience_ids]
    names = ([large_username_of(i) for i in range(n_large)]
             + [audience_username_of(i) for i in range(n_audience)])
    created = [data.now - timedelta(days=91)] * len(ids)
    counts = {"large_accounts": await copy_table(conn, "users", users_cols, {
        "id": ids, "email": [f"{n}@loadtest.pulse.test" for n in names], "username": names,
        "password_hash": [password_hash] * len(ids), "status": ["active"] * len(ids), "created_at": created,
    }) - n_audience, "audience": n_audience}
    posts_each = len(data.large_post_created)
    await copy_table(conn, "profiles", profiles_cols, {
        "user_id": ids,
        "display_name": [f"Large Account {i}" for i in range(n_large)] + [f"Audience {i}" for i in range(n_audience)],
        "bio": [""] * len(ids),
        "followers_count": [large.followers] * n_large + [0] * n_audience,
        "following_count": [0] * n_large + [n_large] * n_audience,
        "posts_count": [posts_each] * n_large + [0] * n_audience,
        "updated_at": created,
    })
    index_ids = {i: uuid.UUID(u) for i, u in enumerate(data.user_ids)}
    index_ids.update({large.n_users + i: ids[i] for i in range(n_large)})
    index_ids.update({large.n_users + n_large + i: ids[n_large + i] for i in range(n_audience)})
    follower, followee = pick(follows_cols, "follower_id"), pick(follows_cols, "followee_id")
    # In primary-key order: two of the three indexes then grow at their end (a third faster).
    pairs = sorted((index_ids[a], index_ids[b]) for a, b in large.pairs())
    counts["large_follows"] = await copy_table(conn, "follows", follows_cols, {
        follower: [a for a, _ in pairs], followee: [b for _, b in pairs],
        "created_at": [data.now - timedelta(days=1)] * len(pairs),
    })
    post_ids = [uuid.UUID(p) for account in data.large_post_ids for p in account]
    counts["large_posts"] = await copy_table(conn, "posts", posts_cols, {
        "id": post_ids,
        pick(posts_cols, "author_id"): [ids[a] for a in range(n_large) for _ in range(posts_each)],
        "body": [data.post_bodies[k % len(data.post_bodies)] if data.post_bodies else "Hello."
                 for k in range(len(post_ids))],
        "created_at": data.large_post_created * n_large, "updated_at": data.large_post_created * n_large,
        "like_count": [0] * len(post_ids), "comment_count": [0] * len(post_ids),
    })
    threshold = int(os.environ.get("PULSE_FANOUT_PUSH_MAX_FOLLOWERS", "10000"))
    if large.followers > threshold and await table_columns(conn, "feed_fanout_modes"):
        await conn.executemany("INSERT INTO feed_fanout_modes (author_id, mode) VALUES ($1, 'pull') "
                               "ON CONFLICT (author_id) DO UPDATE SET mode = 'pull'", [(i,) for i in ids[:n_large]])
        counts["large_not_pushed"] = n_large
    return counts


# --- REST -----------------------------------------------------------------------------

class NotServed(RuntimeError):
    """The deployment does not serve this endpoint (yet): that part of the seed is skipped."""


class Rest:
    def __init__(self, session: aiohttp.ClientSession, base_url: str):
        self.session = session
        self.base_url = base_url.rstrip("/")

    async def call(self, method: str, path: str, *, token: str | None = None, json=None,
                   ok=(200, 201, 204)):
        headers = {"Authorization": f"Bearer {token}"} if token else None
        for attempt in range(5):
            async with self.session.request(method, self.base_url + API + path, json=json,
                                            headers=headers) as response:
                if response.status in ok:
                    return await response.json(content_type=None) if response.status != 204 else None
                if response.status in (429, 502, 503) and attempt < 4:
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                text = await response.text()
                if response.status in (404, 405):
                    raise NotServed(f"{method} {path} → {response.status}")
                raise RuntimeError(f"{method} {path} → {response.status}: {text[:300]}")

    async def login(self, index: int) -> str:
        answer = await self.call("POST", "/auth/login", ok=(200,),
                                 json={"login": username_of(index), "password": PASSWORD})
        return answer["token"]


async def bounded(concurrency: int, coroutines):
    semaphore = asyncio.Semaphore(concurrency)

    async def run(coro):
        try:
            async with semaphore:
                return await coro
        finally:
            coro.close()  # never started when a sibling failed first: no warning

    return await asyncio.gather(*(run(c) for c in coroutines))


async def register_users(rest: Rest, data: Dataset, concurrency: int) -> None:
    async def register(i: int):
        answer = await rest.call("POST", "/auth/register", ok=(201, 409), json={
            "email": email_of(i), "username": username_of(i), "password": PASSWORD,
            "display_name": f"Load Tester {i}"})
        if answer and "user" in answer:
            data.user_ids[i] = answer["user"]["id"]
        else:  # Already there from an earlier run: look it up.
            user = await rest.call("GET", f"/users/{username_of(i)}", token=await rest.login(i))
            data.user_ids[i] = user["id"]

    await bounded(concurrency, (register(i) for i in range(data.n_users)))


async def rest_graph_and_posts(rest: Rest, data: Dataset, concurrency: int) -> list[str]:
    tokens = await bounded(concurrency, (rest.login(i) for i in range(data.n_users)))
    await bounded(concurrency, (
        rest.call("PUT", f"/users/{data.user_ids[b]}/follow", token=tokens[a])
        for a, b in data.graph.pairs()))

    async def post(k: int):
        answer = await rest.call("POST", "/posts", token=tokens[data.post_authors[k]],
                                 json={"body": data.post_bodies[k]})
        return answer["id"]

    return list(await bounded(concurrency, (post(k) for k in range(len(data.post_ids)))))


async def create_conversations(rest: Rest, data: Dataset, concurrency: int) -> list[dict]:
    async def create(group: list[int]):
        token = await rest.login(group[0])
        answer = await rest.call("POST", "/conversations", token=token, ok=(200, 201), json={
            "member_ids": [data.user_ids[m] for m in group[1:]],
            "title": f"load test group {group[0]}"})
        return {"id": answer["id"], "members": group}

    return list(await bounded(concurrency, (create(g) for g in data.groups)))


async def create_events(rest: Rest, data: Dataset, count: int, concurrency: int) -> list[str]:
    if count <= 0:
        return []
    hosts = list(range(data.chat_members, data.n_users - 1))[:20] or [0]
    tokens = await bounded(concurrency, (rest.login(h) for h in hosts))
    now = datetime.now(timezone.utc)

    async def create(k: int):
        starts = now + timedelta(days=1 + k % 60, hours=k % 24)
        body = {"title": f"Load test meetup {k}", "description": "Seeded event",
                "starts_at": starts.isoformat().replace("+00:00", "Z"),
                "ends_at": (starts + timedelta(hours=2)).isoformat().replace("+00:00", "Z"),
                "location": "Somewhere", "capacity": None if k % 4 else 50}
        answer = await rest.call("POST", "/events", token=tokens[k % len(tokens)], json=body)
        return answer["id"]

    return list(await bounded(concurrency, (create(k) for k in range(count))))


async def issue_tokens(rest: Rest, data: Dataset, per_pool: int, concurrency: int
                       ) -> dict[int, str]:
    """Log in ahead of the run the accounts locust will claim first (argon2 off the clock)."""
    wanted = {data.n_users - 1}
    for pool in ("chat", "rest", "notify"):
        if pool == "chat" and data.chat_members == 0:
            continue
        count = min(per_pool, data.chat_members) if pool == "chat" else per_pool
        wanted.update(pool_index(pool, n, data.chat_members, data.n_users) for n in range(count))
    indexes = sorted(wanted)
    tokens = await bounded(concurrency, (rest.login(i) for i in indexes))
    return dict(zip(indexes, tokens))


# --- main -----------------------------------------------------------------------------

async def run(args) -> dict:
    started = time.perf_counter()
    data = Dataset(args.users, mean_following=args.mean_following, mean_posts=args.mean_posts,
                   chat_members=args.chat_members, group_size=args.group_size, seed=args.seed,
                   large=args.large_accounts if args.dsn else 0, large_followers=args.large_followers,
                   large_posts=args.large_posts)
    if args.large_accounts and not args.dsn:
        log("large accounts need --dsn (their follows are seeded with COPY): skipped")
    log(f"generated {data.n_users} users, {len(data.graph)} follows, "
        f"{len(data.post_ids)} posts, {len(data.groups)} conversations "
        f"in {time.perf_counter() - started:.1f}s")
    counts: dict[str, int] = {}
    post_ids = data.post_ids
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=0)) as session:
        rest = Rest(session, args.base_url)
        if args.dsn:
            counts = await seed_postgres(args.dsn, data)
            log(f"PostgreSQL COPY {counts} in {time.perf_counter() - started:.1f}s")
        else:
            await register_users(rest, data, args.concurrency)
            post_ids = await rest_graph_and_posts(rest, data, args.concurrency)
            counts = {"users": data.n_users, "follows": len(data.graph), "posts": len(post_ids)}
            log(f"REST {counts} in {time.perf_counter() - started:.1f}s")
        conversations: list[dict] = []
        event_ids: list[str] = []
        if not args.skip_rest:
            try:
                conversations = await create_conversations(rest, data, args.concurrency)
            except NotServed as exc:
                log(f"conversations skipped: {exc}")
            try:
                event_ids = await create_events(rest, data, args.events, args.concurrency)
            except NotServed as exc:
                log(f"events skipped: {exc}")
        tokens = await issue_tokens(rest, data, args.login_per_pool, args.concurrency) \
            if args.login_per_pool > 0 else {}
        counts["conversations"] = len(conversations)
        counts["events"] = len(event_ids)
    log(f"done in {time.perf_counter() - started:.1f}s: {counts}")
    document = {
        "password": PASSWORD,
        "base_url": args.base_url,
        "counts": counts,
        "users": [{"id": data.user_ids[i], "username": username_of(i)}
                  for i in range(data.n_users)],
        "chat_members": data.chat_members,
        "conversations": conversations,
        "post_ids": post_ids[-20000:],
        "event_ids": event_ids,
        "popular": data.popular(),
        "large_accounts": [{"id": data.large_ids[i], "username": large_username_of(i)}
                           for i in range(data.large.accounts)],
        "large_followers": data.large.followers if data.large.accounts else 0,
        "tokens": {str(k): v for k, v in tokens.items()},
        "seconds": round(time.perf_counter() - started, 2),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document))
    log(f"wrote {out}")
    return document


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest.seed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--dsn", default=os.environ.get("PULSE_POSTGRES_DSN"),
                   help="PostgreSQL DSN for bulk COPY (default $PULSE_POSTGRES_DSN); "
                        "without it everything goes through REST")
    p.add_argument("--base-url", default="http://127.0.0.1:8080")
    p.add_argument("--out", default=str(DEFAULT_SEED_FILE))
    p.add_argument("--mean-following", type=float, default=20.0)
    p.add_argument("--mean-posts", type=float, default=5.0)
    p.add_argument("--chat-members", type=int, default=2000,
                   help="the first N users are put in group conversations")
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--events", type=int, default=100)
    p.add_argument("--login-per-pool", type=int, default=0,
                   help="log in this many accounts of each locust pool now and store their "
                        "tokens, so the run does not start with a burst of logins")
    p.add_argument("--large-accounts", type=int, default=0,
                   help="accounts followed by --large-followers users each (every regular user, "
                        "then an audience of their own); needs --dsn")
    p.add_argument("--large-followers", type=int, default=100_000)
    p.add_argument("--large-posts", type=int, default=40, help="seeded posts of each large account")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seed", type=int, default=1, help="random seed (reproducible data)")
    p.add_argument("--skip-rest", action="store_true",
                   help="only the PostgreSQL part (no conversations, no events)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.users < 3:
        raise SystemExit("--users must be at least 3")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
