"""``fifolab fuzz --device [--seconds N] [--seed S]``: a hostile guest against the device model
(GitHub issue 13, item 4b).

The guest half is ``hostile`` (guest_driver/programs/hostile.c): it unbinds the driver, maps
the device's BAR2 and doorbell from user space and, for N seconds from a seed, writes random
and adversarial descriptors, chains, indices and registers (with valid loopback traffic in
between), then resets the device, binds the driver again and prints one line of JSON.

The host half watches the model meanwhile, from a thread of its own (:class:`ModelWatch`):

- **monitor latency**: a ``query-status`` on the model's own QMP monitor every
  ``PROBE_INTERVAL_S``, on a connection of its own, timed from the request to its answer --
  the model serves its monitor on the same event loop as the doorbells, so this is how long a
  hostile guest can keep everyone else waiting;
- **memory**: the model's VmRSS and RssAnon (/proc/PID/status) at every probe.  VmRSS counts
  the guest RAM the model has touched (shared with QEMU, not the model's own); RssAnon is the
  model's own heap, which a queue without a cap would grow;
- **busy or starved**: the model's time on a CPU and waiting for one (/proc/PID/schedstat)
  during each probe, so that a slow answer shows whether the model was working (a step too
  long) or only not scheduled (a busy host: TCG and two shared cores);
- **alive**: the lab checks the model process between the guest agent's answers.

Verdict (:func:`fuzz_device`): the model lived and logged no traceback or ERROR line, no probe
waited while the model worked more than ``MAX_MONITOR_LATENCY_S`` (on a CPU: what the model
controls) and none took longer than ``MAX_MONITOR_WALL_S`` in all, the model log grew by at most
``MAX_LOG_BYTES_PER_MINUTE``, its own memory by at most ``MAX_RSS_ANON_GROWTH``, the guest
kernel log has no BUG/WARNING/Oops (harness.kmsg), the program finished with the device reset
and the driver bound again, and a checksummed loopback through /dev/fifolab0 works afterwards
(``fifotest loop``: the device recovers once the driver has reset it).
"""

from __future__ import annotations

import dataclasses
import json
import random
import socket
import statistics
import threading
import time
from pathlib import Path

from .driver import loop_when_running_sh, node, reload_sh, sysfs, wait_nodes_sh
from .kmsg import KernelLogError
from .lab import Lab, LabConfig, LabError
from .modellog import TROUBLE

DEV = node(0)

# Issue 13: "the monitor answering within 100 ms".  What the model controls is how long it works
# while an answer waits, so that is judged: its time on a CPU during any one probe.  On TCG with
# two shared cores the wall-clock answer also waits for a CPU (up to 93 ms seen, 65 of it
# waiting), so the wall clock gets a looser bound that still catches a model that sleeps.
MAX_MONITOR_LATENCY_S = 0.100           # the model on a CPU while one probe waited
MAX_MONITOR_WALL_S = 1.0                # one probe, request to answer
MAX_LOG_BYTES_PER_MINUTE = 1 << 20      # 1 MiB/min = 1.4 GiB a day: anything more is a flood
MAX_RSS_ANON_GROWTH = 64 << 20          # the model's own memory (not guest RAM it maps)
PROBE_INTERVAL_S = 0.05
PROBE_TIMEOUT_S = 10.0                  # a probe unanswered this long counts as this long
GUEST_GRACE_S = 120.0                   # the program's own watchdog ends it at N + 60 s


LOOP_CHECK = (
    # the program binds the driver again; if it could not, load it afresh and say so
    f"if ! ({wait_nodes_sh()}); then echo 'driver: not bound after the run; reloading'; "
    f"({reload_sh()}); fi; "
    f"{loop_when_running_sh()} || {{ echo '--- driver counters'; "
    f"cd {sysfs(0)} && grep -s . errors device_resets bad_completions "
    f"recoveries stalls; echo '--- kernel log'; dmesg | tail -8; exit 1; }}")


