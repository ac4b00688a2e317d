"""The fault suite, longer: faults under load against real gunicorn and redis-server processes.

::

    python -m benchmarks.faults [--rounds 3] [--connections 32]

Every scenario of :mod:`tests.ops.scenarios` runs ``--rounds`` times with longer phases than
in the tests, with ``--connections`` kept-alive connections posting to 127.0.0.1:

* ``version swap``: ItemCF versions trained on different data activated in turn; every answer
  must be exactly one version's;
* ``Redis restart``: redis-server SIGKILLed for 5 s and started again from its snapshot;
* ``loader killed``: ``python -m jobs.load`` SIGKILLed halfway through a large load, then a
  complete load of the same directory;
* ``TF Serving restart`` (when TensorFlow is installed): the REST double of TF Serving stopped
  for 4 s under the tf service.

Results go to ``benchmarks/results/faults.json`` and ``.md``; the exit status is 1 when a
scenario broke a promise.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.common import host, source
    from services.loaders.knn import load_knn
    from tests.ops import scenarios as sc
    from tests.services.conftest import Gunicorn, KnnModels, RedisServer

    results: dict[str, Any] = {
        "benchmark": "faults",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.faults", shlex.join(sys.argv[1:])]).strip(),
        "source": args.source or source(),
        "machine": host(), "rounds": args.rounds, "connections": args.connections,
        "scenarios": {},
    }
    record: Callable[[str, dict, list], None] = _recorder(results)
    n = args.connections
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        redis = RedisServer(folder / "redis").start()
        client = redis.client()
        started: list[Any] = []
        try:
            a = KnnModels(folder / "knn")
            b = KnnModels(folder / "knn", seed=23, n_interactions=5000)
            big = KnnModels(folder / "big", seed=31, n_users=8000, n_items=1000,
                            n_interactions=80_000)
            load_knn(a.paths["item_cf"], client=client)
            knn = Gunicorn("services.knn.knn_deploy:app",
                           {"REDIS_URL": redis.url, "LIBRECO_POLL_INTERVAL": "0.1",
                            "LIBRECO_REDIS_TIMEOUT": "0.5"}, folder / "knn.log")
            started.append(knn)
            users = list(a.info.id2user[:40])
            reqs = [("/item_cf/recommend", u, {"user": u, "n_rec": 10}) for u in users]
            expected = {"a": sc.answers_of(knn.url, reqs)}
            load_knn(b.paths["item_cf"], client=client)
            time.sleep(0.5)
            expected["b"] = sc.answers_of(knn.url, reqs)
            differ = [r for r in reqs if expected["a"][r[1]] != expected["b"][r[1]]]
            paths = {"a": a.paths["item_cf"], "b": b.paths["item_cf"]}
            current = "b"
            for i in range(args.rounds):
                new = "a" if current == "b" else "b"
                report = sc.version_swap(
                    knn.url, differ, expected[current], expected[new],
                    lambda new=new: load_knn(paths[new], client=client),
                    connections=n, before=3.0, after=5.0)
                record("version swap", report, sc.swap_problems(report))
                current = new
                print(f"version swap {i + 1}: {_short(report)}", flush=True)

            load_knn(a.paths["item_cf"], client=client)
            time.sleep(0.5)
            client.save()  # the restarted server reads this snapshot
            for i in range(args.rounds):
                report = sc.outage(knn.url, reqs, expected["a"], redis.kill, redis.start,
                                   knn.workers, connections=n, up=3.0, down=5.0, after=3.0)
                record("Redis restart", report, sc.outage_problems(report))
                print(f"Redis restart {i + 1}: {_short(report)}", flush=True)

            for i in range(args.rounds):
                name = f"item_cf_{i}"
                load_knn(a.paths["item_cf"], name=name, client=client)
                named = [(f"/{name}/recommend", u, body) for _, u, body in reqs]
                time.sleep(0.5)
                report = sc.killed_load(knn.url, named, expected["a"], client,
                                        big.paths["item_cf"], name, redis.url,
                                        connections=n, after_kill=3.0, after=3.0)
                report.pop("expected_new")
                record("loader killed", report, sc.killed_load_problems(report))
                print(f"loader killed {i + 1}: {_short(report)}", flush=True)

            tf_models = _tf_models(folder / "tf")
            if tf_models is not None:
                _tf_rounds(args, tf_models, redis, client, folder, started, record)
        finally:
            for g in started:
                g.stop()
            client.close()
            redis.stop()
    results["machine"]["load_average_end"] = list(os.getloadavg())
    reports = [r for s in results["scenarios"].values() for r in s]
    results["totals"] = {"runs": len(reports),
                         "requests": sum(r["requests"] for r in reports),
                         "broken_promises": sum(len(r["problems"]) for r in reports)}
    return results


def _tf_rounds(args: argparse.Namespace, tf_models: Any, redis: Any, client: Any,
               folder: Path, started: list, record: Callable) -> None:
    from services.loaders.tf import load_tf
    from services.testing.tf_serving_double import TFServingDouble
    from tests.ops import scenarios as sc
    from tests.services.conftest import Gunicorn

    load_tf(tf_models.paths["deepfm"], client=client)
    double = TFServingDouble({"deepfm": tf_models.serving / "deepfm"}).start()
    try:
        server = Gunicorn("services.tf.tf_deploy:app",
                          {"REDIS_URL": redis.url, "TF_SERVING_URL": double.url,
                           "LIBRECO_POLL_INTERVAL": "0.1", "LIBRECO_TF_TIMEOUT": "2"},
                          folder / "tf.log")
        started.append(server)
        reqs = [("/deepfm/recommend", u, {"user": u, "n_rec": 10})
                for u in (tf_models.info.id2user[i] for i in range(30))]
        expected = sc.answers_of(server.url, reqs)
        for i in range(args.rounds):
            report = sc.outage(server.url, reqs, expected, double.stop, double.start,
                               server.workers, connections=args.connections, up=2.0,
                               down=4.0, after=3.0)
            record("TF Serving restart", report, sc.outage_problems(report))
            print(f"TF Serving restart {i + 1}: {_short(report)}", flush=True)
    finally:
        double.stop()


def _tf_models(folder: Path) -> Any:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        print("tensorflow is not installed: the TF Serving scenario is left out", flush=True)
        return None
    from tests.services.tf_models import TFModels

    return TFModels(folder)


def _recorder(results: dict[str, Any]) -> Callable[[str, dict, list], None]:
    def record(scenario: str, report: dict, problems: list) -> None:
        results["scenarios"].setdefault(scenario, []).append({**report, "problems": problems})

    return record


def _short(report: dict) -> str:
    keys = ("requests", "statuses", "recovery_s", "answers_of_neither_version", "failed")
    return ", ".join(f"{k} {report[k]}" for k in keys if k in report)


COLUMNS = {
    "version swap": [("requests", "requests"), ("failed", "failed"),
                     ("old / new version answers", ("old_version_answers",
                                                    "new_version_answers")),
                     ("answers of neither version", "answers_of_neither_version"),
                     ("old answers > 1 s after activation", "old_after_activation")],
    "Redis restart": [("requests", "requests"), ("statuses", "statuses"),
                      ("outage s", "outage_s"), ("answers while away (non-503)",
                                                 ("answers_while_away", "non_503_while_away")),
                      ("errors without JSON", "errors_without_json_body"),
                      ("recovery s", "recovery_s"), ("connection errors", "connection_errors"),
                      ("same workers", "workers_unchanged")],
    "loader killed": [("requests", "requests"), ("failed", "failed"),
                      ("answers between kill and reload", "answers_between_kill_and_reload"),
                      ("active unchanged", "active_unchanged_after_kill"),
                      ("complete load s", "complete_load_s"),
                      ("new version active", "new_version_active"),
                      ("answers of neither version", "answers_of_neither_version")],
}
COLUMNS["TF Serving restart"] = COLUMNS["Redis restart"]


def report_md(results: dict[str, Any]) -> str:
    m, totals = results["machine"], results["totals"]
    load = ", ".join(f"{x:.1f}" for x in m["load_average"])
    load_end = ", ".join(f"{x:.1f}" for x in m["load_average_end"])
    lines = [
        "# Faults under load",
        "",
        f"Run {results['date']} of {results['source']} with `{results['command']}` on "
        f"{m['nproc']} x {m['cpu']} "
        f"(Python {m['python']}); load average at start {load}, at the end {load_end}. The "
        "cores are shared with other work.",
        "",
        f"Real gunicorn (2 workers, gthread) and redis-server processes on 127.0.0.1, "
        f"{results['connections']} kept-alive client connections posting recommendation "
        f"requests of known users throughout each run, {results['rounds']} runs per scenario "
        "(`tests/ops/scenarios.py`). A dependency's recovery time is from the moment it "
        "serves again to the start of the last request that failed.",
        "",
        f"**{totals['runs']} runs, {totals['requests']:,} requests: "
        f"{totals['broken_promises']} broken promises.**",
    ]
    for scenario, runs in results["scenarios"].items():
        columns = COLUMNS.get(scenario, [])
        lines += ["", f"## {scenario}", "",
                  "| run | " + " | ".join(c for c, _ in columns) + " | problems |",
                  "|---" * (len(columns) + 2) + "|"]
        for i, r in enumerate(runs, 1):
            cells = []
            for _, key in columns:
                if isinstance(key, tuple):
                    cells.append(" / ".join(str(r[k]) for k in key))
                elif key == "statuses":
                    cells.append(", ".join(f"{k}: {v}" for k, v in r[key].items()))
                else:
                    cells.append(f"{r[key]:,}" if isinstance(r[key], int) and
                                 not isinstance(r[key], bool) else str(r[key]))
            lines.append(f"| {i} | " + " | ".join(cells) + " | " +
                         ("; ".join(r["problems"]) or "none") + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs per scenario")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--source", default=None,
                        help="the code that runs, for the record (default: the git commit)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    results = run(args)
    print(json.dumps(results["totals"], indent=2))
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "faults.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / "faults.md").write_text(report_md(results))
    return 0 if results["totals"]["broken_promises"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
