"""The guest kernel log as a test oracle.

A ``KernelLogWatcher`` follows the serial-console log file that QEMU writes and finds the
reports that must fail a run: BUG, WARNING, Oops, general protection faults, lockdep, KASAN,
UBSAN, kmemleak, hung tasks and panics.  Each report is returned with the lines after it (the
call trace), so the failure shows what happened.  The one expected complaint -- our module is
not signed -- is not a report.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

REPORT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("BUG", re.compile(r"\bBUG: ")),
    ("WARNING", re.compile(r"\bWARNING: ")),
    ("Oops", re.compile(r"\bOops\b|\binvalid opcode: ")),
    ("general protection fault", re.compile(r"general protection fault")),
    ("lockdep", re.compile(r"possible (circular|recursive) locking|inconsistent lock state|"
                           r"suspicious RCU usage|possible irq lock inversion|"
                           r"lock held when returning to user space")),
    ("KASAN", re.compile(r"\bKASAN\b")),
    ("UBSAN", re.compile(r"\bUBSAN\b")),
    ("kmemleak", re.compile(r"kmemleak: \d+ new suspected memory leaks|unreferenced object 0x")),
    ("hung task", re.compile(r"blocked for more than \d+ seconds")),
    ("panic", re.compile(r"Kernel panic")),
)

EXPECTED = (re.compile(r"module verification failed"),)

TRACE_LINES = 40


@dataclasses.dataclass
class Report:
    kind: str
    lines: list[str]
    source: str = "guest kernel"

    def __str__(self) -> str:
        return f"{self.source} {self.kind}:\n" + "\n".join("    " + ln for ln in self.lines)


class KernelLogError(RuntimeError):
    """The guest kernel reported a bug; the message holds the report."""

    def __init__(self, reports: list[Report]):
        self.reports = reports
        super().__init__("\n".join(str(r) for r in reports))


def find_reports(lines: list[str]) -> list[Report]:
    reports = []
    i = 0
    while i < len(lines):
        line = lines[i]
        kind = None
        if not any(p.search(line) for p in EXPECTED):
            kind = next((k for k, p in REPORT_PATTERNS if p.search(line)), None)
        if kind is None:
            i += 1
            continue
        block = lines[i:i + TRACE_LINES]
        reports.append(Report(kind, block))
        i += len(block)
    return reports


class LogWatcher:
    """Follows a log file that another process appends to; ``poll()`` returns the reports
    ``find`` finds in the lines added since the last call, ``check()`` raises ``error`` with
    them.  Subclasses say what a report is (``find``) and what to raise (``error``)."""

    error: type[Exception] = RuntimeError

    def __init__(self, path: Path):
        self.path = path
        self._offset = 0
        self._partial = ""
        self.reports: list[Report] = []

    @staticmethod
    def find(lines: list[str]) -> list[Report]:
        raise NotImplementedError

    def skip_existing(self) -> None:
        """Judge only what is logged from now on."""
        try:
            self._offset = self.path.stat().st_size
        except FileNotFoundError:
            pass

    def poll(self) -> list[Report]:
        # the lab polls on every guest-agent round trip: nothing new costs one stat()
        try:
            if self.path.stat().st_size == self._offset:
                return []
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        text = self._partial + data.decode("utf-8", "replace").replace("\r", "")
        lines = text.split("\n")
        self._partial = lines.pop()
        new = self.find(lines)
        self.reports.extend(new)
        return new

    def check(self) -> None:
        new = self.poll()
        if new:
            raise self.error(new)

    def tail(self, n: int = 40) -> str:
        try:
            text = self.path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.replace("\r", "").splitlines()[-n:])


class KernelLogWatcher(LogWatcher):
    """Follows the guest's serial-console log: kernel reports (``find_reports``)."""

    error = KernelLogError

    @staticmethod
    def find(lines: list[str]) -> list[Report]:
        return find_reports(lines)