def _schedstat(pid: int) -> tuple[float, float]:
    """Seconds ``pid`` has run on a CPU and waited for one (/proc/PID/schedstat)."""
    try:
        run, wait, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
        return int(run) / 1e9, int(wait) / 1e9
    except (OSError, ValueError):
        return 0.0, 0.0


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssShmem of ``pid`` in bytes; {} if it is gone."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssShmem", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


class ModelWatch(threading.Thread):
    """Times a ``query-status`` on the model's QMP monitor every ``interval`` seconds and
    samples the model's memory, until :meth:`stop`.  A connection of its own (a plain socket,
    line-delimited JSON), so that nothing the lab does in between delays a probe."""

    def __init__(self, qmp_path: Path, pid: int, interval: float = PROBE_INTERVAL_S,
                 timeout: float = PROBE_TIMEOUT_S):
        super().__init__(name="fifolab-model-watch", daemon=True)
        self.path = qmp_path
        self.pid = pid
        self.interval = interval
        self.timeout = timeout
        # (seconds since start, latency, the model's seconds on a CPU meanwhile, waiting for
        # one meanwhile): a slow answer from a busy model or from a starved one
        self.latencies: list[tuple[float, float, float, float]] = []
        self.mem_peak: dict[str, int] = {}
        self.errors: list[str] = []
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def stop(self) -> None:
        self._halt.set()
        self.join(self.timeout + 5)

    def run(self) -> None:
        n = 0
        while not self._halt.is_set():
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(str(self.path))
            except OSError as err:
                self.errors.append(f"cannot connect to the model's monitor: {err}")
                return
            reader = sock.makefile("rb")
            try:
                self._reply(reader, None)                   # the greeting
                self._call(sock, reader, "qmp_capabilities", 0)
                while not self._halt.is_set():
                    n += 1
                    t = time.monotonic()
                    run0, wait0 = _schedstat(self.pid)
                    try:
                        self._call(sock, reader, "query-status", n)
                        took = time.monotonic() - t
                    except TimeoutError:
                        # counted as the timeout; the connection is spent: a new one
                        self.latencies.append((t - self._t0, self.timeout, 0.0, 0.0))
                        self.errors.append(f"query-status #{n} got no answer in "
                                           f"{self.timeout:.0f} s")
                        break
                    run1, wait1 = _schedstat(self.pid)
                    self.latencies.append((t - self._t0, took, run1 - run0, wait1 - wait0))
                    for key, value in _proc_status(self.pid).items():
                        self.mem_peak[key] = max(value, self.mem_peak.get(key, 0))
                    self._halt.wait(max(0.0, self.interval - took))
            except (OSError, ValueError, EOFError) as err:
                if not self._halt.is_set():
                    self.errors.append(f"the model's monitor connection failed: {err!r}")
                    self._halt.wait(0.5)
            finally:
                reader.close()
                sock.close()

    def _call(self, sock: socket.socket, reader, cmd: str, ident: int) -> dict:
        sock.sendall(json.dumps({"execute": cmd, "id": ident}).encode() + b"\n")
        return self._reply(reader, ident)

    def _reply(self, reader, ident: int | None) -> dict:
        """The next message answering ``ident`` (None: the greeting); events are skipped."""
        while True:
            line = reader.readline()
            if not line:
                raise EOFError("the model closed its monitor")
            msg = json.loads(line)
            if ident is None and "QMP" in msg:
                return msg
            if ident is not None and msg.get("id") == ident:
                if "error" in msg:
                    raise ValueError(f"the model answered an error: {msg['error']}")
                return msg


