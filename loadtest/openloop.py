"""An open-loop HTTP load client: requests on a fixed timetable, latency from the timetable.

    python -m loadtest.openloop --url http://127.0.0.1:8080/api/v1/users/me \
        -H "Authorization: Bearer T" --rate 800 --seconds 5

Closed-loop tools (wrk, locust) send the next request when the previous one returned, so a
slow server is offered less and its slow moments are under-sampled ("coordinated
omission"). Here request ``i`` is due at ``t0 + i / rate`` whatever happened before, and its
latency runs from that due time to the end of its response: time spent waiting for a free
connection, or behind a slow answer on the same connection, counts. Debian packages neither
wrk2 nor vegeta, hence this one.

It is built to stay out of the way of what it measures: one asyncio (uvloop) process with
raw HTTP/1.1 keep-alive connections (no client library per request); ``--processes`` splits
the rate over several. Each run reports its own CPU and how late the timetable ran
(``dispatch_lag``: the client's own delay, separate from waiting for a connection), which
tell whether the client could offer the rate. ``closed()`` is the closed-loop counterpart
(for machines without wrk).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import resource
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Request:
    """One request, pre-encoded: every send is the same bytes."""
    host: str
    port: int
    data: bytes

    @classmethod
    def build(cls, url: str, method: str = "GET", headers: dict[str, str] | None = None,
              body: bytes = b"") -> "Request":
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body or method not in ("GET", "HEAD", "DELETE"):
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        return cls(parts.hostname or "127.0.0.1", parts.port or 80, head + body)


class ResponseParser:
    """Incremental HTTP/1.1 response framing: Content-Length or chunked bodies."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[int]:
        """Adds bytes; returns the status codes of the responses now complete."""
        self.buffer += data
        done = []
        while True:
            status = self._one()
            if status is None:
                return done
            done.append(status)

    def _one(self) -> int | None:
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buf[:end]).lower()
        status = int(head[9:12])
        body_start = end + 4
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17:stop if stop >= 0 else len(head)])
            if len(buf) < body_start + length:
                return None
            del buf[:body_start + length]
            return status
        if b"\r\ntransfer-encoding: chunked" in head:
            pos = body_start
            while True:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    return None
                size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
                pos = line_end + 2 + size + 2
                if len(buf) < pos:
                    return None
                if size == 0:
                    del buf[:pos]
                    return status
        if status in (204, 304) or 100 <= status < 200:
            del buf[:body_start]
            return status
        raise ValueError("response without a length (connection-delimited bodies are not supported)")


class Connection(asyncio.Protocol):
    """One keep-alive connection, one request in flight at a time."""

    def __init__(self, pool: "Pool") -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser()
        self.due: float | None = None      # timetable time of the request in flight
        self.sent_at = 0.0
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.ready.set_result(None)

    def send(self, due: float) -> None:
        self.due = due
        self.sent_at = time.perf_counter()
        self.transport.write(self.pool.request.data)

    def data_received(self, data: bytes) -> None:
        try:
            statuses = self.parser.feed(data)
        except ValueError:
            self.pool.failed(self, "protocol")
            return
        for status in statuses:
            due, self.due = self.due, None
            if due is not None:
                self.pool.finished(self, due, status)

    def connection_lost(self, exc) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed"))
        self.pool.lost(self)


