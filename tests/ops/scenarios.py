"""Faults under load, measured: each scenario runs a fault while :class:`LoadGenerator` posts
requests, and returns what happened as numbers; ``*_problems`` says which of them break the
contract (``docs/serving.md``). The tests in ``tests/ops/`` and ``tests/services/test_tf_faults.py``
run them briefly; ``python -m benchmarks.faults`` runs them longer and records the numbers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from services.core.store import ModelKeys
from tests.ops.load import LoadGenerator, json_error
from tests.services.conftest import PYTHON, ROOT, http, wait_for

Requests = Sequence[tuple[str, Any, Any]]
RECOVERY_S = 5.0
"""Longest a service may keep failing after its dependency is back."""


def answers_of(url: str, requests: Requests) -> dict[Any, Any]:
    """The answer to each request, asked one at a time (all must be 200)."""
    out = {}
    for path, key, body in requests:
        status, answer = http("POST", url + path, body)
        if status != 200:
            raise AssertionError(f"{path} {body}: {status} {answer}")
        out[key] = answer
    return out


def _summary(load: LoadGenerator) -> dict[str, Any]:
    statuses = load.statuses()
    return {"requests": load.count, "seconds": round(time.monotonic() - load.started, 2),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "connection_errors": statuses.get(0, 0)}


# -- a dependency going away ----------------------------------------------------------------------
def outage(url: str, requests: Requests, expected: Mapping[Any, Any], stop: Callable[[], None],
           start: Callable[[], None], workers: Callable[[], set[int]], *,
           connections: int = 32, up: float = 1.0, down: float = 2.0, after: float = 1.0,
           max_requests: int = 60_000) -> dict[str, Any]:
    """Stop a dependency (Redis, TF Serving) for ``down`` seconds under load, then start it.

    ``start`` returns once the dependency serves again; recovery is measured from then.
    """
    before = workers()
    with LoadGenerator(url, requests, connections, max_requests=max_requests,
                       max_seconds=up + down + after + 30) as load:
        load.wait(up)
        stopped = time.monotonic()
        stop()
        load.wait(down)
        restarting = time.monotonic()
        start()
        back = time.monotonic()

        def recovered() -> bool:
            now = time.monotonic()
            recent = load.between(now - 0.3, now)
            return bool(recent) and all(r.status == 200 for r in recent)

        load.wait_until(recovered, 2 * RECOVERY_S)
        load.wait(after)
    answers = load.answers
    # asked and answered while the dependency was away (a request queued then may be
    # answered once it is back)
    away = [x for x in load.between(stopped + 0.2, restarting) if x.ended < restarting]
    errors = [x for x in answers if x.status != 200]
    last_error = max((x.started for x in errors), default=stopped)
    return {
        **_summary(load),
        "connections": connections,
        "outage_s": round(restarting - stopped, 2),
        "restart_s": round(back - restarting, 2),
        "answers_while_away": len(away),
        "non_503_while_away": sum(x.status != 503 for x in away),
        "errors_without_json_body": sum(not json_error(x) for x in errors),
        "wrong_answers": sum(x.body != expected[x.key] for x in answers if x.status == 200),
        "recovery_s": round(max(0.0, last_error - back), 3),
        "answers_after_recovery": sum(x.started > last_error for x in answers),
        "workers_unchanged": workers() == before,
    }


def outage_problems(r: Mapping[str, Any], min_away: int = 10) -> list[str]:
    """Broken promises of an :func:`outage`; at least ``min_away`` requests must have been
    answered while the dependency was away."""
    problems = []
    if set(r["statuses"]) - {"200", "503"}:
        problems.append(f"answers other than 200 and 503: {r['statuses']}")
    if r["answers_while_away"] < min_away or r["non_503_while_away"]:
        problems.append(f"{r['non_503_while_away']} of {r['answers_while_away']} answers "
                        "while away were not 503 (or too few were asked)")
    if r["errors_without_json_body"]:
        problems.append(f"{r['errors_without_json_body']} errors without a JSON body")
    if r["wrong_answers"]:
        problems.append(f"{r['wrong_answers']} answers differ from the ones before")
    if r["recovery_s"] >= RECOVERY_S or r["answers_after_recovery"] < 20:
        problems.append(f"recovered after {r['recovery_s']}s, then "
                        f"{r['answers_after_recovery']} answers")
    if not r["workers_unchanged"]:
        problems.append("a gunicorn worker crashed or was restarted")
    return problems


# -- a new version ------------------------------------------------------------------------------
def version_swap(url: str, requests: Requests, expected_old: Mapping[Any, Any],
                 expected_new: Mapping[Any, Any], activate: Callable[[], Any], *,
                 connections: int = 32, before: float = 1.0, after: float = 2.0,
                 settle: float = 1.0, max_requests: int = 60_000) -> dict[str, Any]:
    """Activate a new version under load. ``expected_old`` and ``expected_new`` are each
    version's answers, different for every request key, so that each answer names its
    version; answers started ``settle`` seconds after the activation must be new."""
    with LoadGenerator(url, requests, connections, max_requests=max_requests,
                       max_seconds=before + after + 30) as load:
        load.wait(before)
        activate()
        activated = time.monotonic()
        load.wait(after)
    old = new = mixed = stale = 0
    for x in load.answers:
        if x.status != 200:
            continue
        is_old, is_new = x.body == expected_old[x.key], x.body == expected_new[x.key]
        if is_old == is_new:
            mixed += 1
        elif is_old:
            old += 1
            stale += x.started > activated + settle
        else:
            new += 1
    summary = _summary(load)
    return {**summary, "connections": connections,
            "failed": summary["requests"] - load.statuses().get(200, 0),
            "old_version_answers": old, "new_version_answers": new,
            "answers_of_neither_version": mixed, "old_after_activation": stale}


def swap_problems(r: Mapping[str, Any]) -> list[str]:
    problems = []
    if r["failed"]:
        problems.append(f"{r['failed']} failed requests: {r['statuses']}")
    if r["answers_of_neither_version"]:
        problems.append(f"{r['answers_of_neither_version']} answers of neither version")
    if r["old_after_activation"]:
        problems.append(f"{r['old_after_activation']} old answers after the activation")
    if not (r["old_version_answers"] and r["new_version_answers"]):
        problems.append("the load did not see both versions")
    return problems


# -- a loader killed halfway --------------------------------------------------------------------
HALFWAY_WATCHER = """
import sys, time
import redis
from services.core.store import ModelKeys, VersionKeys
client = redis.Redis.from_url(sys.argv[1])
name = sys.argv[2]
versions = ModelKeys(name).versions
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    for version, state in client.hgetall(versions).items():
        consumed = VersionKeys(name, version.decode()).data("consumed")
        if state == b"writing" and client.hlen(consumed):
            client.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
            if client.hget(versions, version) == b"writing":
                print(version.decode(), flush=True)
                sys.exit(0)
            client.execute_command("CLIENT", "UNPAUSE")
    time.sleep(0.002)
