"""The embedded default: train on generated data, load into a local Redis, serve and query.

``make demo`` runs ``python -m jobs.demo``:

1. generates interactions and trains one model of each family whose code and serving stack are
   installed (ItemCF, ALS, DIN, and DeepFM as a second TF model), writing model directories
   under ``demo_models/``;
2. starts a private ``redis-server`` on a free loopback port (or uses ``REDIS_URL`` when set);
3. loads every model into Redis with ``python -m jobs.load``;
4. serves all families on ``127.0.0.1:5000`` with gunicorn (``services.all_deploy:app``);
5. sends the serving guide's requests (``services/<family>/<family>_request.py``) and prints
   the answers;
6. keeps serving until interrupted (Ctrl-C), then stops everything it started.

``--once`` stops after step 5 (for scripts and CI); ``--port`` moves the HTTP port.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from libreco.cli import build_parser, train

log = logging.getLogger("libreco.demo")
ROOT = Path(__file__).resolve().parents[1]

# (algorithm, extra training arguments, request script arguments)
MODELS = [
    ("item_cf", ["--param", "k_sim=20"],
     ["services/knn/knn_request.py", "--user", "1", "--k_neighbors", "10", "--n_rec", "10"]),
    ("als", [],
     ["services/vector/vector_request.py", "--user", "1", "--n_rec", "10",
      "--use_faiss", "false"]),
    ("din", ["--param", "n_epochs=2", "--tf-serving-dir", "{models_dir}/tf_serving"],
     ["services/tf/tf_request.py", "--user", "1", "--n_rec", "10", "--algo", "din"]),
    ("deepfm", ["--param", "n_epochs=2", "--tf-serving-dir", "{models_dir}/tf_serving"],
     ["services/tf/tf_request.py", "--user", "1", "--n_rec", "10", "--algo", "deepfm"]),
]
HANDLER_MODULES = {"knn": "services.knn.handler", "vector": "services.vector.handler",
                   "tf": "services.tf.handler"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def available(algorithm: str) -> bool:
    """True when the algorithm and its family's service can run on this installation."""
    import importlib

    from libreco.algorithms import get_algorithm

    try:
        cls = get_algorithm(algorithm)
        importlib.import_module(HANDLER_MODULES[cls.family])
        if cls.family == "tf":
            importlib.import_module("tensorflow")
    except (ImportError, ValueError) as e:
        log.warning("skipping %s: %s", algorithm, e)
        return False
    return True


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f}s")


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        raise RuntimeError("redis-server is missing: run 'make redis' or "
                           "'sudo apt-get install redis-server'")
    port = free_port()
    proc = subprocess.Popen(
        [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not port_in_use(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__.split("\n")[0])
    p.add_argument("--once", action="store_true", help="stop after the first answers")
    p.add_argument("--port", type=int, default=int(os.environ.get("LIBRECO_PORT", 5000)))
    p.add_argument("--interactions", type=int, default=100_000)
    p.add_argument("--models-dir", default=str(ROOT / "demo_models"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if port_in_use(args.port):
        log.error("port %d is in use; stop what listens there or pass --port", args.port)
        return 2

    models_dir = Path(args.models_dir)
    chosen = [m for m in MODELS if available(m[0])]
    for algorithm, extra, _ in chosen:
        t = time.perf_counter()
        targs = build_parser().parse_args(
            ["train", "--algorithm", algorithm, "--generate", str(args.interactions),
             "--output", str(models_dir / algorithm), "--verbose", "0",
             *(a.format(models_dir=models_dir) for a in extra)])
        summary = train(targs)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in summary["metrics"].items())
        log.info("trained %s in %.1fs: %s", algorithm, time.perf_counter() - t, shown)

    procs: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix="libreco-demo-"))
    env = dict(os.environ)
    try:
        if "REDIS_URL" not in env:
            redis_proc, env["REDIS_URL"] = start_redis(tmp)
            procs.append(redis_proc)
        log.info("Redis at %s", env["REDIS_URL"])
        for algorithm, _, _ in chosen:
            subprocess.run([sys.executable, "-m", "jobs.load", "--model-dir",
                            str(models_dir / algorithm)], env=env, cwd=ROOT, check=True)
        metrics_dir = tmp / "prometheus"
        metrics_dir.mkdir()
        if "TF_SERVING_URL" not in env:  # TF models evaluated in the workers
            env.setdefault("LIBRECO_MODEL_DIR", str(models_dir / "tf_serving"))
        env.update({"LIBRECO_PORT": str(args.port), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                    "LIBRECO_WORKERS": env.get("LIBRECO_WORKERS", "2")})
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:services.gunicorn_conf",
             "--bind", f"127.0.0.1:{args.port}", "services.all_deploy:app"], env=env, cwd=ROOT)
        procs.append(gunicorn)
        wait_http(f"http://127.0.0.1:{args.port}/healthz", 60, gunicorn)
        for algorithm, _, request in chosen:
            # a worker loads a TF model on its first request for it: allow for a slow machine
            cmd = [sys.executable, *request, "--port", str(args.port), "--timeout", "120"]
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
            print(f"\n$ python {' '.join(request)}")
            print(out.stdout.strip() or out.stderr.strip())
            if out.returncode != 0:
                log.error("the %s request failed (exit %d)", algorithm, out.returncode)
                return 1
        print(json.dumps({"serving": f"http://127.0.0.1:{args.port}",
                          "models": [m[0] for m in chosen]}))
        if args.once:
            return 0
        log.info("serving on http://127.0.0.1:%d until interrupted (Ctrl-C)", args.port)
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
            gunicorn.wait()
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
