"""ItemCF fit against implicit's CosineRecommender on one million generated interactions.

Run from the repository root::

    python -m benchmarks.knn_fit [--rounds 3]

Every fit runs in a fresh child process, so that its peak memory is its own: the child loads
the shared split, resets the kernel's peak-RSS mark, fits, and reports wall and CPU time, the
peak resident memory added during the fit, and NDCG@10 on the held-out split computed by
:func:`libreco.evaluation.evaluate` (implicit's recommendations go through the same code via a
small adapter). The contenders of one round run one after the other, in an order that
rotates between rounds, so that each round compares them under the same machine load; the
figures reported are medians over the rounds.

Writes ``benchmarks/results/knn_fit.json`` and ``benchmarks/results/knn_fit.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import cpu_model

RESULTS = Path(__file__).resolve().parent / "results"
K = 20  # neighbours for every contender
N_REC = 10
CONTENDERS = {
    "item_cf": "libreco ItemCF (cosine, default inverse-frequency weighting)",
    "item_cf_label": "libreco ItemCF (cosine, weighting='label': implicit's similarity)",
    "implicit_cosine": f"implicit CosineRecommender(K={K})",
    "user_cf": "libreco UserCF (cosine, for reference)",
}
HEADLINE, RIVAL = "item_cf", "implicit_cosine"


# -- child: one fit ------------------------------------------------------------------------------
def _rss_mb(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


class ImplicitAdapter:
    """Lets :func:`libreco.evaluation.evaluate` rank with an implicit model."""

    task = "ranking"

    def __init__(self, model, data_info, user_items):
        self.model = model
        self.data_info = data_info
        self.user_items = user_items

    def _require_fitted(self) -> None:
        """Always fitted."""

    def recommend_inner(self, users, n_rec, filter_consumed=True):
        users = np.asarray(users, dtype=np.int64)
        ids, scores = self.model.recommend(users, self.user_items[users], N=n_rec,
                                           filter_already_liked_items=filter_consumed)
        items = np.full((len(users), n_rec), -1, dtype=np.int32)
        out = np.full((len(users), n_rec), -np.inf, dtype=np.float32)
        items[:, :ids.shape[1]] = ids
        out[:, :ids.shape[1]] = scores
        valid = np.isfinite(out) & (items >= 0)
        return np.where(valid, items, -1), np.where(valid, out, -np.inf)


def run_child(name: str, data_dir: Path) -> dict:
    from libreco.algorithms import ItemCF, UserCF
    from libreco.data import DatasetPure
    from libreco.evaluation import evaluate

    train_df, test_df = (_read_frame(data_dir / f"{part}.npz") for part in ("train", "test"))
    train, info = DatasetPure.build_trainset(train_df)
    user_items = info.user_consumed.astype(np.float32)
    if name == "implicit_cosine":
        from implicit.nearest_neighbours import CosineRecommender

        model = CosineRecommender(K=K)
    elif name == "item_cf":
        model = ItemCF(task="ranking", data_info=info, k_sim=K)
    elif name == "item_cf_label":
        model = ItemCF(task="ranking", data_info=info, k_sim=K, weighting="label")
    elif name == "user_cf":
        model = UserCF(task="ranking", data_info=info, k_sim=K)
    else:
        raise ValueError(f"unknown contender {name!r}")

    peak_ok = _reset_peak_rss()
    rss0 = _rss_mb("VmRSS")
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if name == "implicit_cosine":
        model.fit(user_items, show_progress=False)
    else:
        model.fit(train, verbose=0)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    peak = _rss_mb("VmHWM") - rss0 if peak_ok else float("nan")

    ranker = ImplicitAdapter(model, info, user_items) if name == "implicit_cosine" else model
    t0 = time.perf_counter()
    ndcg = evaluate(ranker, test_df, metrics=["ndcg"], k=N_REC)["ndcg"]
    return {"name": name, "fit_s": wall, "fit_cpu_s": cpu, "peak_rss_delta_mb": peak,
            "ndcg@10": ndcg, "eval_s": time.perf_counter() - t0}


COLUMNS = ("user", "item", "label", "time")


def _write_frame(path: Path, df: pd.DataFrame) -> None:
    np.savez(path, **{c: df[c].to_numpy() for c in COLUMNS})


def _read_frame(path: Path) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as z:
        return pd.DataFrame({c: z[c] for c in COLUMNS})


# -- parent --------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = cpu_model()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {"python": platform.python_version()}
    for pkg in ("numpy", "scipy", "implicit"):
        try:
            versions[pkg] = __import__(pkg).__version__
        except ImportError:
            versions[pkg] = None
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_gib, 1),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()], **versions}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n-users", type=int, default=20_000)
    parser.add_argument("--n-items", type=int, default=10_000)
    parser.add_argument("--n-interactions", type=int, default=1_000_000)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.child:
        print(json.dumps(run_child(args.child, Path(args.data))))
        return 0

    from libreco.data.split import split_by_ratio
    from libreco.data.synthetic import generate

    info = machine()
    names = [n for n in args.contenders.split(",") if n]
    t0 = time.perf_counter()
    df = generate(n_users=args.n_users, n_items=args.n_items,
                  n_interactions=args.n_interactions, seed=42)
    train_df, test_df = split_by_ratio(df, test_size=0.2, seed=42)
    print(f"generated {len(df):,} interactions in {time.perf_counter() - t0:.1f}s; "
          f"train {len(train_df):,}, test {len(test_df):,}", flush=True)

    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="knn_fit.") as tmp:
        data_dir = Path(tmp)
        _write_frame(data_dir / "train.npz", train_df)
        _write_frame(data_dir / "test.npz", test_df)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.knn_fit", "--child", name, "--data",
                     str(data_dir)], capture_output=True, text=True, check=True,
                    cwd=Path(__file__).resolve().parent.parent)
                res = json.loads(out.stdout.strip().splitlines()[-1])
                res["round"] = r
                runs.append(res)
                print(f"round {r}: {name:16s} fit {res['fit_s']:.3f}s (cpu "
                      f"{res['fit_cpu_s']:.3f}s), peak +{res['peak_rss_delta_mb']:.0f} MB, "
                      f"NDCG@10 {res['ndcg@10']:.4f}", flush=True)

    summary = {}
    for name in names:
        mine = [x for x in runs if x["name"] == name]
        summary[name] = {
            "label": CONTENDERS[name],
            "fit_s_median": statistics.median(x["fit_s"] for x in mine),
            "fit_s_min": min(x["fit_s"] for x in mine),
            "fit_cpu_s_median": statistics.median(x["fit_cpu_s"] for x in mine),
            "peak_rss_delta_mb_median": statistics.median(x["peak_rss_delta_mb"] for x in mine),
            "ndcg@10": mine[0]["ndcg@10"],
        }
    targets = {}
    if HEADLINE in summary and RIVAL in summary:
        per_round = [
            next(x["fit_s"] for x in runs if x["name"] == HEADLINE and x["round"] == r)
            / next(x["fit_s"] for x in runs if x["name"] == RIVAL and x["round"] == r)
            for r in range(args.rounds)
        ]
        ratio = summary[HEADLINE]["fit_s_median"] / summary[RIVAL]["fit_s_median"]
        cpu_ratio = summary[HEADLINE]["fit_cpu_s_median"] / summary[RIVAL]["fit_cpu_s_median"]
        targets = {
            "fit_time_ratio_median": ratio,
            "fit_time_ratio_per_round": per_round,
            "fit_cpu_ratio_median": cpu_ratio,
            "fit_time_target": "<= 2.0",
            "fit_time_met": ratio <= 2.0,
            "ndcg_ours": summary[HEADLINE]["ndcg@10"],
            "ndcg_implicit": summary[RIVAL]["ndcg@10"],
            "ndcg_met": summary[HEADLINE]["ndcg@10"] >= summary[RIVAL]["ndcg@10"],
        }
    result = {
        "benchmark": "knn_fit",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "data": {"generator": "libreco.data.synthetic.generate", "seed": 42,
                 "n_users": args.n_users, "n_items": args.n_items,
                 "n_interactions": args.n_interactions,
                 "split": "split_by_ratio(test_size=0.2, seed=42), per user",
                 "n_train": len(train_df), "n_test": len(test_df)},
        "k_neighbours": K, "rounds": args.rounds,
        "summary": summary, "targets": targets, "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "knn_fit.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "knn_fit.md").write_text(markdown(result), encoding="utf-8")
    print(f"wrote {RESULTS / 'knn_fit.json'} and {RESULTS / 'knn_fit.md'}")
    return 0


def markdown(result: dict) -> str:
    m, d, t = result["machine"], result["data"], result["targets"]
    lines = [
        "# ItemCF fit vs implicit CosineRecommender",
        "",
        f"Run `python -m benchmarks.knn_fit` on {result['date']}: {m['nproc']} CPUs "
        f"({m['cpu']}), {m['memory_gib']} GiB, load average at start "
        f"{m['load_average_at_start']}; Python {m['python']}, numpy {m['numpy']}, "
        f"scipy {m['scipy']}, implicit {m['implicit']}.",
        "",
        f"Data: `generate(n_users={d['n_users']:,}, n_items={d['n_items']:,}, "
        f"n_interactions={d['n_interactions']:,}, seed=42)`, {d['split']}: "
        f"{d['n_train']:,} training and {d['n_test']:,} held-out interactions. "
        f"K = {result['k_neighbours']} neighbours for every model. Medians over "
        f"{result['rounds']} rounds; each fit runs in its own process, contenders side by "
        "side in rotating order.",
        "",
        "| model | fit (s) | fit CPU (s) | peak memory during fit (MB) | NDCG@10 |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in result["summary"].values():
        lines.append(f"| {s['label']} | {s['fit_s_median']:.3f} | {s['fit_cpu_s_median']:.3f} "
                     f"| {s['peak_rss_delta_mb_median']:.0f} | {s['ndcg@10']:.4f} |")
    if t:
        rounds = ", ".join(f"{r:.2f}" for r in t["fit_time_ratio_per_round"])
        lines += [
            "",
            f"- Fit time, ItemCF / implicit: **{t['fit_time_ratio_median']:.2f}x** (per round: "
            f"{rounds}); target <= 2x: {'met' if t['fit_time_met'] else 'NOT met'}. "
            f"CPU time (all threads), ItemCF / implicit: {t['fit_cpu_ratio_median']:.2f}x.",
            f"- NDCG@10: ItemCF **{t['ndcg_ours']:.4f}** vs implicit {t['ndcg_implicit']:.4f}; "
            f"target >= implicit: {'met' if t['ndcg_met'] else 'NOT met'}.",
        ]
    lines += [
        "",
        "Notes",
        "",
        "- Peak memory is the growth of the process's peak resident set during `fit` "
        "(`/proc/self/status` VmHWM after resetting it, minus VmRSS before): it counts the "
        "C++ allocations of implicit as well as numpy's. A dense item-item matrix alone "
        f"would take {d['n_items'] ** 2 * 4 / 2**20:,.0f} MB in float32.",
        "- NDCG@10 for every model comes from `libreco.evaluation.evaluate` on the same "
        "held-out rows (implicit's `recommend` through a small adapter), consumed items "
        "excluded.",
        "- `item_cf_label` computes the same cosine similarity as implicit (labels as "
        "weights). implicit's K neighbours include the item itself, so it scores with "
        "K - 1 others; with K + 1 its recommendations equal ours.",
        "- Both libraries use every core (libreco: one block per thread; implicit: OpenMP). "
        "Another process may share the machine (see the load average): wall times then vary "
        "from round to round, CPU times much less; compare the figures of one run, not "
        "across runs.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
