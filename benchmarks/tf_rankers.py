"""Quality and training speed of WideDeep, FM and DeepFM.

Run from the repository root::

    python -m benchmarks.tf_rankers [--skip-speed] [--skip-movielens]

Three parts:

* **generated data** whose features carry signal (``libreco.data.synthetic.generate`` with
  ``FEATURE_COLUMNS``), split per user; every model and ``Popular`` are scored on the held-out
  rows with :func:`libreco.evaluation.evaluate`: ROC-AUC of the held-out positives against one
  sampled unconsumed item each, and precision, recall and NDCG at 10 over all items, consumed
  items excluded. Targets: ROC-AUC >= 0.75 and NDCG@10 above ``Popular`` for every model;
* the same on the MovieLens sample ``../shared/data/movielens_sample_merged.csv`` (read by path
  from the repository root, features sex, age, occupation and genre1..3, all categorical);
* seconds per training epoch on one million generated interactions (two million rows per epoch
  with one sampled negative per positive), at two batch sizes. The first epoch includes
  compiling the training function; the second is the steady state.

Writes ``benchmarks/results/tf_rankers.json`` and ``benchmarks/results/tf_rankers.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

from benchmarks.common import cpu_model

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from libreco.algorithms import FM, DeepFM, Popular, WideDeep  # noqa: E402
from libreco.data import DatasetFeat  # noqa: E402
from libreco.data.split import split_by_ratio  # noqa: E402
from libreco.data.synthetic import FEATURE_COLUMNS, generate  # noqa: E402
from libreco.evaluation import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MOVIELENS = ROOT / ".." / "shared" / "data" / "movielens_sample_merged.csv"
MOVIELENS_COLUMNS = {
    "user_col": ["sex", "age", "occupation"],
    "item_col": ["genre1", "genre2", "genre3"],
    "sparse_col": ["sex", "age", "occupation", "genre1", "genre2", "genre3"],
}
MODELS = {"wide_deep": WideDeep, "fm": FM, "deepfm": DeepFM}
METRICS = ["roc_auc", "ndcg", "precision", "recall"]
MIN_AUC = 0.75
# the parameters each data set is trained with (the rest are the models' defaults)
SYNTHETIC_PARAMS = {"n_epochs": 5, "batch_size": 1024, "lr": 3e-3}
MOVIELENS_PARAMS = {"n_epochs": 5, "batch_size": 256, "lr": 1e-3}
SPEED_BATCHES = (256, 2048)


def machine() -> dict:
    cpu = cpu_model()
    import tensorflow as tf

    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "numpy": np.__version__, "tensorflow": tf.__version__,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


class EpochTimes(logging.Handler):
    """Collects the seconds of each epoch from the models' per-epoch log lines."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("%s epoch %d/%d in %.2fs"):
            self.seconds.append(float(record.args[3]))


def quality(name: str, df: pd.DataFrame, columns: dict, params: dict) -> dict:
    train_df, test_df = split_by_ratio(df, test_size=0.2, seed=42)
    train, info = DatasetFeat.build_trainset(train_df, **columns)
    out = {"data": name, "n_train": len(train), "n_test": len(test_df), "n_users": info.n_users,
           "n_items": info.n_items, "params": params, "models": {}}
    pop = Popular(task="ranking", data_info=info).fit(train, verbose=0)
    out["models"]["popular"] = {"fit_s": 0.0, **evaluate(pop, test_df, metrics=METRICS, k=10)}
    for algo, cls in MODELS.items():
        start = time.perf_counter()
        model = cls(task="ranking", data_info=info, **params).fit(train, verbose=0)
        fit_s = time.perf_counter() - start
        scores = evaluate(model, test_df, metrics=METRICS, k=10)
        out["models"][algo] = {"fit_s": fit_s, **scores}
        print(f"{name}: {algo:9s} fit {fit_s:6.1f}s " + " ".join(
            f"{m}={v:.4f}" for m, v in scores.items()), flush=True)
    pop_ndcg = out["models"]["popular"]["ndcg"]
    out["targets"] = {
        algo: {"roc_auc_ok": out["models"][algo]["roc_auc"] >= MIN_AUC,
               "ndcg_above_popular": out["models"][algo]["ndcg"] > pop_ndcg}
        for algo in MODELS}
    return out


