import os
import signal
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def pytest_addoption(parser):
    parser.addoption("--kernel", choices=("default", "debug"),
                     default=os.environ.get("FIFOLAB_KERNEL", "default"),
                     help="guest kernel of the end-to-end tests: default (Debian's) or debug "
                          "(strict mode: KASAN, lockdep, kmemleak); env FIFOLAB_KERNEL")


@pytest.fixture(scope="session")
def kernel(request) -> str:
    return request.config.getoption("--kernel")


def pytest_report_header(config):
    return f"fifolab guest kernel: {config.getoption('--kernel')}"


def _terminated(signum, frame):
    # SIGTERM (CI's timeout, `kill`) unwinds like Ctrl-C: every `with Lab` and fixture cleans up,
    # so an interrupted run leaves no run directory behind either.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    signal.signal(signal.SIGTERM, _terminated)


MODEL_RAM = 64 << 20        # the RAM file of the device-model CLI tests (RAM in those modules)


@pytest.fixture
def ram_file(tmp_path):
    """A guest RAM file for a `python -m device` under test: MODEL_RAM bytes, sparse."""
    path = tmp_path / "ram"
    with open(path, "wb") as f:
        f.truncate(MODEL_RAM)
    return str(path)
