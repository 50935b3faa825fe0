"""Stepped chat load: group chats over sockets, offered rates climbing until delivery lags.

Shape (bare python-socketio and Pulse alike, as in loadtest/realtime_perf's fan-out): 400
users in groups of 50 whose members alternate between 2 servers; every message is a
``message:send`` over a socket from one of the group's members (senders take turns), acked
by the server and received as ``message:new`` by every member's socket, the sender's
included (50 deliveries). For Pulse that is the whole chat path: the message is stored in
MongoDB before the ack, then fanned out across both instances. The baseline is stock
python-socketio + AsyncRedisManager broadcasting to a room (``realtime_perf/bare_sio.py``),
which stores nothing.

Clients: one worker process per server holding that server's sockets (the light client of
:mod:`loadtest.sioclient` on uvloop). Messages follow a timetable (open loop): message n of a
step is due at ``start + n / rate`` and carries that due time, so each delivery's latency
runs from when the message should have been sent. Per step: offered vs delivered (by the end
of a drain), p50/p99 delivery latency, acks, CPU of the servers, the stores, the clients and
the machine. Climbing stops after the first step that does not keep up (its backlog would
weigh on the next).
"""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import resource
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from loadtest.saturation import cpu
from loadtest.saturation.stats import MAX_P99_MS, chat_step, keeps_up, lags, percentiles, sustained_maximum

CHAT_MARK = "sat|"
TICK = 0.002


def message_body(step: int, due: float, n: int) -> str:
    return f"{CHAT_MARK}{step}|{due:.6f}|{n}"


def parse_body(body: Any) -> tuple[int, float] | None:
    """(step, due time) of one of our messages, else None."""
    if not isinstance(body, str) or not body.startswith(CHAT_MARK):
        return None
    try:
        _, step, due, _n = body.split("|", 3)
        return int(step), float(due)
    except ValueError:
        return None


