"""Viral scale, benchmark 1 (issue 16): large accounts post while everybody reads feeds.

    python -m loadtest.viral fanout                  # fresh stores, 2 instances, its own seed
    python -m loadtest.viral fanout --url http://127.0.0.1:8080 --url http://127.0.0.1:8081 \\
        --seed-file loadtest/results/seed.json       # running instances seeded with large accounts

The seed has accounts followed by 100k users each (``loadtest.seed --large-accounts``;
every regular user follows them). Phases alternate, *baseline* then *viral*, ``--rounds``
times, so that the shared machine's drift falls on both alike; in both:

- **readers**: ``--readers`` clients, each a seeded user, read ``GET /feed`` back to back
  (``--think-ms`` apart) on alternate instances: the other users' feed latency;
- **probes**: ``--probes`` pairs of fresh accounts, an author and a follower; the author
  posts every ``--probe-seconds`` and the follower's feed is polled until the post is in
  it: the fan-out lag (outbox relay, the feed consumer's queue and handler) that a backlog
  of 100k-follower pushes would show first.

In *viral* phases each large account also posts (``--posts`` times over all viral phases),
and ``--watchers`` of its followers poll their feeds until the post is there: its
visibility. In *baseline* phases a small control account the watchers follow posts as
often, watched the same way: both phases make the same requests, only who posts differs
(the same run without the large accounts posting). Goals: the readers' feed p99 and the probes' lag p99 of the viral phases within
10 % of the baseline phases', every large post in a follower's feed within 2 s. Prints JSON
(and writes ``loadtest/results/viral-fanout.json``), with the 1/5/15-minute load averages
at the start and the end: the machine is shared.

``--push-comparison`` (needs the database: fresh stores, or ``--dsn``) runs one more viral
phase with the large accounts fanned out on write (their mode rows deleted, as if the
hybrid fan-out did not exist), to show what it saves.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.saturation.cpu import machine_ticks
from loadtest.saturation.stats import percentiles, ratio

RESULTS = Path(__file__).resolve().parent / "results"
FANOUT_JSON = "viral-fanout.json"
# What make bench keeps in baselines.json (the rest is in FANOUT_JSON).
SUMMARY = ("readers_p99_ratio", "probe_lag_p99_ratio", "large_post_visible_max_ms", "passed")
VISIBLE_WITHIN_MS = 2000.0
WITHIN_RATIO = 1.10
# Polling for a post: the probes (both phases alike) finely, the watchers of large posts
# (viral phases only: load the baseline does not have) less often.
POLL_SECONDS = 0.02
WATCH_POLL_SECONDS = 0.05
VISIBLE_TIMEOUT_SECONDS = 30.0
# The first seconds of a phase are left out of its figures (the previous phase's tail).
SETTLE_SECONDS = 1.0


def log(message: str) -> None:
    print(f"viral fanout [{time.strftime('%H:%M:%S')}]: {message}", file=sys.stderr, flush=True)


def load_averages() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


class Rest:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(self, method: str, url: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, url, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    async def must(self, method: str, url: str, token: str | None = None, body: Any = None,
                   ok: tuple[int, ...] = (200, 201)) -> Any:
        """The answer of a setup call; a busy store's 503 (or 429) is waited out."""
        for attempt in range(10):
            status, answer = await self.call(method, url, token, body)
            if status in ok:
                return answer
            if status not in (429, 503):
                break
            await asyncio.sleep(0.5 * (attempt + 1))
        raise RuntimeError(f"{method} {url}: {status} {answer}")

    async def login(self, base_url: str, login: str, password: str) -> str:
        answer = await self.must("POST", f"{base_url}/api/v1/auth/login", body={"login": login, "password": password})
        return answer["token"]

    async def register(self, base_url: str, prefix: str) -> dict[str, str]:
        suffix = uuid.uuid4().hex[:10]
        answer = await self.must("POST", f"{base_url}/api/v1/auth/register", ok=(201,), body={
            "email": f"{prefix}{suffix}@bench.example", "username": f"{prefix}{suffix}"[:30],
            "password": "viral benchmark password"})
        return {"id": answer["user"]["id"], "token": answer["token"]}

    async def feed_ids(self, base_url: str, token: str, limit: int = 10) -> list[str]:
        status, body = await self.call("GET", f"{base_url}/api/v1/feed?limit={limit}", token)
        return [p["id"] for p in body["items"]] if status == 200 else []


