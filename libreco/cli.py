"""The ``libreco`` command: train and evaluate models from the shell.

Examples
--------
Train ItemCF on generated data and write a serving model directory::

    libreco train --algorithm item_cf --generate 100000 --output models/item_cf

Train DeepFM on a CSV file with features, exporting a SavedModel for TF Serving::

    libreco train --algorithm deepfm --data ratings.csv \\
        --columns user=userId,item=movieId,label=rating,time=timestamp \\
        --user-col age,sex --item-col genre --sparse-col sex,genre --dense-col age \\
        --output models/deepfm --tf-serving-dir models/tf_serving

Evaluate a saved model on a CSV file, or on the held-out part of the split it was trained
with (same data, ``--split``, ``--test-size`` and ``--seed`` as the training run)::

    libreco evaluate --model models/item_cf --data test.csv --metrics ndcg,recall --k 10
    libreco evaluate --model models/item_cf --generate 100000 --holdout --metrics ndcg,recall
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd

from libreco import __version__, logger
from libreco.utils.progress import on_terminal

SPLITS = ("ratio", "ratio_chrono", "num", "num_chrono", "random")


def _parse_params(items: list[str]) -> dict:
    params = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--param expects name=value, got {item!r}")
        name, raw = item.split("=", 1)
        try:
            params[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            params[name.strip()] = raw
    return params


def _csv_list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _columns(value: str | None) -> dict[str, str]:
    out = {}
    for pair in _csv_list(value):
        ours, _, theirs = pair.partition("=")
        if not theirs:
            raise SystemExit(f"--columns expects ours=theirs pairs, got {pair!r}")
        out[ours.strip()] = theirs.strip()
    return out


def generated_frame(n_interactions: int, seed: int = 42) -> pd.DataFrame:
    """Generated data sized from the number of interactions (about 50 per user)."""
    from libreco.data.synthetic import generate

    n_users = max(50, n_interactions // 50)
    n_items = max(50, min(n_interactions // 20, 20_000))
    return generate(n_users=n_users, n_items=n_items, n_interactions=n_interactions, seed=seed)


def load_frame(args) -> tuple[pd.DataFrame, dict]:
    """The interactions named by the command line, and the feature columns to use."""
    from libreco.data.synthetic import FEATURE_COLUMNS

    if args.data:
        from libreco.data.readers import read_csv

        mapping = _columns(args.columns)
        df = read_csv(args.data, columns=mapping or None, sep=args.sep)
        features = {"user_col": _csv_list(args.user_col), "item_col": _csv_list(args.item_col),
                    "sparse_col": _csv_list(args.sparse_col),
                    "dense_col": _csv_list(args.dense_col)}
    elif args.movielens_100k or args.movielens_1m:
        from libreco.data import readers

        if args.movielens_100k:
            df = readers.read_movielens_100k(args.movielens_100k)
        else:
            df = readers.read_movielens_1m(args.movielens_1m)
        features = {"user_col": ["sex", "age", "occupation"],
                    "item_col": ["genre1", "genre2", "genre3"],
                    "sparse_col": ["sex", "occupation", "genre1", "genre2", "genre3"],
                    "dense_col": ["age"]}
    else:
        df = generated_frame(args.generate, seed=args.seed)
        features = dict(FEATURE_COLUMNS)
    return df, features


def split_frame(df: pd.DataFrame, how: str, test_size: float, seed: int):
    from libreco.data import split as splits

    if how == "random":
        return splits.random_split(df, test_size=test_size, seed=seed)
    if how == "ratio":
        return splits.split_by_ratio(df, test_size=test_size, seed=seed)
    if how == "ratio_chrono":
        return splits.split_by_ratio_chrono(df, test_size=test_size)
    n = max(1, int(test_size))
    if how == "num":
        return splits.split_by_num(df, test_size=n, seed=seed)
    return splits.split_by_num_chrono(df, test_size=n)


def save_for_serving(model, train, output: Path, tf_serving_dir: str | None,
                     k_save: int | None) -> None:
    """Write the model directory in the form its serving family reads."""
    family = model.family
    if family == "knn":
        from libreco.utils import save_knn

        save_knn(output, model, train, k=k_save or model.params.get("k_sim", 20))
    elif family == "vector":
        from libreco.utils import save_vector

        save_vector(output, model, train)
    elif family == "tf":
        from libreco.utils import save_info, save_model_tf_serving

        save_info(output, model, train, model.data_info)
        if tf_serving_dir:
            save_model_tf_serving(tf_serving_dir, model, model.algorithm)
    else:
        model.save(output)


def train(args) -> dict:
    from libreco.algorithms import get_algorithm
    from libreco.data import DatasetFeat, DatasetPure
    from libreco.evaluation import evaluate

    started = time.perf_counter()
    cls = get_algorithm(args.algorithm)
    params = _parse_params(args.param)
    task = args.task or ("rating" if "ranking" not in cls.tasks else "ranking")
    df, features = load_frame(args)
    logger.info("data: %d rows, %d users, %d items", len(df), df["user"].nunique(),
                df["item"].nunique())
    train_df, test_df = split_frame(df, args.split, args.test_size, args.seed)
    use_features = cls.family == "tf" and any(features.values())
    if use_features:
        train_set, info = DatasetFeat.build_trainset(train_df, **features)
    else:
        train_set, info = DatasetPure.build_trainset(train_df)
    model = cls(task=task, data_info=info, **params)
    t0 = time.perf_counter()
    model.fit(train_set, verbose=args.verbose)
    fit_seconds = time.perf_counter() - t0
    metrics = _csv_list(args.metrics) or None
    results = evaluate(model, test_df, metrics=metrics, k=args.k)
    model.eval_results = results
    logger.info("%s fitted in %.1fs; %s", cls.algorithm, fit_seconds,
                ", ".join(f"{m}@{args.k}={v:.4f}" for m, v in results.items()))
    if args.output:
        save_for_serving(model, train_set, Path(args.output), args.tf_serving_dir, args.k_save)
    summary = {"algorithm": cls.algorithm, "family": cls.family, "task": task,
               "n_train": len(train_set), "n_test": len(test_df), "fit_seconds": fit_seconds,
               "total_seconds": time.perf_counter() - started, "metrics": results,
               "output": str(args.output) if args.output else None}
    return summary


def evaluate_cmd(args) -> dict:
    from libreco.algorithms import Recommender
    from libreco.evaluation import evaluate

    model = Recommender.load(args.model)
    df, _ = load_frame(args)
    if args.holdout:
        # the rows the training run held out: same data, same split, same seed
        _, df = split_frame(df, args.split, args.test_size, args.seed)
    results = evaluate(model, df, metrics=_csv_list(args.metrics) or None, k=args.k)
    return {"algorithm": model.algorithm, "n_rows": len(df), "metrics": results}


def _data_options(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="CSV file of interactions")
    src.add_argument("--movielens-100k", metavar="DIR", help="folder with u.data, u.user, u.item")
    src.add_argument("--movielens-1m", metavar="DIR",
                     help="folder with ratings.dat, users.dat, movies.dat")
    src.add_argument("--generate", type=int, default=100_000, metavar="N",
                     help="generate N synthetic interactions (the default, N=100000)")
    p.add_argument("--columns", help="CSV column names as ours=theirs pairs, e.g. "
                                     "user=userId,item=movieId,label=rating,time=timestamp")
    p.add_argument("--sep", default=",", help="CSV separator")
    p.add_argument("--user-col", help="comma-separated user feature columns")
    p.add_argument("--item-col", help="comma-separated item feature columns")
    p.add_argument("--sparse-col", help="which feature columns are categorical")
    p.add_argument("--dense-col", help="which feature columns are numeric")
    p.add_argument("--metrics", help="comma-separated metric names")
    p.add_argument("--k", type=int, default=10, help="cut-off for ranking metrics")
    p.add_argument("--seed", type=int, default=42)


def _split_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", choices=SPLITS, default="ratio")
    p.add_argument("--test-size", type=float, default=0.2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="libreco", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"libreco {__version__}")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="fit one algorithm, evaluate it, write its model directory")
    t.add_argument("--algorithm", required=True, help="e.g. item_cf, als, deepfm")
    t.add_argument("--task", choices=("ranking", "rating"))
    t.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="algorithm parameter, repeatable (values are parsed as JSON)")
    _split_options(t)
    t.add_argument("--output", help="model directory to write")
    t.add_argument("--tf-serving-dir", help="TF models: also export a SavedModel here")
    t.add_argument("--k-save", type=int, help="KNN models: neighbours saved per row")
    t.add_argument("--verbose", type=int, default=1)
    _data_options(t)

    e = sub.add_parser("evaluate", help="evaluate a saved model on interactions")
    e.add_argument("--model", required=True, help="model directory")
    e.add_argument("--holdout", action="store_true",
                   help="evaluate on the held-out part of --split (as the training run did) "
                        "instead of on every row")
    _split_options(e)
    _data_options(e)
    return parser


def configure_logging(level: str = "INFO") -> None:
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt,
                        stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    if not on_terminal():
        logger.debug("no terminal attached: progress is reported as log lines")
    try:
        result = train(args) if args.command == "train" else evaluate_cmd(args)
    except (ValueError, FileNotFoundError) as e:
        logger.error("%s", e)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
