"""The ``libreco`` command: train and evaluate from the shell, on generated data and a CSV file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from libreco.algorithms import Recommender
from libreco.cli import main
from libreco.data.synthetic import generate


def run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_train_writes_a_loadable_model_and_holdout_evaluation_repeats_its_figures(
        tmp_path, capsys):
    out = tmp_path / "item_cf"
    code, summary, _ = run(capsys, "train", "--algorithm", "item_cf", "--generate", "6000",
                           "--metrics", "ndcg,recall", "--output", str(out), "--seed", "3")
    assert code == 0
    assert summary["family"] == "knn" and summary["n_test"] > 0
    assert (out / "manifest.json").is_file()
    model = Recommender.load(out)
    assert model.algorithm == "item_cf"

    code, again, _ = run(capsys, "evaluate", "--model", str(out), "--generate", "6000",
                         "--seed", "3", "--holdout", "--metrics", "ndcg,recall")
    assert code == 0
    assert again["n_rows"] == summary["n_test"]
    for name, value in summary["metrics"].items():
        assert again["metrics"][name] == pytest.approx(value)

    # every row, training rows included, is a different evaluation
    code, whole, _ = run(capsys, "evaluate", "--model", str(out), "--generate", "6000",
                         "--seed", "3", "--metrics", "ndcg")
    assert code == 0 and whole["n_rows"] > again["n_rows"]


def test_csv_with_a_column_mapping(tmp_path, capsys):
    df = generate(n_users=150, n_items=80, n_interactions=4000, seed=1)
    path = tmp_path / "ratings.csv"
    df.rename(columns={"user": "userId", "item": "movieId", "label": "rating"}).to_csv(
        path, index=False)
    code, summary, _ = run(capsys, "train", "--algorithm", "svd", "--task", "rating",
                           "--data", str(path), "--columns",
                           "user=userId,item=movieId,label=rating", "--metrics", "rmse",
                           "--param", "n_epochs=3", "--output", str(tmp_path / "svd"))
    assert code == 0
    assert summary["task"] == "rating" and summary["metrics"]["rmse"] > 0
    assert (tmp_path / "svd" / "manifest.json").is_file()


def test_bad_input_exits_2_naming_the_problem(tmp_path, capsys, caplog):
    path = tmp_path / "bad.csv"
    path.write_text("who,what\n1,2\n")
    code, summary, _ = run(capsys, "train", "--algorithm", "item_cf", "--data", str(path))
    assert code == 2 and summary is None
    assert "'user'" in caplog.text and "who" in caplog.text

    caplog.clear()
    code, _, _ = run(capsys, "evaluate", "--model", str(tmp_path / "missing"),
                     "--generate", "2000")
    assert code == 2 and "missing" in caplog.text


def test_without_a_terminal_progress_is_plain_log_lines(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "libreco.cli", "train", "--algorithm", "bpr", "--generate",
         "3000", "--param", "n_epochs=2"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr  # no progress bar redraws
    assert "epoch" in proc.stderr
    assert json.loads(proc.stdout)["algorithm"] == "bpr"
