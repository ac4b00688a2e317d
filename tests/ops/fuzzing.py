"""Property-based fuzzing of a service's HTTP API from its own ``/openapi.json``.

For each operation of the document, schemathesis generates requests that fit the document
(positive) and requests that break it (negative); each is sent to the WSGI app and its answer
checked:

* no status of 500 or more, ever;
* every 4xx answer is a JSON object with ``"error"`` (a string) and ``"status"`` (the status);
* the status is one the document lists for the operation, with the listed content type, and
  the body validates against the listed schema.

The recommend operation is fuzzed once per loaded model (the ``model`` path parameter fixed to
it) and once with generated model names. Half the generated bodies have their ``user`` (and
``seq`` items and ``user_feats`` columns, where present) replaced by ones the model knows, so
that the scoring paths run as well as the cold-start and error ones.

Used by ``tests/services/test_fuzz_services.py`` (a short run) and ``benchmarks/fuzz_services.py``
(the long one).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import hypothesis.strategies as st
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


@dataclass
class Known:
    """Ids a service's models know, mixed into generated bodies."""

    users: Sequence[Any] = ()
    items: Sequence[Any] = ()
    user_feats: Mapping[str, Sequence[Any]] = field(default_factory=dict)


@dataclass
class Target:
    """One fuzzed endpoint: an operation, optionally with its model fixed."""

    label: str
    operation: Any
    path_parameters: dict[str, str] | None = None


@dataclass
class EndpointResult:
    label: str
    cases: dict[str, int] = field(default_factory=dict)
    """Generation mode -> requests sent."""
    distinct: dict[str, int] = field(default_factory=dict)
    """Generation mode -> distinct requests among them."""
    statuses: dict[int, int] = field(default_factory=dict)
    failed: int = 0
    """Requests whose answer failed a check."""
    failures: list[str] = field(default_factory=list)
    """The first 20 of them, described."""
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.cases.values())


def load_schema(app: Any) -> Any:
    """The schemathesis schema of a WSGI app, read from its ``/openapi.json``."""
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


def targets(schema: Any, models: Sequence[str]) -> list[Target]:
    """Every operation; the ``/{model}/recommend`` one once per model and once free."""
    out = []
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if "{model}" in operation.path:
            for name in models:
                out.append(Target(f"{label} [{name}]", operation, {"model": name}))
            out.append(Target(f"{label} [generated names]", operation))
        else:
            out.append(Target(label, operation))
    return out


def json_error_problem(response: Any, allowed: Sequence[int] = ()) -> str | None:
    """What is wrong with a 4xx or 5xx answer's body, or None; statuses of 500 or more are
    wrong unless ``allowed``."""
    status = response.status_code
    if status >= 500 and status not in allowed:
        return f"server error {status}"
    if status < 400:
        return None
    headers = {k.lower(): v for k, v in response.headers.items()}
    content_type = headers.get("content-type", "")
    if isinstance(content_type, list):  # schemathesis keeps every value of a header
        content_type = content_type[0] if content_type else ""
    if not content_type.startswith("application/json"):
        return f"{status} answered with Content-Type {content_type!r}"
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"{status} answered with a body that is not JSON"
    if not isinstance(body, dict) or not isinstance(body.get("error"), str) or \
            body.get("status") != status:
        return f"{status} answered with {str(body)[:200]}"
    return None


def _with_known(case: Any, choice: tuple[int, int, int, bool], known: Known) -> None:
    """Put known ids into a generated body (in place); ``choice`` picks which, and whether
    an object body is sent double-encoded (as a JSON string)."""
    body = case.body
    if isinstance(body, str):  # the double-encoded form: only when it decodes to an object
        try:
            inner = json.loads(body)
        except ValueError:
            return
        if isinstance(inner, dict):
            _replace(inner, choice, known)
            case.body = json.dumps(inner)
        return
    if isinstance(body, dict):
        _replace(body, choice, known)
        if choice[3]:
            case.body = json.dumps(body)