class Phase:
    """What one phase measured (ms)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.started = time.monotonic()
        self.ended = self.started
        self.ticks_at_start = machine_ticks()
        self.machine_busy_percent: float | None = None
        self.reads: list[float] = []
        self.read_errors = 0
        self.probe_lags: list[float] = []
        self.visible: list[float] = []
        self.not_visible = 0

    def counts(self) -> bool:
        return time.monotonic() - self.started >= SETTLE_SECONDS


async def visible_after(rest: Rest, base_url: str, token: str, post_id: str, since: float,
                        poll: float = POLL_SECONDS) -> float | None:
    """Milliseconds from ``since`` until the post is in the feed; None: not within the timeout."""
    while time.monotonic() - since < VISIBLE_TIMEOUT_SECONDS:
        if post_id in await rest.feed_ids(base_url, token, limit=5):
            return (time.monotonic() - since) * 1000
        await asyncio.sleep(poll)
    return None


def summary(phases: list[Phase], kind: str) -> dict[str, Any]:
    mine = [p for p in phases if p.kind == kind]
    reads = [v for p in mine for v in p.reads]
    lags = [v for p in mine for v in p.probe_lags]
    out: dict[str, Any] = {
        "phases": len(mine),
        "reads": len(reads), "read_errors": sum(p.read_errors for p in mine),
        "reads_per_second": round(len(reads) / max(1e-9, sum(p.ended - p.started - SETTLE_SECONDS for p in mine)), 1),
        "readers": percentiles(reads, (50, 95, 99)),
        "probe_posts": len(lags), "probe_lag": percentiles(lags, (50, 99)),
        # The whole machine (other sessions included): what the figures were measured against.
        "machine_busy_percent": [p.machine_busy_percent for p in mine],
    }
    visible = [v for p in mine for v in p.visible]
    watched = "control" if kind == "baseline" else "large"
    out[f"{watched}_posts_seen"] = len(visible)
    out[f"{watched}_posts_not_seen"] = sum(p.not_visible for p in mine)
    out[f"{watched}_post_visible"] = percentiles(visible, (50, 99))
    return out


async def fanout_scenario(urls: list[str], seed: dict[str, Any], *, readers: int = 16, think_ms: float = 50,
                          probes: int = 4, probe_seconds: float = 1.0, rounds: int = 2, phase_seconds: float = 10,
                          posts: int = 10, watchers: int = 3, dsn: str | None = None,
                          push_comparison: bool = False) -> dict[str, Any]:
    """Benchmark 1; returns its figures and verdict."""
    large = seed.get("large_accounts") or []
    if not large:
        raise RuntimeError("the seed has no large accounts (loadtest.seed --large-accounts)")
    started_loads = load_averages()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        rest = Rest(session)
        password = seed["password"]
        tokens = {int(k): v for k, v in seed.get("tokens", {}).items()}
        users = seed["users"]
        wanted = readers + watchers
        if len(tokens) < wanted:
            extra = [i for i in range(len(users)) if i not in tokens][:wanted - len(tokens)]
            logged = await asyncio.gather(*(rest.login(urls[i % len(urls)], users[i]["username"], password)
                                            for i in extra))
            tokens.update(zip(extra, logged))
        chosen = random.Random(16).sample(sorted(tokens), wanted)
        reader_tokens = [tokens[i] for i in chosen[:readers]]
        watcher_tokens = [tokens[i] for i in chosen[readers:]]
        large_tokens = [await rest.login(urls[0], a["username"], password) for a in large]
        # The baselines' watched posts come from a small account the watchers follow: the
        # same requests as in the viral phases (the posts, the watchers' polling), so that
        # what differs is only who posts.
        control = await rest.register(urls[0], "vcontrol")
        control_tokens = [control["token"]]
        for token in watcher_tokens:
            await rest.must("PUT", f"{urls[0]}/api/v1/users/{control['id']}/follow", token)
        # Probe pairs: fresh accounts, so that the follow and the feed are theirs alone.
        pairs = []
        for i in range(probes):
            author = await rest.register(urls[i % len(urls)], "vprobe")
            follower = await rest.register(urls[(i + 1) % len(urls)], "vfan")
            await rest.must("PUT", f"{urls[0]}/api/v1/users/{author['id']}/follow", follower["token"])
            pairs.append((author, follower))
        phases: list[Phase] = []
        stop = asyncio.Event()

        async def reader(n: int, token: str) -> None:
            base = urls[n % len(urls)]
            while not stop.is_set():
                phase = phases[-1]
                t = time.monotonic()
                try:
                    status, _ = await rest.call("GET", f"{base}/api/v1/feed?limit=20", token)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    status = 0
                if phase.counts() and phase is phases[-1]:
                    if status == 200:
                        phase.reads.append((time.monotonic() - t) * 1000)
                    else:
                        phase.read_errors += 1
                await asyncio.sleep(think_ms / 1000)

        async def probe(n: int, author: dict, follower: dict) -> None:
            await asyncio.sleep(n * probe_seconds / max(1, probes))
            while not stop.is_set():
                phase = phases[-1]
                t = time.monotonic()
                status, created = await rest.call("POST", f"{urls[n % len(urls)]}/api/v1/posts", author["token"],
                                                  {"body": f"probe {n}"})
                if status == 201:
                    lag = await visible_after(rest, urls[(n + 1) % len(urls)], follower["token"], created["id"],
                                              time.monotonic())
                    if lag is not None and phase.counts() and phase is phases[-1]:
                        phase.probe_lags.append(lag)
                await asyncio.sleep(max(0.0, probe_seconds - (time.monotonic() - t)))

        async def watched_post(phase: Phase, k: int, when: float, authors: list[str]) -> None:
            await asyncio.sleep(max(0.0, when - time.monotonic()))
            status, created = await rest.call("POST", f"{urls[k % len(urls)]}/api/v1/posts", authors[k % len(authors)],
                                              {"body": f"watched post {k}"})
            if status != 201:
                phase.not_visible += len(watcher_tokens)
                return
            since = time.monotonic()
            seen = await asyncio.gather(*(visible_after(rest, urls[w % len(urls)], token, created["id"], since,
                                                        WATCH_POLL_SECONDS)
                                          for w, token in enumerate(watcher_tokens)))
            phase.visible += [v for v in seen if v is not None]
            phase.not_visible += sum(v is None for v in seen)

        async def run_phase(kind: str, posts_now: int, authors: list[str]) -> None:
            phase = Phase(kind)
            phases.append(phase)
            log(f"{kind} phase ({phase_seconds:.0f} s, {posts_now} posts of {len(authors)} "
                f"{'control' if authors is control_tokens else 'large'} account(s) watched)")
            start = time.monotonic() + SETTLE_SECONDS
            span = phase_seconds - SETTLE_SECONDS
            jobs = [asyncio.create_task(watched_post(phase, k, start + span * (k + 0.5) / posts_now, authors))
                    for k in range(posts_now)]
            await asyncio.sleep(phase_seconds)
            phase.ended = time.monotonic()
            (busy0, total0), (busy1, total1) = phase.ticks_at_start, machine_ticks()
            phase.machine_busy_percent = round(100 * (busy1 - busy0) / max(1, total1 - total0), 1)
            await asyncio.gather(*jobs)  # their visibility, measured to the end

        # Warm up: every reader's feed, merged-author set and the author feeds built.
        phases.append(Phase("warmup"))
        tasks = [asyncio.create_task(reader(n, t)) for n, t in enumerate(reader_tokens)]
        tasks += [asyncio.create_task(probe(n, a, f)) for n, (a, f) in enumerate(pairs)]
        for token in watcher_tokens:
            await rest.feed_ids(urls[0], token)
        await asyncio.sleep(5)
        total_posts = posts * len(large)
        per_round = [len(r) for r in _split(range(total_posts), rounds)]
        try:
            for posts_now in per_round:
                await run_phase("baseline", posts_now, control_tokens)
                await run_phase("viral", posts_now, large_tokens)
            if push_comparison and dsn:
                await set_pushed(dsn, [a["id"] for a in large])
                await run_phase("viral_pushed", len(large), large_tokens)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if push_comparison and dsn:
                await set_not_pushed(dsn, [a["id"] for a in large])
    base, viral = summary(phases, "baseline"), summary(phases, "viral")
    result: dict[str, Any] = {
        "instances": len(urls), "large_accounts": len(large), "large_followers": seed.get("large_followers"),
        "readers": readers, "think_ms": think_ms, "probes": probes, "probe_seconds": probe_seconds,
        "rounds": rounds, "phase_seconds": phase_seconds, "watchers": watchers,
        "baseline": base, "viral": viral,
        "readers_p99_ratio": ratio(viral["readers"]["p99_ms"], base["readers"]["p99_ms"]),
        "probe_lag_p99_ratio": ratio(viral["probe_lag"]["p99_ms"], base["probe_lag"]["p99_ms"]),
        "large_post_visible_max_ms": viral["large_post_visible"]["max_ms"],
        "load_averages_start": started_loads, "load_averages_end": load_averages(),
    }
    if push_comparison and dsn:
        result["viral_pushed"] = summary(phases, "viral_pushed")
    result["passed"] = bool(
        viral["large_posts_not_seen"] == 0 and viral["large_posts_seen"] == total_posts * watchers
        and result["large_post_visible_max_ms"] is not None
        and result["large_post_visible_max_ms"] <= VISIBLE_WITHIN_MS
        and result["readers_p99_ratio"] is not None and result["readers_p99_ratio"] <= WITHIN_RATIO
        and result["probe_lag_p99_ratio"] is not None and result["probe_lag_p99_ratio"] <= WITHIN_RATIO)
    return result


def _split(items: range, parts: int) -> list[list[int]]:
    """``items`` cut into ``parts`` runs as even as can be."""
    parts = max(1, parts)
    size, extra = divmod(len(items), parts)
    out, it = [], iter(items)
    for i in range(parts):
        out.append(list(itertools.islice(it, size + (1 if i < extra else 0))))
    return out


async def set_pushed(dsn: str, author_ids: list[str]) -> None:
    """The comparison: as if there were no hybrid fan-out (their posts pushed to every follower)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM feed_fanout_modes WHERE author_id = ANY($1::uuid[])",
                           [uuid.UUID(a) for a in author_ids])
    finally:
        await conn.close()


