"""A scenario's steps, run in a booted lab: one handler per action (``STEPS``, keyed by
``spec.STEP_ACTIONS``), the machine actions they use (hot-unplug and replug on QEMU's monitor,
the host side of a wired device), and :class:`Run`, what one scenario's steps share.

Every handler is ``handler(run, step, where, timeout)``: `where` prefixes what it records
(``"step 3 "``), `timeout` is the step's or the scenario's.  After each step the model's
events so far are collected into ``run.events``.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable

from ..agent import GuestJob
from ..checks import pattern
from ..hostwire import HostWire
from ..lab import Lab, LabError
from ..machine import device_ids, ivshmem_chardev, ivshmem_device
from .judge import Verdict, event_matches, implied_expect, judge_step
from .spec import Scenario, action

_ids = itertools.count()        # unique names of the {ready} and {go} files


@dataclasses.dataclass
class Run:
    """One scenario being run: its lab, and what its steps start and gather."""
    lab: Lab
    sc: Scenario
    unplugged: set[int]             # devices unplugged and not back yet (the runner's, per lab)
    stats0: dict[int, dict] = dataclasses.field(default_factory=dict)   # model statistics
    jobs: dict[str, GuestJob] = dataclasses.field(default_factory=dict)
    events: list[dict] = dataclasses.field(default_factory=list)
    verdicts: list[Verdict] = dataclasses.field(default_factory=list)
    detail: list[str] = dataclasses.field(default_factory=list)
    wires: dict[int | None, HostWire] = dataclasses.field(default_factory=dict)
    go: str = dataclasses.field(default_factory=lambda: f"/tmp/fl-go.{next(_ids)}")   # {go}

    def wire(self, dev: int | None) -> HostWire:
        """One host-wire connection per device for the whole scenario: bytes the model has
        pushed into a connection are gone with it."""
        if dev is None:
            dev = self.sc.lab.wired[0]      # spec.py: a wire step's lab has a wired device
        if dev not in self.wires:
            self.wires[dev] = self.lab.wire(dev)
        return self.wires[dev]

    def record(self, st: dict, res, where: str) -> None:
        """A guest command's outcome: its verdicts (the first expectation's are the table's)
        and its output for the details."""
        self.detail.append(f"{where}$ {res.cmd}\n  exit {res.returncode}: "
                           f"{res.stdout.strip()} {res.stderr.strip()}".rstrip())
        expect = st.get("expect")
        if expect is None:
            self.verdicts += judge_step(implied_expect(res.cmd), res, where)
            return
        new = judge_step(expect, res, "")
        if not any(v.show for v in self.verdicts):
            for v in new:
                v.show = True
        else:
            for v in new:
                v.field = where + v.field
        self.verdicts += new


def model_stats(lab: Lab, device: int) -> dict[str, int]:
    """The model's statistics of a device (bytes moved per queue, ...)."""
    return lab.model_qmp("query-fifolab", {"device": device})["statistics"]


def run_steps(run: Run) -> None:
    for i, st in enumerate(run.sc.steps):
        STEPS[action(st)](run, st, f"step {i + 1} ", st.get("timeout", run.sc.timeout))
        run.events += run.lab.model_events()


# ---------------------------------------------------------------- the actions

def _guest(run: Run, st: dict, where: str, timeout: float) -> None:
    ready = f"/tmp/fl-ready.{next(_ids)}"
    cmd = st["guest"].format(ready=ready, go=run.go)
    if "background" in st:
        job = run.jobs[st["background"]] = run.lab.spawn(cmd)
        if st.get("ready"):
            run.lab.wait_for_guest_file(ready, timeout=timeout, job=job)
        return
    run.record(st, run.lab.exec(cmd, timeout=timeout), where)


def _wait(run: Run, st: dict, where: str, timeout: float) -> None:
    run.record(st, run.lab.wait(run.jobs.pop(st["wait"]), timeout=timeout), where)


def _fault(run: Run, st: dict, where: str, timeout: float) -> None:
    dev = st.get("device", run.sc.device)
    if "after_bytes" in st:
        _wait_bytes(run, dev, st.get("queue", "rx"), st["after_bytes"], timeout)
    reply = run.lab.model_qmp(f"fault-{st['fault']}", {"device": dev, **st.get("args", {})})
    run.detail.append(f"{where}fault-{st['fault']} {st.get('args', {})} -> {reply}")


