"""``python -m loadtest.report``: report.md again from the CSVs of a run."""
from __future__ import annotations

import argparse
from pathlib import Path

from loadtest.report import DEFAULT_TARGETS, build
from loadtest.report.markdown import format_value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.report")
    parser.add_argument("--results", default=str(Path(__file__).resolve().parents[1] / "results"))
    parser.add_argument("--targets", default=str(DEFAULT_TARGETS))
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    path, results = build(Path(args.results), Path(args.targets), plots=not args.no_plots)
    print(path)
    for r in results:
        print(f"{'PASS' if r.passed else 'FAIL' if r.passed is False else 'n/a '}  "
              f"{r.target.name}: {format_value(r.value)} ({r.detail})")


if __name__ == "__main__":
    main()
