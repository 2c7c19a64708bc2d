"""A lab that stays up: ``fifolab up`` / ``status`` / ``down``, and attaching to it.

``fifolab up`` starts a small daemon (``python -m harness _daemon``) in its own session. The
daemon owns QEMU and the model exactly as any ``with Lab(...)`` does (so they die with it),
boots the lab, writes ``state.json`` in the lab directory, lets go of QEMU's QMP socket and the
guest agent's socket (each takes one client at a time), and then only watches: if QEMU or the
model dies it records why.  Every other command (exec, shell, check, reload, dmesg, log)
attaches to the lab described by ``state.json``; ``fifolab down`` sends the daemon SIGTERM,
which unwinds through ``Lab.close()`` -- and kills what is left if the daemon is gone.

The lab directory is ``$FIFOLAB_LAB_DIR``, else ``$XDG_RUNTIME_DIR/fifolab-lab``, else
``/tmp/fifolab-lab-<uid>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TypeGuard

from .lab import Lab, LabConfig, LabError
from .machine import PidProcess


def lab_dir() -> Path:
    d = os.environ.get("FIFOLAB_LAB_DIR")
    if d:
        return Path(d)
    run = os.environ.get("XDG_RUNTIME_DIR")
    return Path(run) / "fifolab-lab" if run else Path(f"/tmp/fifolab-lab-{os.getuid()}")


def _alive(pid: int | None) -> TypeGuard[int]:
    if not pid:
        return False
    return PidProcess(pid).poll() is None


def read_state() -> dict | None:
    try:
        return json.loads((lab_dir() / "state.json").read_text())
    except (OSError, ValueError):
        return None


def health(state: dict) -> str | None:
    """None if the lab is usable, else what is wrong with it."""
    if not _alive(state.get("daemon_pid")):
        return "its daemon is gone"
    if state.get("dead"):
        return state["dead"]
    if not _alive(state.get("qemu_pid")):
        return "QEMU is not running"
    if not _alive(state.get("model_pid")):
        return "the device model is not running"
    return None


def running() -> dict | None:
    """The state of a usable lab that is up, or None."""
    state = read_state()
    return state if state and health(state) is None else None


def up(cfg: LabConfig, timeout: float = 600) -> dict:
    d = lab_dir()
    state = read_state()
    if state is not None:
        problem = health(state)
        if problem is None:
            raise LabError(f"a lab is already up (since {time.ctime(state['started'])}, "
                           f"QEMU pid {state['qemu_pid']}); `fifolab down` stops it")
        raise LabError(f"a lab was started but {problem}; `fifolab down` cleans it up")
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    with open(d / "daemon.log", "wb") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "harness", "_daemon", str(d)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state()
        if state is not None:
            return state
        if proc.poll() is not None:
            text = (d / "daemon.log").read_text(errors="replace")
            shutil.rmtree(d, ignore_errors=True)
            raise LabError(f"the lab did not come up:\n{text}")
        time.sleep(0.1)
    proc.kill()
    raise LabError(f"the lab did not come up within {timeout:.0f} s; see {d}/daemon.log")


def down() -> str:
    d = lab_dir()
    state = read_state()
    if state is None and not d.exists():
        return "no lab is up"
    state = state or {}
    daemon = state.get("daemon_pid")
    if _alive(daemon):
        os.kill(daemon, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _alive(daemon) and time.monotonic() < deadline:
            time.sleep(0.1)
    # Whatever is still there (a daemon that was SIGKILLed takes its children with it, but be
    # thorough): end it, and remove the files it made.
    for key in ("daemon_pid", "qemu_pid", "model_pid"):
        pid = state.get(key)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    run_dir = state.get("run_dir")
    if run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    for ram in Path("/dev/shm").glob(f"fifolab-{state.get('daemon_pid')}-*"):
        ram.unlink(missing_ok=True)
    shutil.rmtree(d, ignore_errors=True)
    return "lab stopped" + (f" ({state['dead']})" if state.get("dead") else "")


def daemon_main(d: Path) -> int:
    """The body of `python -m harness _daemon DIR`."""
    cfg = LabConfig(**json.loads((d / "config.json").read_text()))
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    with Lab(cfg) as lab:
        lab.release()
        assert lab.qemu is not None and lab.model is not None and lab.image is not None
        state = {"daemon_pid": os.getpid(), "qemu_pid": lab.qemu.pid,
                 "model_pid": lab.model.pid, "run_dir": str(lab.run_dir),
                 "config": dataclasses.asdict(cfg), "started": time.time(),
                 "boot_seconds": lab.boot_seconds, "driver": str(lab.image.driver),
                 "kernel": lab.image.kernel.abi}
        tmp = d / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        os.rename(tmp, d / "state.json")
        print(f"lab up: boot-to-ready {lab.boot_seconds:.2f} s", flush=True)
        while not stop:
            if not state.get("dead"):
                try:
                    lab.check_alive()
                except LabError as err:
                    state["dead"] = str(err).splitlines()[0]
                    print(f"lab died: {err}", flush=True)
                    tmp.write_text(json.dumps(state, indent=1))
                    os.rename(tmp, d / "state.json")
            time.sleep(0.5)
    return 0


def update_state(**fields) -> None:
    state = read_state() or {}
    state.update(fields)
    tmp = lab_dir() / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    os.rename(tmp, lab_dir() / "state.json")
