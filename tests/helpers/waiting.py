"""Waiting for what happens asynchronously, bounded."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any


async def eventually(check, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Polls ``check`` (sync or async) until it returns something truthy, which is returned;
    fails after ``timeout`` seconds. For effects that happen asynchronously (events, pushes)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(interval)


def run_sync(coro) -> Any:
    """Runs a coroutine to completion from sync code, even inside a running loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