@dataclass
class Tally:
    """What one process saw. Latencies in ms from the due time (open) or the send (closed)."""
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    dispatch_lag_ms: list[float] = field(default_factory=list)
    offered: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Pool:
    """Connections to one address; due requests wait in a FIFO for an idle connection."""

    def __init__(self, request: Request, size: int, tally: Tally, timeout: float) -> None:
        self.request = request
        self.size = size
        self.tally = tally
        self.timeout = timeout
        self.idle: deque[Connection] = deque()
        self.busy: set[Connection] = set()
        self.backlog: deque[float] = deque()
        self.closed_loop_until: float | None = None
        self.opening = 0
        self.closing = False

    async def open(self) -> None:
        await asyncio.gather(*(self._connect() for _ in range(self.size)))

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.opening += 1
        try:
            _, conn = await loop.create_connection(lambda: Connection(self), self.request.host,
                                                   self.request.port)
            await conn.ready
        except OSError:
            self.tally.error("connect")
            return
        finally:
            self.opening -= 1
        self._give(conn)

    def submit(self, due: float) -> None:
        if self.idle:
            conn = self.idle.popleft()
            self.busy.add(conn)
            conn.send(due)
        else:
            self.backlog.append(due)

    def _give(self, conn: Connection) -> None:
        """A connection is free: the oldest due request, or a new one when closed-loop."""
        if self.backlog:
            self.busy.add(conn)
            conn.send(self.backlog.popleft())
        elif self.closed_loop_until is not None and time.perf_counter() < self.closed_loop_until:
            self.busy.add(conn)
            conn.send(time.perf_counter())
        else:
            self.busy.discard(conn)
            self.idle.append(conn)

    def finished(self, conn: Connection, due: float, status: int) -> None:
        now = time.perf_counter()
        start = conn.sent_at if self.closed_loop_until is not None else due
        self.tally.latencies_ms.append((now - start) * 1000)
        self.tally.statuses[status] = self.tally.statuses.get(status, 0) + 1
        self._give(conn)

    def failed(self, conn: Connection, kind: str) -> None:
        self.tally.error(kind)
        conn.due = None
        conn.transport.close()

    def lost(self, conn: Connection) -> None:
        if conn.due is not None:
            self.tally.error("closed")
        self.busy.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        # Keep the pool at its size (a server may close idle keep-alive connections).
        if not self.closing and len(self.busy) + len(self.idle) + self.opening < self.size:
            asyncio.get_running_loop().create_task(self._connect())

    def expire(self, now: float) -> None:
        for conn in list(self.busy):
            if conn.due is not None and now - conn.sent_at > self.timeout:
                self.failed(conn, "timeout")

    def close(self) -> None:
        self.closing = True
        for conn in list(self.idle) + list(self.busy):
            if conn.transport is not None:
                conn.transport.close()


TICK = 0.001


def _cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _watch(pools: list[Pool], stop: asyncio.Event) -> None:
    while not stop.is_set():
        now = time.perf_counter()
        for pool in pools:
            pool.expire(now)
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except asyncio.TimeoutError:
            pass