@dataclass(frozen=True)
class Shape:
    groups: int = 8
    group_size: int = 50
    servers: int = 2

    @property
    def users(self) -> int:
        return self.groups * self.group_size

    def sender(self, n: int) -> int:
        """Member (global index) sending message n: groups in turn, members in turn."""
        group = n % self.groups
        return group * self.group_size + (n // self.groups) % self.group_size

    def server_of(self, member: int) -> int:
        return member % self.servers


# --- the worker process --------------------------------------------------------------------

class Worker:
    """The sockets of one server, on an asyncio loop in a process of their own."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.shape = Shape(**spec["shape"])
        self.index = spec["server"]
        self.step = -1
        self.latencies: list[float] = []
        self.ack_latencies: list[float] = []
        self.ack_errors = 0
        self.acked = 0
        self.dispatch_lag: list[float] = []
        self.clients: dict[int, Any] = {}

    def on_event(self, name: str, data: Any) -> None:
        if name != "message:new" or not isinstance(data, dict):
            return
        parsed = parse_body((data.get("message") or {}).get("body"))
        if parsed is not None and parsed[0] == self.step:
            self.latencies.append((time.time() - parsed[1]) * 1000)

    async def connect(self, sessions: list) -> tuple[int, dict[str, int]]:
        """Connects every socket, spread over ``sessions`` (one per source address: Pulse
        bounds the handshakes in progress per client address), 48 at a time."""
        from loadtest.sioclient import SocketIOClient

        errors: dict[str, int] = {}
        members = self.spec["members"]  # [[global index, auth], ...]
        for start in range(0, len(members), 48):
            batch = members[start:start + 48]
            clients = [SocketIOClient(self.spec["url"], session=sessions[(start + i) % len(sessions)],
                                      auth=auth, on_event=self.on_event)
                       for i, (_, auth) in enumerate(batch)]
            results = await asyncio.gather(*(c.connect() for c in clients), return_exceptions=True)
            for (member, _), client, result in zip(batch, clients, results):
                if isinstance(result, BaseException):
                    kind = f"{type(result).__name__}: {str(result)[:80]}"
                    errors[kind] = errors.get(kind, 0) + 1
                else:
                    self.clients[member] = client
        return len(self.clients), errors

    async def send(self, member: int, n: int, due: float) -> None:
        client = self.clients.get(member)
        if client is None:
            self.ack_errors += 1
            return
        group = member // self.shape.group_size
        try:
            answer = await client.call("message:send", {
                "conversation_id": self.spec["conversations"][group],
                "body": message_body(self.step, due, n),
                "client_id": f"sat-{self.spec['run']}-{self.step}-{n}"}, timeout=10)
        except (ConnectionError, asyncio.TimeoutError):
            self.ack_errors += 1
            return
        if isinstance(answer, dict) and answer.get("ok"):
            self.acked += 1
            self.ack_latencies.append((time.time() - due) * 1000)
        else:
            self.ack_errors += 1

    async def run_step(self, step: int, rate: float, seconds: float, start_at: float,
                       drain: float) -> dict:
        self.step = step
        self.latencies, self.ack_latencies, self.dispatch_lag = [], [], []
        self.acked = self.ack_errors = 0
        mine = [n for n in range(int(rate * seconds))
                if self.shape.server_of(self.shape.sender(n)) == self.index]
        cpu0 = _cpu_self()
        tasks = set()
        i = 0
        await asyncio.sleep(max(0.0, start_at - time.time()))
        while i < len(mine):
            now = time.time()
            while i < len(mine) and start_at + mine[i] / rate <= now:
                n = mine[i]
                due = start_at + n / rate
                self.dispatch_lag.append((now - due) * 1000)
                task = asyncio.create_task(self.send(self.shape.sender(n), n, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if i < len(mine):
                await asyncio.sleep(max(TICK, start_at + mine[i] / rate - time.time()))
        await asyncio.sleep(max(0.0, start_at + seconds + drain - time.time()))
        unacked = len(tasks)
        for task in list(tasks):
            task.cancel()
        return {"sent": len(mine), "acked": self.acked, "ack_errors": self.ack_errors, "unacked": unacked,
                "latencies": self.latencies, "ack_latencies": self.ack_latencies,
                "dispatch_lag": self.dispatch_lag, "cpu_seconds": _cpu_self() - cpu0}


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker_main(spec: dict, conn) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_worker_loop(spec, conn))


async def _worker_loop(spec: dict, conn) -> None:
    import aiohttp

    worker = Worker(spec)
    loop = asyncio.get_running_loop()
    # Source addresses 127.0.<server + 1>.2-9, as loadtest/realtime_perf's clients.
    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(
        limit=0, local_addr=(f"127.0.{spec['server'] + 1}.{k}", 0))) for k in range(2, 10)]
    try:
        conn.send(("connected", *await worker.connect(sessions)))
        while True:
            command, args = await loop.run_in_executor(None, conn.recv)
            if command == "step":
                conn.send(("step", await worker.run_step(**args)))
            else:
                break
        await asyncio.gather(*(c.close() for c in worker.clients.values()), return_exceptions=True)
    finally:
        for session in sessions:
            await session.close()
    conn.send(("stopped", None))


class Workers:
    """One worker process per server; steps run on all of them at once."""

    def __init__(self, urls: list[str], auths: list[dict], conversations: list[str], shape: Shape):
        ctx = mp.get_context("spawn")
        run = uuid.uuid4().hex[:8]  # client ids unique across runs on the same stores
        self.procs = []
        for k, url in enumerate(urls):
            members = [[m, auths[m]] for m in range(shape.users) if shape.server_of(m) == k]
            spec = {"url": url, "server": k, "members": members, "conversations": conversations,
                    "shape": shape.__dict__, "run": run}
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(spec, child), daemon=True)
            proc.start()
            self.procs.append((proc, parent))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p, _ in self.procs]

    def wait_connected(self, timeout: float = 120) -> tuple[int, dict[str, int]]:
        """(sockets connected, {error: count} of those that did not)."""
        connected, errors = 0, {}
        for _, conn in self.procs:
            if not conn.poll(timeout):
                raise RuntimeError("chat clients did not connect in time")
            _, c, e = conn.recv()
            connected += c
            for kind, n in e.items():
                errors[kind] = errors.get(kind, 0) + n
        return connected, errors

    def run_step(self, **args) -> list[dict]:
        for _, conn in self.procs:
            conn.send(("step", args))
        budget = args["start_at"] - time.time() + args["seconds"] + args["drain"] + 30
        out = []
        for _, conn in self.procs:
            if not conn.poll(budget):
                raise RuntimeError("a chat client process gave no step result")
            out.append(conn.recv()[1])
        return out

    def stop(self) -> None:
        for proc, conn in self.procs:
            try:
                conn.send(("stop", None))
            except OSError:
                pass
        for proc, conn in self.procs:
            proc.join(15)
            if proc.is_alive():
                proc.kill()


# --- the controller ------------------------------------------------------------------------

def merge_step(parts: list[dict], shape: Shape, seconds: float) -> dict:
    """The workers' records of one step → its figures (see ``stats.chat_step``)."""
    latencies = [x for p in parts for x in p["latencies"]]
    step = chat_step(sum(p["sent"] for p in parts), shape.group_size, seconds, latencies,
                     sum(p["acked"] for p in parts), sum(p["ack_errors"] for p in parts),
                     sum(p["unacked"] for p in parts))
    acks = percentiles([x for p in parts for x in p["ack_latencies"]], (50, 99))
    step["ack_p50_ms"], step["ack_p99_ms"] = acks["p50_ms"], acks["p99_ms"]
    lag = percentiles([x for p in parts for x in p["dispatch_lag"]], (99,))
    step["dispatch_lag_p99_ms"] = lag["p99_ms"]
    step["client_cpu_seconds"] = round(sum(p["cpu_seconds"] for p in parts), 3)
    return step


def run_steps(workers: Workers, shape: Shape, rates: list[float], *, seconds: float, drain: float,
              meter, server_groups: list[str], store_groups: list[str],
              before_step: Callable[[], Any] | None = None,
              after_step: Callable[[dict, Any], None] | None = None,
              max_p99_ms: float = MAX_P99_MS, log: Callable[[str], None] = print) -> dict:
    """Offered delivery rates in turn (deliveries/s = messages/s × group size), each for
    ``seconds`` then ``drain`` seconds for what is in flight; stops after the first step that
    lags (``stats.lags``). A short warm-up at the first rate is run and left out."""
    steps = []
    quiet = [g for g in (*server_groups, *store_groups) if g in ("secantus", "postgresql") or g in server_groups]
    settled = cpu.wait_quiet(meter, quiet)
    warm = workers.run_step(step=0, rate=rates[0] / shape.group_size, seconds=1.0,
                            start_at=time.time() + 0.3, drain=1.0)
    del warm
    for k, rate in enumerate(rates, start=1):
        start_at = time.time() + 0.3
        context = before_step() if before_step else None
        while time.time() < start_at:
            time.sleep(0.01)
        first = meter.snapshot()
        parts = workers.run_step(step=k, rate=rate / shape.group_size, seconds=seconds,
                                 start_at=start_at, drain=drain)
        usage = meter.delta(first, meter.snapshot())
        step = merge_step(parts, shape, seconds)
        step["target_per_second"] = rate
        step["machine_cpu_percent"] = usage.machine_percent
        # This run's own processes (servers, stores, clients) as a share of the machine.
        step["measured_percent_of_machine"] = round(
            100 * sum(usage.cpu_seconds.values()) / usage.seconds / (os.cpu_count() or 1), 1)
        step["cpu_percent_of_core"] = {g: round(usage.percent_of_core(g), 1) for g in usage.cpu_seconds}
        step["client_cpu_percent"] = round(100 * step["client_cpu_seconds"] / usage.seconds, 1)
        delivered = step["delivered"]
        servers = usage.total(server_groups)
        stores = usage.total(store_groups)
        step["server_cpu_us_per_delivery"] = round(1e6 * servers / delivered, 1) if delivered else None
        step["stores_cpu_us_per_delivery"] = round(1e6 * stores / delivered, 1) if delivered else None
        step["server_cpu_us_per_message"] = round(1e6 * servers / step["acked"], 1) if step["acked"] else None
        if after_step:
            after_step(step, context)
        step["keeps_up"] = keeps_up(step, max_p99_ms=max_p99_ms)
        step["lags"] = lags(step)
        steps.append(step)
        log(f"  {rate:.0f}/s offered: {step['delivered']} of {step['expected']} delivered, "
            f"p99 {step['p99_ms']} ms, {step['acked']} acked ({step['ack_errors']} failed, "
            f"{step['unacked']} unanswered), "
            f"machine {step['machine_cpu_percent']} %, server {step['server_cpu_us_per_delivery']} µs/delivery")
        if step["lags"]:
            break
        time.sleep(0.5)
    return {"steps": steps, "max_sustained_per_second": sustained_maximum(steps, max_p99_ms=max_p99_ms),
            "sustained_means": f">= 99 % delivered within {drain:g} s after the step and p99 <= {max_p99_ms:g} ms",
            "shape": {"users": shape.users, "group_size": shape.group_size, "groups": shape.groups,
                      "servers": shape.servers},
            "step_seconds": seconds, "drain_seconds": drain, "settled_seconds": settled}
