"""``fifolab soak --minutes N [--seed S]``: stream checksummed, sequence-numbered records
through every I/O path of /dev/fifolab0 for N minutes while random faults are armed, and
account for every byte.

The guest half is ``soaker`` (guest_driver/programs/soaker.c): a writer and a reader thread
pick a random path and length for every op; the reader checks each record's sequence number
and checksum.  The host half (``soak``) arms faults from ``MENU`` at random moments, with
random counts, probabilities and seeds (all drawn from ``--seed``, so a run can be replayed),
and counts what fired from the model's FAULT_FIRED events.

The verdict, record by record: a duplicated record is never acceptable; a lost or damaged one
only if an op reported an error whose stream span (the reader's position to the end of the
write in progress) covers it (the guest judges that: ``unexplained`` must be 0), or, for
damaged records with no error, if each is the record due there with one bit flipped (a
corruption the reader detected: the stream kept its length, the record failed its checksum)
-- and the guest may not have detected more corruptions than corrupt faults fired (one bit
each), and a soak in which no fault fired may show no gap at all.  Then the kernel log
must be clean and the device must work (``fifotest loop``) once the faults are cleared.

Last, the pipe oracle (``pipediff``, guest_driver/programs/pipediff.c) on the device the faults
just left: batches of random operation sequences drawn from ``--seed``, each run on
/dev/fifolab0 and on a pipe, for a quarter of the soak's time (at least one batch) -- more
sequences than the check table's, and after recoveries.  Any difference fails the soak with
the command that replays it.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import time
from collections.abc import Callable
from typing import Any

from .driver import loop_when_running_sh, node
from .kmsg import KernelLogError
from .lab import Lab, LabConfig, LabError

DEV = node(0)
MODPARAMS = "stall_timeout_ms=1500 completion_timeout_ms=250"
PIPEDIFF_BATCH = 20             # sequences per pipediff run

# (weight, fault command, argument maker); "stall" is armed and resumed by the soak itself.
MENU: list[tuple[int, str, Callable[[random.Random], dict[str, Any]] | None]] = [
    (4, "dma-error", lambda r: {"queue": r.choice(["tx", "rx", "any"])}),
    (4, "lost-irq", lambda r: {"vector": r.choice([0, 1])}),
    (2, "spurious-irq", lambda r: {"when": r.choice(["now", "doorbell"])}),
    (3, "slow", lambda r: {"queue": r.choice(["tx", "rx"]),
                           "latency_us": r.randrange(1000, 200000)}),
    (3, "corrupt", lambda r: {"queue": r.choice(["tx", "rx"]), "bits": 1}),
    (1, "reset", lambda r: {"when": "doorbell"}),
    (2, "hostile", lambda r: {"kind": r.choice(["long", "unknown-id", "duplicate", "index"]),
                              "queue": r.choice(["tx", "rx"])}),
    (2, "stall", None),
]


@dataclasses.dataclass
class SoakReport:
    ok: bool
    seconds: float
    guest: dict[str, str]
    armed: collections.Counter
    fired: collections.Counter
    problems: list[str]
    pipediff: int = 0           # sequences compared with a pipe after the faults

    def __str__(self) -> str:
        g = self.guest
        lines = [
            f"soak {'PASSED' if self.ok else 'FAILED'} after {self.seconds:.0f} s",
            f"  bytes     written {g.get('written', '?')}, read {g.get('read', '?')}, "
            f"records {g.get('records', '?')}",
            f"  faults    armed {sum(self.armed.values())}: {_fmt(self.armed)}",
            f"            fired {sum(self.fired.values())}: {_fmt(self.fired)}",
            f"  errors    reported to the writer {g.get('w_errors', '?')}, reader "
            f"{g.get('r_errors', '?')}: {g.get('errors', '?')}",
            f"  records   gaps {g.get('gaps', '?')} (explained by an error "
            f"{g.get('explained', '?')}, detected corruption {g.get('corrupt_detected', '?')}, "
            f"unexplained {g.get('unexplained', '?')})",
            f"  paths     writer {g.get('ops_w', '?')}",
            f"            reader {g.get('ops_r', '?')}",
            f"  pipediff  {self.pipediff} sequences compared with a pipe after the faults",
        ]
        lines += [f"  PROBLEM   {p}" for p in self.problems]
        return "\n".join(lines)


def _fmt(c: collections.Counter) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"


def soak(lab: Lab, seconds: float, seed: int, out=print) -> SoakReport:
    """Run one soak in `lab` (a loopback /dev/fifolab0); see the module docstring."""
    rng = random.Random(seed)
    t0 = time.monotonic()
    lab.driver.reload(MODPARAMS, devices=(0,))
    lab.model_events()
    armed: collections.Counter = collections.Counter()
    fired: collections.Counter = collections.Counter()
    problems: list[str] = []

    def collect(wait: float = 0.0) -> None:
        for ev in lab.model_events(wait):
            if ev["event"] == "FAULT_FIRED":
                fired[ev["data"]["kind"]] += 1

    job = lab.spawn(f"soaker {DEV} {seconds:.1f} {seed}")
    end = time.monotonic() + seconds
    weights = [w for w, _, _ in MENU]
    while time.monotonic() < end - 0.5:
        collect(rng.uniform(0.1, 0.6))
        _, kind, make = rng.choices(MENU, weights)[0]
        armed[kind] += 1
        if kind == "stall":
            lab.model_qmp("fault-stall", {"device": 0})
            fired["stall"] += 1
            # sometimes past the driver's stall timeout (1.5 s): -ETIMEDOUT, recovery
            time.sleep(rng.choice([0.2, 0.5, 2.0]))
            lab.model_qmp("fault-resume", {"device": 0})
            continue
        assert make is not None         # only "stall" has none
        args = {"device": 0, "count": rng.choice([1, 1, 2, 3]),
                "probability": rng.choice([1.0, 0.5]), "seed": rng.randrange(1 << 30),
                **make(rng)}
        lab.model_qmp(f"fault-{kind}", args)
    collect(0.1)
    lab.model_qmp("fault-clear", {"device": 0})
    if lab.model_qmp("query-fifolab", {"device": 0})["stalled"]:
        lab.model_qmp("fault-resume", {"device": 0})
    res = lab.wait(job, timeout=180)
    collect(0.1)
    guest = _parse(res.stdout)
    if not guest:
        problems.append(f"soaker gave no report (exit {res.returncode}): "
                        f"{(res.stdout + res.stderr).strip()[-500:]}")
    else:
        if int(guest["unexplained"]):
            problems.append(f"{guest['unexplained']} record gap(s) with no error reported: "
                            f"bytes lost, duplicated or corrupted silently\n{res.stderr.strip()}")
        if int(guest["corrupt_detected"]) > fired["corrupt"]:
            problems.append(f"{guest['corrupt_detected']} damaged records without an error, "
                            f"but only {fired['corrupt']} corrupt faults fired")
        if int(guest["records"]) == 0:
            problems.append("no record went through")
        if not sum(fired.values()) and int(guest["gaps"]):
            problems.append(f"{guest['gaps']} record gap(s) although no fault fired: "
                            "a healthy device loses nothing, errors or not")
        if res.returncode not in (0, 1):
            problems.append(f"soaker exited {res.returncode}: {res.stderr.strip()[-300:]}")
    try:
        chk = lab.exec(loop_when_running_sh(), timeout=120)
        if chk.returncode or "ok 100000" not in chk.stdout:
            problems.append(f"the device does not work after the soak: "
                            f"{(chk.stdout + chk.stderr).strip()[-300:]}")
    except (LabError, KernelLogError) as err:
        problems.append(f"after the soak: {err}")
    compared = 0 if problems else _pipediff(lab, seed, seconds / 4, problems)
    return SoakReport(not problems, time.monotonic() - t0, guest, armed, fired, problems,
                      compared)


def _pipediff(lab: Lab, seed: int, seconds: float, problems: list[str]) -> int:
    """Batches of pipediff sequences for about ``seconds`` (one at least); how many ran."""
    end = time.monotonic() + seconds
    start = 0
    while True:
        cmd = f"pipediff {DEV} {seed} {PIPEDIFF_BATCH} --start {start} --quiet"
        try:
            res = lab.exec(cmd, timeout=300)
        except (LabError, KernelLogError) as err:
            problems.append(f"pipediff: {err}")
            return start
        if res.returncode or " 0 differences" not in res.stdout:
            problems.append(f"the device and a pipe differ ({cmd}):\n"
                            f"{(res.stdout + res.stderr).strip()[-800:]}")
            return start
        start += PIPEDIFF_BATCH
        if time.monotonic() >= end:
            return start


def _parse(stdout: str) -> dict[str, str]:
    for line in stdout.splitlines():
        if line.startswith("soak "):
            return dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    return {}


def cmd_soak(args) -> int:
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    seconds = max(args.minutes * 60, 5.0)
    print(f"soak: {seconds:.0f} s, seed {seed} (replay with --seed {seed})", flush=True)
    with Lab(LabConfig(devices=1, kernel=args.kernel)) as lab:
        print(f"booted in {lab.boot_seconds:.1f} s", flush=True)
        try:
            report = soak(lab, seconds, seed)
        except (LabError, KernelLogError) as err:
            print(f"soak FAILED: {err}")
            return 1
    print(report)
    return 0 if report.ok else 1


def add_command(sub, kernel_opt) -> None:
    """Register ``soak`` on fifolab's subcommand parser."""
    sp = sub.add_parser("soak", help="stream checksummed records through every path under "
                                     "random faults; account for every byte")
    kernel_opt(sp)
    sp.add_argument("--minutes", type=float, default=1.0, help="how long (default 1)")
    sp.add_argument("--seed", type=int, help="seed of every random choice (default: random, "
                                             "printed)")
    sp.set_defaults(func=cmd_soak)