async def set_not_pushed(dsn: str, author_ids: list[str]) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany("INSERT INTO feed_fanout_modes (author_id, mode) VALUES ($1, 'pull') "
                               "ON CONFLICT (author_id) DO UPDATE SET mode = 'pull'",
                               [(uuid.UUID(a),) for a in author_ids])
    finally:
        await conn.close()


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed-file", help="seed.json of the instances given with --url")
    parser.add_argument("--dsn", help="their database (for --push-comparison)")
    parser.add_argument("--users", type=int, default=2000, help="regular users seeded when no --url is given")
    parser.add_argument("--large-accounts", type=int, default=3)
    parser.add_argument("--large-followers", type=int, default=100_000)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--think-ms", type=float, default=50)
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument("--probe-seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--phase-seconds", type=float, default=15)
    parser.add_argument("--posts", type=int, default=10, help="posts of each large account, over the viral phases")
    parser.add_argument("--watchers", type=int, default=3, help="followers polled for each large post")
    parser.add_argument("--push-comparison", action="store_true",
                        help="one more viral phase with the large accounts pushed on write")


def scenario_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(readers=args.readers, think_ms=args.think_ms, probes=args.probes, probe_seconds=args.probe_seconds,
                rounds=args.rounds, phase_seconds=args.phase_seconds, posts=args.posts, watchers=args.watchers,
                push_comparison=args.push_comparison)


