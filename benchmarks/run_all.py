"""Run every benchmark, one after the other, each in its own process.

::

    python -m benchmarks.run_all [--only knn_fit,knn_service] [--list]

Each benchmark writes ``benchmarks/results/<name>.json`` and ``<name>.md``;
``benchmarks/RESULTS.md`` gathers their figures and targets in one table. Benchmarks time
things, so run them on an otherwise idle machine: they run in sequence here for that reason.
A benchmark that fails is reported and the others still run; the exit status is non-zero when
any failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# cheapest first, so that a broken set-up shows early
BENCHMARKS = (
    "evaluate_speed",
    "data_pipeline",
    "knn_fit",
    "knn_service",
    "vector_models",
    "vector_service",
    "tf_rankers",
    "tf_sequence",
    "tf_latency",
    "fuzz_services",
    "faults",
)


def available() -> list[str]:
    return [name for name in BENCHMARKS if (ROOT / "benchmarks" / f"{name}.py").is_file()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--list", action="store_true", help="print the benchmark names and exit")
    args = parser.parse_args(argv)

    names = available()
    if args.list:
        print("\n".join(names))
        return 0
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(names)}")
        names = [n for n in names if n in wanted]

    failed = []
    for name in names:
        started = time.monotonic()
        print(f"== {name}", flush=True)
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{name}"], cwd=ROOT)
        print(f"== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    print("results: benchmarks/results/; summary: benchmarks/RESULTS.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
