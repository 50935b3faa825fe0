"""``python -m loadtest.saturation``: the saturation part of ``make bench`` on its own,
and the hook that runs it inside ``make bench`` (``in_bench``).

Starts what ``make bench`` starts (fresh store namespaces, SecantusDB, two ``pulse serve``
instances), seeds a small dataset (COPY, then logins for the tokens), runs the
measurements of :mod:`loadtest.saturation.run` and writes ``saturation.json`` and
``saturation.md`` under ``--results``. ≈ 3 minutes with the defaults; ``--only rest`` or
``--only chat``, ``--routes``, ``--rest-instances 1`` and shorter ``--*-seconds`` make it quicker.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from loadtest import bench
from loadtest.saturation import report, run

DEFAULT_RESULTS = Path(__file__).resolve().parent.parent / "results" / "saturation"


def options_from(args) -> run.Options:
    return run.Options(
        closed_seconds=args.closed_seconds, open_seconds=args.open_seconds,
        warmup_seconds=args.warmup_seconds, connections=args.connections,
        open_fraction=args.open_fraction, open_processes=args.open_processes,
        routes=tuple(args.routes.split(",")) if args.routes else (),
        instances=tuple(int(n) for n in args.rest_instances.split(",")),
        chat_rates=tuple(float(r) for r in args.chat_rates.split(",")),
        chat_seconds=args.chat_seconds, chat_drain=args.chat_drain,
        rest=getattr(args, "only", None) in (None, "rest"),
        chat=getattr(args, "only", None) in (None, "chat"))


def add_options(parser: argparse.ArgumentParser) -> None:
    """The measurement knobs (shared with ``python -m loadtest.bench``)."""
    d = run.Options()
    g = parser.add_argument_group("saturation")
    g.add_argument("--closed-seconds", type=float, default=d.closed_seconds,
                   help="closed-loop (wrk) run per route and instance count")
    g.add_argument("--open-seconds", type=float, default=d.open_seconds,
                   help="open-loop run at --open-fraction of the closed-loop maximum")
    g.add_argument("--warmup-seconds", type=float, default=d.warmup_seconds)
    g.add_argument("--connections", type=int, default=d.connections)
    g.add_argument("--open-fraction", type=float, default=d.open_fraction)
    g.add_argument("--open-processes", type=int, default=d.open_processes,
                   help="processes of the open-loop client (the rate is split)")
    g.add_argument("--routes", default="",
                   help="comma-separated route keys (cached_profile, users_me, feed, "
                        "unread_count, create_post; default all)")
    g.add_argument("--rest-instances", default=",".join(str(n) for n in d.instances),
                   help="instance counts the REST routes are measured on (chat: always 2)")
    g.add_argument("--chat-rates", default=",".join(f"{r:g}" for r in d.chat_rates),
                   help="offered deliveries/s per step (messages/s × 50)")
    g.add_argument("--chat-seconds", type=float, default=d.chat_seconds)
    g.add_argument("--chat-drain", type=float, default=d.chat_drain)


def target_from_bench(processes: bench.Processes, stores: bench.Stores, urls: dict[str, str],
                      seed: dict) -> run.Target:
    token, profile_id, chat_accounts = run.seed_accounts(seed)
    pids = {name: p.pid for name, p in processes.children if name in urls}
    secantus = next((p.pid for name, p in processes.children if name == "secantus"), None)
    return run.Target(urls=urls, pids=pids, secantus_pid=secantus, pg_database=stores.pg_database,
                      redis_url=stores.redis_url, token=token, profile_id=profile_id,
                      chat_accounts=chat_accounts, start_process=processes.start,
                      stop_process=processes.stop, log=bench.log)


async def in_bench(processes: bench.Processes, stores: bench.Stores, urls: dict[str, str],
                   seed_file: Path, args, results: Path) -> dict:
    """Runs the measurements on the bench's instances and seed; writes ``saturation.json``
    (the report's section) and returns the figures for ``baselines.json`` (the targets)."""
    target = target_from_bench(processes, stores, urls, json.loads(seed_file.read_text()))
    result = await asyncio.to_thread(run.measure, target, options_from(args))
    result["setup"] = f"make bench: {len(urls)} instances, {args.users} users seeded, after locust"
    run.write(result, results)
    bench.log(f"saturation: {result['seconds']} s of measurements")
    return run.flat_figures(result)


async def standalone(args) -> int:
    results = Path(args.results)
    logs = results / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    bench.raise_open_files_limit()
    processes = bench.Processes(logs)
    stores = bench.Stores(uuid.uuid4().hex[:8], processes)
    try:
        await stores.create()
        urls = await bench.start_instances(processes, stores, 2)
        seed_file = results / "seed.json"
        started = time.monotonic()
        done = subprocess.run([
            sys.executable, "-m", "loadtest.seed", "--users", str(args.users), "--dsn",
            stores.postgres_dsn, "--base-url", next(iter(urls.values())), "--out", str(seed_file),
            "--chat-members", "0", "--events", "0", "--skip-rest", "--login-per-pool", "201"],
            cwd=bench.ROOT, env={**os.environ, **bench.server_env(stores, "seed")}, timeout=300)
        if done.returncode != 0:
            raise RuntimeError("seeding failed (see above)")
        bench.log(f"seeded {args.users} users in {time.monotonic() - started:.1f} s")
        target = target_from_bench(processes, stores, urls, json.loads(seed_file.read_text()))
        result = await asyncio.to_thread(run.measure, target, options_from(args))
        result["setup"] = f"standalone: 2 instances, {args.users} users seeded"
        run.write(result, results)
        path = report.write_markdown(result, results)
        bench.log(f"saturation: {path} ({result['seconds']} s of measurements)")
        print(path.read_text())
        return 0
    finally:
        processes.stop_all()
        if not args.keep:
            await stores.drop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.saturation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(DEFAULT_RESULTS))
    parser.add_argument("--users", type=int, default=2000, help="users seeded")
    parser.add_argument("--only", choices=["rest", "chat"])
    parser.add_argument("--keep", action="store_true", help="keep the store namespaces")
    add_options(parser)
    sys.exit(asyncio.run(standalone(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
