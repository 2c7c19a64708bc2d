"""Run fifolab's CLI in a child process the way tests need: if the test run is interrupted
(Ctrl-C, or SIGTERM, which conftest.py turns into KeyboardInterrupt), the child gets SIGTERM
and unwinds its own cleanup (QEMU, model, run directory) before we go on."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_harness(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "harness", *args]
    kw.setdefault("cwd", REPO)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **kw) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
