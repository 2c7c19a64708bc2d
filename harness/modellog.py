"""The device model's log as an oracle: an exception the model caught and logged (a failed
doorbell handler, a monitor command or session that raised, a delayed completion that failed)
is a bug in the model, and fails the run at once -- otherwise it shows up later, and
misleadingly, as a driver timeout.

The model logs in device/cli.py's format, ``name LEVEL: message``; ``log.exception`` adds the
traceback.  Warnings (a refused client, a guest mistake reported to the guest) are not reports.
"""

from __future__ import annotations

import re

from .errors import LabError
from .kmsg import LogWatcher, Report

TROUBLE = re.compile(r"Traceback \(most recent call last\)|\b(ERROR|CRITICAL): ")
TRACE_LINES = 40


class ModelLogError(LabError):
    """The device model logged an error or an exception; the message holds it."""

    def __init__(self, reports: list[Report]):
        self.reports = reports
        super().__init__("\n".join(str(r) for r in reports))


def find_trouble(lines: list[str]) -> list[Report]:
    """Each error line with the lines after it (its traceback), as one report."""
    reports, i = [], 0
    while i < len(lines):
        if not TROUBLE.search(lines[i]):
            i += 1
            continue
        block = lines[i:i + TRACE_LINES]
        # a traceback follows its "... failed" line: one report, not two
        end = next((k for k in range(1, len(block)) if TROUBLE.search(block[k])
                    and not block[k].startswith("Traceback")), len(block))
        reports.append(Report("error", block[:end], source="device model"))
        i += end
    return reports


class ModelLogWatcher(LogWatcher):
    """Follows the model's log file (``--log``)."""

    error = ModelLogError

    @staticmethod
    def find(lines: list[str]) -> list[Report]:
        return find_trouble(lines)