@dataclasses.dataclass
class FuzzReport:
    ok: bool
    seconds: float
    seed: int
    guest: dict
    latencies: list[float]
    busy: list[float]           # the model's seconds on a CPU during each probe
    worst_at: float
    worst_cpu: tuple[float, float]  # the model's seconds on a CPU / waiting for one then
    log_bytes: int
    mem_before: dict[str, int]
    mem_after: dict[str, int]
    mem_peak: dict[str, int]
    after: str                  # the check after the run, one line
    after_ok: bool              # fifotest loop passed through the rebound driver
    model_alive: bool
    model_trouble: list[str]    # traceback / ERROR lines of the model log
    kernel_reports: list[str]   # BUG/WARNING/Oops... of the guest kernel log
    problems: list[str]

    @property
    def worst_latency(self) -> float:
        return max(self.latencies, default=float("nan"))

    @property
    def worst_busy(self) -> float:
        return max(self.busy, default=float("nan"))

    @property
    def log_bytes_per_minute(self) -> float:
        return self.log_bytes * 60 / max(self.seconds, 1e-9)

    @property
    def anon_growth(self) -> int:
        return self.mem_peak.get("RssAnon", 0) - self.mem_before.get("RssAnon", 0)

    def __str__(self) -> str:
        g = self.guest
        lat = sorted(self.latencies)
        ms = lambda x: f"{x * 1000:.1f} ms"        # noqa: E731
        mib = lambda b: f"{b / (1 << 20):.1f} MiB"  # noqa: E731
        lines = [f"fuzz --device {'PASSED' if self.ok else 'FAILED'} after {self.seconds:.0f} s "
                 f"(seed {self.seed}; replay with --seed {self.seed})"]
        if g:
            loop = g.get("loop", {})
            lines += [
                f"  guest      {g.get('ops')} ops, {g.get('doorbells')} doorbells "
                f"(the device counted {g.get('stat_doorbells')}); device errors "
                f"{g.get('err_count')}, resets {g.get('reset_count')}",
                "  ops        " + ", ".join(f"{k} {v}" for k, v in g.get("kinds", {}).items()),
                "  err codes  " + (", ".join(f"{k}: {v}" for k, v in g.get("err_codes", {})
                                            .items()) or "none seen")
                + "   READY lost after: " + (", ".join(
                    f"{k} {v}" for k, v in g.get("ready_lost", {}).items()) or "none"),
                f"  loopback   {loop.get('runs')} runs: {loop.get('matched')} of "
                f"{loop.get('got')} bytes read back matched ({loop.get('bytes')} written, "
                f"{loop.get('timeouts')} runs timed out)",
                f"             right after a reset: {loop.get('clean_runs')} runs, "
                f"{loop.get('clean_matched')} of {loop.get('clean_got')} bytes read back "
                f"matched ({loop.get('clean_bytes')} written, {loop.get('clean_timeouts')} "
                f"runs timed out)",
            ]
        if lat:
            lines.append(
                f"  monitor    {len(lat)} query-status probes: worst {ms(lat[-1])} (at "
                f"{self.worst_at:.1f} s; the model meanwhile on a CPU {ms(self.worst_cpu[0])}, "
                f"waiting for one {ms(self.worst_cpu[1])}), median "
                f"{ms(statistics.median(lat))}, 99th {ms(lat[int(len(lat) * 0.99)])}, over "
                f"{ms(MAX_MONITOR_LATENCY_S)}: {sum(x > MAX_MONITOR_LATENCY_S for x in lat)}")
            lines.append(
                f"             the model on a CPU during a probe: worst {ms(self.worst_busy)} "
                f"(limit {ms(MAX_MONITOR_LATENCY_S)}; the wall clock's {ms(MAX_MONITOR_WALL_S)})")
        lines += [
            f"  model log  +{self.log_bytes} bytes ({self.log_bytes_per_minute / 1024:.1f} "
            f"KiB/min; limit {MAX_LOG_BYTES_PER_MINUTE >> 10} KiB/min)",
            f"  model RSS  VmRSS {mib(self.mem_before.get('VmRSS', 0))} -> "
            f"{mib(self.mem_after.get('VmRSS', 0))} (peak {mib(self.mem_peak.get('VmRSS', 0))}; "
            f"guest RAM it touched included); own (RssAnon) "
            f"{mib(self.mem_before.get('RssAnon', 0))} -> "
            f"{mib(self.mem_after.get('RssAnon', 0))} (peak "
            f"{mib(self.mem_peak.get('RssAnon', 0))}; limit +{mib(MAX_RSS_ANON_GROWTH)})",
            f"  after      {self.after}",
        ]
        lines += [f"  PROBLEM    {p}" for p in self.problems]
        return "\n".join(lines)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _guest_summary(stdout: str) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return {}
    return {}


