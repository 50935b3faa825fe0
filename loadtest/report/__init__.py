"""Turn a locust run (CSV), pool samples and baselines into report.md + plots + pass/fail.

    python -m loadtest.report --results loadtest/results [--targets loadtest/targets.toml]

By concern: ``files`` (the run's files and reading them), ``records`` (their rows),
``stats`` (exact percentiles, step windows, pool and MongoDB figures), ``verdicts``
(targets judged), ``markdown`` (report.md), ``plots`` (the PNGs), ``profile`` (py-spy's
stacks). All but ``plots`` use only the standard library (unit-tested without the ``load``
extra); matplotlib is imported only to draw.
"""
from __future__ import annotations

from pathlib import Path

from loadtest.report.files import (
    BASELINES_JSON,
    CPU_CSV,
    FAILURES_CSV,
    HISTORY_CSV,
    MONGO_CSV,
    POOL_CSV,
    PROFILE_RAW,
    REPLICATION_LAG_CSV,
    RUN_JSON,
    SAMPLES_CSV,
    STATS_CSV,
    read_json,
    read_lag_samples,
    read_mongo_samples,
    read_pool_samples,
    read_samples,
    read_stats,
    read_step_start,
    write_targets_csv,
)
from loadtest.report.markdown import cpu_rows, write_report
from loadtest.report.plots import draw_plots
from loadtest.report.profile import profile_summary
from loadtest.report.records import EndpointStats, LagSample, MongoOpsSample, PoolSample, Sample
from loadtest.report.stats import Step, exact_percentile, stats_from_samples, steady_windows, with_previous
from loadtest.report.verdicts import (
    DEFAULT_TARGETS,
    Result,
    StepResult,
    Target,
    evaluate,
    evaluate_steps,
    judge_run,
    judged_step,
    load_targets,
)

__all__ = [
    "BASELINES_JSON", "CPU_CSV", "DEFAULT_TARGETS", "FAILURES_CSV", "HISTORY_CSV", "MONGO_CSV",
    "POOL_CSV", "PROFILE_RAW", "REPLICATION_LAG_CSV", "RUN_JSON", "SAMPLES_CSV", "STATS_CSV", "EndpointStats",
    "LagSample", "MongoOpsSample", "PoolSample", "Result", "Sample", "Step", "StepResult", "Target", "build",
    "cpu_rows", "draw_plots", "evaluate", "evaluate_steps", "exact_percentile", "judged_step",
    "load_targets", "profile_summary", "read_lag_samples", "read_mongo_samples", "read_pool_samples", "read_samples",
    "read_stats", "stats_from_samples", "steady_windows", "with_previous", "write_report",
]


def build(results_dir: Path, targets_path: Path = DEFAULT_TARGETS,
          run_info: dict | None = None, plots: bool = True) -> tuple[Path, list[Result]]:
    """Reads the run's files in ``results_dir``, judges the targets, writes targets.csv, the
    plots and report.md; returns report.md's path and the verdicts."""
    stats = read_stats(results_dir / STATS_CSV)
    pool = read_pool_samples(results_dir / POOL_CSV)
    mongo = read_mongo_samples(results_dir / MONGO_CSV)
    baselines = read_json(results_dir / BASELINES_JSON)
    info = read_json(results_dir / RUN_JSON)
    info.update(run_info or {})
    plan = info.get("step_plan")
    started = read_step_start(results_dir)
    if plan and started is not None:
        plan.setdefault("t0", started)
    steps, results = judge_run(load_targets(targets_path), stats, read_samples(results_dir / SAMPLES_CSV), plan,
                               pool, baselines, mongo, read_lag_samples(results_dir / REPLICATION_LAG_CSV))
    write_targets_csv(results_dir / "targets.csv", results)
    drawn = draw_plots(results_dir, pool) if plots else []
    return write_report(results_dir, stats=stats, results=results, pool=pool,
                        baselines=baselines, run_info={k: v for k, v in info.items()
                                                       if k != "step_plan"},
                        plots=drawn, steps=steps,
                        cpu=cpu_rows(results_dir / CPU_CSV, steps, (plan or {}).get("t0"))), results