def speed() -> dict:
    df = generate(n_users=20_000, n_items=5_000, n_interactions=1_000_000, seed=42)
    train, info = DatasetFeat.build_trainset(df, **FEATURE_COLUMNS)
    handler = EpochTimes()
    logger = logging.getLogger("libreco")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    rows = []
    try:
        for batch_size in SPEED_BATCHES:
            for algo, cls in MODELS.items():
                handler.seconds.clear()
                cls(task="ranking", data_info=info, n_epochs=2,
                    batch_size=batch_size).fit(train, verbose=1)
                first, second = handler.seconds[:2]
                rows.append({"model": algo, "batch_size": batch_size, "epoch1_s": first,
                             "epoch2_s": second, "rows_per_epoch": 2 * len(train),
                             "rows_per_s": 2 * len(train) / second})
                print(f"speed: {algo:9s} batch {batch_size:5d}: epoch 1 {first:.1f}s, "
                      f"epoch 2 {second:.1f}s", flush=True)
    finally:
        logger.removeHandler(handler)
    return {"n_interactions": len(train), "n_users": info.n_users, "n_items": info.n_items,
            "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-movielens", action="store_true")
    args = parser.parse_args(argv)
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "quality": []}
    df = generate(n_users=3_000, n_items=1_500, n_interactions=150_000, seed=42)
    result["quality"].append(quality(
        "generated (3,000 users, 1,500 items, 150,000 interactions, seed 42)", df,
        FEATURE_COLUMNS, SYNTHETIC_PARAMS))
    if not args.skip_movielens:
        if MOVIELENS.is_file():
            ml = pd.read_csv(MOVIELENS)
            result["quality"].append(quality("MovieLens sample (movielens_sample_merged.csv)",
                                             ml, MOVIELENS_COLUMNS, MOVIELENS_PARAMS))
        else:
            print(f"{MOVIELENS} not found; MovieLens part skipped", file=sys.stderr)
    if not args.skip_speed:
        result["speed"] = speed()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tf_rankers.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "tf_rankers.md").write_text(markdown(result))
    print(f"wrote {RESULTS / 'tf_rankers.md'}")
    return 0


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# TF rankers: WideDeep, FM, DeepFM",
        "",
        f"Run `python -m benchmarks.tf_rankers` on {result['date']}: {m['nproc']} CPUs "
        f"({m['cpu']}), load average at start {m['load_average_at_start']}; Python "
        f"{m['python']}, numpy {m['numpy']}, TensorFlow {m['tensorflow']} (CPU).",
        "",
    ]
    for q in result["quality"]:
        lines += [
            f"## Quality: {q['data']}",
            "",
            f"Per-user 80/20 split (`split_by_ratio(test_size=0.2, seed=42)`): "
            f"{q['n_train']:,} training and {q['n_test']:,} held-out interactions, "
            f"{q['n_users']:,} users, {q['n_items']:,} items. Parameters: "
            + ", ".join(f"`{k}={v}`" for k, v in q["params"].items())
            + " (other parameters at their defaults).",
            "",
            "| model | fit (s) | ROC-AUC | NDCG@10 | precision@10 | recall@10 | targets |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for algo, s in q["models"].items():
            t = q["targets"].get(algo)
            mark = "" if t is None else (
                f"AUC >= {MIN_AUC}: {'met' if t['roc_auc_ok'] else 'NOT met'}; NDCG > Popular: "
                f"{'met' if t['ndcg_above_popular'] else 'NOT met'}")
            lines.append(f"| {algo} | {s['fit_s']:.1f} | {s['roc_auc']:.4f} | {s['ndcg']:.4f} | "
                         f"{s['precision']:.4f} | {s['recall']:.4f} | {mark} |")
        lines.append("")
    if "speed" in result:
        sp = result["speed"]
        lines += [
            "## Training time per epoch on one million interactions",
            "",
            f"`generate(n_users=20,000, n_items=5,000, n_interactions=1,000,000, seed=42)` with "
            f"features; {sp['n_interactions']:,} positives plus one sampled negative each, so "
            f"{2 * sp['n_interactions']:,} rows per epoch. Other parameters at their defaults.",
            "",
            "| model | batch size | epoch 1 (s, with compiling) | epoch 2 (s) | rows/s |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in sp["rows"]:
            lines.append(f"| {r['model']} | {r['batch_size']} | {r['epoch1_s']:.1f} | "
                         f"{r['epoch2_s']:.1f} | {r['rows_per_s']:,.0f} |")
        lines.append("")
    lines += [
        "Notes",
        "",
        "- ROC-AUC: held-out positives against one item per positive drawn uniformly among those "
        "the user neither consumed in training nor has in the held-out rows "
        "(`evaluate(..., metrics=['roc_auc'])`). Ranking metrics rank every item, consumed "
        "items excluded.",
        "- The MovieLens sample has about four interactions per user, so personal signal is "
        "thin and popularity is a strong baseline there.",
        "- Another process may share the machine: compare the figures of one run, not across "
        "runs.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
