"""A test double of TensorFlow Serving's REST API, for machines where TF Serving cannot run.

This is NOT TensorFlow Serving: it is a small standard-library HTTP server that speaks the
same REST protocol (https://www.tensorflow.org/tfx/serving/api_rest) for the requests the tf
service and its tests send, and answers them by evaluating the exported SavedModels with
TensorFlow (``tf.saved_model.load`` and the requested signature). The tests and the tf service
benchmark use it to exercise the REST path; production uses the ``tensorflow/serving`` image.

Protocol spoken (``{name}`` is a configured model, ``{v}`` a version folder of its base path):

``GET /v1/models/{name}`` and ``GET /v1/models/{name}/versions/{v}``
    ``{"model_version_status": [{"version": "3", "state": "AVAILABLE", "status":
    {"error_code": "OK", "error_message": ""}}]}``: the managed versions, newest first (the
    newest ``num_versions`` complete version folders, as TF Serving's "latest" policy), or the
    one asked for. A version is ``LOADING`` until its SavedModel is loaded in the background,
    then ``AVAILABLE``; a failed load is ``END`` with error code ``UNKNOWN`` and the message.
    Predictions use ``AVAILABLE`` versions only ("latest" is the newest of them).
``GET /v1/models/{name}[/versions/{v}]/metadata``
    ``{"model_spec": {"name", "signature_name": "", "version"}, "metadata": {"signature_def":
    {"signature_def": {<signature>: {"inputs": {...}, "outputs": {...}, "method_name":
    "tensorflow/serving/predict"}}}}}`` with TF Serving's dtype names (``DT_INT32``) and
    ``tensor_shape.dim[].size`` strings (``"-1"`` for the batch).
``POST /v1/models/{name}[/versions/{v}]:predict``
    Row form ``{"signature_name": ..., "instances": [{input: value, ...}, ...]}`` answered with
    ``{"predictions": [...]}``, columnar form ``{"signature_name": ..., "inputs": {input:
    [...]}}`` answered with ``{"outputs": ...}``; a single output is given without its name,
    as TF Serving does. ``signature_name`` defaults to ``serving_default``.
Errors
    ``{"error": "<message>"}`` with TF Serving's status codes and wording: 404 for an unknown
    model or version (``Servable not found for request: Latest(name)`` /
    ``Specific(name, v)``, ``Could not find any versions of model name``) and for unknown
    paths (``Malformed request: ...``); 400 for malformed JSON, a missing or doubled
    ``inputs``/``instances`` key, an unknown signature, missing inputs and values the
    signature rejects.

Version folders are scanned every ``poll_seconds`` (TF Serving polls its file system every
second by default) and on every request, so a new export starts loading as soon as its folder
is complete. Connections are HTTP/1.1 keep-alive; :meth:`TFServingDouble.stop` closes them,
so that a client sees the server go away as it would see TF Serving go away, and
:meth:`~TFServingDouble.start` may bind the same port again.

Run it by hand with TF Serving's flag names (one model, or the models of a model config file
in TF Serving's text format, as the Helm chart writes it)::

    python -m services.testing.tf_serving_double --rest_api_port 8501 \\
        --model_name deepfm --model_base_path models/tf_serving/deepfm
    python -m services.testing.tf_serving_double --rest_api_port 8501 \\
        --model_config_file models.config
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("libreco.services")

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
                   r"(?P<rest>/metadata|:predict)?$")
_DT_NAMES = {"int32": "DT_INT32", "int64": "DT_INT64", "float32": "DT_FLOAT",
             "float64": "DT_DOUBLE", "string": "DT_STRING", "bool": "DT_BOOL"}


class ServingError(Exception):
    """An error answer: TF Serving's status code and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _Model:
    """The versions of one model name: discovered on disk and loaded in the background.

    As TF Serving's ``latest`` policy does, the newest ``num_versions`` complete version folders
    are served: a new one is ``LOADING`` until its SavedModel is loaded (at least
    ``load_delay`` seconds), then ``AVAILABLE``; one that fell out of the newest is unloaded.
    A version whose SavedModel cannot be loaded stays listed as ``END`` with the error.
    """

    def __init__(self, name: str, base_path: Path, num_versions: int, load_delay: float = 0.0):
        self.name = name
        self.base_path = Path(base_path)
        self.num_versions = num_versions
        self.load_delay = load_delay
        self.states: dict[int, tuple[str, str]] = {}  # version -> (state, error message)
        self.loaded: dict[int, Any] = {}
        self.lock = threading.Lock()

    def aspired_versions(self) -> list[int]:
        """The newest ``num_versions`` complete version folders, newest first."""
        try:
            entries = os.listdir(self.base_path)
        except OSError:
            return []
        found = sorted((int(e) for e in entries
                        if e.isdigit() and (self.base_path / e / "saved_model.pb").is_file()),
                       reverse=True)
        return found[:self.num_versions]

    def refresh(self) -> None:
        """Start loading new versions and unload the ones no longer aspired."""
        aspired = self.aspired_versions()
        with self.lock:
            for v in [v for v in self.states if v not in aspired]:
                del self.states[v]
                self.loaded.pop(v, None)
            fresh = [v for v in aspired if v not in self.states]
            for v in fresh:
                self.states[v] = ("LOADING", "")
        for v in fresh:
            threading.Thread(target=self._load, args=(v,), name=f"load-{self.name}-{v}",
                             daemon=True).start()

    def _load(self, version: int) -> None:
        if self.load_delay:
            time.sleep(self.load_delay)
        try:
            import tensorflow as tf

            model = tf.saved_model.load(str(self.base_path / str(version)))
            gc.freeze()  # keep full collections off TensorFlow's long-lived objects
            state, error = "AVAILABLE", ""
        except Exception as e:  # TF Serving reports a failed load in the version's status
            model, state, error = None, "END", f"{type(e).__name__}: {e}"[:500]
            log.warning("tf serving double: cannot load %s version %d: %s", self.name,
                        version, error)
        with self.lock:
            if version in self.states:  # still aspired
                self.states[version] = (state, error)
                if model is not None:
                    self.loaded[version] = model

    def status(self) -> list[tuple[int, str, str]]:
        """(version, state, error message) of every version, newest first."""
        with self.lock:
            return sorted(((v, st, err) for v, (st, err) in self.states.items()), reverse=True)

    def settled(self) -> bool:
        """Whether no version is loading."""
        with self.lock:
            return all(st != "LOADING" for st, _ in self.states.values())

    def version(self, version: int | None) -> tuple[int, Any]:
        """The loaded model of ``version``, or of the newest AVAILABLE version for None."""
        with self.lock:
            if version is None:
                if not self.loaded:
                    raise ServingError(404, f"Servable not found for request: "
                                            f"Latest({self.name})")
                version = max(self.loaded)
            elif version not in self.loaded:
                raise ServingError(404, f"Servable not found for request: "
                                        f"Specific({self.name}, {version})")
            return version, self.loaded[version]


