"""Load ItemCF into Redis and measure the knn service under gunicorn against a hello-world route.

::

    flock -x /tmp/libreco-cpu.lock python -m benchmarks.knn_service [--duration 20] [--rounds 3]

Steps, all on this machine and on 127.0.0.1:

1. generate 1,000,000 interactions (20,000 users x 10,000 items), fit ItemCF (k_sim=20) and
   ``save_knn`` it (k=20);
2. start a redis-server on a free port and time ``sim2redis`` + ``user_consumed2redis``
   in-process, then ``python -m jobs.load`` as a Job runs it (interpreter start included);
3. for each gunicorn worker class, start the knn service and a hello-world Flask app that
   answers a constant JSON body of the size of a knn answer, both with the same gunicorn
   config (``services/gunicorn_conf.py``, 2 workers), and run ``wrk`` against each in
   alternation: 32 connections, POST bodies ``{"user": <random user>, "n_rec": 10,
   "k_neighbors": 10}``.

Results go to ``benchmarks/results/knn_service.json`` and ``.md``. Targets: load < 5 s; the
service with zero errors (socket errors and non-2xx answers), throughput >= 60% of
hello-world, p99 <= 25 ms. The targets are judged on gunicorn's configured default worker
class (``gthread``); other classes are measured for comparison. Per app the figures are the
median requests per second and p50 over the rounds and the worst p99. The load average is
recorded before and after every run, since other processes may share the cores: the run
whose figures are recorded holds the machine's CPU lock exclusively (``flock -x``), so that
work that takes the lock shared waits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    HELLO_BODY_ENV,
    Gunicorn,
    RedisProcess,
    host,
    post,
    run_wrk,
    wrk_script,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per app")
    parser.add_argument("--worker-classes", default="gthread,sync")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true", help="print, do not record")
    args = parser.parse_args(argv)
    for tool in ("redis-server", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")


    from libreco.algorithms import ItemCF
    from libreco.data import DatasetPure
    from libreco.data.synthetic import generate
    from libreco.utils import save_knn
    from services.loaders.knn import sim2redis, user_consumed2redis

    results: dict[str, Any] = {"benchmark": "knn_service", "machine": host(),
                               "date": dt.datetime.now(dt.timezone.utc).isoformat(
                                   timespec="seconds"),
                               "settings": vars(args)}
    work = Path(tempfile.mkdtemp(prefix="libreco-bench-"))
    redis_proc: RedisProcess | None = None
    servers: list[Gunicorn] = []
    try:
        t0 = time.perf_counter()
        df = generate(n_users=args.users, n_items=args.items, n_interactions=args.interactions,
                      seed=2024, features=False)
        train, info = DatasetPure.build_trainset(df)
        t1 = time.perf_counter()
        model = ItemCF(task="ranking", data_info=info, k_sim=20).fit(train, verbose=0)
        t2 = time.perf_counter()
        model_dir = work / "item_cf"
        save_knn(model_dir, model, train, k=20)
        results["data"] = {"users": info.n_users, "items": info.n_items,
                           "interactions": int(len(df)), "generate_s": round(t1 - t0, 2),
                           "itemcf_fit_s": round(t2 - t1, 2)}
        print(f"data and ItemCF ready ({results['data']})", flush=True)

        redis_proc = RedisProcess(work)
        url, client = redis_proc.url, redis_proc.client

        t0 = time.perf_counter()
        sim2redis(model_dir, client=client)
        version = user_consumed2redis(model_dir, client=client)
        load_s = time.perf_counter() - t0
        client.flushall()
        t0 = time.perf_counter()
        job = subprocess.run([sys.executable, "-m", "jobs.load", "--model-dir", str(model_dir)],
                             cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": url})
        job_s = time.perf_counter() - t0
        if job.returncode != 0:
            raise RuntimeError(job.stderr)
        used = client.info("memory")["used_memory"]
        results["load"] = {"in_process_s": round(load_s, 3), "jobs_load_s": round(job_s, 3),
                           "version": version, "redis_used_memory_mb": round(used / 2**20, 1),
                           "target_s": 5.0, "met": load_s < 5.0}
        print(f"load: {results['load']}", flush=True)

        script = work / "post.lua"
        wrk_script(script, info.id2user, {"n_rec": 10, "k_neighbors": 10})
        runs: dict[str, Any] = {}
        for worker_class in args.worker_classes.split(","):
            env = {"REDIS_URL": url, "LIBRECO_WORKER_CLASS": worker_class,
                   "LIBRECO_WORKERS": "2"}
            knn = Gunicorn("services.knn.knn_deploy:app",
                           {**env, "PROMETHEUS_MULTIPROC_DIR": str(work / f"m-{worker_class}")},
                           work / f"knn-{worker_class}.log")
            servers.append(knn)
            _, sample = post(knn.url + "/item_cf/recommend",
                             {"user": info.id2user[0], "n_rec": 10, "k_neighbors": 10})
            body_file = work / "hello.json"
            body_file.write_bytes(sample)
            hello = Gunicorn("benchmarks.common:hello_app()",
                             {**env, HELLO_BODY_ENV: str(body_file),
                              "PROMETHEUS_MULTIPROC_DIR": str(work / f"h-{worker_class}")},
                             work / f"hello-{worker_class}.log")
            servers.append(hello)
            targets = {"hello": hello.url + "/hello/recommend",
                       "knn": knn.url + "/item_cf/recommend"}
            for target in targets.values():  # warm up
                run_wrk(target, script, 3, args.connections)
            entry: dict[str, Any] = {"answer_bytes": len(sample), "hello": [], "knn": []}
            for _ in range(args.rounds):
                for name, target in targets.items():
                    r = run_wrk(target, script, args.duration, args.connections)
                    print(f"{worker_class} {name}: {r['requests_per_s']:.0f} req/s, "
                          f"p99 {r.get('p99_ms')} ms, errors {r['errors']}", flush=True)
                    entry[name].append(r)
            for name in ("hello", "knn"):
                runs_of = entry[name]
                entry[f"{name}_requests_per_s"] = round(
                    statistics.median(r["requests_per_s"] for r in runs_of), 1)
                entry[f"{name}_p50_ms"] = round(statistics.median(r.get("p50_ms", 0.0)
                                                                  for r in runs_of), 3)
                entry[f"{name}_p99_ms"] = max(r.get("p99_ms", 0.0) for r in runs_of)
                entry[f"{name}_errors"] = sum(r["errors"] for r in runs_of)
            entry["ratio"] = round(entry["knn_requests_per_s"] / entry["hello_requests_per_s"],
                                   3)
            entry["met"] = (entry["knn_errors"] == 0 and entry["ratio"] >= 0.6
                            and entry["knn_p99_ms"] <= 25.0)
            runs[worker_class] = entry
            for server in (knn, hello):
                server.stop()
                servers.remove(server)
        results["service"] = runs
        headline = runs.get("gthread") or next(iter(runs.values()))
        results["targets_met"] = bool(results["load"]["met"] and headline["met"])
        results["machine"]["load_average_end"] = list(os.getloadavg())
    finally:
        for server in servers:
            server.stop()
        if redis_proc is not None:
            redis_proc.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(json.dumps({k: v for k, v in results.items() if k != "settings"}, indent=2))
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "knn_service.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / "knn_service.md").write_text(report(results))
    return 0


def _loads(values: list[float]) -> str:
    return ", ".join(f"{x:.1f}" for x in values)


def report(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# knn service benchmark",
        "",
        f"Run {r['date']} with `flock -x /tmp/libreco-cpu.lock python -m "
        f"benchmarks.knn_service` on {m['nproc']} x {m['cpu']} (Python {m['python']}). Load "
        f"average (1, 5, 15 min) at start {_loads(m['load_average'])}, at the end "
        f"{_loads(m.get('load_average_end', []))}; the 2 cores are shared with other work, "
        "so the per-run load average is listed below (it counts the benchmark's own wrk, "
        "gunicorn and redis-server threads too: with the lock held exclusively, a value near "
        "the number of those threads means no other work ran).",
        "",
        f"Data: {r['data']['interactions']:,} generated interactions, {r['data']['users']:,} "
        f"users x {r['data']['items']:,} items; ItemCF (k_sim=20) fitted in "
        f"{r['data']['itemcf_fit_s']} s, saved with `save_knn(k=20)`.",
        "",
        "## Loading into Redis (target < 5 s)",
        "",
        f"- `sim2redis` + `user_consumed2redis` in-process into a private redis-server: "
        f"**{r['load']['in_process_s']} s** ({'met' if r['load']['met'] else 'NOT met'})",
        f"- `python -m jobs.load` including interpreter start and imports: "
        f"{r['load']['jobs_load_s']} s",
        f"- Redis memory after the load: {r['load']['redis_used_memory_mb']} MB",
        "",
        "## Serving (targets: zero errors, >= 60% of hello-world, p99 <= 25 ms)",
        "",
        f"gunicorn with 2 workers (`services/gunicorn_conf.py`), wrk -t2 "
        f"-c{r['settings']['connections']} for {r['settings']['duration']} s per run "
        f"(after a 3 s warm-up), {r['settings']['rounds']} alternating runs per app, POST "
        '`{"user": <random>, "n_rec": 10, "k_neighbors": 10}` to 127.0.0.1. Hello-world '
        "answers a constant body of the same size under the same gunicorn config. "
        "req/s and p50: median over the runs; p99: the worst run. Errors: socket errors plus "
        "non-2xx answers. The targets are judged on the default worker class, gthread.",
        "",
        "| worker class | hello req/s | knn req/s | ratio | hello p50 ms | knn p50 ms | "
        "hello p99 ms | knn p99 ms | knn errors | met |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for wc, e in r["service"].items():
        lines.append(f"| {wc} | {e['hello_requests_per_s']:.0f} | {e['knn_requests_per_s']:.0f} "
                     f"| {e['ratio']:.2f} | {e['hello_p50_ms']:.2f} | {e['knn_p50_ms']:.2f} | "
                     f"{e['hello_p99_ms']} | {e['knn_p99_ms']} | {e['knn_errors']} | "
                     f"{'yes' if e['met'] else 'no'} |")
    head = r["service"].get("gthread") or next(iter(r["service"].values()))
    yes = {True: "met", False: "NOT met"}
    lines += ["", "Targets on the default worker class:", "",
              f"- zero errors: {yes[head['knn_errors'] == 0]} ({head['knn_errors']} errors)",
              f"- throughput >= 60% of hello-world: {yes[head['ratio'] >= 0.6]} "
              f"(ratio {head['ratio']:.2f})",
              f"- p99 <= 25 ms: {yes[head['knn_p99_ms'] <= 25.0]} (worst run "
              f"{head['knn_p99_ms']} ms)",
              f"- load into Redis < 5 s: {yes[r['load']['met']]}"]
    lines += ["", f"All targets met: **{'yes' if r['targets_met'] else 'no'}**.", "",
              "Per run:", ""]
    for wc, e in r["service"].items():
        for name in ("hello", "knn"):
            for i, x in enumerate(e[name]):
                lines.append(f"- {wc} {name} run {i + 1}: {x['requests_per_s']:.0f} req/s, "
                             f"p50 {x.get('p50_ms')} ms, p99 {x.get('p99_ms')} ms, "
                             f"{x['requests']} requests, {x['errors']} errors; load average "
                             f"before {_loads(x['load_average_before'])}, after "
                             f"{_loads(x.get('load_average_after', []))}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