async def open_loop(requests: list[Request], rate: float, seconds: float, connections: int,
                    timeout: float = 5.0, phase: float = 0.0, start_at: float | None = None) -> Tally:
    """Offers ``rate`` requests/s for ``seconds``, request i to ``requests[i % len]``;
    ``connections`` in all, split over the targets. ``phase`` (0..1) shifts the timetable by
    that fraction of an interval (processes sharing a rate interleave); ``start_at`` (wall
    clock) is when the timetable starts (processes started one after the other begin together)."""
    tally = Tally()
    pools = [Pool(r, max(1, connections // len(requests)), tally, timeout) for r in requests]
    await asyncio.gather(*(p.open() for p in pools))
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(pools, stop))
    total = int(rate * seconds)
    cpu0 = _cpu_now()
    start = 0.01 if start_at is None else max(0.0, start_at - time.time())
    t0 = time.perf_counter() + start + phase / rate
    await asyncio.sleep(max(0.0, t0 - time.perf_counter() - TICK))
    i = 0
    while i < total:
        now = time.perf_counter()
        due_count = min(total, int((now - t0) * rate) + 1)
        while i < due_count:
            due = t0 + i / rate
            tally.dispatch_lag_ms.append(max(0.0, now - due) * 1000)
            pools[i % len(pools)].submit(due)
            i += 1
        # Timers are ms-grained: shorter sleeps would spin. Whatever fell due meanwhile is
        # sent on the next tick (its latency still runs from its due time).
        await asyncio.sleep(max(TICK, t0 + i / rate - time.perf_counter()))
    tally.offered = total
    deadline = time.perf_counter() + timeout
    while any(p.busy or p.backlog for p in pools) and time.perf_counter() < deadline:
        await asyncio.sleep(0.005)
    tally.seconds = time.perf_counter() - t0
    tally.cpu_seconds = _cpu_now() - cpu0
    for pool in pools:
        for _ in pool.backlog:
            tally.error("unsent")
        pool.backlog.clear()
    stop.set()
    await watcher
    for pool in pools:
        pool.close()
    return tally


async def closed_loop(requests: list[Request], seconds: float, connections: int,
                      timeout: float = 5.0, start_at: float | None = None) -> Tally:
    """Each connection sends its next request as soon as the previous one is answered."""
    tally = Tally()
    pools = [Pool(r, max(1, connections // len(requests)), tally, timeout) for r in requests]
    await asyncio.gather(*(p.open() for p in pools))
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(pools, stop))
    cpu0 = _cpu_now()
    t0 = time.perf_counter()
    for pool in pools:
        pool.closed_loop_until = t0 + seconds
        for _ in range(len(pool.idle)):
            pool._give(pool.idle.popleft())
    await asyncio.sleep(seconds)
    deadline = time.perf_counter() + timeout
    while any(p.busy for p in pools) and time.perf_counter() < deadline:
        await asyncio.sleep(0.005)
    tally.seconds = time.perf_counter() - t0
    tally.cpu_seconds = _cpu_now() - cpu0
    tally.offered = len(tally.latencies_ms)
    stop.set()
    await watcher
    for pool in pools:
        pool.close()
    return tally


def _install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass


def _child(spec: dict, conn) -> None:
    _install_uvloop()
    requests = [Request(**r) for r in spec["requests"]]
    if spec["mode"] == "open":
        tally = asyncio.run(open_loop(requests, spec["rate"], spec["seconds"], spec["connections"],
                                      spec["timeout"], spec["phase"], spec["start_at"]))
    else:
        tally = asyncio.run(closed_loop(requests, spec["seconds"], spec["connections"],
                                        spec["timeout"], spec["start_at"]))
    conn.send(tally.__dict__)
    conn.close()


def merge(tallies: list[Tally]) -> Tally:
    out = Tally()
    for t in tallies:
        out.latencies_ms += t.latencies_ms
        out.dispatch_lag_ms += t.dispatch_lag_ms
        for k, v in t.statuses.items():
            out.statuses[k] = out.statuses.get(k, 0) + v
        for k, v in t.errors.items():
            out.errors[k] = out.errors.get(k, 0) + v
        out.offered += t.offered
        out.cpu_seconds += t.cpu_seconds
        out.seconds = max(out.seconds, t.seconds)
    return out


def run(requests: list[Request], *, mode: str = "open", rate: float = 0.0, seconds: float = 5.0,
        connections: int = 64, timeout: float = 5.0, processes: int = 1,
        on_start=None) -> Tally:
    """Runs in ``processes`` spawned processes (each rate / processes, interleaved) and merges
    their tallies. ``on_start(pids)`` is called once they are running (to sample their CPU)."""
    ctx = mp.get_context("spawn")
    children = []
    # Several children: time for each to start its interpreter and connect, then all begin
    # together. One begins as soon as it is ready.
    start_at = time.time() + 1.0 + 0.5 * processes if processes > 1 else None
    for k in range(processes):
        parent, child = ctx.Pipe(duplex=False)
        spec = {"requests": [r.__dict__ for r in requests], "mode": mode,
                "rate": rate / processes, "seconds": seconds,
                "connections": max(len(requests), connections // processes),
                "timeout": timeout, "phase": k / processes, "start_at": start_at}
        proc = ctx.Process(target=_child, args=(spec, child), daemon=True)
        proc.start()
        child.close()
        children.append((proc, parent))
    if on_start is not None:
        on_start([p.pid for p, _ in children])
    tallies = []
    for proc, parent in children:
        try:
            if parent.poll(seconds + 2 * timeout + 30):
                tallies.append(Tally(**parent.recv()))
        except EOFError:  # the child died: said below
            pass
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    if len(tallies) < processes:
        raise RuntimeError(f"{processes - len(tallies)} open-loop client process(es) gave no result")
    return merge(tallies)


def main(argv: list[str] | None = None) -> None:
    from loadtest.saturation.stats import latency_summary

    parser = argparse.ArgumentParser(prog="python -m loadtest.openloop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", action="append", required=True,
                        help="target; repeat for several (requests alternate between them)")
    parser.add_argument("-X", "--method", default="GET")
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--body", default="")
    parser.add_argument("--rate", type=float, default=1000, help="requests per second")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=5)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--closed", action="store_true", help="closed loop (rate ignored)")
    args = parser.parse_args(argv)
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    if args.body:
        headers.setdefault("Content-Type", "application/json")
    requests = [Request.build(u, args.method, headers, args.body.encode()) for u in args.url]
    tally = run(requests, mode="closed" if args.closed else "open", rate=args.rate,
                seconds=args.seconds, connections=args.connections, timeout=args.timeout,
                processes=args.processes)
    json.dump(latency_summary(tally), sys.stdout)
    print()


if __name__ == "__main__":
    main()
