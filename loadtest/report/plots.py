"""latency.png, throughput.png and pg_pool.png. matplotlib is imported only here, and only
to draw (the rest of the report needs no ``load`` extra)."""
from __future__ import annotations

import math
from pathlib import Path

from loadtest.report.files import HISTORY_CSV, read_history
from loadtest.report.records import PoolSample


def draw_plots(results_dir: Path, pool: list[PoolSample]) -> list[str]:
    """latency.png, throughput.png (and pool.png) from locust's full history CSV."""
    history = results_dir / HISTORY_CSV
    if not history.exists():
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, aggregated = read_history(history)
    if not aggregated:
        return []
    t0 = aggregated[0][0]
    out = []

    busiest = sorted(series, key=lambda k: -len(series[k]))
    wanted = [k for k in busiest if k.startswith("socketio") and not k.endswith("connect")][:3]
    wanted += [k for k in ("GET /api/v1/feed", "GET /api/v1/users/{id}", "POST /api/v1/posts",
                           "PUT /api/v1/posts/{id}/like") if k in series]
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for key in wanted:
        points = [p for p in series[key] if not math.isnan(p[3])]
        ax.plot([p[0] - t0 for p in points], [p[3] for p in points], label=f"{key} p99")
    ax.set_xlabel("seconds")
    ax.set_ylabel("ms (p99, 10 s window)")
    ax.set_yscale("log")
    out.append(_save_plot(plt, fig, ax, "Latency over time", results_dir / "latency.png"))

    fig, ax = plt.subplots(figsize=(11, 4.5))
    ts = [a[0] - t0 for a in aggregated]
    ax.plot(ts, [a[2] for a in aggregated], label="requests+deliveries/s")
    ax.plot(ts, [a[3] for a in aggregated], label="failures/s", color="red")
    ax2 = ax.twinx()
    ax2.plot(ts, [a[1] for a in aggregated], label="users", color="grey", linestyle="--")
    ax2.set_ylabel("users")
    ax.set_xlabel("seconds")
    ax.set_ylabel("per second")
    out.append(_save_plot(plt, fig, ax, "Throughput over time", results_dir / "throughput.png",
                          legend_loc="upper left"))

    if pool:
        fig, ax = plt.subplots(figsize=(11, 3.5))
        p0 = min(p.t for p in pool)
        for instance in sorted({p.instance for p in pool}):
            mine = [p for p in pool if p.instance == instance]
            ax.plot([p.t - p0 for p in mine], [p.in_use for p in mine], label=f"{instance} in use")
            ax.plot([p.t - p0 for p in mine], [p.size for p in mine], linestyle=":",
                    label=f"{instance} size")
        ax.set_xlabel("seconds")
        ax.set_ylabel("connections")
        out.append(_save_plot(plt, fig, ax, "PostgreSQL pool", results_dir / "pg_pool.png"))
    return out


def _save_plot(plt, fig, ax, title: str, path: Path, *, legend_loc: str = "best") -> str:
    """Grid, legend and title as on every plot of the report; writes ``path``, returns its name."""
    ax.grid(True, alpha=0.3)
    ax.legend(loc=legend_loc, fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name
