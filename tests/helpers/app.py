"""The app under test: its settings, namespaces of an instance's own, closing an instance."""
from __future__ import annotations

import asyncio
import sys
import uuid
import warnings
from typing import Any

from aiohttp.test_utils import TestServer

from kernel.settings import Settings
from tests.helpers.stores import RUN_ID


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: cheap password hashing, a namespace of this run."""
    base = dict(
        mongo_db=f"pulse_test_{RUN_ID}",
        namespace=f"pulse-test-{RUN_ID}",
        instance_id=f"test-{RUN_ID}",
        argon2_time_cost=1,
        argon2_memory_kib=8192,
        argon2_parallelism=1,
        log_level="DEBUG",
        # Every test registers from 127.0.0.1; the limit itself is tested with its own apps.
        registrations_per_address_per_hour=1_000_000,
    )
    base.update(overrides)
    return Settings(**base)


def own_namespaces(make_amqp_vhost, label: str) -> dict[str, Any]:
    """Settings overrides giving an app instance namespaces of its own in Redis, MongoDB
    and RabbitMQ (its caches and events must not mix with the session app's)."""
    suffix = f"_{label}_{uuid.uuid4().hex[:6]}"
    return dict(namespace=f"pulse-test-{RUN_ID}{suffix}", mongo_db=f"pulse_test_{RUN_ID}{suffix}",
                amqp_url=make_amqp_vhost(suffix))


# An instance's shutdown was seen to hang, rarely, with an idle loop (causes found since: the
# outbox relay swallowing its cancellation, and Engine.IO sessions without a Socket.IO
# connection left open): a test instance gets this long to close, then the suite prints
# what every task was waiting on and goes on, saying so.
INSTANCE_CLOSE_TIMEOUT_SECONDS = 60


def describe_tasks() -> str:
    """Every task of the running loop with the chain of awaits it is suspended in, newest
    last (``Task.print_stack`` shows only the outermost frame of a suspended coroutine)."""
    lines = []
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        lines.append(f"task {task.get_name()}: {task!r}"[:300])
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is None:  # a future (a task awaited is listed on its own) or a finished coroutine
                lines.append(f"    awaits {awaited!r}"[:300])
                break
            lines.append(f"    {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return "\n".join(lines)


async def close_test_server(srv: TestServer) -> None:
    closing = asyncio.ensure_future(srv.close())
    done, _ = await asyncio.wait({closing}, timeout=INSTANCE_CLOSE_TIMEOUT_SECONDS)
    if done:
        closing.result()
        return
    tasks = describe_tasks()  # before the cancellation unwinds what it shows
    # At once, uncaptured: the run may not live to its warnings summary.
    print(f"a test instance did not close within {INSTANCE_CLOSE_TIMEOUT_SECONDS}s; the tasks:\n{tasks}",
          file=sys.__stderr__)
    closing.cancel()
    await asyncio.wait({closing}, timeout=5)  # bounded: the hang may swallow cancellations too
    warnings.warn(f"a test instance did not close within {INSTANCE_CLOSE_TIMEOUT_SECONDS}s (left behind); "
                  f"what its tasks were waiting on:\n{tasks}")
