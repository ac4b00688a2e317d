"""Where the tf service gets scores: TF Serving's REST API, or the SavedModel in-process.

Both backends take the columnar inputs of the exported ``predict`` signature (see
:func:`libreco.utils.save_model_tf_serving`) and return one float32 score per row.

* :class:`RestScorer` (``TF_SERVING_URL`` set) posts
  ``{"signature_name": "predict", "inputs": {...}}`` to
  ``{TF_SERVING_URL}/v1/models/{name}[/versions/{v}]:predict`` over a pool of keep-alive
  connections, waits at most ``LIBRECO_TF_TIMEOUT`` seconds, retries a refused connection or a
  502/503/504 answer ``LIBRECO_TF_RETRIES`` times (never a timeout: that would multiply the
  wait), and turns every failure into a 503 answer.
* :class:`InProcessScorer` (``TF_SERVING_URL`` unset) evaluates
  ``{LIBRECO_MODEL_DIR}/{name}/{v}/`` with TensorFlow in the worker. TensorFlow is imported on
  first use, so a worker starts fast and the REST mode never imports it.

**Which exported version.** A Redis version stores a probe: a few input rows and the scores its
model directory gives them (:mod:`services.loaders.tf`). A :class:`ServingLink` binds the Redis
version to the newest exported version that reproduces those scores, so features of one
training run never meet the network of another while TF Serving (or the model folder) already
holds a newer export that Redis has not activated yet. Without a probe the newest version is
used, and a newer one is picked up within ``LIBRECO_POLL_INTERVAL`` seconds.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.core import metrics
from services.core.errors import ServiceError
from services.tf.inputs import ArrayInputs, ModelInputs

log = logging.getLogger("libreco.services")

SIGNATURE = "predict"
OUTPUT = "score"
PROBE_RTOL, PROBE_ATOL = 1e-4, 1e-5
LOG_EVERY = 10.0  # seconds between two log lines about scoring failures in one worker
RETRY_STATUS = (502, 503, 504)
RETRY_PAUSE = 0.05  # seconds before the first retry, doubled for each further one


class ScorerUnavailable(ServiceError):
    """503: TF Serving cannot be reached, or no exported version fits the active model."""

    def __init__(self, message: str):
        super().__init__(503, message)


class VersionGone(Exception):
    """The exported version a link is bound to is no longer served."""


@dataclass(frozen=True)
class Probe:
    """Input rows and the scores the Redis version's model directory gives them.

    Attributes
    ----------
    inputs : ArrayInputs
        Columnar inputs of the ``predict`` signature.
    scores : np.ndarray of float32, shape (n,)
    """

    inputs: ArrayInputs
    scores: np.ndarray

    @classmethod
    def from_json(cls, raw: bytes | str, dtypes: dict[str, str]) -> Probe:
        doc = json.loads(raw)
        inputs = {k: np.asarray(v, dtype=dtypes.get(k, "float32"))
                  for k, v in doc["inputs"].items()}
        return cls(ArrayInputs(inputs), np.asarray(doc["scores"], dtype=np.float32))

    def matches(self, scores: np.ndarray) -> bool:
        return scores.shape == self.scores.shape and bool(
            np.allclose(scores, self.scores, rtol=PROBE_RTOL, atol=PROBE_ATOL))


@dataclass(frozen=True)
class Binding:
    """An exported version chosen for a Redis version.

    ``version`` None means "the newest TF Serving has" (REST, no probe); ``pinned`` says the
    probe chose it.
    """

    name: str
    version: int | None
    pinned: bool


class _Throttle:
    """Logs a failure at most every ``LOG_EVERY`` seconds, counting the ones in between."""

    def __init__(self) -> None:
        self.last = 0.0
        self.unlogged = 0
        self.lock = threading.Lock()

    def warn(self, message: str, *args: Any) -> None:
        metrics.store_error()
        with self.lock:
            now = time.monotonic()
            if now - self.last < LOG_EVERY:
                self.unlogged += 1
                return
            extra, self.unlogged, self.last = self.unlogged, 0, now
        log.warning(message + (f" ({extra} more failures since the last report)" if extra
                               else ""), *args)


class Scorer(ABC):
    """A source of scores for exported models."""

    kind: str = ""

    @abstractmethod
    def bind(self, name: str, probe: Probe | None) -> Binding:
        """The exported version of model ``name`` that reproduces ``probe`` (the newest when
        ``probe`` is None); raises :class:`ScorerUnavailable` when there is none."""

    @abstractmethod
    def score(self, binding: Binding, inputs: ModelInputs) -> np.ndarray:
        """float32 scores of shape (n,) for inputs of n rows.

        Raises :class:`VersionGone` when the bound version is no longer served and
        :class:`ScorerUnavailable` on any other failure.
        """

    def stale(self, binding: Binding) -> bool:
        """Whether an unpinned binding should be resolved again (a newer export appeared)."""
        return False

    def check_ready(self, binding: Binding) -> None:
        """Raise :class:`ScorerUnavailable` unless ``binding`` can answer now."""

    def _pick(self, name: str, versions: list[int], probe: Probe | None) -> Binding:
        """The newest of ``versions`` (newest first) that reproduces ``probe``."""
        if not versions:
            raise ScorerUnavailable(f"{self.kind} has no version of model {name!r}")
        if probe is None:
            return Binding(name, versions[0], False)
        for v in versions:
            b = Binding(name, v, True)
            try:
                scores = self.score(b, probe.inputs)
            except (VersionGone, ScorerUnavailable) as e:
                log.info("%s: version %d of %s could not score the probe: %s", self.kind, v,
                         name, e)
                continue
            if probe.matches(scores):
                return b
        raise ScorerUnavailable(
            f"no version of model {name!r} in {self.kind} ({', '.join(map(str, versions))}) "
            "gives the scores of the active model version; export the model that was loaded "
            "into Redis (save_model_tf_serving)")


# -- TF Serving's REST API ---------------------------------------------------------------------
class RestScorer(Scorer):
    """Scores from TF Serving's REST API.

    Parameters
    ----------
    url : str
        ``TF_SERVING_URL``, e.g. ``http://127.0.0.1:8501``.
    timeout : float
        Seconds to connect and to wait for an answer (``LIBRECO_TF_TIMEOUT``).
    retries : int
        Further attempts after a refused connection or a 502/503/504 answer.
    pool_size : int
        Keep-alive connections kept per worker.
    """

    kind = "TF Serving"

    def __init__(self, url: str, timeout: float, retries: int = 2, pool_size: int = 16):
        import requests
        from requests.adapters import HTTPAdapter

        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._requests = requests
        self._throttle = _Throttle()

    def _call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        """One request with bounded retries; returns (status, parsed JSON body)."""
        requests = self._requests
        url = self.url + path
        pause = RETRY_PAUSE
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                resp = self.session.request(
                    method, url, data=body, timeout=self.timeout,
                    headers={"Content-Type": "application/json"} if body is not None else None)
            except requests.Timeout:
                self._throttle.warn("TF Serving %s %s: no answer within %.2fs", method, url,
                                    self.timeout)
                raise ScorerUnavailable(f"TF Serving did not answer within {self.timeout:g}s; "
                                        "try again shortly") from None
            except requests.RequestException as e:
                if not last:
                    time.sleep(pause)
                    pause *= 2
                    continue
                self._throttle.warn("TF Serving %s %s failed: %s: %s", method, url,
                                    type(e).__name__, e)
                raise ScorerUnavailable(f"TF Serving at {self.url} cannot be reached "
                                        f"({type(e).__name__}); try again shortly") from None
            if resp.status_code in RETRY_STATUS and not last:
                time.sleep(pause)
                pause *= 2
                continue
            try:
                return resp.status_code, resp.json()
            except ValueError:
                return resp.status_code, {"error": resp.text[:200]}
        raise AssertionError("unreachable")

    def versions(self, name: str) -> list[int]:
        """Versions of ``name`` TF Serving reports AVAILABLE, newest first."""
        status, doc = self._call("GET", f"/v1/models/{name}")
        if status == 404:
            return []
        if status != 200:
            raise ScorerUnavailable(f"TF Serving answered {status} for the status of model "
                                    f"{name!r}: {_error_text(doc)}")
        return sorted((int(s["version"]) for s in doc.get("model_version_status", [])
                       if s.get("state") == "AVAILABLE"), reverse=True)

    def bind(self, name: str, probe: Probe | None) -> Binding:
        versions = self.versions(name)
        if probe is None:
            if not versions:
                raise ScorerUnavailable(f"TF Serving has no AVAILABLE version of model {name!r}")
            return Binding(name, None, False)
        return self._pick(name, versions, probe)

    def score(self, binding: Binding, inputs: ModelInputs) -> np.ndarray:
        path = f"/v1/models/{binding.name}"
        if binding.version is not None:
            path += f"/versions/{binding.version}"
        body = b'{"signature_name":"%s","inputs":%s}' % (SIGNATURE.encode(),
                                                         inputs.json_inputs())
        status, doc = self._call("POST", path + ":predict", body)
        if status == 404 and binding.pinned:
            raise VersionGone(_error_text(doc))
        if status != 200:
            self._throttle.warn("TF Serving answered %d for %s: %s", status, path,
                                _error_text(doc))
            raise ScorerUnavailable(f"TF Serving answered {status} for model "
                                    f"{binding.name!r}: {_error_text(doc)}")
        outputs = doc.get("outputs") if isinstance(doc, dict) else None
        if isinstance(outputs, dict):
            outputs = outputs.get(OUTPUT)
        try:
            scores = np.asarray(outputs, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            scores = np.empty(0, dtype=np.float32)
        n = inputs.n_rows
        if outputs is None or len(scores) != n:
            raise ScorerUnavailable(f"TF Serving's answer for model {binding.name!r} has no "
                                    f"'{OUTPUT}' output of {n} scores")
        return scores

    def check_ready(self, binding: Binding) -> None:
        available = self.versions(binding.name)
        if not available:
            raise ScorerUnavailable(f"TF Serving reports no AVAILABLE version of model "
                                    f"{binding.name!r}")
        if binding.version is not None and binding.version not in available:
            raise ScorerUnavailable(f"TF Serving no longer reports version {binding.version} "
                                    f"of model {binding.name!r} AVAILABLE")


def _error_text(doc: Any) -> str:
    if isinstance(doc, dict) and "error" in doc:
        return str(doc["error"])[:300]
    return str(doc)[:300]


# -- the SavedModel in the worker --------------------------------------------------------------
class InProcessScorer(Scorer):
    """Scores from the SavedModels under ``LIBRECO_MODEL_DIR``, evaluated in the worker.

    Loaded versions are cached (at most ``keep`` of them); loading holds a lock, scoring does
    not (a loaded signature may be called from several threads).

    Parameters
    ----------
    model_dir : str or path
        The folder given to ``save_model_tf_serving`` (``{model_dir}/{name}/{version}/``).
    keep : int
        SavedModels kept loaded per worker.
    """

    kind = "LIBRECO_MODEL_DIR"

    def __init__(self, model_dir: str | os.PathLike, keep: int = 3):
        self.model_dir = Path(model_dir)
        self.keep = keep
        self._loaded: OrderedDict[Path, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def versions(self, name: str) -> list[int]:
        """Complete exported versions of ``name``, newest first."""
        base = self.model_dir / name
        try:
            entries = os.listdir(base)
        except OSError:
            return []
        found = [int(e) for e in entries if e.isdigit() and (base / e / "saved_model.pb").is_file()]
        return sorted(found, reverse=True)

    def bind(self, name: str, probe: Probe | None) -> Binding:
        versions = self.versions(name)
        if not versions:
            raise ScorerUnavailable(f"no SavedModel of model {name!r} under "
                                    f"LIBRECO_MODEL_DIR={self.model_dir} (expected "
                                    f"{self.model_dir / name}/<version>/saved_model.pb)")
        return self._pick(name, versions, probe)

    def stale(self, binding: Binding) -> bool:
        newest = self.versions(binding.name)
        return bool(newest) and newest[0] != binding.version

    def _signature(self, binding: Binding) -> Any:
        path = self.model_dir / binding.name / str(binding.version)
        entry = self._loaded.get(path)
        if entry is not None:
            return entry[1]
        with self._lock:
            entry = self._loaded.get(path)
            if entry is None:
                if not (path / "saved_model.pb").is_file():
                    raise VersionGone(f"{path} is gone")
                t0 = time.perf_counter()
                import tensorflow as tf

                try:
                    loaded = tf.saved_model.load(str(path))
                    fn = loaded.signatures[SIGNATURE]
                except (OSError, KeyError, ValueError, tf.errors.OpError) as e:
                    raise ScorerUnavailable(f"cannot load the SavedModel {path}: "
                                            f"{type(e).__name__}: {e}") from None
                entry = (loaded, fn)
                self._loaded[path] = entry
                # TensorFlow leaves millions of long-lived objects; without this every full
                # collection walks them all, and a request that builds a large answer
                # triggers one (tens of milliseconds at 30,000 candidates)
                gc.freeze()
                while len(self._loaded) > self.keep:
                    self._loaded.popitem(last=False)
                log.info("loaded SavedModel %s in %.2fs", path, time.perf_counter() - t0)
            else:
                self._loaded.move_to_end(path)
        return entry[1]

    def score(self, binding: Binding, inputs: ModelInputs) -> np.ndarray:
        fn = self._signature(binding)
        import tensorflow as tf

        try:
            out = fn(**{k: tf.constant(v) for k, v in inputs.arrays().items()})
        except (TypeError, ValueError, tf.errors.OpError) as e:
            raise ScorerUnavailable(f"the SavedModel of model {binding.name!r} version "
                                    f"{binding.version} rejected the inputs: "
                                    f"{type(e).__name__}: {str(e)[:200]}") from None
        return out[OUTPUT].numpy().astype(np.float32, copy=False).reshape(-1)

    def check_ready(self, binding: Binding) -> None:
        self._signature(binding)


class ServingLink:
    """The binding of one Redis version to an exported version, resolved on first use.

    Thread-safe: one thread resolves while the others wait for it. A binding whose version
    disappeared is resolved again; without a probe, the scorer is asked at most every
    ``poll_interval`` seconds whether a newer export appeared.
    """

    def __init__(self, scorer: Scorer, name: str, probe: Probe | None,
                 poll_interval: float = 0.5):
        self.scorer = scorer
        self.name = name
        self.probe = probe
        self.poll_interval = poll_interval
        self._binding: Binding | None = None
        self._checked_at = 0.0
        self._lock = threading.Lock()

    def _superseded(self, b: Binding) -> bool:
        if b.pinned or time.monotonic() - self._checked_at < self.poll_interval:
            return False
        self._checked_at = time.monotonic()
        return self.scorer.stale(b)

    def binding(self) -> Binding:
        b = self._binding
        if b is not None and not self._superseded(b):
            return b
        with self._lock:
            if self._binding is b:  # nobody resolved it again meanwhile
                new = self.scorer.bind(self.name, self.probe)
                if b is None or new.version != b.version:
                    log.info("model %s: scoring with %s version %s%s", self.name,
                             self.scorer.kind, "newest" if new.version is None else new.version,
                             " (matches the active Redis version)" if new.pinned else "")
                self._binding = new
                self._checked_at = time.monotonic()
            return self._binding

    def score(self, inputs: ModelInputs) -> np.ndarray:
        b = self.binding()
        try:
            return self.scorer.score(b, inputs)
        except VersionGone:
            with self._lock:
                if self._binding is b:
                    self._binding = None
            b = self.binding()
            try:
                return self.scorer.score(b, inputs)
            except VersionGone as e:
                raise ScorerUnavailable(f"{self.scorer.kind} dropped model {self.name!r} "
                                        f"version {b.version} while it was in use: {e}") from None

    def check_ready(self) -> None:
        self.scorer.check_ready(self.binding())
