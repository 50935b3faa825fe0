"""An asyncio loop beside locust's gevent: thousands of light sockets in one native thread.

Locust runs users as greenlets on a monkey-patched stdlib; asyncio (uvloop when
installed) runs in a real OS thread of the same process, started with the unpatched
``start_new_thread``. Coroutines are handed over with ``run_coroutine_threadsafe``;
measurements come back through a lock-free deque that a greenlet drains into locust's
``request`` event, so locust's stats are only ever touched from the gevent side.
"""
from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import Future
from typing import Any, Coroutine

import aiohttp

try:  # The loop sits beside gevent: start a *native* thread even when patched.
    from gevent import monkey as _monkey

    _start_native_thread = _monkey.get_original("_thread", "start_new_thread")
except ImportError:  # pragma: no cover - locust always brings gevent
    import _thread

    _start_native_thread = _thread.start_new_thread


class AsyncBridge:
    """One per locust Environment (see :func:`bridge_for`)."""

    def __init__(self, environment):
        self.environment = environment
        self.loop: asyncio.AbstractEventLoop | None = None
        self.session: aiohttp.ClientSession | None = None
        self._samples: collections.deque = collections.deque()
        self._ready = False
        self._drainer = None

    def start(self) -> None:
        if self.loop is not None:
            return
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        self.loop = loop
        _start_native_thread(self._run, ())
        self.session = self.run(self._open_session(), timeout=10)
        import gevent

        self._drainer = gevent.spawn(self._drain_forever)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _open_session(self) -> aiohttp.ClientSession:
        # No connection cap: each socket holds its own connection for the whole run.
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        return aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30))

    def submit(self, coro: Coroutine) -> Future:
        """Schedule ``coro`` on the asyncio thread; returns a concurrent Future."""
        assert self.loop is not None, "bridge not started"
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine, timeout: float = 30.0) -> Any:
        """Run ``coro`` and wait for it without blocking other greenlets."""
        import gevent

        future = self.submit(coro)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                future.cancel()
                raise TimeoutError("coroutine on the asyncio thread timed out")
            gevent.sleep(0.002)
        return future.result()

    def record(self, request_type: str, name: str, response_time_ms: float,
               response_length: int = 0, exception: BaseException | None = None) -> None:
        """Thread-safe: queue one measurement for locust's stats."""
        self._samples.append((request_type, name, response_time_ms, response_length, exception))

    def _drain(self) -> None:
        fire = self.environment.events.request.fire
        samples = self._samples
        while samples:
            request_type, name, response_time, length, exc = samples.popleft()
            fire(request_type=request_type, name=name, response_time=response_time,
                 response_length=length, exception=exc, context={})

    def _drain_forever(self) -> None:
        import gevent

        while True:
            self._drain()
            gevent.sleep(0.05)

    def stop(self) -> None:
        if self.loop is None:
            return
        if self.session is not None:
            try:
                self.run(self.session.close(), timeout=5)
            except Exception:
                pass
        self._drain()
        if self._drainer is not None:
            self._drainer.kill(block=False)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.loop = None


_bridges: dict[int, AsyncBridge] = {}


def bridge_for(environment) -> AsyncBridge:
    """The environment's bridge, started; greenlets that ask while it starts wait for it."""
    import gevent

    bridge = _bridges.get(id(environment))
    if bridge is None:
        bridge = _bridges[id(environment)] = AsyncBridge(environment)
        bridge.start()
        environment.events.quitting.add_listener(lambda **_: bridge.stop())
    while bridge.session is None:
        gevent.sleep(0.01)
    return bridge