sys.exit(2)
"""
"""Run as ``python -c HALFWAY_WATCHER <redis url> <model>``: waits for a version of the model
that is being written and already has consumed lists, pauses Redis writes, prints it."""


def killed_load(url: str, requests: Requests, expected_old: Mapping[Any, Any], client: Any,
                model_dir: Path, name: str, redis_url: str, *, connections: int = 32,
                after_kill: float = 1.0, after: float = 1.5, settle: float = 1.0,
                max_requests: int = 60_000) -> dict[str, Any]:
    """Under load: ``python -m jobs.load`` writing one field per batch, SIGKILLed once it is
    halfway; then a complete load of the same directory. Returns the numbers and the new
    version's answers (``"expected_new"``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url}
    command = [PYTHON, "-m", "jobs.load", "--model-dir", str(model_dir), "--name", name]
    model = ModelKeys(name)
    first = client.get(model.active).decode()
    with LoadGenerator(url, requests, connections, max_requests=max_requests,
                       max_seconds=after_kill + after + 200) as load:
        loader = subprocess.Popen(command, cwd=ROOT, env={**env, "LIBRECO_LOAD_BATCH": "1"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        # a process of its own watches for the half-written version and pauses Redis writes
        # at once: a thread of this process shares the interpreter with the load generator's
        # threads and could miss the moment
        watcher = subprocess.Popen([PYTHON, "-c", HALFWAY_WATCHER, redis_url, name], cwd=ROOT,
                                   env=env, stdout=subprocess.PIPE, text=True)

        def halfway() -> bool:
            if watcher.poll() is not None:
                return True
            if loader.poll() is not None:
                watcher.kill()
                raise AssertionError("the loader finished before it could be killed")
            return False

        wait_for(halfway, 70, interval=0.01, what="the loader to be halfway")
        dying = watcher.communicate(timeout=10)[0].strip()
        if watcher.returncode != 0 or not dying:
            raise AssertionError(f"the watcher did not see the loader halfway "
                                 f"(exit {watcher.returncode})")
        loader.send_signal(signal.SIGKILL)
        loader.wait(10)
        client.execute_command("CLIENT", "UNPAUSE")
        killed = time.monotonic()
        load.wait(after_kill)
        active_after_kill = client.get(model.active).decode()
        state_after_kill = client.hget(model.versions, dying)
        reloading = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=180)
        activated = time.monotonic()
        load.wait(after)
    second = client.get(model.active).decode()
    expected_new = answers_of(url, requests)
    old_before_reload = changed_before_reload = neither = stale = 0
    for x in load.answers:
        if x.status != 200:
            continue
        is_old, is_new = x.body == expected_old[x.key], x.body == expected_new[x.key]
        neither += not (is_old or is_new)
        if x.started < reloading:
            old_before_reload += is_old
            changed_before_reload += not is_old
        if x.started > activated + settle:
            stale += not is_new
    summary = _summary(load)
    return {
        **summary, "connections": connections,
        "failed": summary["requests"] - load.statuses().get(200, 0),
        "answers_between_kill_and_reload": len(load.between(killed, reloading)),
        "active_unchanged_after_kill": active_after_kill == first,
        "killed_version_left_writing": state_after_kill == b"writing",
        "changed_before_complete_load": changed_before_reload,
        "complete_load_exit": done.returncode,
        "complete_load_s": round(activated - reloading, 2),
        "new_version_active": second != first and
        client.hget(model.versions, second) == b"active",
        "new_version_is_the_killed_ones": second == dying,
        "answers_of_neither_version": neither,
        "old_after_activation": stale,
        "expected_new": expected_new,
    }


def killed_load_problems(r: Mapping[str, Any]) -> list[str]:
    problems = []
    if r["failed"]:
        problems.append(f"{r['failed']} failed requests: {r['statuses']}")
    if not (r["active_unchanged_after_kill"] and r["killed_version_left_writing"]):
        problems.append("the killed load changed the active version or its own state")
    if r["changed_before_complete_load"] or r["answers_between_kill_and_reload"] < 20:
        problems.append(f"{r['changed_before_complete_load']} answers changed before the "
                        "complete load (or too few were asked)")
    if r["complete_load_exit"] != 0 or not r["new_version_active"]:
        problems.append("the complete load did not activate its version")
    if r["answers_of_neither_version"] or r["old_after_activation"]:
        problems.append(f"{r['answers_of_neither_version']} answers of neither version, "
                        f"{r['old_after_activation']} old ones after the activation")
    return problems
