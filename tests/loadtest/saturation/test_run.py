"""One REST route measured end to end against the real app: closed loop (wrk, or the
Python client without it), then open loop at 70 % of that maximum, with CPU accounting."""
from __future__ import annotations

import asyncio
import os

import pytest

from loadtest.saturation import cpu, run, stats

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.slow
async def test_measure_route_against_the_app(start_app):
    # Rate limits off, as make bench runs Pulse: the per-token limit (6000 a minute) is
    # within reach of a closed loop on a cached read.
    async with start_app(rate_limits=False) as api:
        account = await api.register("satrest")
        route = run.Route("users_me", "GET /users/me", "GET", "/api/v1/users/me")
        options = run.Options(closed_seconds=1, open_seconds=1, warmup_seconds=0, connections=8,
                              open_connections=8)
        meter = cpu.CpuMeter({"pulse": cpu.fixed(os.getpid())})
        # In a thread: the app under test serves on this loop meanwhile.
        m = await asyncio.to_thread(run.measure_route, route, [api.base_url],
                                    {"Authorization": f"Bearer {account.token}"}, meter, ["pulse"],
                                    options, True)
        closed, opened = m["closed"], m["open"]
        assert m["route"] == "GET /users/me" and m["instances"] == 1
        assert closed["answered"] > 0 and closed["errors"] == 0 and closed["per_second"] > 0
        assert 0 < closed["p50_ms"] <= closed["p99_ms"] <= closed["max_ms"]
        assert closed["cpu"]["us_per_request"]["servers"] > 0
        # The open loop offered 70 % of the maximum for 1 s, every request answered 200.
        assert opened["rate"] == stats.open_loop_rate(closed["per_second"])
        assert opened["offered"] == int(opened["rate"] * 1)
        assert opened["answered"] == opened["ok"] == opened["offered"] and opened["errors"] == 0
        assert opened["cpu"]["us_per_request"]["servers"] > 0
        assert isinstance(opened["client_kept_up"], bool) and opened["client_note"]


async def test_unauthenticated_requests_are_counted_as_errors(api, server):
    route = run.Route("users_me", "GET /users/me", "GET", "/api/v1/users/me")
    options = run.Options(closed_seconds=0.5, open_seconds=0.5, warmup_seconds=0, connections=2,
                          open_connections=2, open_fraction=0.05)
    meter = cpu.CpuMeter({"pulse": cpu.fixed(os.getpid())})
    m = await asyncio.to_thread(run.measure_route, route, [api.base_url], {}, meter, ["pulse"],
                                options, False)
    assert m["closed"]["answered"] > 0 and m["closed"]["errors"] == m["closed"]["answered"]
    assert m["open"]["error_kinds"] == {"http 401": m["open"]["answered"]}


async def test_without_wrk_the_python_closed_loop_stands_in(api, server, monkeypatch, tmp_path):
    from loadtest.saturation import wrk

    account = await api.register("satnowrk")
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH: no wrk
    assert wrk.wrk_path() is None
    result = await asyncio.to_thread(wrk.closed_loop, [api.base_url + "/api/v1/users/me"],
                                     headers={"Authorization": f"Bearer {account.token}"},
                                     seconds=0.5, connections=4)
    assert result["tool"] == "python closed loop (wrk not installed)"
    assert result["answered"] > 0 and result["errors"] == 0 and result["per_second"] > 0
    assert result["cpu_seconds"] > 0 and result["connections"] == 4