class TFServingDouble:
    """The REST protocol of TF Serving over the SavedModels of some model base paths.

    Parameters
    ----------
    models : mapping of str -> path
        Model name -> base path (the folder holding ``1/``, ``2/``, ... version folders).
    port : int
        Port to bind on 127.0.0.1; 0 picks a free one (kept by a later :meth:`start`).
    num_versions : int or mapping of str -> int
        How many of the newest versions are served (TF Serving's ``latest`` policy), for every
        model or per model name.
    poll_seconds : float
        How often the version folders are scanned (TF Serving's
        ``--file_system_poll_wait_seconds``); every request scans them as well.
    load_delay : float
        Extra seconds each version stays ``LOADING`` (to test clients that wait for
        ``AVAILABLE``; TF Serving's load time of a large model).

    Attributes
    ----------
    requests : int
        Requests answered so far.
    connections : int
        TCP connections accepted so far (keep-alive clients reuse theirs).
    predict_forms : collections.Counter
        Predict requests by form: ``"inputs"`` (columnar) and ``"instances"`` (rows).

    Examples
    --------
    >>> double = TFServingDouble({"deepfm": "models/tf_serving/deepfm"}).start()
    >>> double.url
    'http://127.0.0.1:...'
    >>> double.stop()
    """

    def __init__(self, models: Mapping[str, str | os.PathLike], port: int = 0,
                 num_versions: int | Mapping[str, int] = 1, poll_seconds: float = 1.0,
                 load_delay: float = 0.0):
        def keep(name: str) -> int:
            return num_versions.get(name, 1) if isinstance(num_versions, Mapping) else \
                num_versions

        self.models = {name: _Model(name, Path(path), keep(name), load_delay)
                       for name, path in models.items()}
        self.port = port
        self.poll_seconds = poll_seconds
        self.requests = 0
        self.connections = 0
        self.predict_forms: Counter[str] = Counter()
        self._poller: threading.Thread | None = None
        self._stopped = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self, wait: float = 60.0) -> TFServingDouble:
        """Listen (in a background thread) until :meth:`stop`.

        Waits up to ``wait`` seconds for the versions found on disk to finish loading (0: do
        not wait; they are ``LOADING`` meanwhile).
        """
        if self._server is not None:
            return self
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_class(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._stopped.clear()
        self._thread = threading.Thread(target=server.serve_forever, name="tf-serving-double",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._poller = threading.Thread(target=self._poll, name="tf-serving-double-poll",
                                        daemon=True)
        self._poller.start()
        self.refresh()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not all(m.settled() for m in self.models.values()):
            time.sleep(0.02)
        return self

    def refresh(self) -> None:
        """Scan every model's version folders now."""
        for model in self.models.values():
            model.refresh()

    def _poll(self) -> None:
        while not self._stopped.wait(self.poll_seconds):
            self.refresh()

    def stop(self) -> None:
        """Stop listening and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopped.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> TFServingDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the protocol -------------------------------------------------------------------------
    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """Answer one request: (status, JSON document)."""
        self.requests += 1
        match = _PATH.match(path.split("?", 1)[0])
        try:
            if match is None:
                raise ServingError(404, f"Malformed request: {method} {path}")
            name, rest = match["name"], match["rest"]
            if name in self.models:
                self.models[name].refresh()
            version = int(match["version"]) if match["version"] else None
            if method == "GET" and rest is None:
                return 200, self._status(name, version)
            if method == "GET" and rest == "/metadata":
                return 200, self._metadata(name, version)
            if method == "POST" and rest == ":predict":
                return 200, self._predict(name, version, body)
            raise ServingError(404, f"Malformed request: {method} {path}")
        except ServingError as e:
            return e.status, {"error": e.message}

    def _model(self, name: str) -> _Model:
        model = self.models.get(name)
        if model is None:
            raise ServingError(404, f"Servable not found for request: Latest({name})")
        return model

    def _status(self, name: str, version: int | None) -> dict[str, Any]:
        model = self.models.get(name)
        listed = model.status() if model is not None else []
        if not listed:
            raise ServingError(404, f"Could not find any versions of model {name}")
        if version is not None:
            listed = [entry for entry in listed if entry[0] == version]
            if not listed:
                raise ServingError(404, f"Could not find version {version} of model {name}")
        return {"model_version_status": [
            {"version": str(v), "state": state,
             "status": {"error_code": "UNKNOWN" if error else "OK", "error_message": error}}
            for v, state, error in listed]}

    def _metadata(self, name: str, version: int | None) -> dict[str, Any]:
        version, loaded = self._model(name).version(version)
        defs = {}
        for sig_name, fn in loaded.signatures.items():
            _, kwargs = fn.structured_input_signature
            defs[sig_name] = {
                "inputs": {k: _tensor_info(spec, f"{sig_name}_{k}:0")
                           for k, spec in kwargs.items()},
                "outputs": {k: _tensor_info(spec, f"StatefulPartitionedCall:{i}")
                            for i, (k, spec) in enumerate(fn.structured_outputs.items())},
                "method_name": "tensorflow/serving/predict",
            }
        return {"model_spec": {"name": name, "signature_name": "", "version": str(version)},
                "metadata": {"signature_def": {"signature_def": defs}}}

    def _predict(self, name: str, version: int | None, body: bytes) -> dict[str, Any]:
        model = self._model(name)
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise ServingError(400, f"JSON Parse error: {e}") from None
        if not isinstance(doc, dict):
            raise ServingError(400, "JSON Value: is not an object")
        if ("inputs" in doc) == ("instances" in doc):
            raise ServingError(400, "Missing 'inputs' or 'instances' key" if "inputs" not in doc
                               else "Not both 'inputs' and 'instances' keys")
        self.predict_forms["inputs" if "inputs" in doc else "instances"] += 1
        sig_name = doc.get("signature_name", "serving_default")
        _, loaded = model.version(version)
        fn = loaded.signatures.get(sig_name) if isinstance(sig_name, str) else None
        if fn is None:
            raise ServingError(400, f'Serving signature name: "{sig_name}" not found in '
                                    "signature def")
        _, specs = fn.structured_input_signature
        columnar = "inputs" in doc
        values = _columns(doc["inputs"], specs) if columnar else _rows(doc["instances"], specs)
        import tensorflow as tf

        tensors = {}
        for k, spec in specs.items():
            try:
                tensors[k] = tf.constant(np.asarray(values[k], dtype=spec.dtype.as_numpy_dtype))
            except (TypeError, ValueError) as e:
                raise ServingError(400, f"Failed to process element: {k} of 'inputs' "
                                        f"({e})") from None
        try:
            out = fn(**tensors)
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as e:
            raise ServingError(400, str(e).split("\n", 1)[0][:500]) from None
        outputs = {k: v.numpy() for k, v in out.items()}
        if columnar:
            if len(outputs) == 1:
                return {"outputs": next(iter(outputs.values())).tolist()}
            return {"outputs": {k: v.tolist() for k, v in outputs.items()}}
        n = len(next(iter(outputs.values())))
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values())).tolist()}
        return {"predictions": [{k: v[i].tolist() for k, v in outputs.items()}
                                for i in range(n)]}


def _columns(inputs: Any, specs: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(inputs, dict):
        if len(specs) == 1:
            return {next(iter(specs)): inputs}
        raise ServingError(400, "'inputs' must be an object keyed by the signature's inputs "
                                "when it has several")
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise ServingError(400, f"Missing input: {missing[0]}")
    extra = sorted(set(inputs) - set(specs))
    if extra:
        raise ServingError(400, f"input tensor alias not found in signature: {extra[0]}. "
                                f"Inputs expected to be in the set {{{','.join(sorted(specs))}}}.")
    return inputs


def _rows(instances: Any, specs: Mapping[str, Any]) -> dict[str, list]:
    if not isinstance(instances, list) or not instances:
        raise ServingError(400, "Expecting 'instances' to be an list/array")
    if len(specs) == 1 and not all(isinstance(r, dict) for r in instances):
        return {next(iter(specs)): instances}
    out: dict[str, list] = {k: [] for k in specs}
    for row in instances:
        if not isinstance(row, dict):
            raise ServingError(400, "Expecting object but got list at item 0 of input list")
        missing = sorted(set(specs) - set(row))
        if missing:
            raise ServingError(400, f"Failed to process element: 0 key: {missing[0]} of "
                                    "'instances' list. Error: Missing named input")
        for k in specs:
            out[k].append(row[k])
    return out


def _tensor_info(spec: Any, tensor_name: str) -> dict[str, Any]:
    dims = [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape.as_list()]
    return {"dtype": _DT_NAMES.get(spec.dtype.name, "DT_INVALID"),
            "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": tensor_name}


def _handler_class(double: TFServingDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "tf-serving-double"

        def setup(self) -> None:
            super().setup()
            # answers go out in one write; without this, Nagle's algorithm and the client's
            # delayed acknowledgement add 40 ms to every keep-alive exchange
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with double._lock:
                double._connections.add(self.connection)
                double.connections += 1

        def finish(self) -> None:
            with double._lock:
                double._connections.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def _answer(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                status, doc = double.handle(method, self.path, body)
            except Exception as e:  # the double must answer like a server, never hang up
                log.exception("tf serving double: %s %s failed", method, self.path)
                status, doc = 500, {"error": f"{type(e).__name__}: {e}"}
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self._headers_buffer.append(b"\r\n" + data)  # headers and body in one write
            self.flush_headers()

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._answer("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._answer("POST")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("tf serving double: " + format, *args)

    return Handler


_CONFIG_BLOCK = re.compile(r"\bconfig\s*\{")
_CONFIG_FIELD = re.compile(r"\b(name|base_path)\s*:\s*(?:\"([^\"]*)\"|'([^']*)')")
_CONFIG_KEEP = re.compile(r"\bnum_versions\s*:\s*(\d+)")


def read_model_config(text: str) -> dict[str, tuple[str, int]]:
    """Model name -> (base path, versions kept) from a TF Serving model config file.

    Reads the ``model_config_list { config { name, base_path, model_version_policy { latest {
    num_versions } } } }`` entries of the text format; other fields are ignored.
    """
    starts = [m.end() for m in _CONFIG_BLOCK.finditer(text)]
    out: dict[str, tuple[str, int]] = {}
    for i, start in enumerate(starts):
        block = text[start:starts[i + 1] if i + 1 < len(starts) else len(text)]
        fields = {m[1]: m[2] if m[2] is not None else m[3] for m in _CONFIG_FIELD.finditer(block)}
        if "name" not in fields or "base_path" not in fields:
            raise ValueError(f"model config entry {i + 1} lacks a name or a base_path")
        keep = _CONFIG_KEEP.search(block)
        out[fields["name"]] = (fields["base_path"], int(keep[1]) if keep else 1)
    if not out:
        raise ValueError("the model config lists no model")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.testing.tf_serving_double",
        description="A test double of TF Serving's REST API (not TF Serving).")
    parser.add_argument("--rest_api_port", type=int, default=8501)
    parser.add_argument("--model_name", default=None)
    parser.add_argument("--model_base_path", default=None)
    parser.add_argument("--model_config_file", default=None)
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0)
    parser.add_argument("--num_versions", type=int, default=1,
                        help="versions kept of --model_name (this double's own flag)")
    args = parser.parse_args(argv)
    if args.model_config_file:
        config = read_model_config(Path(args.model_config_file).read_text())
        models = {name: path for name, (path, _) in config.items()}
        keep: int | dict[str, int] = {name: n for name, (_, n) in config.items()}
    elif args.model_name and args.model_base_path:
        models, keep = {args.model_name: args.model_base_path}, args.num_versions
    else:
        parser.error("give --model_config_file, or --model_name and --model_base_path")
    logging.basicConfig(level=logging.INFO)
    double = TFServingDouble(models, args.rest_api_port, keep,
                             poll_seconds=args.file_system_poll_wait_seconds).start()
    log.info("TF Serving test double for %s at %s", ", ".join(models), double.url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        double.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
