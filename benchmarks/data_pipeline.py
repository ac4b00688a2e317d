"""Speed and peak memory of ``DatasetPure.build_trainset`` plus ``split_by_ratio`` at scale.

Run as ``python -m benchmarks.data_pipeline`` (``--help`` for sizes). Two child processes do the
work so that each one's peak resident memory is its own:

1. *generate*: ``libreco.data.synthetic.generate`` writes the interactions as ``.npy`` columns into
   a temporary folder (timed and measured on its own);
2. *measure*: loads those columns into a DataFrame, then times ``split_by_ratio`` and
   ``build_trainset`` on the training part, the way a training job uses them (and, for
   reference, ``build_trainset`` on all rows). Its peak RSS covers the loaded frame, the split
   and the builds, but not the generator.

Targets: split + build under 30 s, peak memory under 4 GiB. Results go to
``benchmarks/results/data_pipeline.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import cpu_model

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_SECONDS = 30.0
TARGET_GIB = 4.0
COLUMNS = ("user", "item", "label", "time")


def machine() -> dict:
    """Where and when a benchmark ran."""
    import numpy as np
    import pandas as pd

    cpu = cpu_model()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_gib, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


def _peak_gib() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def child_generate(args) -> dict:
    import numpy as np

    from libreco.data.synthetic import generate

    t0 = time.perf_counter()
    df = generate(n_users=args.n_users, n_items=args.n_items, n_interactions=args.n_interactions,
                  features=False, seed=args.seed)
    seconds = time.perf_counter() - t0
    for col in COLUMNS:
        np.save(Path(args.workdir) / f"{col}.npy", df[col].to_numpy(), allow_pickle=False)
    return {"generate_s": seconds, "rows": len(df), "peak_rss_gib": _peak_gib()}


def child_measure(args) -> dict:
    import numpy as np
    import pandas as pd

    from libreco.data import DatasetPure, split_by_ratio

    df = pd.DataFrame({col: np.load(Path(args.workdir) / f"{col}.npy", allow_pickle=False)
                       for col in COLUMNS})
    loaded_gib = _peak_gib()
    c0 = time.process_time()
    t0 = time.perf_counter()
    train_df, test_df = split_by_ratio(df, test_size=0.2, seed=args.seed)
    t1 = time.perf_counter()
    train, info = DatasetPure.build_trainset(train_df)
    t2 = time.perf_counter()
    cpu_s = time.process_time() - c0
    n_users, n_items = info.n_users, info.n_items
    n_train, n_test = len(train_df), len(test_df)
    del train, info, train_df, test_df
    t3 = time.perf_counter()
    DatasetPure.build_trainset(df)
    full_s = time.perf_counter() - t3
    return {
        "split_by_ratio_s": t1 - t0,
        "build_trainset_s": t2 - t1,
        "total_s": t2 - t0,
        "total_cpu_s": cpu_s,
        "train_rows": n_train,
        "test_rows": n_test,
        "n_users": n_users,
        "n_items": n_items,
        "build_trainset_all_rows_s": full_s,
        "rss_after_load_gib": loaded_gib,
        "peak_rss_gib": _peak_gib(),
    }


def run_child(stage: str, args) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.data_pipeline", "--stage", stage,
           "--workdir", args.workdir, "--n-users", str(args.n_users), "--n-items",
           str(args.n_items), "--n-interactions", str(args.n_interactions), "--seed",
           str(args.seed)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # RUSAGE_CHILDREN keeps the largest peak of any finished child; it confirms the child's own
    # figure whenever this child is the largest so far
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result["children_max_rss_gib"] = after / 2 ** 20 if after > before else None
    return result


def write_results(report: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data_pipeline.json").write_text(json.dumps(report, indent=2) + "\n")
    g, m, mach = report["generate"], report["measure"], report["machine"]
    ok_time = "yes" if m["total_s"] < TARGET_SECONDS else "NO"
    ok_mem = "yes" if m["peak_rss_gib"] < TARGET_GIB else "NO"
    lines = [
        "# Data pipeline: split + build_trainset at scale",
        "",
        f"Run on {mach['date']}: {mach['nproc']} x {mach['cpu']}, {mach['memory_gib']} GiB, "
        f"load average {mach['load_average_1m']} at start; Python {mach['python']}, "
        f"numpy {mach['numpy']}, pandas {mach['pandas']}.",
        "",
        f"Data: `generate(n_users={report['params']['n_users']:,}, "
        f"n_items={report['params']['n_items']:,}, "
        f"n_interactions={report['params']['n_interactions']:,})` "
        f"-> {g['rows']:,} rows; split 80/20 per user, then the training part indexed.",
        "",
        "| step | figure | target | met |",
        "|---|---|---|---|",
        f"| `split_by_ratio` | {m['split_by_ratio_s']:.2f} s | | |",
        f"| `build_trainset` ({m['train_rows']:,} rows) | {m['build_trainset_s']:.2f} s | | |",
        f"| split + build | {m['total_s']:.2f} s | < {TARGET_SECONDS:.0f} s | {ok_time} |",
        f"| split + build, CPU time | {m['total_cpu_s']:.2f} s | | |",
        f"| `build_trainset` on all {report['generate']['rows']:,} rows (for reference) | "
        f"{m['build_trainset_all_rows_s']:.2f} s | | |",
        f"| peak RSS of the measuring process | {m['peak_rss_gib']:.2f} GiB | "
        f"< {TARGET_GIB:.0f} GiB | {ok_mem} |",
        f"| RSS after loading the frame | {m['rss_after_load_gib']:.2f} GiB | | |",
        f"| generation (separate process) | {g['generate_s']:.2f} s, peak "
        f"{g['peak_rss_gib']:.2f} GiB | not targeted | |",
        "",
        "Each figure is one run. The machine may have been shared with other work (see the load "
        "average): wall time then stretches while CPU time stays close to what an idle machine "
        "needs. Command: `python -m benchmarks.data_pipeline`.",
        "",
    ]
    (RESULTS / "data_pipeline.md").write_text("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-users", type=int, default=200_000)
    p.add_argument("--n-items", type=int, default=50_000)
    p.add_argument("--n-interactions", type=int, default=10_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stage", choices=["generate", "measure"], help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--no-write", action="store_true", help="print the results only")
    args = p.parse_args(argv)

    if args.stage == "generate":
        print(json.dumps(child_generate(args)))
        return 0
    if args.stage == "measure":
        print(json.dumps(child_measure(args)))
        return 0

    report = {"machine": machine(), "params": {
        "n_users": args.n_users, "n_items": args.n_items,
        "n_interactions": args.n_interactions, "seed": args.seed}}
    with tempfile.TemporaryDirectory(prefix="libreco-bench-") as tmp:
        args.workdir = tmp
        print(f"generating {args.n_interactions:,} interactions ...", flush=True)
        report["generate"] = run_child("generate", args)
        print(f"  {report['generate']['generate_s']:.1f} s, peak "
              f"{report['generate']['peak_rss_gib']:.2f} GiB", flush=True)
        print("split_by_ratio + build_trainset ...", flush=True)
        report["measure"] = run_child("measure", args)
    m = report["measure"]
    report["targets"] = {
        "total_s": TARGET_SECONDS, "peak_rss_gib": TARGET_GIB,
        "met": m["total_s"] < TARGET_SECONDS and m["peak_rss_gib"] < TARGET_GIB,
    }
    print(f"  split {m['split_by_ratio_s']:.2f} s + build {m['build_trainset_s']:.2f} s = "
          f"{m['total_s']:.2f} s wall, {m['total_cpu_s']:.2f} s CPU "
          f"(target < {TARGET_SECONDS:.0f} s); peak RSS "
          f"{m['peak_rss_gib']:.2f} GiB (target < {TARGET_GIB:.0f} GiB)")
    if not args.no_write:
        write_results(report)
        print(f"wrote {RESULTS / 'data_pipeline.md'}")
    return 0 if report["targets"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
