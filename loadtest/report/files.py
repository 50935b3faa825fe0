"""The files of a bench run in ``loadtest/results`` and reading them: locust's CSVs, the
bench's samples (pool, MongoDB, CPU), baselines and run information."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from loadtest.report.records import EndpointStats, LagSample, MongoOpsSample, PoolSample, Sample
from loadtest.report.verdicts import Result

STATS_CSV = "locust_stats.csv"
HISTORY_CSV = "locust_stats_history.csv"
FAILURES_CSV = "locust_failures.csv"
POOL_CSV = "pg_pool.csv"
MONGO_CSV = "mongo_ops.csv"
REPLICATION_LAG_CSV = "pg_replication_lag.csv"
SAMPLES_CSV = "samples.csv"
CPU_CSV = "cpu.csv"
BASELINES_JSON = "baselines.json"
RUN_JSON = "run.json"
PROFILE_RAW = "profile-pulse-a.txt"


def csv_number(value: str | None) -> float:
    if value in (None, "", "N/A"):
        return math.nan
    return float(value)


def read_stats(path: Path) -> list[EndpointStats]:
    """Per-endpoint rows of locust's ``*_stats.csv`` (the Aggregated row left out)."""
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") == "Aggregated" or not row.get("Type"):
                continue
            rows.append(EndpointStats(
                type=row["Type"], name=row["Name"], count=int(row["Request Count"]),
                failures=int(row["Failure Count"]), avg=csv_number(row["Average Response Time"]),
                p50=csv_number(row.get("50%")), p95=csv_number(row.get("95%")), p99=csv_number(row.get("99%")),
                max=csv_number(row["Max Response Time"]), rps=csv_number(row["Requests/s"])))
    return rows


def read_samples(path: Path) -> list[Sample]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [Sample(float(r["t"]), r["type"], r["name"], float(r["ms"]), r["failed"] == "1")
                for r in csv.DictReader(handle)]


def read_pool_samples(path: Path) -> list[PoolSample]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [PoolSample(float(r["t"]), r["instance"], float(r["size"]), float(r["in_use"]),
                           float(r.get("in_use_peak") or r["in_use"]), float(r.get("exhausted") or 0))
                for r in csv.DictReader(handle)]


def read_lag_samples(path: Path) -> list[LagSample]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [LagSample(float(r["t"]), r["replica"], float(r["replay_lag_seconds"]) if r["replay_lag_seconds"] else None)
                for r in csv.DictReader(handle)]


def read_mongo_samples(path: Path) -> list[MongoOpsSample]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [MongoOpsSample(float(r["t"]), r["instance"], r["kind"], float(r["count"]),
                               float(r["sum_seconds"])) for r in csv.DictReader(handle)]


def read_history(path: Path) -> tuple[dict[str, list[tuple[float, float, float, float]]],
                                        list[tuple[float, float, float, float]]]:
    """Locust's full history CSV: per endpoint (t, p50, p95, p99), and for the aggregate
    (t, users, requests/s, failures/s)."""
    series: dict[str, list[tuple[float, float, float, float]]] = {}
    aggregated: list[tuple[float, float, float, float]] = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            t = float(row["Timestamp"])
            key = f"{row['Type']} {row['Name']}".strip()
            if row["Name"] == "Aggregated":
                aggregated.append((t, csv_number(row["User Count"]), csv_number(row["Requests/s"]),
                                   csv_number(row["Failures/s"])))
            else:
                series.setdefault(key, []).append((t, csv_number(row["50%"]), csv_number(row["95%"]),
                                                   csv_number(row["99%"])))
    return series, aggregated


def read_json(path: Path) -> dict:
    """baselines.json, run.json: {} when the run did not write it."""
    return json.loads(path.read_text()) if path.exists() else {}


def read_step_start(results_dir: Path) -> float | None:
    """When locust's first step started (wall clock), written next to the samples."""
    start_file = results_dir / (SAMPLES_CSV + ".start")
    return float(start_file.read_text()) if start_file.exists() else None


def read_cpu_samples(path: Path) -> list[tuple[float, str, float]]:
    """(t, process, percent of one core) rows of the bench's CPU samples."""
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [(float(r["t"]), r["process"], float(r["cpu_percent"])) for r in csv.DictReader(handle)]


def write_targets_csv(path: Path, results: list[Result]) -> None:
    """targets.csv: one row a target with its value and verdict, for other tools."""
    path.write_text("\n".join(
        ["target,origin,metric,limit,value,passed"] +
        [f'"{r.target.name}",{r.target.origin},{r.target.metric},{r.target.limit},'
         f'{"" if r.value is None else round(r.value, 4)},{r.passed}' for r in results]) + "\n")
