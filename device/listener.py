"""Accepting connections on a listening socket without spinning when the process is out of
file descriptors.

A listening socket stays readable while a connection waits in its backlog.  When ``accept``
fails with EMFILE or ENFILE (no descriptor left for the new socket), the connection stays
there, the socket stays readable, and an event loop that simply logs and returns is called
again at once: one core at 100 % and a log line per try.  :class:`Acceptor` instead stops
watching the socket for a while (``BACKOFF_MIN`` s, doubling up to ``BACKOFF_MAX``), retries,
and logs once per episode: when it starts and when accepting works again.  The waiting
connection is not lost: it is accepted as soon as a descriptor frees.  (asyncio's own
``start_unix_server``, which serves the QMP monitor, backs off the same way, by 1 s.)

Other accept errors (a peer that vanished between readiness and ``accept``) are logged,
rate limited, and the next connection is tried.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable

from .ratelimit import LogLimiter

__all__ = ["Acceptor", "BACKOFF_MIN", "BACKOFF_MAX", "OUT_OF_RESOURCES"]

BACKOFF_MIN = 0.05          # seconds before the first retry
BACKOFF_MAX = 1.0           # ... doubling up to this
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Acceptor:
    """Call ``on_socket(sock)`` for each connection accepted on ``listener`` (non-blocking).

    ``start()`` registers with the running loop, ``close()`` unregisters (the caller owns and
    closes the listener).  ``failures`` counts accepts that failed for lack of resources.
    """

    def __init__(self, listener: socket.socket, on_socket: Callable[[socket.socket], None],
                 log: logging.Logger, what: str) -> None:
        self.listener = listener
        self.on_socket = on_socket
        self.log = log
        self.what = what
        self.failures = 0
        self._limiter = LogLimiter(log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watching = False
        self._retry: asyncio.TimerHandle | None = None
        self._backoff = 0.0         # > 0 while out of resources
        self._episode = (0.0, 0)    # start time, failures at its start

    @property
    def backing_off(self) -> bool:
        return self._backoff > 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._watch(True)

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._watch(False)
        self._loop = None

    def _watch(self, on: bool) -> None:
        loop = self._loop
        if loop is None or on == self._watching or loop.is_closed():
            return
        self._watching = on
        if on:
            loop.add_reader(self.listener.fileno(), self._on_readable)
        else:
            loop.remove_reader(self.listener.fileno())

    def _on_readable(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            if err.errno in OUT_OF_RESOURCES:
                self._out_of_resources(err)
            else:
                self._limiter.warning("accept", "%s accept failed: %s", self.what, err)
            return
        if self._backoff:
            start, failed = self._episode
            self.log.warning("%s accept works again after %.1f s (%d failed tries)",
                             self.what, time.monotonic() - start, self.failures - failed)
            self._backoff = 0.0
        self.on_socket(sock)

    def _out_of_resources(self, err: OSError) -> None:
        self.failures += 1
        if not self._backoff:
            self._episode = (time.monotonic(), self.failures - 1)
            self.log.warning("%s accept failed: %s; not accepting for a while (retry after "
                             "%g s, backing off up to %g s) until a descriptor frees",
                             self.what, err.strerror, BACKOFF_MIN, BACKOFF_MAX)
            self._backoff = BACKOFF_MIN
        else:
            self._backoff = min(2 * self._backoff, BACKOFF_MAX)
        self._watch(False)
        assert self._loop is not None           # accepting: started, not stopped
        self._retry = self._loop.call_later(self._backoff, self._resume)

    def _resume(self) -> None:
        self._retry = None
        self._watch(True)
