"""docs/tutorial.md, run: every `$ ` command in its console blocks, in order, from a scratch
directory that sees the repository's tutorial/; each must exit 0 and print the lines shown
under it (`…` matches anything)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parents[1]
TUTORIAL = REPO / "docs" / "tutorial.md"


def steps() -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    in_block = False
    for line in TUTORIAL.read_text().splitlines():
        if line.startswith("```"):
            in_block = line.strip() == "```console"
            continue
        if not in_block:
            continue
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif line.strip() and out:
            out[-1][1].append(line)
    return out


def test_tutorial_has_commands():
    cmds = [c for c, _ in steps()]
    assert cmds[0].startswith("fifolab up") and cmds[-1] == "fifolab down"
    assert any("reload --src" in c for c in cmds)


def test_tutorial_runs(tmp_path, kernel):
    (tmp_path / "tutorial").symlink_to(REPO / "tutorial")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "fifolab"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m harness \"$@\"\n")
    shim.chmod(0o755)
    env = dict(os.environ, FIFOLAB_LAB_DIR=str(tmp_path / "lab"), FIFOLAB_KERNEL=kernel,
               PATH=f"{bindir}:{os.environ['PATH']}", PYTHONPATH=str(REPO))
    try:
        for cmd, expected in steps():
            if cmd.startswith("fifolab up"):
                cmd += f" --kernel {kernel}"
            res = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True,
                                 text=True, timeout=900)
            assert res.returncode == 0, f"$ {cmd}\n{res.stdout}{res.stderr}"
            got = res.stdout.splitlines()
            for want in expected:
                pat = re.compile(".*".join(re.escape(p) for p in want.split("…")))
                assert any(pat.fullmatch(g.rstrip()) for g in got), \
                    f"$ {cmd}\nexpected a line like {want!r} in:\n{res.stdout}"
    finally:
        subprocess.run([sys.executable, "-m", "harness", "down"], env=env, cwd=REPO,
                       capture_output=True, timeout=120)