def _replace(body: dict, choice: tuple[int, int, int, bool], known: Known) -> None:
    which, item_pick, feat_pick, _ = choice
    if which == 0:
        return
    if known.users and "user" in body:
        body["user"] = known.users[item_pick % len(known.users)]
    if known.items and isinstance(body.get("seq"), list):
        body["seq"] = [known.items[(item_pick + i) % len(known.items)]
                       for i in range(len(body["seq"]))]
    if known.user_feats and isinstance(body.get("user_feats"), dict):
        columns = sorted(known.user_feats)
        feats = {}
        for i, value in enumerate(body["user_feats"].values()):
            column = columns[(feat_pick + i) % len(columns)]
            values = known.user_feats[column]
            feats[column] = values[(feat_pick + i) % len(values)] if which == 2 else value
        body["user_feats"] = feats


@dataclass(frozen=True)
class Plan:
    """How much to generate and what counts as a failure.

    Attributes
    ----------
    examples : int
        Requests per endpoint fitting the document (positive).
    negative : int
        Requests per endpoint breaking it (only for endpoints with inputs).
    seed : int
    allowed : tuple of int
        Statuses of 500 or more that are the contract in this run (503 while Redis is down).
    """

    examples: int
    negative: int
    seed: int = 0
    allowed: tuple[int, ...] = ()


def fuzz_target(target: Target, plan: Plan, known: Known | None = None) -> EndpointResult:
    """Send the plan's generated requests to one endpoint and check each answer.

    An operation without inputs (``GET /healthz``) has one distinct request; it is sent
    ``plan.examples`` times so that every endpoint carries the same load.
    """
    known = known or Known()
    result = EndpointResult(target.label)
    started = time.perf_counter()
    for mode, examples in ((GenerationMode.POSITIVE, plan.examples),
                           (GenerationMode.NEGATIVE, plan.negative)):
        if examples <= 0 or (mode is GenerationMode.NEGATIVE and not _has_inputs(target)):
            continue
        sent, seen, last = _run_mode(target, mode, examples, known, result, plan)
        while last and sent < examples:  # the search space ran out: repeat the last case
            _check(last[0], result, mode, plan.allowed)
            sent += 1
        result.cases[mode.value] = sent
        result.distinct[mode.value] = len(seen)
    result.seconds = time.perf_counter() - started
    return result


def _run_mode(target: Target, mode: GenerationMode, examples: int, known: Known,
              result: EndpointResult, plan: Plan) -> tuple[int, set[str], list[Any]]:
    """One hypothesis run: (requests sent, distinct ones, [the last case])."""
    sent = [0]
    seen: set[str] = set()
    last: list[Any] = []
    strategy = target.operation.as_strategy(mode, path_parameters=target.path_parameters)
    choices = st.tuples(st.integers(0, 2), st.integers(0, 1 << 16), st.integers(0, 1 << 16),
                        st.booleans())

    def one(case: Any, choice: tuple[int, int, int, bool]) -> None:
        _with_known(case, choice, known)
        _check(case, result, mode, plan.allowed)
        sent[0] += 1
        seen.add(_key(case))
        last[:] = [case]

    run = hypothesis.given(case=strategy, choice=choices)(one)
    run = hypothesis.settings(max_examples=examples, database=None, deadline=None,
                              phases=[Phase.generate],
                              suppress_health_check=list(HealthCheck))(run)
    # one seed per endpoint and mode, so that endpoints sharing a schema get different cases
    hypothesis.seed(plan.seed + zlib.crc32(f"{target.label} {mode.value}".encode()))(run)()
    return sent[0], seen, last


def _has_inputs(target: Target) -> bool:
    op = target.operation
    fixed = set(target.path_parameters or ())
    names = [p.name for p in op.path_parameters]
    return bool(getattr(op.body, "items", None)) or any(n not in fixed for n in names)


def _key(case: Any) -> str:
    return json.dumps([case.path_parameters, case.body], sort_keys=True, default=repr)


def _check(case: Any, result: EndpointResult, mode: GenerationMode,
           allowed: Sequence[int]) -> None:
    response = case.call()
    status = response.status_code
    result.statuses[status] = result.statuses.get(status, 0) + 1
    problems = []
    problem = json_error_problem(response, allowed)
    if problem:
        problems.append(problem)
    if status < 500 or status in allowed:
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as e:  # schemathesis reports failed checks as exceptions
            problems.append(f"does not match the document: {str(e).strip()[:600]}")
    if not problems:
        return
    result.failed += 1
    if len(result.failures) < 20:
        body = case.body if not isinstance(case.body, (bytes, bytearray)) else repr(case.body)
        result.failures.append(
            f"{mode.value} {case.method} {case.formatted_path} body={str(body)[:300]!s}: "
            + "; ".join(problems))