async def with_fresh_instances(args: argparse.Namespace) -> dict[str, Any]:
    """Fresh stores, instances and a seed of their own (with the large accounts)."""
    import subprocess

    from loadtest.bench import ROOT, Processes, Stores, server_env, start_instances

    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes = Processes(logs)
    stores = Stores(uuid.uuid4().hex[:8], processes)
    try:
        await stores.create()
        urls = await start_instances(processes, stores, args.instances)
        seed_file = RESULTS / "viral-fanout-seed.json"
        t = time.monotonic()
        seeded = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "loadtest.seed", "--users", str(args.users), "--dsn", stores.postgres_dsn,
            "--base-url", next(iter(urls.values())), "--out", str(seed_file), "--chat-members", "0",
            "--events", "0", "--skip-rest", "--login-per-pool", str(args.readers + args.watchers),
            "--large-accounts", str(args.large_accounts), "--large-followers", str(args.large_followers)],
            cwd=ROOT, env={**os.environ, **server_env(stores, "seed")}, timeout=600)
        if seeded.returncode != 0:
            raise RuntimeError("seeding failed (see above)")
        seed_seconds = round(time.monotonic() - t, 1)
        result = await fanout_scenario(list(urls.values()), json.loads(seed_file.read_text()),
                                       dsn=stores.postgres_dsn, **scenario_options(args))
        result["seed_seconds"] = seed_seconds
        return result
    finally:
        processes.stop_all()
        await stores.drop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.url:
        if not args.seed_file:
            raise SystemExit("--url needs --seed-file (the seed of those instances, with large accounts)")
        return await fanout_scenario([u.rstrip("/") for u in args.url], json.loads(Path(args.seed_file).read_text()),
                                     dsn=args.dsn, **scenario_options(args))
    return await with_fresh_instances(args)
