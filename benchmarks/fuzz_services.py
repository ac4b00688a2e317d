"""Long property-based fuzzing of every service from its own ``/openapi.json``.

::

    python -m benchmarks.fuzz_services [--examples 1000] [--negative 1000] [--seed 0]

Starts a private redis-server on 127.0.0.1, fits small models on generated data (ItemCF and
UserCF; ALS and SVD; DeepFM and DIN when TensorFlow is installed), loads them, and runs
:mod:`tests.ops.fuzzing` against the knn, vector, tf and all-families apps (WSGI, in this
process): for every endpoint ``--examples`` requests that fit the document and ``--negative``
that break it, each checked for a status below 500, a JSON error body on every 4xx, and an
answer the document lists. A last run fuzzes the knn app while Redis is unreachable, where
503 (with its JSON body) is the contract.

Results go to ``benchmarks/results/fuzz_services.json`` and ``.md``; the exit status is 1 when
any request failed a check.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.common import host, source

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from services.core.app import create_app
    from tests.ops.fuzzing import Plan, build_services, fuzz_app
    from tests.services.conftest import KnnModels, RedisServer, free_port
    from tests.services.test_vector_service import VectorModels

    plan = Plan(examples=args.examples, negative=args.negative, seed=args.seed)
    results: dict[str, Any] = {
        "benchmark": "fuzz_services", "date": datetime.now(timezone.utc).isoformat(
            timespec="seconds"),
        "command": " ".join(["python -m benchmarks.fuzz_services",
                             shlex.join(sys.argv[1:])]).strip(),
        "source": args.source or source(),
        "machine": host(), "plan": {"positive": plan.examples, "negative": plan.negative,
                                       "seed": plan.seed},
        "services": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = RedisServer(folder / "redis").start()
        try:
            started = time.perf_counter()
            knn = KnnModels(folder / "knn")
            vector = VectorModels(folder / "vector")
            tf = _tf_models(folder / "tf")
            services = build_services(server.url, knn, vector, tf)
            print(f"models ready in {time.perf_counter() - started:.1f}s", flush=True)
            for svc in services:
                print(f"-- {svc.name}", flush=True)
                found = fuzz_app(svc.app, svc.models, plan, svc.known, log=print)
                results["services"][svc.name] = _summary(found)
        finally:
            server.stop()
    down = create_app("knn", {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                              "LIBRECO_REDIS_TIMEOUT": "0.2"})
    print("-- knn with Redis unreachable", flush=True)
    outage = Plan(examples=plan.examples, negative=plan.negative, seed=plan.seed,
                  allowed=(503,))
    results["services"]["knn, Redis unreachable"] = _summary(
        fuzz_app(down, ["item_cf"], outage, log=print))
    results["machine"]["load_average_end"] = list(_load())
    endpoints = [e for s in results["services"].values() for e in s["endpoints"]]
    results["totals"] = {
        "endpoints": len(endpoints),
        "requests": sum(e["requests"] for e in endpoints),
        "failures": sum(e["failures"] for e in endpoints),
        "min_requests_per_endpoint": min(e["requests"] for e in endpoints),
        "seconds": round(sum(e["seconds"] for e in endpoints), 1),
    }
    return results


def _tf_models(folder: Path) -> Any:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        print("tensorflow is not installed: the tf family is left out", flush=True)
        return None
    from tests.services.tf_models import TFModels

    return TFModels(folder)


def _load() -> tuple[float, float, float]:
    return os.getloadavg()


def _summary(found: list) -> dict[str, Any]:
    endpoints = []
    for r in found:
        endpoints.append({
            "endpoint": r.label, "requests": r.total, "positive": r.cases.get("positive", 0),
            "negative": r.cases.get("negative", 0), "distinct": sum(r.distinct.values()),
            "statuses": {str(k): v for k, v in sorted(r.statuses.items())},
            "failures": r.failed, "failure_examples": r.failures[:5],
            "seconds": round(r.seconds, 1),
        })
    return {"endpoints": endpoints}


def report(results: dict[str, Any]) -> str:
    m, totals = results["machine"], results["totals"]
    load = ", ".join(f"{x:.1f}" for x in m["load_average"])
    load_end = ", ".join(f"{x:.1f}" for x in m["load_average_end"])
    plan = results["plan"]
    lines = [
        "# Fuzzing the services from their OpenAPI documents",
        "",
        f"Run {results['date']} of {results['source']} with `{results['command']}` on "
        f"{m['nproc']} x {m['cpu']} "
        f"(Python {m['python']}); load average at start {load}, at the end {load_end}.",
        "",
        "Each service's WSGI app (knn, vector, tf scoring in-process, and all three on one "
        "port) on a private redis-server with small models fitted on generated data. For every "
        "operation of the service's `/openapi.json`, schemathesis generated "
        f"{plan['positive']:,} requests that fit the document and {plan['negative']:,} that "
        "break it (operations without inputs are sent their one request the same number of "
        "times); `POST /{model}/recommend` runs once per loaded model and once with generated "
        "model names. Half the generated bodies carry ids the model knows. Each answer must "
        "have a status below 500 (503 only in the Redis-unreachable run), a JSON error body "
        "on every 4xx, and a status, content type and body the document lists.",
        "",
        f"**{totals['requests']:,} requests over {totals['endpoints']} endpoints, at least "
        f"{totals['min_requests_per_endpoint']:,} per endpoint: {totals['failures']} "
        "failures.**",
        "",
        "| service | endpoint | requests | fitting / breaking | distinct | statuses | failures |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, svc in results["services"].items():
        for e in svc["endpoints"]:
            statuses = ", ".join(f"{k}: {v}" for k, v in e["statuses"].items())
            lines.append(f"| {name} | `{e['endpoint']}` | {e['requests']:,} | "
                         f"{e['positive']:,} / {e['negative']:,} | {e['distinct']:,} | "
                         f"{statuses} | {e['failures']} |")
    examples = [x for s in results["services"].values() for e in s["endpoints"]
                for x in e["failure_examples"]]
    if examples:
        lines += ["", "First failures:", ""] + [f"- {x}" for x in examples[:20]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=1000,
                        help="requests per endpoint that fit the document")
    parser.add_argument("--negative", type=int, default=1000,
                        help="requests per endpoint that break it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default=None,
                        help="the code that runs, for the record (default: the git commit)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    os.environ.setdefault("LIBRECO_LOG_LEVEL", "ERROR")  # answers are checked, not logged
    results = run(args)
    print(json.dumps(results["totals"], indent=2))
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "fuzz_services.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / "fuzz_services.md").write_text(report(results))
    return 0 if results["totals"]["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
