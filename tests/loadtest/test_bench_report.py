"""Target evaluation of the bench report on a locust-shaped CSV written here."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from loadtest import report

HEADER = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time",
          "Average Response Time", "Min Response Time", "Max Response Time",
          "Average Content Size", "Requests/s", "Failures/s", "50%", "66%", "75%", "80%",
          "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]


def stats_row(type_, name, count, failures, avg, p50, p95, p99, max_, rps=10.0):
    values = dict.fromkeys(HEADER, "0")
    values.update({"Type": type_, "Name": name, "Request Count": count,
                   "Failure Count": failures, "Median Response Time": p50,
                   "Average Response Time": avg, "Max Response Time": max_, "Requests/s": rps,
                   "50%": p50, "95%": p95, "99%": p99, "100%": max_})
    return [values[h] for h in HEADER]


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    with open(tmp_path / report.STATS_CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerow(stats_row("GET", "/api/v1/feed", 1000, 0, 6.0, 5, 11, 14, 40))
        writer.writerow(stats_row("GET", "/api/v1/users/{id}", 3000, 0, 3.0, 2, 6, 12, 30))
        writer.writerow(stats_row("POST", "/api/v1/posts", 100, 1, 20.0, 18, 22, 24, 60))
        writer.writerow(stats_row("PUT", "/api/v1/posts/{id}/like", 300, 2, 10.0, 8, 20, 31, 70))
        writer.writerow(stats_row("socketio", "chat delivery", 5000, 0, 12.0, 9, 30, 45, 90))
        writer.writerow(stats_row("GET", "/api/v1/notifications", 0, 0, "N/A", "N/A", "N/A",
                                  "N/A", "N/A"))
        writer.writerow(stats_row("", "Aggregated", 9400, 3, 7.0, 5, 20, 30, 90))
    with open(tmp_path / report.POOL_CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t", "instance", "size", "in_use"])
        # The first sample of each instance is where counting starts (taken before the load).
        writer.writerows([[0, "a", 20, 3], [1, "a", 20, 12], [2, "a", 20, 5],
                          [0, "b", 20, 1], [1, "b", 20, 20], [2, "b", 20, 4]])
    (tmp_path / report.BASELINES_JSON).write_text(json.dumps({"bare_p99_ms": 10.0}))
    return tmp_path


@pytest.fixture
def targets_file(tmp_path: Path) -> Path:
    path = tmp_path / "targets.toml"
    path.write_text("""
[groups]
writes = ["POST /api/v1/posts", "PUT /api/v1/posts/{id}/like"]
pg = ["GET /api/v1/feed", "GET /api/v1/users/{id}", "POST /api/v1/posts"]
mongo = ["GET /api/v1/notifications"]

[[target]]
name = "feed p99"
patterns = ["GET /api/v1/feed"]
metric = "p99"
limit_ms = 15

[[target]]
name = "profile p99"
patterns = ["GET /api/v1/users/{id}"]
metric = "p99"
limit_ms = 10

[[target]]
name = "writes p99"
group = "writes"
metric = "p99"
limit_ms = 25

[[target]]
name = "pg avg"
origin = "seed"
group = "pg"
metric = "avg"
limit_ms = 4.5

[[target]]
name = "pool"
metric = "pool_utilisation"
limit = 0.999

[[target]]
name = "mongo reads"
group = "mongo"
metric = "avg"
limit_ms = 10
strict = true

[[target]]
name = "chat vs bare"
patterns = ["socketio chat*"]
metric = "baseline_ratio"
baseline = "bare_p99_ms"
limit = 3

