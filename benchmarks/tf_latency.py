"""Per-request latency of the tf service, SavedModel in the worker against TF Serving's REST API.

Run from the repository root::

    python -m benchmarks.tf_latency [--requests 200] [--warmup 20]

Steps, all on this machine and on 127.0.0.1:

1. generate interactions over a catalogue of more than 30,000 items, fit a DeepFM and a DIN
   (one epoch: the figures are about serving, not quality), ``save_info`` them and export
   them with ``save_model_tf_serving``;
2. start a private redis-server on a free loopback port and load both models with
   ``data_info2redis`` (and ``seq2redis`` for DIN);
3. start the TF Serving REST test double (``python -m services.testing.tf_serving_double``,
   its own process) on a free loopback port over the exported models;
4. for each case, build the tf service's Flask app (``create_app("tf", ...)``) with either
   ``LIBRECO_MODEL_DIR`` (in-process scoring) or ``TF_SERVING_URL`` (the double), and the
   candidate cap ``LIBRECO_TF_CANDIDATES`` (3,000, or 0 for every unconsumed item, about
   30,000); send ``--warmup`` requests, then time ``--requests`` sequential
   ``POST /<model>/recommend`` requests through Flask's test client, each for a user drawn
   at random (seeded) among the known users, ``n_rec=10``.

The timed span is the whole request inside the service: JSON parsing, the Redis round trip,
building the inputs, scoring and choosing the best items. Flask's test client leaves out
gunicorn and the client's socket; over REST the span includes the double's Python JSON work,
which TF Serving does in C++.

Writes ``benchmarks/results/tf_latency.json`` and ``benchmarks/results/tf_latency.md``. No
target: the figures are recorded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchmarks.common import RedisProcess, free_port

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from benchmarks.tf_rankers import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = {"n_users": 5_000, "n_items": 36_000, "n_interactions": 300_000, "seed": 42}
MIN_ITEMS = 30_000
TRAIN = {"n_epochs": 1, "batch_size": 2048}
# (model, scoring, candidate cap); cap 0 ranks every unconsumed item
CASES = [
    ("deepfm", "in-process", 3_000),
    ("deepfm", "rest", 3_000),
    ("deepfm", "in-process", 30_000),
    ("deepfm", "rest", 30_000),
    ("deepfm", "in-process", 0),
    ("deepfm", "rest", 0),
    ("din", "in-process", 3_000),
    ("din", "rest", 3_000),
]


def wait_until(check, timeout: float, what: str, errors: tuple = (OSError, ValueError)) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except errors:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


def train_and_export(folder: Path) -> dict:
    """Fit DeepFM and DIN, ``save_info`` each into ``folder/<algo>`` and export them into
    ``folder/serving``."""
    from libreco.algorithms import DIN, DeepFM
    from libreco.data import DatasetFeat
    from libreco.data.synthetic import FEATURE_COLUMNS, generate
    from libreco.utils import save_info, save_model_tf_serving

    df = generate(**DATA)
    train, info = DatasetFeat.build_trainset(df, **FEATURE_COLUMNS)
    if info.n_items < MIN_ITEMS:
        raise RuntimeError(f"only {info.n_items} items were drawn; raise n_interactions")
    out = {"n_users": info.n_users, "n_items": info.n_items, "n_interactions": len(train),
           "fit_s": {}}
    for cls in (DeepFM, DIN):
        start = time.perf_counter()
        model = cls(task="ranking", data_info=info, **TRAIN).fit(train, verbose=0)
        out["fit_s"][model.algorithm] = time.perf_counter() - start
        save_info(folder / model.algorithm, model, train, info)
        save_model_tf_serving(folder / "serving", model, model.algorithm)
        print(f"{model.algorithm}: fitted in {out['fit_s'][model.algorithm]:.1f}s and exported",
              flush=True)
    out["users"] = [info.id2user[u] for u in range(info.n_users)]
    out["consumed_mean"] = float(np.mean(np.diff(info.consumed_indptr)))
    return out


class ServingDouble:
    """The TF Serving REST test double in a process of its own."""

    def __init__(self, serving: Path, models: list[str], log: Path):
        self.port = free_port()
        config = serving / "models.config"
        config.write_text("model_config_list {\n" + "".join(
            f'  config {{ name: "{m}" base_path: "{serving / m}" }}\n' for m in models) + "}\n")
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.testing.tf_serving_double", "--rest_api_port",
             str(self.port), "--model_config_file", str(config)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

        def available() -> bool:
            for m in models:
                with urllib.request.urlopen(f"{self.url}/v1/models/{m}", timeout=2) as resp:
                    states = [v["state"] for v in json.load(resp)["model_version_status"]]
                if "AVAILABLE" not in states:
                    return False
            return True

        wait_until(available, 120, "the TF Serving double")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


def summary(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000.0
    return {"n": len(ms), "mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max())}


def measure(app_env: dict, algo: str, users: list, n_warmup: int, n_requests: int,
            rng: np.random.Generator) -> dict:
    from services.core.app import create_app

    client = create_app("tf", app_env).test_client()
    picks = rng.choice(len(users), n_warmup + n_requests)
    seconds = []
    for j, u in enumerate(picks):
        body = json.dumps({"user": str(users[u]), "n_rec": 10})
        start = time.perf_counter()
        resp = client.post(f"/{algo}/recommend", data=body)
        elapsed = time.perf_counter() - start
        if resp.status_code != 200:
            raise RuntimeError(f"{algo}: status {resp.status_code}: {resp.get_data(True)[:300]}")
        (pairs,) = resp.get_json().values()
        if len(pairs) != 10:
            raise RuntimeError(f"{algo}: {len(pairs)} items instead of 10")
        if j >= n_warmup:
            seconds.append(elapsed)
    return summary(seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None:
        print("redis-server is not installed (make redis)", file=sys.stderr)
        return 1
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "command": "python -m benchmarks.tf_latency "
              + " ".join(argv if argv is not None else sys.argv[1:]),
              "requests": args.requests, "warmup": args.warmup, "cases": []}
    from services.loaders.tf import data_info2redis, seq2redis

    with tempfile.TemporaryDirectory(prefix="libreco-tf-latency-") as tmp:
        folder = Path(tmp)
        data = train_and_export(folder)
        users = data.pop("users")
        result["data"] = {**DATA, **data}
        redis = RedisProcess(folder)
        double = None
        try:
            start = time.perf_counter()
            for algo in ("deepfm", "din"):
                data_info2redis(folder / algo, client=redis.client)
            seq2redis(folder / "din", client=redis.client)
            result["load_s"] = time.perf_counter() - start
            double = ServingDouble(folder / "serving", ["deepfm", "din"], folder / "double.log")
            rng = np.random.default_rng(7)
            for algo, scoring, cap in CASES:
                env = {"REDIS_URL": redis.url, "LIBRECO_POLL_INTERVAL": "0",
                       "LIBRECO_TF_CANDIDATES": str(cap), "LIBRECO_LOG_LEVEL": "WARNING"}
                if scoring == "rest":
                    env["TF_SERVING_URL"] = double.url
                else:
                    env["LIBRECO_MODEL_DIR"] = str(folder / "serving")
                stats = measure(env, algo, users, args.warmup, args.requests, rng)
                candidates = cap or data["n_items"]
                row = {"model": algo, "scoring": scoring, "candidate_cap": cap,
                       "candidates": candidates, **stats}
                result["cases"].append(row)
                print(f"{algo:7s} {scoring:10s} cap {cap:5d}: p50 {stats['p50_ms']:.1f} ms, "
                      f"p90 {stats['p90_ms']:.1f}, p99 {stats['p99_ms']:.1f}, "
                      f"mean {stats['mean_ms']:.1f}", flush=True)
        finally:
            if double is not None:
                double.stop()
            redis.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tf_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "tf_latency.md").write_text(markdown(result))
    print(f"wrote {RESULTS / 'tf_latency.md'}")
    return 0


def markdown(result: dict) -> str:
    m, d = result["machine"], result["data"]
    lines = [
        "# tf service: latency per request",
        "",
        f"Run `{result['command'].strip()}` on {result['date']}: {m['nproc']} CPUs "
        f"({m['cpu']}), load average at start {m['load_average_at_start']}; Python "
        f"{m['python']}, numpy {m['numpy']}, TensorFlow {m['tensorflow']} (CPU).",
        "",
        f"Models: DeepFM and DIN (`recent_num=10`) fitted for one epoch on `generate(n_users="
        f"{d['n_users']:,}, n_items={DATA['n_items']:,}, n_interactions="
        f"{d['n_interactions']:,}, seed={d['seed']})` with features: {d['n_items']:,} items "
        f"in the catalogue, {d['consumed_mean']:.0f} consumed items per user on average. "
        "Exported with `save_model_tf_serving`, loaded into a private redis-server on "
        f"127.0.0.1 with `data_info2redis` and `seq2redis` ({result['load_s']:.1f} s for both).",
        "",
        f"Each case: {result['warmup']} warm-up requests, then {result['requests']} sequential "
        "`POST /<model>/recommend` requests (`{\"user\": <random known user>, \"n_rec\": 10}`) "
        "through **Flask's test client** in one process (no gunicorn, no client socket). "
        "*in-process*: `LIBRECO_MODEL_DIR`, the SavedModel evaluated in the worker; *REST*: "
        "`TF_SERVING_URL` pointing at the TF Serving REST test double "
        "(`services/testing/tf_serving_double.py`, its own process on 127.0.0.1, kept-alive "
        "connection). The candidate cap is `LIBRECO_TF_CANDIDATES` (0: every unconsumed item).",
        "",
        "| model | scoring | LIBRECO_TF_CANDIDATES | candidates | p50 (ms) | p90 (ms) | "
        "p99 (ms) | mean (ms) | max (ms) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in result["cases"]:
        cand = (f"{c['candidates']:,}" if c["candidate_cap"] else
                f"all unconsumed (~{c['candidates'] - d['consumed_mean']:,.0f})")
        lines.append(f"| {c['model']} | {c['scoring']} | {c['candidate_cap']} | {cand} | "
                     f"{c['p50_ms']:.1f} | {c['p90_ms']:.1f} | {c['p99_ms']:.1f} | "
                     f"{c['mean_ms']:.1f} | {c['max_ms']:.1f} |")
    lines += [
        "",
        "Notes",
        "",
        "- The REST figures include the test double's work: it decodes the columnar JSON and "
        "encodes the scores in Python before and after calling the same SavedModel, where "
        "TF Serving does that in C++; they bound the REST path from above.",
        "- With every item as a candidate, a request scores the catalogue minus the user's "
        "consumed items in one model call.",
        "- Another process may share the machine: compare the figures of one run, not across "
        "runs.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
