"""The saturation measurements against running Pulse instances (``make bench`` or standalone).

REST: per route class, on one instance and on two, the closed-loop maximum (wrk, 32
connections) and then p99 offered open-loop at 70 % of that maximum
(:mod:`loadtest.openloop`); bare aiohttp's GET JSON first, with the same tools, as the
baseline. Chat: the stepped run of :mod:`loadtest.saturation.chat`, bare python-socketio +
AsyncRedisManager first, then Pulse. Every measurement carries the CPU it cost: each Pulse
instance, the stores (this run's PostgreSQL backends, SecantusDB, the Redis and RabbitMQ
servers), the load tool, and the machine's busy %.
"""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from loadtest import openloop
from loadtest.monitoring import mongo_totals
from loadtest.saturation import chat, cpu, stats, wrk
from storage.embedded.processes import free_port, wait_for_port

API = "/api/v1"
RESULT_JSON = "saturation.json"
STORE_GROUPS = ("postgresql", "secantus", "redis", "rabbitmq")


@dataclass(frozen=True)
class Route:
    key: str
    label: str
    method: str
    path: str
    body: str = ""


def pulse_routes(profile_id: str) -> list[Route]:
    """The route classes, reads first: the write leaves work behind (feed fan-out)."""
    return [
        Route("cached_profile", "GET /users/{id} (cached profile)", "GET", f"{API}/users/{profile_id}"),
        Route("users_me", "GET /users/me", "GET", f"{API}/users/me"),
        Route("feed", "GET /feed", "GET", f"{API}/feed"),
        Route("unread_count", "GET /notifications/unread-count", "GET",
              f"{API}/notifications/unread-count"),
        Route("create_post", "POST /posts", "POST", f"{API}/posts",
              json.dumps({"body": "saturation bench post"})),
    ]


BARE_ROUTE = Route("bare_json", "bare aiohttp GET /json", "GET", "/json")


@dataclass(frozen=True)
class Options:
    # Short enough for make bench's budget (≈ 2.5 min in all); longer runs: --*-seconds.
    closed_seconds: float = 3.0
    open_seconds: float = 3.0
    warmup_seconds: float = 1.0
    connections: int = 32             # closed loop (wrk), the 32
    open_connections: int = 64        # open loop: enough that a busy one rarely holds a due request
    open_fraction: float = stats.OPEN_LOOP_FRACTION
    open_processes: int = 1
    routes: tuple[str, ...] = ()      # keys to run (default: all)
    instances: tuple[int, ...] = (1, 2)
    chat_rates: tuple[float, ...] = (2000, 5000, 10000, 15000, 20000, 30000)
    chat_seconds: float = 3.0
    chat_drain: float = 2.0
    settle_seconds: float = 15.0      # longest wait for the processes measured to be quiet
    rest: bool = True
    chat: bool = True


@dataclass
class Target:
    """Where the measurements go and what they cost: Pulse instances and the stores."""
    urls: dict[str, str]                          # instance name → base URL
    pids: dict[str, int]                          # instance name → pid
    secantus_pid: int | None
    pg_database: str
    redis_url: str
    token: str                                    # bearer token for the REST routes
    profile_id: str                               # a popular user's id (cached profile)
    chat_accounts: list[dict]                     # [{"token", "user_id"}] × 400
    start_process: Callable[[str, list[str]], Any]  # (name, argv) → Popen (stopped by stop_process)
    stop_process: Callable[[Any], None]
    log: Callable[[str], None] = print

    def meter(self) -> cpu.CpuMeter:
        groups: dict[str, cpu.PidFinder] = {name: cpu.fixed(pid) for name, pid in self.pids.items()}
        if self.secantus_pid:
            groups["secantus"] = cpu.fixed(self.secantus_pid)
        groups["postgresql"] = cpu.postgres_backends(self.pg_database)
        groups["redis"] = cpu.redis_server(urlsplit(self.redis_url).port or 6379)
        groups["rabbitmq"] = cpu.rabbitmq_node()
        return cpu.CpuMeter(groups)


