"""Rate-limited logging: a peer must not be able to fill the disk through our log.

Anything a peer can repeat at will -- a refused connection, a failed accept, a stray byte on
the monitor, a lost interrupt -- logs through a :class:`LogLimiter`: at most ``burst`` lines
per key per ``interval`` seconds; the rest are counted, and the first line after the interval
says how many were suppressed::

    limiter = LogLimiter(log)
    limiter.warning("refused", "refusing a second client (peer %d)", peer)
    ...
    WARNING: refusing a second client (peer 1)          <- burst lines, then silence
    WARNING: refusing a second client (peer 1) [suppressed 31337 like lines in 10 s]

Keys are the caller's: one per kind of message, not per peer (a peer that changes its
name must not get a fresh budget).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["LogLimiter"]


class LogLimiter:
    """At most ``burst`` lines per key per ``interval`` seconds through ``log``."""

    def __init__(self, log: logging.Logger, burst: int = 5, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.burst = burst
        self.interval = interval
        self._clock = clock
        self._windows: dict[str, list] = {}      # key -> [window start, lines, suppressed]

    def allow(self, key: str) -> tuple[bool, int]:
        """May a line for ``key`` be logged now?  Also returns the count suppressed since the
        last logged line (to be reported with this one)."""
        now = self._clock()
        w = self._windows.get(key)
        if w is None or now - w[0] >= self.interval:
            suppressed = w[2] if w is not None else 0
            self._windows[key] = [now, 1, 0]
            if len(self._windows) > 1024:       # keys are few; never let them grow
                self._windows = {key: self._windows[key]}
            return True, suppressed
        if w[1] < self.burst:
            w[1] += 1
            return True, 0
        w[2] += 1
        return False, 0

    def log_as(self, level: int, key: str, msg: str, *args) -> bool:
        """Log ``msg % args`` at ``level`` unless ``key`` is over its budget."""
        ok, suppressed = self.allow(key)
        if not ok or not self.log.isEnabledFor(level):
            return ok
        if suppressed:
            msg = f"{msg} [suppressed {suppressed} like lines in {self.interval:g} s]"
        self.log.log(level, msg, *args)
        return True

    def info(self, key: str, msg: str, *args) -> bool:
        return self.log_as(logging.INFO, key, msg, *args)

    def warning(self, key: str, msg: str, *args) -> bool:
        return self.log_as(logging.WARNING, key, msg, *args)
