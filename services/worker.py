"""gunicorn's threaded worker, with kept-alive connections spread evenly over the workers.

Every worker of a gunicorn service waits on the same listening socket, and each new connection
goes to whichever worker accepts first. Clients that keep connections open (load balancers,
ingress controllers, connection pools) open them in bursts, so one worker can end up holding
most of them: it then serves that traffic on one core while the other workers idle, which
halves throughput and multiplies tail latency. In a load test with 32 kept-alive connections
and 2 workers, splits such as 32/0 and 25/7 were common.

:class:`BalancedThreadWorker` is gunicorn's ``gthread`` worker with these changes:

* a worker that holds more connections than the least-loaded live worker lets the others
  accept the next one. The workers publish their connection counts in a small table of shared
  memory, created in the master before the workers fork. A worker never waits long for the
  others: after :data:`MAX_DEFER` seconds of deferring it accepts anyway, so a stuck worker
  can't keep clients waiting;
* a worker that has held three or more connections above the least-loaded one for two checks
  in a row (taken while another worker was booting or stopped) closes half the gap after their
  next answers, with ``Connection: close``: clients reconnect and land on the others;
* a worker reads its settings once (:class:`FrozenConfig`) instead of on every use.

``services/gunicorn_conf.py`` selects it when ``LIBRECO_WORKER_CLASS`` is ``gthread`` (the
default).
"""

from __future__ import annotations

import mmap
import struct
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

SLOTS = 256
"""Rows of the shared table: one per worker process, picked by the worker's age."""
MAX_DEFER = 0.25
"""Seconds a worker holding more connections than another lets pending connections wait for
the others before accepting them itself. A busy worker may take a few milliseconds per accept
while its threads serve the connections it already took, so a burst of new connections can
need tens of milliseconds to spread."""
STALE = 3.0
"""Seconds after which a worker that has not updated its row is treated as gone (the main loop
of a live worker comes round at least once a second)."""
SHARE_CHECK = 0.1
"""Seconds between a worker's checks of whether it holds more than its share of connections."""
PAUSE = 0.0005
"""Seconds a worker's main loop sleeps each time it defers a connection (its request threads
go on meanwhile)."""

_ROW = struct.Struct("<qqd")  # pid, open connections, monotonic time of the last update
_table = mmap.mmap(-1, SLOTS * _ROW.size)  # shared with every worker forked after import


def fewest_elsewhere(own_slot: int, now: float) -> int | None:
    """The smallest connection count among the other live workers, None when there is none."""
    fewest = None
    for slot, (pid, conns, stamp) in enumerate(_ROW.iter_unpack(_table)):
        if pid and slot != own_slot and now - stamp < STALE and (fewest is None or
                                                                  conns < fewest):
            fewest = conns
    return fewest


class FrozenConfig:
    """A worker's view of gunicorn's configuration, each setting read once.

    gunicorn looks settings up through ``Config.__getattr__`` on every use, two dozen times per
    request while parsing and answering it. A worker's settings never change once it has forked
    (a reload starts new workers), so the first value read is kept as a plain attribute.
    """

    def __init__(self, cfg: Any):
        object.__setattr__(self, "_cfg", cfg)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._cfg, name)
        object.__setattr__(self, name, value)
        return value


class BalancedThreadWorker(ThreadWorker):
    """``gthread`` worker that defers new connections while it holds more than another."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.slot = self.age % SLOTS
        self._defer_since = self._last_defer = float("-inf")
        self._excess = 0  # connections to close after their next answer
        self._surplus = 0  # connections above the least-loaded worker's, at the last check
        self._next_share_check = 0.0

    def init_process(self) -> None:
        self.cfg = FrozenConfig(self.cfg)
        super().init_process()

    def _publish(self, now: float) -> None:
        _ROW.pack_into(_table, self.slot * _ROW.size, self.pid, self.nr_conns, now)

    def accept(self, server: Any, listener: Any) -> None:
        now = time.monotonic()
        fewest = fewest_elsewhere(self.slot, now)
        if fewest is not None and self.nr_conns > fewest:
            if now - self._last_defer > 10 * PAUSE:  # a new connection waits: start counting
                self._defer_since = now
            if now - self._defer_since < MAX_DEFER:
                self._last_defer = now
                # the listener stays readable until another worker accepts: yield to it
                # rather than spin on the connection
                time.sleep(PAUSE)
                return
        super().accept(server, listener)
        self._publish(now)

    def murder_keepalived(self) -> None:
        # called once per turn of the main loop: close idle connections, then publish the count
        # (a booting worker, still loading its models, has no row yet and is not waited for)
        super().murder_keepalived()
        now = time.monotonic()
        self._publish(now)
        if now >= self._next_share_check:
            self._next_share_check = now + SHARE_CHECK
            fewest = fewest_elsewhere(self.slot, now)
            # moving half the gap to the least-loaded worker evens the two out; a gap of one
            # or two is what balanced accepting leaves, and not worth a reconnect
            gap = 0 if fewest is None else self.nr_conns - fewest
            surplus = gap // 2 if gap > 2 else 0
            # only a surplus seen twice in a row, not the passing one of a burst of connects
            self._excess = min(surplus, self._surplus)
            self._surplus = surplus

    def handle_request(self, req: Any, conn: Any) -> bool:
        # connections taken while another worker was booting or stuck stay with this one for
        # as long as the client keeps them open: hand the surplus back by closing them after
        # an answer (``Connection: close``), so that the client reconnects to the others
        if self._excess > 0:
            self._excess -= 1
            req.must_close = True
        return super().handle_request(req, conn)

    def run(self) -> None:
        try:
            super().run()
        finally:
            _ROW.pack_into(_table, self.slot * _ROW.size, 0, 0, 0.0)