def fuzz_device(lab: Lab, seconds: float, seed: int) -> FuzzReport:
    """Run ``hostile`` in ``lab`` (device 0, loopback, driver loaded) for ``seconds`` while
    watching the model; see the module docstring for the verdict."""
    assert lab.run_dir is not None and lab.model is not None
    problems: list[str] = []
    log_path = lab.run_dir / "model.log"
    log_start = _size(log_path)
    pid = lab.model.pid
    mem_before = _proc_status(pid)
    watch = ModelWatch(lab.run_dir / "model-qmp.sock", pid)
    res = None
    t0 = time.monotonic()
    watch.start()
    kernel_reports: list[str] = []
    try:
        job = lab.spawn(f"hostile {seconds:g} {seed} --ram {lab.cfg.memory_mb}")
        res = lab.wait(job, timeout=seconds + GUEST_GRACE_S)
    except KernelLogError as err:
        kernel_reports += [str(r) for r in err.reports]
        problems.append(f"the guest kernel reported a bug during the run:\n{err}")
    except LabError as err:
        problems.append(f"during the run: {err}")
    finally:
        watch.stop()
    elapsed = time.monotonic() - t0
    mem_after = _proc_status(pid)
    log_bytes = _size(log_path) - log_start

    guest = _guest_summary(res.stdout) if res else {}
    if res is not None:
        if not guest:
            problems.append(f"hostile gave no summary (exit {res.returncode}): "
                            f"{(res.stdout + res.stderr).strip()[-600:]}")
        elif res.returncode != 0 or not guest.get("left_reset") or not guest.get("rebound"):
            problems.append(f"hostile exited {res.returncode} (device left reset: "
                            f"{guest.get('left_reset')}, driver bound again: "
                            f"{guest.get('rebound')}): {res.stderr.strip()[-400:]}")
        elif not guest.get("ops"):
            problems.append("hostile did no op at all")

    model_alive = lab.model.poll() is None
    if not model_alive:
        problems.append(f"the device model died (status {lab.model.returncode})")
    problems += [f"monitor: {e}" for e in watch.errors]
    trouble = _model_trouble(log_path, log_start)
    if trouble:
        problems.append("the model logged an error or a traceback:\n    " +
                        "\n    ".join(trouble))
    lat = [p[1] for p in watch.latencies]
    busy = [p[2] for p in watch.latencies]
    worst = max(watch.latencies, key=lambda p: p[1]) if lat else (0.0, 0.0, 0.0, 0.0)
    worst_at = worst[0]
    if not lat:
        problems.append("no monitor probe was answered")
    elif max(busy) > MAX_MONITOR_LATENCY_S or max(lat) > MAX_MONITOR_WALL_S:
        b = max(watch.latencies, key=lambda p: p[2])
        problems.append(f"the model's monitor waited while the model worked {b[2] * 1000:.0f} ms "
                        f"(limit {MAX_MONITOR_LATENCY_S * 1000:.0f} ms) at {b[0]:.1f} s; the "
                        f"slowest answer took {max(lat) * 1000:.0f} ms (limit "
                        f"{MAX_MONITOR_WALL_S * 1000:.0f} ms) at {worst_at:.1f} s (the model "
                        f"meanwhile on a CPU {worst[2] * 1000:.0f} ms, waiting for one "
                        f"{worst[3] * 1000:.0f} ms)")
    per_min = log_bytes * 60 / max(elapsed, 1e-9)
    if per_min > MAX_LOG_BYTES_PER_MINUTE:
        problems.append(f"the model log grew by {log_bytes} bytes in {elapsed:.0f} s: "
                        f"{per_min / 1024:.0f} KiB/min (limit "
                        f"{MAX_LOG_BYTES_PER_MINUTE >> 10} KiB/min)")
    mem_peak = {k: max(v, mem_before.get(k, 0), mem_after.get(k, 0))
                for k, v in watch.mem_peak.items()}
    growth = mem_peak.get("RssAnon", 0) - mem_before.get("RssAnon", 0)
    if growth > MAX_RSS_ANON_GROWTH:
        problems.append(f"the model's own memory (RssAnon) grew by {growth >> 20} MiB (limit "
                        f"{MAX_RSS_ANON_GROWTH >> 20} MiB)")

    after, after_ok = _after_check(lab, problems, kernel_reports)
    return FuzzReport(not problems, elapsed, seed, guest, lat, busy, worst_at, worst[2:],
                      log_bytes,
                      mem_before, mem_after, mem_peak, after, after_ok, model_alive, trouble,
                      kernel_reports, problems)