def _wait_bytes(run: Run, dev: int, queue: str, n: int, timeout: float) -> None:
    key = "tx_bytes" if queue == "tx" else "rx_bytes"
    base = run.stats0[dev][key]
    deadline = time.monotonic() + timeout
    while model_stats(run.lab, dev)[key] - base < n:
        if time.monotonic() > deadline:
            raise LabError(f"device {dev} did not move {n} {queue} bytes within "
                           f"{timeout:.0f} s")
        time.sleep(0.02)


def _event(run: Run, st: dict, where: str, timeout: float) -> None:
    spec = {"name": st["event"], "match": st.get("match", {})}
    deadline = time.monotonic() + timeout
    while True:
        run.events += run.lab.model_events(0.02)
        if any(event_matches(e, spec) for e in run.events):
            return
        if time.monotonic() > deadline:
            raise LabError(f"{where}no {st['event']} event within {timeout:.0f} s")


def _sleep(run: Run, st: dict, where: str, timeout: float) -> None:
    time.sleep(st["sleep"])


def _qmp(run: Run, st: dict, where: str, timeout: float) -> None:
    reply = run.lab.qmp(st["qmp"], st.get("args") or None)
    run.detail.append(f"{where}qmp {st['qmp']} -> {reply}")


def _unplug(run: Run, st: dict, where: str, timeout: float) -> None:
    unplug(run.lab, st["unplug"], timeout, run.unplugged)


def _replug(run: Run, st: dict, where: str, timeout: float) -> None:
    replug(run.lab, st["replug"], timeout, run.unplugged)


def _inject(run: Run, st: dict, where: str, timeout: float) -> None:
    run.wire(st.get("device")).send(
        stream(st.get("pattern", "harness"), st.get("seed", 0), st["inject"]))


def _receive(run: Run, st: dict, where: str, timeout: float) -> None:
    w = run.wire(st.get("device"))
    w.sock.settimeout(timeout)
    data = w.recv_exactly(st["receive"])
    want = stream(st.get("pattern", "harness"), st.get("seed", 0), len(data))
    run.verdicts.append(Verdict(f"{where}wire", "pattern", "ok" if data == want else "corrupt",
                                data == want))


STEPS: dict[str, Callable[[Run, dict, str, float], None]] = {
    "guest": _guest, "wait": _wait, "fault": _fault, "event": _event, "sleep": _sleep,
    "qmp": _qmp, "unplug": _unplug, "replug": _replug, "inject": _inject,
    "receive": _receive,
}


def stream(kind: str, seed: int, n: int) -> bytes:
    """The bytes a wired device's host side sends or expects: the harness's pattern from
    offset `seed`, or a byte counter."""
    if kind == "counter":
        return bytes((seed + i) % 256 for i in range(n))
    return pattern(seed + n)[seed:]


# ---------------------------------------------------------------- machine actions

def _peripherals(lab: Lab) -> set[str]:
    return {p["name"] for p in lab.qmp("qom-list", {"path": "/machine/peripheral"})}


def unplug(lab: Lab, n: int, timeout: float, unplugged: set[int]) -> None:
    """Hot-unplug device N: device_del, then wait until the guest let it go."""
    dev = device_ids(n).device
    lab.qmp("device_del", {"id": dev})
    unplugged.add(n)
    deadline = time.monotonic() + timeout
    while dev in _peripherals(lab):
        if time.monotonic() > deadline:
            raise LabError(f"{dev} was not unplugged within {timeout:.0f} s "
                           f"(the guest did not release it)")
        time.sleep(0.05)


def replug(lab: Lab, n: int, timeout: float, unplugged: set[int]) -> None:
    """Plug device N back: a new chardev connection (the model powers the device on
    afresh for a new client; the old connection's setup messages are spent), then
    device_add on its root port, then wait for /dev/fifolabN."""
    deadline = time.monotonic() + timeout
    while True:     # the unplugged device lets its chardev go a little after it is gone
        try:
            lab.qmp("chardev-remove", {"id": device_ids(n).chardev})
            break
        except LabError as err:
            if "busy" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    lab.qmp("chardev-add", ivshmem_chardev(n, lab.model_socket(n)))
    lab.qmp("device_add", ivshmem_device(n))
    unplugged.discard(n)
    lab.driver.wait_nodes((n,), timeout)