def fuzz_app(app: Any, models: Sequence[str], plan: Plan,
             known: Mapping[str, Known] | None = None,
             log: Callable[[str], None] | None = None) -> list[EndpointResult]:
    """Fuzz every endpoint of ``app``; ``known`` maps a model name to its ids."""
    schema = load_schema(app)
    results = []
    for target in targets(schema, models):
        model = (target.path_parameters or {}).get("model")
        ids = (known or {}).get(model or "", None)
        if ids is None and known and target.operation.path.endswith("/recommend"):
            ids = next(iter(known.values()))  # /vector/recommend serves the default model
        result = fuzz_target(target, plan, ids)
        if log:
            log(f"{result.label}: {result.total} requests "
                f"({', '.join(f'{k} {v}' for k, v in result.cases.items())}), "
                f"{result.failed} failures, {result.seconds:.1f}s")
        results.append(result)
    return results


# -- the services under test ------------------------------------------------------------------
@dataclass
class Service:
    """A service's WSGI app, the models it serves and the ids they know."""

    name: str
    app: Any
    models: list[str]
    known: dict[str, Known]


def known_ids(info: Any, df: Any = None, n: int = 40) -> Known:
    """Users (and items, and user feature values from ``df``) a model was trained on."""
    users = [info.id2user[u] for u in range(min(n, info.n_users))]
    items = [info.id2item[i] for i in range(min(n, info.n_items))]
    feats: dict[str, list] = {}
    if df is not None:
        for column in ("sex", "age", "occupation"):
            if column in df:
                values = df[column].drop_duplicates().head(8).tolist()
                feats[column] = [v.item() if hasattr(v, "item") else v for v in values]
    return Known(users=users, items=items, user_feats=feats)


def build_services(redis_url: str, knn: Any, vector: Any, tf: Any | None,
                   families: Sequence[str] = ("knn", "vector", "tf", "all")) -> list[Service]:
    """Load the models into ``redis_url`` and build the apps of ``families``.

    ``knn`` is a ``KnnModels``, ``vector`` a ``VectorModels`` and ``tf`` a ``TFModels`` (from
    the service tests), or None to leave the tf family out. The tf family scores in-process
    from the SavedModels.
    """
    import redis

    from services.all_deploy import create_all_app
    from services.core.app import create_app
    from services.core.config import Config
    from services.loaders.knn import load_knn
    from services.loaders.tf import load_tf
    from services.loaders.vector import load_vector

    client = redis.Redis.from_url(redis_url)
    known: dict[str, dict[str, Known]] = {"knn": {}, "vector": {}, "tf": {}}
    for algo in ("item_cf", "user_cf"):
        load_knn(knn.paths[algo], client=client)
        known["knn"][algo] = known_ids(knn.info)
    for algo in ("als", "svd"):
        load_vector(vector.paths[algo], client=client)
        known["vector"][algo] = known_ids(vector.info)
    env = {"REDIS_URL": redis_url, "LIBRECO_POLL_INTERVAL": "0.5"}
    if tf is not None:
        for algo in ("deepfm", "din"):
            load_tf(tf.paths[algo], client=client)
            known["tf"][algo] = known_ids(tf.info, tf.df)
        env["LIBRECO_MODEL_DIR"] = str(tf.serving)
    client.close()
    out = []
    for family in families:
        if family == "tf" and tf is None:
            continue
        if family == "all":
            every = {k: v for f in ("knn", "vector", "tf") for k, v in known[f].items()}
            app = create_all_app(Config.from_env(overrides=env))
            out.append(Service("all", app, sorted(every), every))
            continue
        extra = {"LIBRECO_MODEL": "als"} if family == "vector" else {}
        app = create_app(family, {**env, **extra})
        out.append(Service(family, app, sorted(known[family]), known[family]))
    return out