def _model_trouble(log_path: Path, start: int, most: int = 12) -> list[str]:
    try:
        with open(log_path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if TROUBLE.search(ln)][:most]


def _after_check(lab: Lab, problems: list[str], kernel_reports: list[str]) -> tuple[str, bool]:
    """The driver bound (again) and a checksummed loopback through it: a line for the report
    and whether it passed."""
    try:
        chk = lab.exec(LOOP_CHECK, timeout=120, check_log=False)
    except LabError as err:
        problems.append(f"after the run: {err}")
        return "no check: the lab is gone", False
    ok = True
    out = (chk.stdout + chk.stderr).strip()
    if "not bound after the run" in chk.stdout:
        problems.append("the driver was not bound again after the run (the harness reloaded it)")
        ok = False
    assert lab.kmsg is not None
    found = lab.kmsg.poll()
    if found:
        kernel_reports += [str(r) for r in found]
        problems.append("the guest kernel reported a bug:\n" + "\n".join(map(str, found)))
    if chk.returncode or "ok 100000" not in chk.stdout:
        problems.append(f"the device does not work after the run: {out[-1500:]}")
        return "fifotest loop FAILED", False
    return "driver bound; " + next((ln for ln in chk.stdout.splitlines()
                                    if ln.startswith("ok ")), ""), ok


def cmd_fuzz(args) -> int:
    if not args.device:
        print("fifolab fuzz: say what to fuzz: --device (a hostile guest against the device "
              "model). The driver's system calls: fifolab exec -- fuzzfifo /dev/fifolab0 N")
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    print(f"fuzz --device: {args.seconds:g} s, seed {seed} (replay with --seed {seed})",
          flush=True)
    with Lab(LabConfig(devices=1, kernel=args.kernel)) as lab:
        print(f"booted in {lab.boot_seconds:.1f} s", flush=True)
        report = fuzz_device(lab, args.seconds, seed)
    print(report)
    return 0 if report.ok else 1


def add_command(sub, kernel_opt) -> None:
    """Register ``fuzz`` on fifolab's subcommand parser."""
    sp = sub.add_parser("fuzz", help="a hostile guest against the device model (--device): "
                                     "random and adversarial descriptors, indices and "
                                     "registers while the model's latency, log and memory "
                                     "are watched")
    kernel_opt(sp)
    sp.add_argument("--device", action="store_true",
                    help="drive the device's registers and queues from a hostile guest "
                         "program (the driver is unbound meanwhile)")
    sp.add_argument("--seconds", type=float, default=60.0, help="how long (default 60)")
    sp.add_argument("--seed", type=int, help="seed of every random choice (default: random, "
                                             "printed)")
    sp.set_defaults(func=cmd_fuzz)
