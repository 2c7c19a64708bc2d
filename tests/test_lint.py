"""The Python lints as a test (issue 14, item 7): ``ruff check .`` and ``mypy`` from the repo
root find nothing, with the configuration in pyproject.toml.  Not a VM test."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_tool(module: str, *args: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed in this Python ({sys.executable}): "
                    f"pip install -e '.[test]'")
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (f"{module} {' '.join(args)} failed "
                                  f"(exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")


def test_ruff_finds_nothing():
    run_tool("ruff", "check", ".")


def test_mypy_finds_nothing():
    run_tool("mypy")
