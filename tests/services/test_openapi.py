"""``GET /openapi.json`` of every service (knn, vector, tf and all three on one port), on a
real redis-server: the document is a valid OpenAPI 3.1 document, real answers validate against
its response schemas, and a short schemathesis run generated from it finds no answer of 500 or
more and no 4xx without a JSON error body (``benchmarks/fuzz_services.py`` is the long run)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from services.core.app import create_app
from tests.ops.fuzzing import Plan, Service, build_services, fuzz_app, load_schema
from tests.services.conftest import RedisServer, free_port
from tests.services.test_vector_service import VectorModels

pytest.importorskip("schemathesis")

FAMILIES = ("knn", "vector", "tf", "all")
FIELDS = {"knn": {"k_neighbors"}, "vector": {"use_faiss"}, "tf": {"algo", "seq", "user_feats"}}
PLAN = Plan(examples=100, negative=50)  # requests per endpoint fitting / breaking the document


@pytest.fixture(scope="module")
def services(request, tmp_path_factory, knn_models) -> dict[str, Service]:
    """The four services on a private redis-server (the session's one is flushed by others)."""
    try:
        tf_models = request.getfixturevalue("tf_models")
    except pytest.skip.Exception:  # no tensorflow: the tf family is left out
        tf_models = None
    server = RedisServer(tmp_path_factory.mktemp("redis_openapi")).start()
    vector = VectorModels(tmp_path_factory.mktemp("vector_openapi"))
    built = {s.name: s for s in build_services(server.url, knn_models, vector, tf_models)}
    yield built
    server.stop()


def service(services: dict[str, Service], family: str) -> Service:
    if family not in services:
        pytest.skip(f"the {family} family is not available (tensorflow missing)")
    return services[family]


def document(app: Any) -> dict:
    resp = app_client(app).get("/openapi.json")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    return json.loads(resp.get_data())


def app_client(app: Any):
    """A test client of a Flask app or of the all-families dispatcher."""
    from werkzeug.test import Client

    return app.test_client() if hasattr(app, "test_client") else Client(app)


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def pointer(doc: dict, ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


class Answers:
    """Validates real answers against the response schemas of a document."""

    URI = "urn:libreco:openapi"

    def __init__(self, doc: dict):
        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(self.URI, resource)

    def check(self, path: str, method: str, status: int, resp: Any) -> None:
        responses = self.doc["paths"][path][method]["responses"]
        assert str(status) in responses, f"{method} {path} answered {status}, not documented"
        declared = responses[str(status)]
        if "$ref" in declared:
            declared = pointer(self.doc, declared["$ref"])
        (media_type, content), = declared["content"].items()
        assert resp.headers["Content-Type"].split(";")[0] == media_type
        if media_type != "application/json":
            return
        schema = content["schema"]
        if "$ref" in schema:
            schema = {"$ref": self.URI + schema["$ref"]}
        validator = jsonschema.Draft202012Validator(schema, registry=self.registry)
        errors = [e.message for e in validator.iter_errors(json.loads(resp.get_data()))]
        assert errors == [], f"{method} {path} {status}: {errors}"


# -- the document -------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_document_is_valid_openapi(services, family):
    doc = document(service(services, family).app)
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["title"] and doc["info"]["version"]
    try:
        from schemathesis.specs.openapi.definitions import OPENAPI_31
    except ImportError:  # the meta-schema moved: the checks below still run
        OPENAPI_31 = None
    if OPENAPI_31 is not None:
        meta = jsonschema.validators.validator_for(OPENAPI_31)(OPENAPI_31)
        assert [e.message for e in meta.iter_errors(doc)] == []
    for ref in refs(doc):
        pointer(doc, ref)  # every reference resolves inside the document
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert method in ("get", "post") and operation["responses"], (path, method)
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert names == {n.strip("{}") for n in path.split("/") if n.startswith("{")}
    assert {"/{model}/recommend", "/healthz", "/readyz", "/metrics", "/openapi.json"} <= \
        set(doc["paths"])
    recommend = doc["paths"]["/{model}/recommend"]["post"]
    assert set(recommend["responses"]) == {"200", "400", "404", "413", "503"}
    body = recommend["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert {b["$ref"].rsplit("/", 1)[1] for b in body} == \
        {"RecommendRequest", "EncodedRecommendRequest"}
    # schemathesis reads every operation of it
    assert all(result.ok() for result in load_schema(service(services, family).app)
               .get_all_operations())


@pytest.mark.parametrize("family", FAMILIES)
def test_request_fields_are_the_familys(services, family):
    doc = document(service(services, family).app)
    fields = set(doc["components"]["schemas"]["RecommendRequest"]["properties"]) - \
        {"user", "n_rec"}
    expected = set().union(*(FIELDS[f] for f in FIELDS if family in (f, "all")))
    if "tf" not in services:
        expected -= FIELDS["tf"]
    assert fields == expected
    assert ("/vector/recommend" in doc["paths"]) == (family in ("vector", "all"))


def test_request_schema_describes_what_is_accepted(services):
    """Bodies the schema allows are answered 200, bodies it rejects 400."""
    knn = service(services, "knn")
    doc = document(knn.app)
    schema = doc["components"]["schemas"]["RecommendRequest"]
    check = jsonschema.Draft202012Validator(schema)
    user = knn.known["item_cf"].users[0]
    client = app_client(knn.app)
    for body in ({"user": user}, {"user": str(user), "n_rec": "7"}, {"user": user, "n_rec": 7.0},
                 {"user": user, "n_rec": None, "k_neighbors": "5", "extra": [1]}):
        assert check.is_valid(body), body
        assert client.post("/item_cf/recommend", data=json.dumps(body)).status_code == 200
    for body in ({"n_rec": 3}, {"user": True}, {"user": user, "n_rec": 0},
                 {"user": user, "n_rec": 2.5}, {"user": user, "k_neighbors": [3]}):
        assert not check.is_valid(body), body
        assert client.post("/item_cf/recommend", data=json.dumps(body)).status_code == 400


# -- real answers against the document ----------------------------------------------------------
def exchanges(svc: Service) -> list[tuple[str, str, str, Any, int]]:
    """(document path, method, URL, body, expected status) covering every documented answer."""
    out: list[tuple[str, str, str, Any, int]] = []
    for model in svc.models:
        user = svc.known[model].users[1]
        out += [
            ("/{model}/recommend", "post", f"/{model}/recommend", {"user": user, "n_rec": 5}, 200),
            ("/{model}/recommend", "post", f"/{model}/recommend",
             json.dumps(json.dumps({"user": user})), 200),
            ("/{model}/recommend", "post", f"/{model}/recommend", {"user": "stranger"}, 200),
            ("/{model}/recommend", "post", f"/{model}/recommend", {"user": user, "n_rec": 0},
             400),
        ]
    out += [
        ("/{model}/recommend", "post", "/no_such_model/recommend", {"user": 1}, 404),
        ("/{model}/recommend", "post", f"/{svc.models[0]}/recommend", "[1, 2]", 400),
        ("/{model}/recommend", "post", f"/{svc.models[0]}/recommend",
         '{"user": "' + "x" * (2 << 20) + '"}', 413),
        ("/healthz", "get", "/healthz", None, 200),
        ("/readyz", "get", "/readyz", None, 200),
        ("/metrics", "get", "/metrics", None, 200),
        ("/openapi.json", "get", "/openapi.json", None, 200),
    ]
    if "als" in svc.models:
        out.append(("/vector/recommend", "post", "/vector/recommend",
                    {"user": svc.known["als"].users[0]}, 200 if svc.name == "vector" else 404))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_real_answers_validate_against_the_document(services, family):
    svc = service(services, family)
    answers = Answers(document(svc.app))
    client = app_client(svc.app)
    for path, method, url, body, expected in exchanges(svc):
        if method == "get":
            resp = client.get(url)
        else:
            raw = body if isinstance(body, str) else json.dumps(body)
            resp = client.post(url, data=raw, content_type="application/json")
        assert resp.status_code == expected, (url, body, resp.get_data()[:300])
        answers.check(path, method, resp.status_code, resp)


def test_unreachable_redis_answers_validate_against_the_document():
    app = create_app("knn", {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                             "LIBRECO_REDIS_TIMEOUT": "0.2"})
    answers = Answers(document(app))
    client = app.test_client()
    resp = client.post("/item_cf/recommend", data=json.dumps({"user": 1}))
    assert resp.status_code == 503
    answers.check("/{model}/recommend", "post", 503, resp)
    resp = client.get("/readyz")
    assert resp.status_code == 503
    answers.check("/readyz", "get", 503, resp)


# -- fuzzing ------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_fuzzing_finds_no_server_error_and_no_bare_4xx(services, family):
    svc = service(services, family)
    results = fuzz_app(svc.app, svc.models, PLAN, svc.known)
    assert len(results) >= 4 + len(svc.models)
    for r in results:
        assert r.total >= PLAN.examples, r.label
        assert r.failed == 0, f"{r.label}: " + "\n".join(r.failures)
    statuses = {s for r in results for s in r.statuses}
    assert {200, 400, 404} <= statuses


def test_fuzzing_while_redis_is_unreachable():
    app = create_app("knn", {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                             "LIBRECO_REDIS_TIMEOUT": "0.2"})
    results = fuzz_app(app, ["item_cf"], Plan(examples=40, negative=20, allowed=(503,)))
    for r in results:
        assert r.failed == 0, f"{r.label}: " + "\n".join(r.failures)
    assert 503 in {s for r in results for s in r.statuses}


@pytest.mark.parametrize("family, model, fields", [
    ("knn", "item_cf", {"n_rec": "+-5"}),
    ("knn", "item_cf", {"n_rec": "\u00b2"}),
    ("knn", "item_cf", {"k_neighbors": "9" * 5000}),
    ("knn", "item_cf", {"k_neighbors": "\u0663"}),
    ("tf", "deepfm", {"user_feats": {"age": 10**400}}),
    ("tf", "deepfm", {"user_feats": {"age": 1e308}}),
])
def test_values_that_broke_the_parser_are_400(services, family, model, fields):
    """Edge values the request parsers once answered with a 500."""
    svc = service(services, family)
    body = json.dumps({"user": svc.known[model].users[0], **fields})
    resp = app_client(svc.app).post(f"/{model}/recommend", data=body)
    assert resp.status_code == 400, resp.get_data()[:300]
    assert resp.get_json()["field"] == next(iter(fields))