def cpu_record(usage: cpu.Usage, requests: int, servers: list[str], tool_cpu_seconds: float = 0.0) -> dict:
    """CPU of a measurement: µs per request of the servers and the stores, % of a core per
    process group, the machine's busy %, and how much of that was this measurement's own
    processes and load tool (the rest: anything else running on the machine)."""
    per = stats.cpu_per_request_us(usage.cpu_seconds, requests, {
        "servers": servers, "stores": STORE_GROUPS,
        **{g: [g] for g in (*servers, *STORE_GROUPS) if g in usage.cpu_seconds}})
    ours = sum(usage.cpu_seconds.values()) + tool_cpu_seconds
    cores = os.cpu_count() or 1
    return {"machine_percent": usage.machine_percent, "seconds": usage.seconds,
            "measured_percent_of_machine": round(100 * ours / usage.seconds / cores, 1) if usage.seconds else None,
            "percent_of_core": {g: round(usage.percent_of_core(g), 1) for g in usage.cpu_seconds},
            "us_per_request": per}


def measure_route(route: Route, urls: list[str], headers: dict[str, str], meter: cpu.CpuMeter,
                  servers: list[str], options: Options, warm: bool) -> dict:
    full = [u + route.path for u in urls]
    quiet = [g for g in meter.groups if g in servers or g in ("secantus", "postgresql")]
    settled = cpu.wait_quiet(meter, quiet, timeout=options.settle_seconds)
    if warm and options.warmup_seconds > 0:
        wrk.closed_loop(full, method=route.method, headers=headers, body=route.body,
                        seconds=options.warmup_seconds, connections=options.connections)
    before = meter.snapshot()
    closed = wrk.closed_loop(full, method=route.method, headers=headers, body=route.body,
                             seconds=options.closed_seconds, connections=options.connections)
    closed["cpu"] = cpu_record(meter.delta(before, meter.snapshot()), closed["answered"], servers,
                               closed.get("cpu_seconds", 0.0))
    rate = stats.open_loop_rate(closed["per_second"] or 0, options.open_fraction)
    request_headers = {**headers, **({"Content-Type": "application/json"} if route.body else {})}
    requests = [openloop.Request.build(u, route.method, request_headers, route.body.encode())
                for u in full]
    # e.g. the feed fan-out of the posts just written
    settled = round(settled + cpu.wait_quiet(meter, quiet, timeout=options.settle_seconds), 1)
    before = meter.snapshot()
    tally = openloop.run(requests, mode="open", rate=rate, seconds=options.open_seconds,
                         connections=options.open_connections, processes=options.open_processes)
    opened = stats.latency_summary(tally)
    opened["cpu"] = cpu_record(meter.delta(before, meter.snapshot()), opened["answered"], servers,
                               tally.cpu_seconds)
    opened["rate"] = rate
    opened["client_kept_up"], opened["client_note"] = stats.offered_capacity_check(opened, rate)
    return {"route": route.label, "instances": len(urls), "settled_seconds": settled,
            "closed": closed, "open": opened}


def describe(m: dict) -> str:
    c, o = m["closed"], m["open"]
    return (f"{m['route']} × {m['instances']}: {c['per_second']} req/s max (p99 {c['p99_ms']} ms at "
            f"{c['connections']} connections, {c['errors']} errors, machine {c['cpu']['machine_percent']} %, "
            f"{c['cpu']['us_per_request']['servers']} µs/request); open-loop {o['rate']:g}/s: p99 "
            f"{o['p99_ms']} ms, {o['errors']} errors, client {o['client_cpu_percent']} % "
            f"({'kept up' if o['client_kept_up'] else o['client_note']})")


def measure_rest(target: Target, options: Options) -> dict:
    out: dict = {"tool_closed": "wrk" if wrk.wrk_path() else "python closed loop (wrk not installed)",
                 "tool_open": "loadtest.openloop (uvloop, raw HTTP/1.1)",
                 "open_fraction": options.open_fraction, "connections": options.connections,
                 "open_connections": options.open_connections,
                 "closed_seconds": options.closed_seconds, "open_seconds": options.open_seconds}
    port = free_port()
    bare = target.start_process("saturation-bare-http", [
        sys.executable, "-m", "loadtest.baselines", "http-server", "--port", str(port)])
    try:
        wait_for_port(port, process=bare)
        meter = cpu.CpuMeter({"bare-aiohttp": cpu.fixed(bare.pid)})
        out["bare"] = measure_route(BARE_ROUTE, [f"http://127.0.0.1:{port}"], {}, meter,
                                    ["bare-aiohttp"], options, warm=True)
        target.log(describe(out["bare"]))
    finally:
        target.stop_process(bare)
    bare_rps = out["bare"]["closed"]["per_second"]
    bare_us = out["bare"]["closed"]["cpu"]["us_per_request"]["servers"]
    meter = target.meter()
    servers = list(target.pids)
    headers = {"Authorization": f"Bearer {target.token}"}
    names = list(target.urls)
    out["routes"] = {}
    for route in pulse_routes(target.profile_id):
        if options.routes and route.key not in options.routes:
            continue
        runs = {}
        for n in options.instances:
            m = measure_route(route, [target.urls[k] for k in names[:n]], headers, meter, servers,
                              options, warm=not runs)
            m["ratio_to_bare"] = stats.ratio(m["closed"]["per_second"], bare_rps)
            m["cpu_ratio_to_bare"] = stats.ratio(m["closed"]["cpu"]["us_per_request"]["servers"], bare_us, 2)
            runs[str(n)] = m
            target.log(describe(m) + f"; {m['ratio_to_bare']} × bare")
        out["routes"][route.key] = runs
    return out


