"""The vector service over 100,000 items x 64 factors under gunicorn: faiss and exact answers.

::

    flock -x /tmp/libreco-cpu.lock python -m benchmarks.vector_service [--duration 15]

Steps, all on this machine and on 127.0.0.1:

1. generate interactions for 5,000 users over a catalogue of 100,000 items (every item
   consumed at least once, so that the catalogue has exactly that size), fit ``ALS`` with 64
   factors, write it with ``save_vector`` and add the default faiss index with
   ``save_faiss_index``;
2. measure recall@10 and the time of one search in-process, through the service's own
   ``search`` and ``exact`` (consumed items excluded, one faiss thread), for the saved index
   and for other index choices;
3. start a private redis-server on a free port, load the directory with ``vector2redis``;
4. start ``services.vector.vector_deploy:app`` under gunicorn (``services/gunicorn_conf.py``,
   2 workers), and beside it a Flask app that answers a constant body of the same size under
   the same settings (the floor of the stack), and run ``wrk`` at 32 connections against
   ``POST /vector/recommend`` with ``{"user": <random user>, "n_rec": 10, "use_faiss": true}``,
   with ``"use_faiss": false`` and against the constant app, in turn, after a warm-up of each.

Results go to ``benchmarks/results/vector_service.json`` and ``.md``. Target: the faiss path
answers with p99 <= 15 ms and zero errors (socket errors and non-2xx answers), with recall@10
>= 0.95. Per target the figures are the median requests per second and p50 over the rounds
and the worst p99. The load average is recorded before every run, since other processes may
share the cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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
COMMAND = "flock -x /tmp/libreco-cpu.lock python -m benchmarks.vector_service"
P99_TARGET_MS = 15.0
RECALL_TARGET = 0.95


# -- data and model ---------------------------------------------------------------------------
def interactions(n_users: int, n_items: int, n_interactions: int, seed: int) -> pd.DataFrame:
    """Generated interactions in which every one of the ``n_items`` items occurs.

    The generator leaves rare items out of a large catalogue; each missing item is given to
    one random user, so that the catalogue (and the faiss index) has ``n_items`` entries.
    """
    from libreco.data.synthetic import generate

    df = generate(n_users=n_users, n_items=n_items, n_interactions=n_interactions,
                  features=False, seed=seed)[["user", "item", "label", "time"]]
    seen = np.zeros(n_items, dtype=bool)
    seen[df["item"].to_numpy()] = True  # generated item ids run from 0 to n_items - 1
    missing = np.flatnonzero(~seen)
    rng = np.random.default_rng(seed)
    extra = pd.DataFrame({"user": rng.choice(df["user"].unique(), len(missing)),
                          "item": missing, "label": 1, "time": int(df["time"].max())})
    return pd.concat([df, extra.astype(df.dtypes.to_dict())], ignore_index=True)


def search_quality(version, users: np.ndarray, consumed: list[np.ndarray],
                   truth: list[np.ndarray]) -> dict[str, Any]:
    """Recall@10 and time of the service's ``search`` for some users, against ``truth``."""
    from services.vector.handler import search

    hits, total, fallbacks, times = 0, 0, 0, []
    for vector, seen, best in zip(users, consumed, truth):
        t0 = time.perf_counter()
        found = search(version, vector, seen, 10)
        times.append(time.perf_counter() - t0)
        total += len(best)
        if found is None:
            fallbacks += 1
            continue
        top = found.items[np.argsort(-found.scores, kind="stable")[:10]]
        hits += len(np.intersect1d(top, best))
    return {"recall_at_10": round(hits / max(total, 1), 4), "exact_fallbacks": fallbacks,
            "search_ms_median": round(1e3 * statistics.median(times), 3),
            "search_ms_p99": round(1e3 * float(np.percentile(times, 99)), 3)}


