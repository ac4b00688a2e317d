"""The TF Serving test double speaks TF Serving's REST protocol over an exported SavedModel."""

from __future__ import annotations

import json
import shutil
import urllib.error

import numpy as np
import pytest

from services.testing.tf_serving_double import TFServingDouble
from tests.services.conftest import http

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def double(tf_models, tmp_path_factory):
    base = tmp_path_factory.mktemp("double") / "deepfm"
    shutil.copytree(tf_models.serving / "deepfm" / "1", base / "1")
    with TFServingDouble({"deepfm": base}, num_versions=2) as server:
        yield server, base


@pytest.fixture(scope="module")
def inputs(tf_models):
    model, info = tf_models.models["deepfm"], tf_models.info
    x = model.build_inputs(np.arange(6) % info.n_users, np.arange(6) * 7)
    expected = model.predict(info.user_map.originals(x["user_indices"]),
                             info.item_map.originals(x["item_indices"]))
    return x, expected


def test_model_status_and_version_status(double):
    server, _ = double
    status, body = http("GET", f"{server.url}/v1/models/deepfm")
    assert status == 200
    assert body == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK",
                                                         "error_message": ""}}]}
    status, body = http("GET", f"{server.url}/v1/models/deepfm/versions/1")
    assert status == 200 and body["model_version_status"][0]["version"] == "1"
    status, body = http("GET", f"{server.url}/v1/models/deepfm/versions/9")
    assert status == 404 and "version 9" in body["error"]
    status, body = http("GET", f"{server.url}/v1/models/nope")
    assert status == 404 and body == {"error": "Could not find any versions of model nope"}


def test_metadata_describes_the_predict_signature(double, tf_models):
    server, _ = double
    status, body = http("GET", f"{server.url}/v1/models/deepfm/metadata")
    assert status == 200 and body["model_spec"]["version"] == "1"
    sig = body["metadata"]["signature_def"]["signature_def"]["predict"]
    n_sparse = tf_models.info.user_sparse.shape[1] + tf_models.info.item_sparse.shape[1]
    assert sig["inputs"]["sparse_indices"]["dtype"] == "DT_INT32"
    assert [d["size"] for d in sig["inputs"]["sparse_indices"]["tensor_shape"]["dim"]] == \
        ["-1", str(n_sparse)]
    assert sig["inputs"]["dense_values"]["dtype"] == "DT_FLOAT"
    assert set(sig["outputs"]) == {"score"}
    assert sig["method_name"] == "tensorflow/serving/predict"


def test_row_and_columnar_predict_agree_with_the_model(double, inputs):
    server, _ = double
    x, expected = inputs
    columnar = {"signature_name": "predict", "inputs": {k: v.tolist() for k, v in x.items()}}
    status, body = http("POST", f"{server.url}/v1/models/deepfm:predict", columnar)
    assert status == 200
    np.testing.assert_allclose(body["outputs"], expected, rtol=1e-5)
    rows = [{k: v[i].tolist() for k, v in x.items()} for i in range(len(expected))]
    status, body = http("POST", f"{server.url}/v1/models/deepfm/versions/1:predict",
                        {"signature_name": "predict", "instances": rows})
    assert status == 200
    np.testing.assert_allclose(body["predictions"], expected, rtol=1e-5)
    # the default signature is serving_default, exported with the same function
    status, body = http("POST", f"{server.url}/v1/models/deepfm:predict", {"instances": rows})
    assert status == 200 and len(body["predictions"]) == len(expected)


@pytest.mark.parametrize("path, body, status, message", [
    ("/v1/models/nope:predict", {"instances": [1]}, 404,
     "Servable not found for request: Latest(nope)"),
    ("/v1/models/deepfm/versions/7:predict", {"instances": [1]}, 404,
     "Servable not found for request: Specific(deepfm, 7)"),
    ("/v1/models/deepfm:predict", {}, 400, "Missing 'inputs' or 'instances' key"),
    ("/v1/models/deepfm:predict", {"inputs": {}, "instances": []}, 400,
     "Not both 'inputs' and 'instances' keys"),
    ("/v1/models/deepfm:predict", {"signature_name": "rank", "inputs": {}}, 400,
     'Serving signature name: "rank" not found in signature def'),
    ("/v1/models/deepfm:predict", {"signature_name": "predict", "inputs": {"user_indices": [1]}},
     400, "Missing input"),
    ("/v1/models/deepfm:classify", {"instances": [1]}, 404, "Malformed request"),
])
def test_errors_use_tf_servings_codes_and_bodies(double, path, body, status, message):
    server, _ = double
    got, answer = http("POST", server.url + path, body)
    assert got == status
    assert set(answer) == {"error"} and message in answer["error"]


def test_malformed_json_and_bad_shapes_are_400(double, inputs):
    server, _ = double
    status, body = http("POST", f"{server.url}/v1/models/deepfm:predict", raw=b"{not json")
    assert status == 400 and body["error"].startswith("JSON Parse error")
    x, _ = inputs
    bad = {k: v.tolist() for k, v in x.items()}
    bad["sparse_indices"] = [row[:-1] for row in bad["sparse_indices"]]  # one column short
    status, body = http("POST", f"{server.url}/v1/models/deepfm:predict",
                        {"signature_name": "predict", "inputs": bad})
    assert status == 400 and body["error"]


def test_new_versions_are_served_and_the_oldest_dropped(double, tf_models):
    server, base = double
    for v in (2, 3):
        shutil.copytree(base / "1", base / f".tmp{v}")
        (base / f".tmp{v}").rename(base / str(v))  # a version appears complete, as exports do
    status, body = http("GET", f"{server.url}/v1/models/deepfm")
    assert [s["version"] for s in body["model_version_status"]] == ["3", "2"]
    status, _ = http("POST", f"{server.url}/v1/models/deepfm/versions/1:predict",
                     {"instances": [1]})
    assert status == 404
    shutil.rmtree(base / "3")
    shutil.rmtree(base / "2")


def test_stop_refuses_connections_and_start_takes_the_port_again(tf_models, tmp_path):
    base = tmp_path / "deepfm"
    shutil.copytree(tf_models.serving / "deepfm" / "1", base / "1")
    server = TFServingDouble({"deepfm": base}).start()
    url = server.url
    assert http("GET", f"{url}/v1/models/deepfm")[0] == 200
    server.stop()
    with pytest.raises(urllib.error.URLError):
        http("GET", f"{url}/v1/models/deepfm", timeout=2)
    server.start()
    try:
        assert server.url == url
        status, body = http("GET", f"{url}/v1/models/deepfm")
        assert status == 200 and json.dumps(body)
    finally:
        server.stop()
