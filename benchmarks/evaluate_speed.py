"""Speed of ``evaluate(model, test_df, metrics=["ndcg"], k=10)`` over 50,000 users x 10,000 items.

Run as ``python -m benchmarks.evaluate_speed``. Two cheap fitted models are evaluated on the same
split of generated data, so that the figure is dominated by the evaluation itself (scoring every
item for every test user, removing consumed items, taking the top 10, computing NDCG):

* ``Popular``: the same score row for every user;
* ``RandomVectors``: dot products of random 32-dimensional user and item vectors, the shape of
  work the vector models do.

Beside them, the top-k kernel of ``Recommender.recommend_inner`` is timed against the
``argpartition`` + sort it replaced, on the same score blocks in the same run.

Target: under 10 s per evaluation. Results go to ``benchmarks/results/evaluate_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from benchmarks.data_pipeline import RESULTS, machine
from libreco.algorithms import Popular, Recommender
from libreco.algorithms.base import SCORE_BLOCK, top_k_rows
from libreco.data import DatasetPure, split_by_ratio
from libreco.data.synthetic import generate
from libreco.evaluation import evaluate

TARGET_SECONDS = 10.0


class RandomVectors(Recommender):
    """Scores are dot products of fixed random user and item vectors (a benchmark stand-in)."""

    algorithm = "random_vectors"
    family = "vector"

    def __init__(self, task, data_info, dim: int = 32, seed: int = 0):
        super().__init__(task, data_info, dim=dim, seed=seed)
        self.dim, self.seed = dim, seed

    def _fit(self, train_data, neg_sampling, verbose, eval_data, **options):
        rng = np.random.default_rng(self.seed)
        self.user_vec = rng.normal(size=(self.data_info.n_users, self.dim)).astype(np.float32)
        self.item_vec = rng.normal(size=(self.data_info.n_items, self.dim)).astype(np.float32)

    def _scores(self, users):
        return self.user_vec[users] @ self.item_vec.T

    def _predict_inner(self, users, items):
        return np.einsum("ij,ij->i", self.user_vec[users], self.item_vec[items])

    def _arrays(self):
        return {"user_vec": self.user_vec, "item_vec": self.item_vec}

    def _set_arrays(self, arrays):
        self.user_vec, self.item_vec = arrays["user_vec"], arrays["item_vec"]


def argpartition_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The previous top-k of recommend_inner: argpartition every row, then sort the k."""
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def time_top_k(model, users: np.ndarray, k: int, n_blocks: int) -> dict:
    consumed = model.data_info.user_consumed
    fast, slow = [], []
    for b in range(n_blocks):
        block = users[b * SCORE_BLOCK:(b + 1) * SCORE_BLOCK]
        scores = np.array(model._scores(block), dtype=np.float32)
        sub = consumed[block]
        scores[np.repeat(np.arange(len(block)), np.diff(sub.indptr)), sub.indices] = -np.inf
        t0 = time.perf_counter()
        a = top_k_rows(scores, k)
        t1 = time.perf_counter()
        b_ = argpartition_top_k(scores, k)
        t2 = time.perf_counter()
        same = np.take_along_axis(scores, a, 1) == np.take_along_axis(scores, b_, 1)
        if not same.all():
            raise AssertionError("top_k_rows and argpartition disagree on the top scores")
        fast.append(t1 - t0)
        slow.append(t2 - t1)
    return {"block_rows": SCORE_BLOCK, "blocks": n_blocks,
            "top_k_rows_ms": 1000 * statistics.median(fast),
            "argpartition_ms": 1000 * statistics.median(slow)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-users", type=int, default=50_000)
    p.add_argument("--n-items", type=int, default=10_000)
    p.add_argument("--n-interactions", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help="print the results only")
    args = p.parse_args(argv)
    report = {"machine": machine(), "params": vars(args).copy()}

    t0 = time.perf_counter()
    df = generate(n_users=args.n_users, n_items=args.n_items,
                  n_interactions=args.n_interactions, features=False, seed=args.seed)
    train_df, test_df = split_by_ratio(df, test_size=0.2, seed=args.seed)
    train, info = DatasetPure.build_trainset(train_df)
    models = {
        "Popular": Popular("ranking", info).fit(train, verbose=0),
        "RandomVectors": RandomVectors("ranking", info).fit(train, verbose=0),
    }
    report["prepare_s"] = time.perf_counter() - t0
    n_test_users = int(test_df["user"].nunique())
    report["data"] = {"n_users": info.n_users, "n_items": info.n_items,
                      "train_rows": len(train_df), "test_rows": len(test_df),
                      "test_users": n_test_users}
    print(f"data: {info.n_users:,} users x {info.n_items:,} items, {len(test_df):,} test rows "
          f"of {n_test_users:,} users (prepared in {report['prepare_s']:.1f} s)", flush=True)

    report["evaluate"] = {}
    for name, model in models.items():
        runs, cpu, ndcg = [], [], None
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            ndcg = evaluate(model, test_df, metrics=["ndcg"], k=10)["ndcg"]
            runs.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        report["evaluate"][name] = {"seconds": runs, "median_s": statistics.median(runs),
                                    "cpu_seconds": cpu, "median_cpu_s": statistics.median(cpu),
                                    "ndcg@10": ndcg}
        print(f"{name}: evaluate ndcg@10 = {ndcg:.4f} in "
              f"{', '.join(f'{r:.2f}' for r in runs)} s wall, "
              f"{', '.join(f'{r:.2f}' for r in cpu)} s CPU", flush=True)

    users = np.arange(info.n_users)
    report["top_k_kernel"] = time_top_k(models["RandomVectors"], users, 10, n_blocks=5)
    tk = report["top_k_kernel"]
    print(f"top-k of a {SCORE_BLOCK} x {info.n_items} block: top_k_rows "
          f"{tk['top_k_rows_ms']:.1f} ms, argpartition {tk['argpartition_ms']:.1f} ms")

    worst = max(r["median_s"] for r in report["evaluate"].values())
    report["target"] = {"seconds": TARGET_SECONDS, "met": worst < TARGET_SECONDS}
    if not args.no_write:
        write_results(report)
        print(f"wrote {RESULTS / 'evaluate_speed.md'}")
    return 0 if report["target"]["met"] else 1


def write_results(report: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "evaluate_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    mach, data, tk = report["machine"], report["data"], report["top_k_kernel"]
    lines = [
        "# evaluate() speed: NDCG@10 over every test user",
        "",
        f"Run on {mach['date']}: {mach['nproc']} x {mach['cpu']}, {mach['memory_gib']} GiB, "
        f"load average {mach['load_average_1m']} at start; Python {mach['python']}, "
        f"numpy {mach['numpy']}.",
        "",
        f"Data: {data['n_users']:,} users x {data['n_items']:,} items (generated, split 80/20 "
        f"per user); {data['test_rows']:,} test rows of {data['test_users']:,} users, all "
        "ranked over the whole catalogue with training items removed.",
        "",
        "| model | evaluate(metrics=[\"ndcg\"], k=10): median wall | runs, wall (s) | "
        f"median CPU time | NDCG@10 | target < {TARGET_SECONDS:.0f} s |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in report["evaluate"].items():
        met = "yes" if r["median_s"] < TARGET_SECONDS else "NO"
        lines.append(f"| {name} | {r['median_s']:.2f} s | "
                     f"{', '.join(f'{s:.2f}' for s in r['seconds'])} | "
                     f"{r['median_cpu_s']:.2f} s | {r['ndcg@10']:.4f} | {met} |")
    lines += [
        "",
        f"Top-k kernel on one {tk['block_rows']} x {data['n_items']:,} score block (median of "
        f"{tk['blocks']} blocks, same run): `top_k_rows` {tk['top_k_rows_ms']:.1f} ms, "
        f"`argpartition` + sort {tk['argpartition_ms']:.1f} ms "
        f"({tk['argpartition_ms'] / tk['top_k_rows_ms']:.1f}x).",
        "",
        "The machine may have been shared with other work (see the load average): wall time "
        "then stretches while CPU time (this process, all threads) stays close to what an idle "
        "machine needs. Compare figures from the same run. "
        "Command: `python -m benchmarks.evaluate_speed`.",
        "",
    ]
    (RESULTS / "evaluate_speed.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
