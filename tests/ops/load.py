"""A bounded load generator for the fault tests: a pool of threads, each holding one kept-alive
HTTP connection to a service on 127.0.0.1 and sending POST requests in a loop.

Every answer is recorded with its start and end times, so that a test can split the run into
phases (before a fault, during it, after the recovery) and judge each answer by when it was
asked.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    key: Any
    """What the request asked for (e.g. the user), as chosen by the generator."""
    status: int
    """HTTP status, or 0 when the connection failed."""
    body: Any
    """Parsed JSON, or the raw text when it is not JSON, or the error for status 0."""
    worker: int


@dataclass
class LoadGenerator:
    """``connections`` threads posting to ``url`` until stopped or a bound is reached.

    Parameters
    ----------
    url : str
        ``http://127.0.0.1:<port>``; only loopback addresses are accepted.
    requests : sequence of (path, key, body)
        Cycled through by each thread from a different offset.
    connections : int
    max_requests : int
        Stop after this many answers in all.
    max_seconds : float
        Stop after this long whatever happens.
    """

    url: str
    requests: Sequence[tuple[str, Any, Any]]
    connections: int = 32
    max_requests: int = 50_000
    max_seconds: float = 60.0
    timeout: float = 10.0
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        host_port = self.url.removeprefix("http://").rstrip("/")
        host, _, port = host_port.partition(":")
        if host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"load is only sent to the loopback interface, not {host!r}")
        self.host, self.port = host, int(port)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._encoded = [(p, k, json.dumps(b).encode()) for p, k, b in self.requests]

    def __enter__(self) -> LoadGenerator:
        self.started = time.monotonic()
        for n in range(self.connections):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)

    @property
    def count(self) -> int:
        return len(self.answers)

    def wait(self, seconds: float) -> None:
        """Sleep while the load runs (returns early once a bound stops it)."""
        self._stop.wait(seconds)

    def wait_until(self, check: Callable[[], bool], timeout: float,
                   interval: float = 0.05) -> float | None:
        """Seconds until ``check()`` is true, or None after ``timeout``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if check():
                return time.monotonic() - start
            time.sleep(interval)
        return None

    def _run(self, n: int) -> None:
        conn: http.client.HTTPConnection | None = None
        i = n * 7
        while not self._stop.is_set():
            if time.monotonic() - self.started > self.max_seconds or \
                    len(self.answers) >= self.max_requests:
                self._stop.set()
                break
            path, key, raw = self._encoded[i % len(self._encoded)]
            i += 1
            started = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                conn.request("POST", path, body=raw,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                text = resp.read()
                status = resp.status
                try:
                    body: Any = json.loads(text)
                except ValueError:
                    body = text.decode(errors="replace")
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                status, body = 0, f"{type(e).__name__}: {e}"
                if conn is not None:
                    conn.close()
                conn = None
            answer = Answer(started, time.monotonic(), key, status, body, n)
            with self._lock:
                self.answers.append(answer)
        if conn is not None:
            conn.close()

    # -- summaries ------------------------------------------------------------------------------
    def between(self, start: float, end: float) -> list[Answer]:
        """Answers to requests started in ``[start, end)``."""
        return [a for a in self.answers if start <= a.started < end]

    def statuses(self, answers: Sequence[Answer] | None = None) -> dict[int, int]:
        out: dict[int, int] = {}
        for a in self.answers if answers is None else answers:
            out[a.status] = out.get(a.status, 0) + 1
        return out


def json_error(answer: Answer) -> bool:
    """Whether an error answer has the services' JSON error body."""
    body = answer.body
    return isinstance(body, dict) and isinstance(body.get("error"), str) and \
        body.get("status") == answer.status
