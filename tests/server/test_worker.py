"""`pulse worker`: relays the outbox and runs the consumers without HTTP; SIGTERM stops it cleanly."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid

import aiohttp
import asyncpg
import pytest

from storage.embedded.processes import free_port
from tests.helpers.stores import RUN_ID
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.slow
async def test_worker_relays_and_consumes_then_stops_on_sigterm(make_pg_database, make_amqp_vhost, redis_url,
                                                                 mongo_url, tmp_path):
    dsn = make_pg_database("_worker")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(PULSE_POSTGRES_DSN=dsn, PULSE_AMQP_URL=make_amqp_vhost("_worker"), PULSE_REDIS_URL=redis_url,
               PULSE_MONGO_URL=mongo_url, PULSE_MONGO_DB=f"pulse_test_{RUN_ID}_worker",
               PULSE_NAMESPACE=f"pulse-test-{RUN_ID}-worker", PULSE_OUTBOX_POLL_SECONDS="0.2",
               PULSE_WORKER_METRICS_PORT=str(metrics_port := free_port()))
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "server.cli", "worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        async def migrated():
            assert proc.poll() is None, log_path.read_text()
            try:
                conn = await asyncpg.connect(dsn)
            except OSError:
                return False
            try:
                return await conn.fetchval("SELECT to_regclass('outbox') IS NOT NULL "
                                           "AND to_regclass('posts') IS NOT NULL")
            finally:
                await conn.close()

        await eventually(migrated, timeout=60, interval=0.3)
        conn = await asyncpg.connect(dsn)
        try:
            post_id = str(uuid.uuid4())
            event_id = await conn.fetchval(
                "INSERT INTO outbox (event_type, payload) VALUES ('post.unliked', $1::jsonb) RETURNING id",
                f'{{"post_id": "{post_id}", "post_author_id": "{uuid.uuid4()}", "actor_id": "{uuid.uuid4()}"}}')

            async def consumed():
                return await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM processed_events WHERE consumer = 'posts.popular' "
                    "AND event_id = $1) AND EXISTS (SELECT 1 FROM outbox WHERE id = $1 AND published_at IS NOT NULL)",
                    event_id)

            await eventually(consumed, timeout=30, interval=0.2)
        finally:
            await conn.close()
        # Its /metrics (the only HTTP it serves, with /healthz) counts what it did.
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                assert resp.status == 200
                metrics = await resp.text()
            async with http.get(f"http://127.0.0.1:{metrics_port}/api/v1/posts/popular") as resp:
                assert resp.status == 404
        assert 'pulse_events_published_total{event_type="post.unliked"} 1.0' in metrics
        assert 'pulse_events_consumed_total{consumer="posts.popular",outcome="ok"} 1.0' in metrics
        assert "pulse_outbox_lag_seconds_count 1.0" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.get_running_loop().run_in_executor(None, proc.wait, 30)
    output = log_path.read_text()
    assert proc.returncode == 0, output
    assert "worker running" in output and "worker stopping" in output