[[target]]
name = "failures"
patterns = ["*"]
metric = "failure_ratio"
limit = 0.01
""")
    return path


def by_name(results):
    return {r.target.name: r for r in results}


def test_reads_endpoint_rows_without_aggregated(results_dir):
    stats = report.read_stats(results_dir / report.STATS_CSV)
    assert [s.key for s in stats][:2] == ["GET /api/v1/feed", "GET /api/v1/users/{id}"]
    assert all(s.name != "Aggregated" for s in stats)
    feed = stats[0]
    assert (feed.count, feed.avg, feed.p99) == (1000, 6.0, 14.0)


def test_evaluates_each_kind_of_target(results_dir, targets_file):
    stats = report.read_stats(results_dir / report.STATS_CSV)
    pool = report.read_pool_samples(results_dir / report.POOL_CSV)
    results = by_name(report.evaluate(report.load_targets(targets_file), stats, pool,
                                      {"bare_p99_ms": 10.0}))

    assert results["feed p99"].passed is True and results["feed p99"].value == 14
    assert results["profile p99"].passed is False and results["profile p99"].value == 12
    # The worst endpoint of the group decides.
    writes = results["writes p99"]
    assert writes.passed is False and writes.value == 31
    assert "PUT /api/v1/posts/{id}/like" in writes.detail
    # Request-weighted average: (6*1000 + 3*3000 + 20*100) / 4100.
    pg = results["pg avg"]
    assert pg.value == pytest.approx(17000 / 4100)
    assert pg.passed is True and pg.target.origin == "seed"
    # Instance b reached 20 of 20.
    assert results["pool"].passed is False and results["pool"].value == 1.0
    assert "(b)" in results["pool"].detail
    # No requests: no verdict rather than a pass.
    assert results["mongo reads"].passed is None
    assert results["chat vs bare"].value == pytest.approx(4.5)
    assert results["chat vs bare"].passed is False
    assert results["failures"].value == pytest.approx(3 / 9400)
    assert results["failures"].passed is True


def test_pool_pressure_between_samples_is_not_missed():
    target = report.Target(name="pool", metric="pool_utilisation", limit=0.999)
    quiet = report.PoolSample(t=1.0, instance="a", size=20, in_use=1)
    peaked = report.PoolSample(t=2.0, instance="a", size=20, in_use=1, in_use_peak=15)
    # b's running count of waits was 5 before the window: only the increase counts.
    b_before = report.PoolSample(t=0.5, instance="b", size=20, in_use=0, exhausted=5)
    b_calm = report.PoolSample(t=3.0, instance="b", size=20, in_use=2, in_use_peak=4, exhausted=5)
    b_waited = report.PoolSample(t=4.0, instance="b", size=20, in_use=0, in_use_peak=20, exhausted=8)
    result = report.evaluate([target], [], [quiet, peaked, b_before, b_calm])[0]
    assert result.passed is True and result.value == pytest.approx(15 / 20)
    assert "0 waits" in result.detail and "(a)" in result.detail
    result = report.evaluate([target], [], [quiet, peaked, b_before, b_calm, b_waited])[0]
    assert result.passed is False and result.value == 1.0
    assert "3 waits" in result.detail and "(b)" in result.detail
    # Within a step: the sample before the window gives the starting count.
    window = report.with_previous([quiet, peaked, b_before, b_calm, b_waited], 2.5, 3.5)
    result = report.evaluate([target], [], window)[0]
    assert result.passed is True and "(a)" not in result.detail


def test_mongo_averages_come_from_the_increase_of_the_driver_timings():
    writes = report.Target(name="w", metric="mongo_avg", kind="write", limit=5, strict=True)
    reads = report.Target(name="r", metric="mongo_avg", kind="read", limit=10, strict=True)
    ops = [
        # Before the window: 100 writes took 2 s (20 ms each) on a; not counted in it.
        report.MongoOpsSample(5.0, "a", "write", 100, 2.0),
        report.MongoOpsSample(12.0, "a", "write", 150, 2.1),
        report.MongoOpsSample(17.0, "a", "write", 200, 2.2),
        report.MongoOpsSample(12.0, "b", "write", 10, 0.1),
        report.MongoOpsSample(17.0, "b", "write", 60, 0.35),
        report.MongoOpsSample(30.0, "a", "write", 1000, 100.0),  # after the window
    ]
    window = report.with_previous(ops, 10.0, 20.0)
    results = by_name(report.evaluate([writes, reads], [], None, None, window))
    # a: 100 writes in 0.2 s; b: 50 writes in 0.25 s -> 0.45 s / 150 writes = 3 ms.
    assert results["w"].value == pytest.approx(3.0) and results["w"].passed is True
    assert "150 write commands" in results["w"].detail
    assert results["r"].passed is None  # no read timings: no verdict
    slow = [report.MongoOpsSample(0, "a", "write", 0, 0), report.MongoOpsSample(5, "a", "write", 10, 0.05)]
    assert report.evaluate([writes], [], None, None, slow)[0].passed is False  # 5 ms is not < 5


def test_measured_capacity_targets():
    held = report.Target(name="held", metric="measured", baseline="idle", limit=20000,
                         at_least=True)
    memory = report.Target(name="mem", metric="measured", baseline="kib", limit=20)
    results = by_name(report.evaluate([held, memory], [], None, {"idle": 19999, "kib": 12.5}))
    assert results["held"].passed is False and results["held"].value == 19999
    assert results["mem"].passed is True
    results = by_name(report.evaluate([held, memory], [], None, {"idle": 20000}))
    assert results["held"].passed is True and results["mem"].passed is None


def test_missing_inputs_give_no_verdict(results_dir, targets_file):
    stats = report.read_stats(results_dir / report.STATS_CSV)
    results = by_name(report.evaluate(report.load_targets(targets_file), stats, [], {}))
    assert results["pool"].passed is None
    assert results["chat vs bare"].passed is None


def test_mostly_failing_endpoints_are_not_judged_on_latency():
    target = report.Target(name="t", metric="p99", patterns=("GET /*",), limit=10)
    broken = report.EndpointStats("GET", "/missing", 10, 9, 1.0, 1, 1, 1, 1, 1.0)
    assert report.evaluate([target], [broken])[0].passed is None
    healthy = report.EndpointStats("GET", "/ok", 10, 1, 20.0, 20, 20, 20, 20, 1.0)
    result = report.evaluate([target], [broken, healthy])[0]
    assert result.passed is False and result.value == 20
    ratio = report.Target(name="f", metric="failure_ratio", patterns=("GET /*",), limit=0.01)
    assert report.evaluate([ratio], [broken])[0].value == 0.9


def test_strict_limit_is_exclusive():
    target = report.Target(name="t", metric="avg", patterns=("GET /x",), limit=5, strict=True)
    at_limit = report.EndpointStats("GET", "/x", 10, 0, 5.0, 5, 5, 5, 5, 1.0)
    assert report.evaluate([target], [at_limit])[0].passed is False
    relaxed = report.Target(name="t", metric="avg", patterns=("GET /x",), limit=5)
    assert report.evaluate([relaxed], [at_limit])[0].passed is True


def test_unknown_group_or_metric_is_refused(tmp_path):
    bad_group = tmp_path / "bad.toml"
    bad_group.write_text('[[target]]\nname = "x"\ngroup = "nope"\nmetric = "avg"\nlimit_ms = 1\n')
    with pytest.raises(ValueError, match="unknown group"):
        report.load_targets(bad_group)
    target = report.Target(name="x", metric="p42", patterns=("*",), limit=1)
    row = report.EndpointStats("GET", "/x", 1, 0, 1.0, 1, 1, 1, 1, 1.0)
    with pytest.raises(ValueError, match="unknown metric"):
        report.evaluate([target], [row])


def test_shipped_targets_file_loads():
    targets = report.load_targets()
    names = {t.name for t in targets}
    assert "Feed p99" in names and "Chat delivery across instances p99" in names
    assert all(t.patterns or t.metric in ("pool_utilisation", "pool_average_utilisation", "replication_lag_p99",
                                          "measured", "mongo_avg") for t in targets)
    assert {t.kind for t in targets if t.metric == "mongo_avg"} == {"read", "write"}


def test_build_writes_report_and_targets_csv(results_dir, targets_file):
    path, results = report.build(results_dir, targets_file, run_info={"users": 10}, plots=False)
    text = path.read_text()
    assert "| feed p99 |" in text and "**FAIL**" in text and "PASS" in text
    assert "| socketio | chat delivery | 5000 |" in text
    rows = list(csv.DictReader(open(results_dir / "targets.csv")))
    assert {r["target"]: r["passed"] for r in rows}["profile p99"] == "False"
    assert len(rows) == len(results)


def test_capacity_out_of_reach_of_the_open_files_limit_says_so(tmp_path):
    held = report.Target(name="Idle Socket.IO connections held", metric="measured", baseline="idle",
                         limit=20000, at_least=True)
    results = report.evaluate([held], [], None, {"idle": 19890})
    for limit, explained in ((20000, True), (65536, False)):
        path = report.write_report(tmp_path, stats=[], results=results, pool=[], baselines={},
                                   run_info={"open files limit": limit}, plots=[], steps=[], cpu=[])
        row = next(line for line in path.read_text().splitlines() if line.startswith("| Idle Socket.IO"))
        assert "**FAIL**" in row
        assert ("cannot be reached here" in row) is explained


def write_samples(path: Path, rows) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t", "type", "name", "ms", "failed"])
        writer.writerows(rows)


def test_exact_percentiles_from_samples():
    samples = [report.Sample(0.0, "GET", "/x", float(ms), ms == 100) for ms in range(1, 101)]
    (row,) = report.stats_from_samples(samples, seconds=10)
    assert (row.count, row.failures, row.p50, row.p95, row.p99, row.max) == (100, 1, 50, 95, 99, 100)
    assert row.avg == pytest.approx(50.5) and row.rps == 10


def test_steps_judged_on_steady_windows(tmp_path, targets_file):
    feed = "/api/v1/feed"
    rows = []
    # Step 1 (0-20 s, settle 5 s): a ramp-up spike at 1 s, then fast answers.
    rows.append([1.0, "GET", feed, 500, 0])
    rows += [[6 + i * 0.1, "GET", feed, 5, 0] for i in range(100)]
    # Step 2 (20-40 s): slow answers once settled.
    rows.append([21.0, "GET", feed, 1, 0])
    rows += [[26 + i * 0.1, "GET", feed, 40, 0] for i in range(100)]
    write_samples(tmp_path / report.SAMPLES_CSV, rows)
    with open(tmp_path / report.STATS_CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerow(stats_row("GET", feed, 202, 0, 24.0, 5, 40, 500, 500))
    (tmp_path / report.RUN_JSON).write_text(json.dumps(
        {"step_plan": {"users": [10, 20], "step_seconds": 20, "settle_seconds": 5}}))

    samples = report.read_samples(tmp_path / report.SAMPLES_CSV)
    windows = report.steady_windows([10, 20], 20, 5)
    steps = report.evaluate_steps(report.load_targets(targets_file), samples, windows)
    first, second = (by_name(s.results)["feed p99"] for s in steps)
    # The ramp-up spike of step 1 is outside its window.
    assert first.value == 5 and first.passed is True
    assert second.value == 40 and second.passed is False
    assert steps[0].stats[0].count == 100

    path, results = report.build(tmp_path, targets_file, plots=False)
    # Headline verdicts are the highest step's (both served without failures).
    assert by_name(results)["feed p99"].value == 40
    text = path.read_text()
    assert "## Load steps (steady state)" in text
    assert "| 1 | 10 |" in text and "| 2 | 20 |" in text


def test_profile_summary_from_collapsed_stacks(tmp_path):
    path = tmp_path / "profile.txt"
    path.write_text(
        "main (run.py:1);handle (api/posts.py:10);fetch (asyncpg/pool.py:5) 6\n"
        "main (run.py:1);handle (api/posts.py:10);dumps (orjson:0) 3\n"
        "main (run.py:1);select (selectors.py:1) 1\n")
    total, self_time, ours = report.profile_summary(path)
    assert total == 10
    assert self_time[0] == ("fetch (asyncpg/pool.py:5)", 6)
    assert ours == [("handle (api/posts.py:10)", 9)]
    assert report.profile_summary(tmp_path / "missing.txt") == (0, [], [])


def test_cpu_rows_average_each_step_window(tmp_path):
    path = tmp_path / report.CPU_CSV
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t", "process", "cpu_percent"])
        writer.writerows([[1006, "pulse-a", 40], [1008, "pulse-a", 60], [1026, "pulse-a", 90],
                          [1006, "machine (all cores, %)", 70], [1001, "pulse-a", 500]])
    steps = [report.StepResult(w, [], []) for w in report.steady_windows([10, 20], 20, 5)]
    rows = report.cpu_rows(path, steps, t0=1000.0)
    assert rows[0] == "| step | pulse-a | machine (all cores, %) |"
    assert rows[2] == "| 1 | 50 | 70 |"   # the ramp-up sample at t=1 s is left out
    assert rows[3] == "| 2 | 90 | – |"
    assert report.cpu_rows(tmp_path / "none.csv", steps, 1000.0) == []


def test_judged_step_is_the_highest_served_one():
    def step(index, ok, failed):
        stats = [report.EndpointStats("GET", "/x", ok + failed, failed, 1, 1, 1, 1, 1, 1)]
        return report.StepResult(report.Step(index, index * 10, 0, 1), stats, [])

    steps = [step(1, 100, 0), step(2, 100, 1), step(3, 50, 50)]
    assert report.judged_step(steps).step.index == 2
    assert report.judged_step([step(1, 10, 10)]).step.index == 1
