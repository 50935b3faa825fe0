"""The seed's figures that the bench samples rather than times per request (pool utilisation,
replication lag), computed on data a short bench run recorded, and the seed's table."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from loadtest import report
from loadtest.capacity import source_addresses, users_needed

DATA = Path(__file__).resolve().parents[1] / "data" / "loadtest"
POOL = DATA / "bench-pg_pool.csv"
LAG = DATA / "bench-pg_replication_lag.csv"


def seed_targets() -> list[report.Target]:
    return [t for t in report.load_targets() if t.origin == "seed"]


def test_the_shipped_seed_table_has_the_five_figures():
    assert [(t.metric, t.kind, t.limit) for t in seed_targets()] == [
        ("avg", None, 25.0), ("pool_average_utilisation", None, 0.60),
        ("mongo_avg", "write", 5.0), ("mongo_avg", "read", 10.0), ("replication_lag_p99", None, 100.0)]


def test_pool_utilisation_is_the_busiest_instances_mean_share_in_use():
    pool = report.read_pool_samples(POOL)
    target = next(t for t in seed_targets() if t.metric == "pool_average_utilisation")
    result = report.evaluate([target], [], pool)[0]
    # Recorded: 11 scrapes per instance of a 20-connection pool; after each instance's first
    # (which only opens the window) each had 1 in use once: 1/20 over 10 samples; a tie, the
    # first instance is named.
    assert result.value == pytest.approx(1 / 20 / 10)
    assert result.passed is True
    assert "10 samples" in result.detail and "max 20" in result.detail and "(pulse-a)" in result.detail
    # The same samples with every connection busy fail the seed's 60 %.
    busy = [report.PoolSample(x.t, x.instance, x.size, x.size * 0.7) for x in pool]
    assert report.evaluate([target], [], busy)[0].value == pytest.approx(0.7)
    assert report.evaluate([target], [], busy)[0].passed is False
    assert report.evaluate([target], [], [])[0].passed is None


def test_replication_lag_p99_counts_caught_up_samples_as_no_lag():
    lag = report.read_lag_samples(LAG)
    with open(LAG, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(lag) == len(rows) == 517
    idle = [x for x in lag if x.seconds is None]
    assert len(idle) == sum(1 for r in rows if r["replay_lag_seconds"] == "") == 90
    target = next(t for t in seed_targets() if t.metric == "replication_lag_p99")
    result = report.evaluate([target], [], lag=lag)[0]
    # Nearest rank 512 of 517: the recorded lags sorted, the idle ones as 0 ms.
    ordered = sorted(float(r["replay_lag_seconds"] or 0) * 1000 for r in rows)
    assert result.value == pytest.approx(ordered[511]) == pytest.approx(4.465)
    assert result.passed is True
    assert "517 samples" in result.detail and "90 caught up" in result.detail and "max 8.6 ms" in result.detail
    assert report.evaluate([target], [], lag=[])[0].passed is None  # no replica: no verdict
    behind = [report.LagSample(x.t, x.replica, 0.1) for x in lag]
    assert report.evaluate([target], [], lag=behind)[0].passed is False  # 100 ms is not < 100


def test_lag_is_judged_per_step_on_the_samples_inside_the_window():
    lag = report.read_lag_samples(LAG)
    t0 = lag[0].t
    samples = [report.Sample(1.0, "GET", "/api/v1/feed", 5.0, False),
               report.Sample(30.0, "GET", "/api/v1/feed", 5.0, False)]
    steps = report.steady_windows([40, 80], 25, 5)
    target = next(t for t in seed_targets() if t.metric == "replication_lag_p99")
    results = report.evaluate_steps([target], samples, steps, pool_t0=t0, lag=lag)
    for step_result in results:
        inside = [x for x in lag if t0 + step_result.step.start <= x.t < t0 + step_result.step.end]
        assert f"{len(inside)} samples" in step_result.results[0].detail
        assert len(inside) > 150  # 20 s of samples every 100 ms, less the machine's delays


def test_report_shows_the_seed_table_together(tmp_path):
    with open(tmp_path / report.STATS_CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Type", "Name", "Request Count", "Failure Count", "Average Response Time",
                         "Max Response Time", "Requests/s", "50%", "95%", "99%"])
        writer.writerow(["GET", "/api/v1/feed", 100, 0, 12.0, 40, 5, 10, 20, 30])
    shutil.copy(POOL, tmp_path / report.POOL_CSV)
    shutil.copy(LAG, tmp_path / report.REPLICATION_LAG_CSV)
    path, results = report.build(tmp_path, plots=False)
    lines = path.read_text().splitlines()
    start = lines.index("## The seed's table")
    table = [line for line in lines[start:start + 12] if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0].lstrip("| ") for row in table] == [t.name for t in seed_targets()]
    verdicts = {row.split(" | ")[0].lstrip("| "): row.split(" | ")[3] for row in table}
    assert verdicts["PostgreSQL replication lag p99"] == "PASS"
    assert verdicts["MongoDB writes, average"] == "n/a"  # no MongoDB timings in this directory
    assert "| PostgreSQL replication lag p99 | < 100.0 ms | 4.5 ms | PASS |" in path.read_text()


def test_capacity_spreads_sockets_over_users_and_source_addresses():
    # The server's caps: 20 sockets a user, 32 sessions pending their connect per address.
    assert users_needed(20000, 20) == 1000 and users_needed(20001, 20) == 1001
    assert source_addresses(20000, 200, 32) == 7  # 200 connects in flight, <= 32 per address
    assert source_addresses(50000, 32, 32) == 3  # and <= 20000 sockets (ports) per address