# --- chat ------------------------------------------------------------------------------------

def _metrics_mongo_commands(urls: list[str]) -> float | None:
    total = 0.0
    for url in urls:
        try:
            with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return None
        total += sum(t["count"] for t in mongo_totals(text).values())
    return total


def _create_conversations(url: str, accounts: list[dict], shape: chat.Shape) -> list[str]:
    ids = []
    for g in range(shape.groups):
        members = accounts[g * shape.group_size:(g + 1) * shape.group_size]
        request = urllib.request.Request(
            f"{url}{API}/conversations", method="POST",
            data=json.dumps({"title": f"saturation group {g}",
                             "member_ids": [a["user_id"] for a in members[1:]]}).encode(),
            headers={"Authorization": f"Bearer {members[0]['token']}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            ids.append(json.loads(response.read())["id"])
    return ids


def measure_chat(target: Target, options: Options) -> dict:
    shape = chat.Shape()
    if len(target.chat_accounts) < shape.users:
        raise RuntimeError(f"chat needs {shape.users} accounts with a token, the seed has "
                           f"{len(target.chat_accounts)}")
    rates = list(options.chat_rates)
    out: dict = {"rates": rates}
    # Bare python-socketio + AsyncRedisManager: two servers on this run's Redis db.
    channel = f"saturation-{os.getpid()}-{time.time_ns()}"
    ports = [free_port() for _ in range(shape.servers)]
    servers = [target.start_process(f"saturation-bare-sio-{k}", [
        sys.executable, "-m", "loadtest.realtime_perf.bare_sio", "--port", str(port),
        "--redis", target.redis_url, "--channel", channel]) for k, port in enumerate(ports)]
    workers = None
    try:
        for port, server in zip(ports, servers):
            wait_for_port(port, process=server)
        auths = [{"token": f"u{m}", "group": m // shape.group_size} for m in range(shape.users)]
        workers = chat.Workers([f"http://127.0.0.1:{p}" for p in ports], auths,
                               [f"g:{g}" for g in range(shape.groups)], shape)
        connected, errors = workers.wait_connected()
        names = [f"bare-sio-{k}" for k in range(shape.servers)]
        meter = cpu.CpuMeter({n: cpu.fixed(s.pid) for n, s in zip(names, servers)})
        meter.add("redis", cpu.redis_server(urlsplit(target.redis_url).port or 6379))
        meter.add("clients", cpu.fixed(*workers.pids))
        target.log(f"chat, bare python-socketio: {connected} sockets, failed: {errors or 'none'}")
        out["bare"] = {"connected": connected, "connect_errors": errors, **chat.run_steps(
            workers, shape, rates, seconds=options.chat_seconds, drain=options.chat_drain,
            meter=meter, server_groups=names, store_groups=["redis"], log=target.log)}
    finally:
        if workers is not None:
            workers.stop()
        for server in servers:
            target.stop_process(server)
    # Pulse: the whole chat path on both instances.
    urls = list(target.urls.values())[:shape.servers]
    accounts = target.chat_accounts[:shape.users]
    conversations = _create_conversations(urls[0], accounts, shape)
    workers = chat.Workers(urls, [{"token": a["token"]} for a in accounts], conversations, shape)
    try:
        connected, errors = workers.wait_connected()
        meter = target.meter()
        meter.add("clients", cpu.fixed(*workers.pids))
        target.log(f"chat, Pulse message:send: {connected} sockets, failed: {errors or 'none'}")

        def after(step: dict, commands_before: float | None) -> None:
            commands_after = _metrics_mongo_commands(urls)
            if commands_before is not None and commands_after is not None and step["acked"]:
                step["mongo_commands_per_message"] = round(
                    (commands_after - commands_before) / step["acked"], 2)

        out["pulse"] = {"connected": connected, "connect_errors": errors, **chat.run_steps(
            workers, shape, rates, seconds=options.chat_seconds, drain=options.chat_drain,
            meter=meter, server_groups=list(target.pids), store_groups=list(STORE_GROUPS),
            before_step=lambda: _metrics_mongo_commands(urls), after_step=after, log=target.log)}
    finally:
        workers.stop()
    out["sustained_ratio_to_bare"] = stats.ratio(out["pulse"]["max_sustained_per_second"],
                                                 out["bare"]["max_sustained_per_second"])
    return out


def measure(target: Target, options: Options) -> dict:
    started = time.monotonic()
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    "load_average_before": [round(x, 2) for x in os.getloadavg()],
                    "cpus": os.cpu_count()}
    if options.rest:
        result["rest"] = measure_rest(target, options)
    if options.chat:
        result["chat"] = measure_chat(target, options)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def flat_figures(result: dict) -> dict:
    """The figures the targets judge (baselines.json keys), from a ``measure`` result."""
    out: dict = {}
    rest = result.get("rest") or {}
    bare = (rest.get("bare") or {}).get("closed") or {}
    if bare:
        out["saturation_bare_aiohttp_rps"] = bare.get("per_second")
    for key, runs in (rest.get("routes") or {}).items():
        one = runs.get("1")
        if one:
            out[f"rest_ratio_{key}"] = one.get("ratio_to_bare")
            out[f"rest_p99_ms_{key}"] = one["closed"].get("p99_ms")
            out[f"rest_errors_{key}"] = one["closed"].get("errors", 0) + one["open"].get("errors", 0)
    chat_result = result.get("chat") or {}
    bare_chat, pulse = chat_result.get("bare") or {}, chat_result.get("pulse") or {}

    def at_10k(steps: list[dict]) -> dict | None:
        return next((s for s in steps if s.get("target_per_second") == 10000), None)

    if pulse:
        out["chat_max_sustained_per_second"] = pulse.get("max_sustained_per_second")
        out["pulse_chat_fanout_max_per_second"] = pulse.get("max_sustained_per_second")
        step = at_10k(pulse.get("steps", []))
        if step is not None:
            out["chat_p99_ms_at_10k"] = step.get("p99_ms")
            out["chat_delivered_ratio_at_10k"] = step.get("delivered_ratio")
            bare_step = at_10k(bare_chat.get("steps", []))
            if bare_step is not None:
                out["chat_fanout_p99_ratio_at_10k"] = stats.ratio(step.get("p99_ms"), bare_step.get("p99_ms"))
    if bare_chat:
        out["socketio_broadcast_max_per_second"] = bare_chat.get("max_sustained_per_second")
    if chat_result.get("sustained_ratio_to_bare") is not None:
        out["chat_fanout_max_sustained_ratio"] = chat_result["sustained_ratio_to_bare"]
    return out


def write(result: dict, results_dir: Path) -> Path:
    path = results_dir / RESULT_JSON
    path.write_text(json.dumps(result, indent=2))
    return path


def seed_accounts(seed: dict) -> tuple[str, str, list[dict]]:
    """From a seed document (``loadtest.seed --login-per-pool``): the REST user's token (the
    first of the REST pool), a popular user's id for the cached profile (not the REST user,
    whose posts invalidate their own profile), and the other accounts with a token for chat
    (the fan-out host, the last user, left out)."""
    from loadtest.seeddata import pool_index

    users, tokens = seed["users"], seed.get("tokens", {})
    rest_index = pool_index("rest", 0, seed.get("chat_members", 0), len(users))
    if str(rest_index) not in tokens:
        raise RuntimeError("the seed logged in no REST account (seed with --login-per-pool)")
    popular = [i for i in seed.get("popular", []) if i != rest_index] or [
        i for i in range(len(users)) if i != rest_index]
    chat_accounts = [{"token": tokens[k], "user_id": users[int(k)]["id"]}
                     for k in sorted(tokens, key=int) if int(k) not in (rest_index, len(users) - 1)]
    return tokens[str(rest_index)], users[popular[0]]["id"], chat_accounts