def index_study(model_dir: Path, n_users: int, seed: int) -> dict[str, Any]:
    """Recall@10 and in-process search time of the directory's index and of alternatives.

    Users are drawn at random; their consumed items are excluded, as in the service, and
    ``search`` / ``exact`` are the service's own functions, on one faiss and BLAS thread.
    ``catalogue`` rows repeat the default choice on the first 20,000 items, where the
    default is exact (``Flat``).
    """
    import faiss
    from threadpoolctl import threadpool_limits

    from services.loaders.common import open_model
    from services.loaders.vector import (
        EXACT_BELOW,
        build_index,
        default_index,
        item_vectors,
        ivf_lists,
        read_index,
        vector_section,
    )
    from services.vector.handler import VectorVersion, exact

    faiss.omp_set_num_threads(1)
    threadpool_limits(1, user_api="blas")
    model = open_model(model_dir, family="vector")
    items = item_vectors(model, vector_section(model))
    all_users = model.reader.read_array("vector/user_vectors.npy")
    consumed = model.data_info().user_consumed
    rng = np.random.default_rng(seed)
    chosen = rng.choice(all_users.shape[0], size=min(n_users, all_users.shape[0]),
                        replace=False)
    users = all_users[chosen]
    seen = [consumed.indices[consumed.indptr[u]:consumed.indptr[u + 1]].astype(np.int64)
            for u in chosen]

    def version(vectors, index, index_type):
        return VectorVersion(dim=vectors.shape[1], item_vectors=vectors, index=index,
                             index_type=index_type,
                             exact_index=isinstance(index, faiss.IndexFlat))

    def study(vectors, kept, choices):
        truth, times = [], []
        plain = version(vectors, None, "")
        for vector, own in zip(users, kept):
            t0 = time.perf_counter()
            truth.append(exact(plain, vector, own, 10).items)
            times.append(time.perf_counter() - t0)
        rows = [{"index": "exact (service's exact path)", "n_items": len(vectors),
                 "recall_at_10": 1.0, "exact_fallbacks": 0,
                 "search_ms_median": round(1e3 * statistics.median(times), 3),
                 "search_ms_p99": round(1e3 * float(np.percentile(times, 99)), 3)}]
        for label, index, index_type, params in choices:
            if index is None:
                index, index_type, params = build_index(vectors, index_type, **params)
            rows.append({"index": label, "type": index_type, "params": params,
                         "n_items": len(vectors),
                         **search_quality(version(vectors, index, index_type), users, kept,
                                          truth)})
        return rows

    saved = read_index(model, *items.shape)
    nlist = ivf_lists(len(items))
    rows = study(items, seen, [
        ("saved (save_faiss_index defaults)", *saved),
        ("IVF, float32 lists, probing 1 in 8", None, f"IVF{nlist},Flat",
         {"nprobe": -(-nlist // 8)}),
        ("IVF, 8-bit codes, probing 1 in 8", None, f"IVF{nlist},SQ8",
         {"nprobe": -(-nlist // 8)}),
        ("IVF, 4-bit fast-scan PQ codes, probing 1 in 6", None, f"IVF{nlist},PQ32x4fs",
         {"nprobe": -(-nlist // 6)}),
        ("HNSW graph, 32 links, efSearch 256", None, "HNSW32", {"efSearch": 256}),
        ("Flat (exact index)", None, "Flat", {}),
    ])
    small = items[:EXACT_BELOW]
    small_type, small_params = default_index(EXACT_BELOW)
    rows += study(small, [own[own < EXACT_BELOW] for own in seen], [
        ("IVF as chosen from that size on", None, small_type, small_params),
        ("Flat (exact index)", None, "Flat", {}),
    ])
    return {"users": len(chosen), "saved": rows[1], "rows": rows, "target": RECALL_TARGET,
            "met": rows[1]["recall_at_10"] >= RECALL_TARGET and
            rows[1]["exact_fallbacks"] == 0}


# -- processes --------------------------------------------------------------------------------


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User plus system CPU seconds of a process (and of its direct children)."""
    pids = [pid]
    if children:
        try:
            with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
                pids += [int(c) for c in f.read().split()]
        except OSError:
            pass
    total = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def connections_per_process(port: int) -> list[int]:
    """Established connections to ``port`` held by each process, most first (``ss``)."""
    try:
        out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    counts: dict[str, int] = {}
    for pid in re.findall(r"pid=(\d+)", out):
        counts[pid] = counts.get(pid, 0) + 1
    return sorted(counts.values(), reverse=True)


# -- wrk --------------------------------------------------------------------------------------


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"requests_per_s": round(statistics.median(r["requests_per_s"] for r in runs), 1),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 3),
            "p99_ms": max(r["p99_ms"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "socket_errors": sum(r["error_kinds"]["socket"] for r in runs),
            "non_2xx": sum(r["error_kinds"]["non_2xx"] for r in runs),
            "gunicorn_cpu_ms_per_request": round(statistics.median(
                r["gunicorn_cpu_ms_per_request"] for r in runs), 3),
            "redis_cpu_ms_per_request": round(statistics.median(
                r["redis_cpu_ms_per_request"] for r in runs), 3)}


# -- main -------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import faiss

    info = host()
    return {**{k: v for k, v in info.items() if k != "load_average"},
            "numpy": np.__version__, "faiss": faiss.__version__,
            "load_average_at_start": [round(x, 2) for x in info["load_average"]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--warm-up", type=int, default=3, help="seconds of wrk per path first")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per path")
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--interactions", type=int, default=500_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--recall-users", type=int, default=1_000)
    parser.add_argument("--no-write", action="store_true", help="print, do not record")
    args = parser.parse_args(argv)
    for tool in ("redis-server", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")

    from libreco.algorithms import ALS
    from libreco.data import DatasetPure
    from libreco.utils import save_vector
    from services.loaders.vector import save_faiss_index, vector2redis

    results: dict[str, Any] = {
        "benchmark": "vector_service", "command": COMMAND, "machine": machine(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {k: v for k, v in vars(args).items() if k != "no_write"}}
    work = Path(tempfile.mkdtemp(prefix="libreco-bench-"))
    redis_proc: RedisProcess | None = None
    servers: list[Gunicorn] = []
    try:
        t0 = time.perf_counter()
        df = interactions(args.users, args.items, args.interactions, seed=7)
        train, info = DatasetPure.build_trainset(df)
        t1 = time.perf_counter()
        model = ALS("ranking", info, embed_size=args.factors).fit(train, verbose=0)
        t2 = time.perf_counter()
        model_dir = work / "als"
        save_vector(model_dir, model, train)
        t3 = time.perf_counter()
        entry = save_faiss_index(model_dir)
        t4 = time.perf_counter()
        results["data"] = {"users": info.n_users, "items": info.n_items,
                           "interactions": len(df), "factors": args.factors,
                           "generate_s": round(t1 - t0, 2), "als_fit_s": round(t2 - t1, 2),
                           "save_vector_s": round(t3 - t2, 2),
                           "save_faiss_index_s": round(t4 - t3, 2), "index": entry}
        print(f"model ready: {results['data']}", flush=True)
        results["recall"] = index_study(model_dir, args.recall_users, seed=11)
        print(f"recall: {results['recall']['rows']}", flush=True)

        redis_proc = RedisProcess(work)
        t0 = time.perf_counter()
        version = vector2redis(model_dir, client=redis_proc.client)
        results["load"] = {"vector2redis_s": round(time.perf_counter() - t0, 2),
                           "version": version,
                           "redis_used_memory_mb": round(
                               redis_proc.client.info("memory")["used_memory"] / 2**20, 1)}
        print(f"load: {results['load']}", flush=True)

        env = {"REDIS_URL": redis_proc.url, "LIBRECO_WORKERS": "2"}
        server = Gunicorn("services.vector.vector_deploy:app",
                          {**env, "PROMETHEUS_MULTIPROC_DIR": str(work / "m-vector")},
                          work / "vector.log")
        servers.append(server)
        url = server.url + "/vector/recommend"
        for use_faiss in (True, False):
            status, body = post(url, {"user": str(info.id2user[0]), "n_rec": 10,
                                      "use_faiss": use_faiss})
            if status != 200:
                raise RuntimeError(f"sample request answered {status}: {body[:300]!r}")
            if use_faiss:
                (work / "hello.json").write_bytes(body)
        hello = Gunicorn("benchmarks.common:hello_app()",
                         {**env, HELLO_BODY_ENV: str(work / "hello.json"),
                          "PROMETHEUS_MULTIPROC_DIR": str(work / "m-hello")},
                         work / "hello.log")
        servers.append(hello)
        results["answer_bytes"] = len((work / "hello.json").read_bytes())

        targets = {"faiss": (url, True), "exact": (url, False),
                   "hello": (hello.url + "/vector/recommend", True)}
        scripts = {}
        for name, (target, use_faiss) in targets.items():
            scripts[name] = work / f"{name}.lua"
            wrk_script(scripts[name], [str(u) for u in info.id2user],
                       {"n_rec": 10, "use_faiss": use_faiss})
            run_wrk(target, scripts[name], args.warm_up, args.connections)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        owners = {"faiss": server, "exact": server, "hello": hello}
        for _ in range(args.rounds):
            for name, (target, _) in targets.items():
                pid = owners[name].proc.pid
                before = cpu_seconds(pid, children=True), cpu_seconds(redis_proc.proc.pid)
                spread: list[list[int]] = []
                probe = threading.Timer(
                    args.duration / 2,
                    lambda port, out: out.append(connections_per_process(port)),
                    args=(owners[name].port, spread))
                probe.start()
                r = run_wrk(target, scripts[name], args.duration, args.connections)
                probe.join()
                r["connections_per_worker"] = spread[0] if spread else []
                after = cpu_seconds(pid, children=True), cpu_seconds(redis_proc.proc.pid)
                r["gunicorn_cpu_ms_per_request"] = round(
                    1e3 * (after[0] - before[0]) / max(r["requests"], 1), 3)
                r["redis_cpu_ms_per_request"] = round(
                    1e3 * (after[1] - before[1]) / max(r["requests"], 1), 3)
                print(f"{name}: {r['requests_per_s']:.0f} req/s, p50 {r['p50_ms']} ms, "
                      f"p99 {r['p99_ms']} ms, errors {r['errors']}", flush=True)
                runs[name].append(r)
        service = {name: {**summary(rs), "runs": rs} for name, rs in runs.items()}
        faiss_path = service["faiss"]
        faiss_path["met"] = faiss_path["p99_ms"] <= P99_TARGET_MS and faiss_path["errors"] == 0
        results["service"] = service
        results["targets_met"] = bool(faiss_path["met"] and results["recall"]["met"])
        results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        for server in servers:
            server.stop()
        if redis_proc is not None:
            redis_proc.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(json.dumps({k: v for k, v in results.items() if k != "settings"}, indent=1))
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "vector_service.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / "vector_service.md").write_text(report(results))
    return 0 if results.get("targets_met") else 1


def _floats(values: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in values)


def report(r: dict[str, Any]) -> str:
    m, d, rc, s = r["machine"], r["data"], r["recall"], r["settings"]
    idx, sv = d["index"], r["service"]
    faiss_path, saved = sv["faiss"], rc["saved"]
    lines = [
        "# Vector service benchmark",
        "",
        f"Run {r['date']} with `{COMMAND}` on {m['nproc']} x {m['cpu']} (Python "
        f"{m['python']}, numpy {m['numpy']}, faiss {m['faiss']}). Load average (1, 5, 15 min) "
        f"at start {_floats(m['load_average_at_start'])}, at the end "
        f"{_floats(m.get('load_average_at_end', []))}; the 2 cores are shared with other "
        "work, so the load average before each run is listed below.",
        "",
        f"Model: ALS ({d['factors']} factors) fitted on {d['interactions']:,} generated "
        f"interactions of {d['users']:,} users over {d['items']:,} items (every item consumed "
        f"at least once) in {d['als_fit_s']} s; `save_vector`, then `save_faiss_index` with its "
        f"defaults: `{idx['type']}` with {json.dumps(idx['params'])} "
        f"({d['save_faiss_index_s']} s). `vector2redis` into a private redis-server: "
        f"{r['load']['vector2redis_s']} s, {r['load']['redis_used_memory_mb']} MB.",
        "",
        "## Verdicts",
        "",
        f"- faiss path p99: **{faiss_path['p99_ms']} ms** with {faiss_path['errors']} errors "
        f"({faiss_path['requests_per_s']:.0f} req/s); target <= {P99_TARGET_MS:g} ms with zero "
        f"errors: {'met' if faiss_path['met'] else 'NOT met'}",
        f"- recall@10 of the saved index against exact search over {rc['users']:,} users "
        f"(consumed items excluded, the service's own `search` and `exact`): "
        f"**{saved['recall_at_10']}**, {saved['exact_fallbacks']} exact fallbacks; target >= "
        f"{RECALL_TARGET}: {'met' if rc['met'] else 'NOT met'}",
        "",
        "## Serving",
        "",
        f"gunicorn with 2 workers (`services/gunicorn_conf.py` defaults: gthread, 4 threads), "
        f"wrk -t2 -c{s['connections']} for {s['duration']} s per run after a {s['warm_up']} s "
        f"warm-up per target, {s['rounds']} rounds of the three targets in turn, POST "
        '`{"user": <random>, "n_rec": 10, "use_faiss": true|false}` to '
        "`127.0.0.1/vector/recommend`. `hello` is a Flask app under the same gunicorn "
        f"settings that answers a constant body of the same size ({r['answer_bytes']} bytes): "
        "what Flask, gunicorn, wrk and the loopback cost on this machine before any work. "
        "req/s and p50: median over the runs; p99: the worst run. Errors: socket errors plus "
        "non-2xx answers.",
        "",
        "| target | req/s | p50 ms | p99 ms | socket errors | non-2xx | gunicorn CPU ms / "
        "request | Redis CPU ms / request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in sv.items():
        lines.append(f"| {name} | {e['requests_per_s']:.0f} | {e['p50_ms']} | {e['p99_ms']} | "
                     f"{e['socket_errors']} | {e['non_2xx']} | "
                     f"{e['gunicorn_cpu_ms_per_request']} | {e['redis_cpu_ms_per_request']} |")
    floor = sv["hello"]
    mean_ms = 1e3 * s["connections"] / faiss_path["requests_per_s"]
    lines += [
        "",
        "CPU per request: user plus system time of gunicorn's processes (Redis's) during a "
        "run, divided by the requests answered (median over the runs).",
        "",
        f"wrk keeps {s['connections']} requests in flight, so the mean latency is "
        f"{s['connections']} / throughput: {mean_ms:.1f} ms for the faiss path at "
        f"{faiss_path['requests_per_s']:.0f} req/s. A p99 of "
        f"{P99_TARGET_MS:g} ms at {s['connections']} connections needs more than "
        f"{1e3 * s['connections'] / P99_TARGET_MS:.0f} req/s even with no spread at all, on 2 "
        "cores that also run wrk and Redis; the constant app reaches "
        f"{floor['requests_per_s']:.0f} req/s with p99 {floor['p99_ms']} ms.",
        "",
        "Connections per worker are counted with `ss` halfway through each run; the "
        "service's gthread worker (`services/worker.py`) spreads kept-alive connections "
        "evenly over the workers.",
        "",
        "Per run:", "",
    ]
    for name, e in sv.items():
        for i, x in enumerate(e["runs"]):
            lines.append(f"- {name} run {i + 1}: {x['requests_per_s']:.0f} req/s, p50 "
                         f"{x['p50_ms']} ms, p99 {x['p99_ms']} ms, {x['requests']} requests, "
                         f"{x['errors']} errors, gunicorn CPU "
                         f"{x['gunicorn_cpu_ms_per_request']} ms / request, connections per "
                         f"worker {x.get('connections_per_worker')}; load average before "
                         f"{_floats(x['load_average_before'])}")
    lines += [
        "",
        "## Index choices (in-process)",
        "",
        f"One `search` call of the service per user for {rc['users']:,} random users (their "
        "consumed items excluded), one faiss and one BLAS thread; recall@10 against the "
        "service's exact path. The last rows use the first 20,000 items only.",
        "",
        "| index | items | factory string | params | recall@10 | fallbacks | median ms | "
        "p99 ms |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for row in rc["rows"]:
        lines.append(f"| {row['index']} | {row['n_items']:,} | `{row.get('type', '-')}` | "
                     f"{json.dumps(row.get('params', {}))} | {row['recall_at_10']} | "
                     f"{row['exact_fallbacks']} | {row['search_ms_median']} | "
                     f"{row['search_ms_p99']} |")
    lines += ["", f"All targets met: **{'yes' if r['targets_met'] else 'no'}**."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
