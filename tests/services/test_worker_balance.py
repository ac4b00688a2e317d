"""Kept-alive connections are spread over gunicorn's workers (services/worker.py).

A real gunicorn with two workers; connections are counted per worker from ``/proc``.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from services import worker
from tests.services.conftest import Gunicorn, wait_for

pytestmark = pytest.mark.slow

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer from ``sock``; returns its status line and headers."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        body += chunk
    return head


def ask(sock: socket.socket) -> bytes:
    """One keep-alive request on ``sock``; the answer's status line and headers."""
    sock.sendall(REQUEST)
    return read_answer(sock)


def established_per_worker(port: int, pids: set[int]) -> dict[int, int]:
    """Established connections to ``port`` held by each of ``pids``."""
    inodes = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes[fields[9]] = True
    counts = {}
    for pid in pids:
        held = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                held += 1
        counts[pid] = held
    return counts


@pytest.fixture(scope="module")
def server(redis_server, tmp_path_factory):
    log = tmp_path_factory.mktemp("balance") / "gunicorn.log"
    gunicorn = Gunicorn("services.knn.knn_deploy:app", {"REDIS_URL": redis_server.url}, log)
    yield gunicorn
    gunicorn.stop()


def test_kept_alive_connections_are_split_evenly(server):
    pids = server.workers()
    for _ in range(3):  # each round opens 32 connections at once, as a load generator does
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                 for _ in range(32)]
        try:
            for sock in socks:
                sock.sendall(REQUEST)
            for sock in socks:
                sock.settimeout(10)
                assert read_answer(sock).startswith(b"HTTP/1.1 200")
                assert ask(sock).startswith(b"HTTP/1.1 200")  # kept alive
            counts = established_per_worker(server.port, pids)
            # a worker may already have handed back a surplus connection or two
            assert 28 <= sum(counts.values()) <= 32
            assert max(counts.values()) - min(counts.values()) <= 4, counts
        finally:
            for sock in socks:
                sock.close()
        wait_for(lambda: sum(established_per_worker(server.port, pids).values()) == 0, 10,
                 what="connections closed")


def test_a_stopped_worker_does_not_hold_back_new_connections(server):
    pids = sorted(server.workers())
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
             for _ in range(4)]
    for sock in socks:
        ask(sock)
    stopped = pids[0]
    os.kill(stopped, signal.SIGSTOP)
    try:
        fresh = []
        start = time.monotonic()
        for _ in range(6):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            fresh.append(sock)
            sock.settimeout(5)
            assert ask(sock).startswith(b"HTTP/1.1 200")
        # each waited at most the deferral bound, not for the stopped worker, which took none
        assert time.monotonic() - start < 6 * (worker.MAX_DEFER + 0.5)
        assert established_per_worker(server.port, {stopped})[stopped] <= 4
    finally:
        os.kill(stopped, signal.SIGCONT)
        for sock in socks + fresh:
            sock.close()


def test_frozen_config_reads_each_setting_once():
    from gunicorn.config import Config

    cfg = Config()
    cfg.set("keepalive", 7)
    frozen = worker.FrozenConfig(cfg)
    assert frozen.keepalive == 7 and frozen.threads == cfg.threads
    cfg.set("keepalive", 9)  # a worker's settings do not change after fork: the first read stays
    assert frozen.keepalive == 7 and "keepalive" in vars(frozen)
    with pytest.raises(AttributeError):
        frozen.no_such_setting  # noqa: B018


def test_connections_taken_while_a_worker_was_away_are_handed_back(server):
    pids = sorted(server.workers())
    away = pids[0]
    os.kill(away, signal.SIGSTOP)
    try:  # the other worker takes every connection (after the deferral bound)
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                 for _ in range(16)]
        for sock in socks:
            sock.settimeout(10)
            assert ask(sock).startswith(b"HTTP/1.1 200")
    finally:
        os.kill(away, signal.SIGCONT)
    assert established_per_worker(server.port, {away})[away] == 0
    closed = 0
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.05)
            for i, sock in enumerate(socks):
                head = ask(sock)
                assert head.startswith(b"HTTP/1.1 200")
                if b"connection: close" in head.lower():
                    closed += 1
                    sock.close()  # the client reconnects, as a pool or proxy would
                    socks[i] = socket.create_connection(("127.0.0.1", server.port),
                                                        timeout=10)
            counts = established_per_worker(server.port, set(pids))
            if max(counts.values()) - min(counts.values()) <= 2:
                break
        assert max(counts.values()) - min(counts.values()) <= 2, counts
        assert closed >= 6  # the surplus was handed back, not more than needed
        assert closed <= 10
    finally:
        for sock in socks:
            sock.close()
