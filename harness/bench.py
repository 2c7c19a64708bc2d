"""``fifolab bench``: every I/O path of the driver measured side by side, in one run.

    fifolab bench [--quick] [--reps N] [--json FILE] [--plot FILE.png] [--kernel K]

What one run does, in order (each part is one function below)::

    ceilings()       host memcpy, the model's memoryview copy and its FIFO path     (host only)
    boot_times()     VM start -> "fifolab-init: driver loaded" on the console, and the same
                     kernel and QEMU options with a trivial initramfs (the floor), alternately
    io_matrix()      in one lab: fifobench io PATH QD BS for every path x queue depth x block
                     size, repetitions interleaved (rep 1 of everything, then rep 2, ...)
    coalescing()     libaio QD 1 and 32 with the device's interrupt coalescing on and off
    notification()   host byte -> guest user space -> echoed back, woken by SIGIO, epoll or a
                     blocking read (round trip timed on the host)
    streaming()      1 MiB blocks through a second lab whose FIFO holds 4 MiB
    goals()          the issue's targets as ratios of figures of this run, met or not

Every figure is a median over repetitions.  The guest side is ``fifobench``
(guest_driver/programs/fifobench.c, which says how each path is driven and what each field
means).  Results: a table on stdout, ``--json`` (one record per measurement), ``--plot``
(a PNG: operations/s and latency by path and queue depth, MB/s by block size).

No figure here is asserted by a test: the machine is shared and noisy; tests run ``--quick``
only to prove the benchmark works end to end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from device import perf
from images import build as images
from .lab import Lab, LabConfig, LabError

PATHS = (("sync", (1,)), ("nonblock", (1,)), ("posix_aio", (1, 8, 32)),
         ("libaio", (1, 8, 32)), ("io_uring", (1, 8, 32)))
BLOCK_SIZES = (512, 4096, 65536, 1 << 20)
NOTIFY_MODES = ("sigio", "epoll", "read")
# Streaming 1 MiB blocks needs a FIFO that holds a block: a read takes at most what the FIFO
# holds, so with the default 64 KiB FIFO every 1 MiB write is read back in 16 pieces.
STREAM_FIFO = 4 << 20
STREAM_PATHS = (("sync", 1), ("libaio", 8), ("libaio", 32), ("io_uring", 8), ("io_uring", 32))
# Debian's kernel leaves transparent huge pages off; fifobench madvises its buffers for them.
# (The debug kernel has no THP at all: then there is nothing to turn on.)
GUEST_SETUP = ("thp=/sys/kernel/mm/transparent_hugepage; if [ -d $thp ]; then "
               "echo madvise > $thp/enabled && echo madvise > $thp/defrag; fi")
IO_DEV, WIRED_DEV = 0, 1
READY_MARK = b"fifolab-init: driver loaded"
FLOOR_MARK = b"fifolab-floor: userspace"


@dataclasses.dataclass
class Plan:
    reps: int = 3
    seconds: float = 1.0          # per I/O measurement
    block_sizes: tuple[int, ...] = BLOCK_SIZES
    qds: tuple[int, ...] = (1, 8, 32)
    notify_count: int = 200
    boot_reps: int = 3
    stream_paths: tuple[tuple[str, int], ...] = STREAM_PATHS

    @classmethod
    def quick(cls) -> Plan:
        return cls(reps=1, seconds=0.2, block_sizes=(4096, 1 << 20), qds=(1, 32),
                   notify_count=20, boot_reps=1,
                   stream_paths=(("libaio", 8), ("io_uring", 32)))


def lab_config(kernel: str = "default") -> LabConfig:
    # device 0: loopback, the I/O paths; device 1: wired to the host, the notification test
    return LabConfig(devices=2, wired=(WIRED_DEV,), kernel=kernel)


def _median_record(recs: list[dict]) -> dict:
    out = dict(recs[0])
    for k, v in recs[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("qd", "bs"):
            out[k] = statistics.median(r[k] for r in recs)
    out["reps"] = len(recs)
    return out


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# ------------------------------------------------------------------------ the parts

def ceilings(reps: int) -> dict:
    return {"kind": "ceiling",
            "host_memcpy_mb_per_s": perf.memcpy_rate(reps=reps + 2),
            "model_copy_mb_per_s": perf.model_copy_rate(reps=reps + 2),
            "model_fifo_mb_per_s": perf.model_fifo_rate(reps=reps + 2)}


def _time_to_mark(lab: Lab, mark: bytes, timeout: float = 120.0) -> float:
    """Start `lab`'s model and QEMU; seconds from QEMU's start until `mark` is on the console."""
    lab._pre_launch()
    lab._launch()
    assert lab.run_dir is not None and lab.kmsg is not None
    console = lab.run_dir / "console.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(console, "rb") as f:
            if mark in f.read():
                return time.monotonic() - lab._t_launch
        lab.check_alive()
        time.sleep(0.002)
    raise LabError(f"boot: {mark.decode()!r} not on the console within {timeout:.0f} s:\n"
                   f"{lab.kmsg.tail()}")


def boot_times(cfg: LabConfig, image: images.Image, reps: int, say) -> dict:
    floor_image = dataclasses.replace(image, initrd=images.build_floor_initramfs())
    ready: list[float] = []
    floor: list[float] = []
    for i in range(reps):
        for times, img, mark in ((floor, floor_image, FLOOR_MARK), (ready, image, READY_MARK)):
            lab = Lab(cfg, img)
            try:
                times.append(_time_to_mark(lab, mark))
            finally:
                lab.close()
        say(f"  boot {i + 1}/{reps}: driver loaded {ready[-1]:.2f} s, floor {floor[-1]:.2f} s")
    return {"kind": "boot", "ready_s": statistics.median(ready),
            "floor_s": statistics.median(floor), "ratio": statistics.median(ready) /
            statistics.median(floor), "ready_all": ready, "floor_all": floor}


def io_matrix(lab: Lab, plan: Plan, say, combos: list[tuple[str, int, int]] | None = None,
              kind: str = "io") -> list[dict]:
    """fifobench io for each (path, qd, bs), plan.reps times, interleaved; median records."""
    if combos is None:
        combos = [(p, qd, bs) for p, qds in PATHS for qd in qds if qd in plan.qds
                  for bs in plan.block_sizes]
    runs: dict[tuple, list[dict]] = {c: [] for c in combos}
    lab.exec(GUEST_SETUP).check()
    for rep in range(plan.reps):
        for path, qd, bs in combos:
            runs[(path, qd, bs)].append(_fifobench(lab, path, qd, bs, plan.seconds,
                                                   f"rep {rep + 1}/{plan.reps}", say))
    return [dict(_median_record(recs), kind=kind, fifo_depth=lab.cfg.fifo_depth)
            for recs in runs.values()]


def _fifobench(lab: Lab, path: str, qd: int, bs: int, seconds: float, tag: str, say) -> dict:
    res = lab.exec(f"fifobench io {path} {qd} {bs} /dev/fifolab{IO_DEV} --seconds {seconds}",
                   timeout=60 + 30 * seconds).check()
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    say(f"  {tag}  {path:9} qd {qd:2} bs {_size(bs):>5}: {rec['ops_per_s']:9.0f} ops/s "
        f"{rec['mb_per_s']:8.1f} MB/s p50 {rec['p50_us']:8.1f} us  "
        f"irq/req {rec['irqs_per_req']:.2f}")
    return rec


COALESCE_CASES = (("libaio", 1, 4096), ("libaio", 32, 4096))


def coalescing(lab: Lab, plan: Plan, say) -> list[dict]:
    """The same requests with the device's interrupt coalescing on and off (the model's
    monitor command set-coalescing), alternately: what it saves at depth, what it costs at 1."""
    runs: dict[tuple, list[dict]] = {(c, on): [] for c in COALESCE_CASES for on in (True, False)}
    try:
        for rep in range(plan.reps):
            for on in (True, False):
                lab.model_qmp("set-coalescing", {"device": IO_DEV, "enabled": on})
                for c in COALESCE_CASES:
                    runs[(c, on)].append(_fifobench(
                        lab, *c, plan.seconds,
                        f"rep {rep + 1}/{plan.reps} coalescing {'on ' if on else 'off'}", say))
    finally:
        lab.model_qmp("set-coalescing", {"device": IO_DEV, "enabled": True})
    out = []
    for path, qd, bs in COALESCE_CASES:
        rec = {"kind": "coalescing", "path": path, "qd": qd, "bs": bs}
        for on in (True, False):
            m = _median_record(runs[((path, qd, bs), on)])
            for k in ("ops_per_s", "p50_us", "p99_us", "irqs_per_req", "cpu_us_per_op"):
                rec[f"{k}_{'on' if on else 'off'}"] = m[k]
        out.append(rec)
    return out


def streaming(image: images.Image, plan: Plan, say, kernel: str) -> list[dict]:
    """1 MiB blocks through a device whose FIFO holds several (STREAM_FIFO)."""
    cfg = LabConfig(devices=1, fifo_depth=STREAM_FIFO, kernel=kernel)
    with Lab(cfg, image) as lab:
        return io_matrix(lab, plan, say, [(p, qd, 1 << 20) for p, qd in plan.stream_paths],
                         kind="stream")


def notification(lab: Lab, plan: Plan, say) -> list[dict]:
    """Round trips host -> guest user space -> host, per wake-up mechanism."""
    warm = 5
    out = []
    for mode in NOTIFY_MODES:
        rtts: list[float] = []
        for _ in range(plan.reps):
            job = lab.spawn(f"fifobench notify {mode} /dev/fifolab{WIRED_DEV} "
                            f"{warm + plan.notify_count}")
            with lab.wire(WIRED_DEV) as wire:
                for i in range(warm + plan.notify_count):
                    t = time.perf_counter()
                    wire.send(b"\x5a")
                    if wire.recv_exactly(1) != b"\x5a":
                        raise LabError(f"notify {mode}: the echo is not the byte sent")
                    if i >= warm:
                        rtts.append((time.perf_counter() - t) * 1e6)
            lab.wait(job, timeout=60).check()
        rec = {"kind": "notify", "mode": mode, "count": len(rtts),
               "p50_us": _pct(rtts, 50), "p99_us": _pct(rtts, 99)}
        say(f"  notify {mode:6}: p50 {rec['p50_us']:8.1f} us  p99 {rec['p99_us']:8.1f} us")
        out.append(rec)
    return out


# ------------------------------------------------------------------------ goals

def _find(recs: list[dict], **want) -> dict | None:
    for r in recs:
        if all(r.get(k) == v for k, v in want.items()):
            return r
    return None


def goals(recs: list[dict]) -> list[dict]:
    """The issue's targets, each a ratio of figures of this run: met, not met, or not measured."""
    out: list[dict] = []

    def goal(name: str, value: float | None, target: float, better: str, detail: str) -> None:
        met = None if value is None else (value >= target if better == ">=" else value < target
                                          if better == "<" else value <= target)
        out.append({"kind": "goal", "goal": name, "value": value, "target": target,
                    "op": better, "met": met, "detail": detail})

    def ops(path: str, qd: int, bs: int = 4096) -> float | None:
        r = _find(recs, kind="io", path=path, qd=qd, bs=bs)
        return r["ops_per_s"] if r else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    lib, pos, syn, uri = ops("libaio", 32), ops("posix_aio", 32), ops("sync", 1), ops("io_uring", 32)
    goal("libaio QD32 4K ops/s vs POSIX AIO QD32", ratio(lib, pos), 4.0, ">=",
         f"libaio {lib} ops/s, POSIX AIO {pos}")
    goal("libaio QD32 4K ops/s vs sync", ratio(lib, syn), 2.0, ">=",
         f"libaio {lib} ops/s, sync {syn}")
    goal("io_uring QD32 4K ops/s vs libaio QD32", ratio(uri, lib), 1.0, ">=",
         f"io_uring {uri} ops/s, libaio {lib}")
    ceil = _find(recs, kind="ceiling")
    mib = [r for r in recs if r.get("kind") == "stream"]
    best = max(mib, key=lambda r: r["mb_per_s"]) if mib else None
    goal("1 MiB streaming vs the model's copy rate",
         ratio(best["mb_per_s"] if best else None, ceil["model_copy_mb_per_s"] if ceil else None),
         0.5, ">=", f"best 1 MiB stream {best['mb_per_s']:.0f} MB/s ({best['path']} QD "
                    f"{best['qd']}, {_size(best['fifo_depth'])} FIFO), model copy "
                    f"{ceil['model_copy_mb_per_s']:.0f} MB/s"
         if best and ceil else "not measured")
    sig, epo = _find(recs, kind="notify", mode="sigio"), _find(recs, kind="notify", mode="epoll")
    goal("SIGIO p50 vs epoll p50", ratio(sig["p50_us"] if sig else None,
                                      epo["p50_us"] if epo else None), 1.5,
         "<=", f"SIGIO {sig and round(sig['p50_us'])} us, epoll "
               f"{epo and round(epo['p50_us'])} us (round trips)")
    boot = _find(recs, kind="boot")
    goal("boot-to-ready vs trivial-initramfs floor", boot["ratio"] if boot else None, 1.3, "<=",
         f"ready {boot['ready_s']:.2f} s, floor {boot['floor_s']:.2f} s" if boot
         else "not measured")
    for path in ("libaio", "io_uring"):
        r = _find(recs, kind="io", path=path, qd=32, bs=4096)
        goal(f"{path} QD32 4K interrupts per request", r["irqs_per_req"] if r else None, 0.25, "<",
             f"{r['irqs']:.0f} interrupts for {r['requests']:.0f} requests" if r
             else "not measured")
    c1 = _find(recs, kind="coalescing", qd=1)
    goal("QD1 4K p50 with interrupt coalescing vs without (no added latency)",
         ratio(c1["p50_us_on"] if c1 else None, c1["p50_us_off"] if c1 else None), 1.1, "<=",
         f"libaio QD1 p50 {c1['p50_us_on']:.0f} us on, {c1['p50_us_off']:.0f} us off"
         if c1 else "not measured")
    return out


# ------------------------------------------------------------------------ output

def _size(n: int) -> str:
    for unit, shift in (("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                          text=True).stdout.splitlines()[:1]
    return {"kind": "machine", "cpu": cpu, "cpus": os.cpu_count(),
            "python": platform.python_version(), "qemu": qemu[0] if qemu else "?",
            "host_kernel": platform.release(), "accel": "tcg",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def table(recs: list[dict]) -> str:
    lines = []
    io = [r for r in recs if r.get("kind") in ("io", "stream")]
    if io:
        lines.append(f"{'path':10}{'qd':>3}{'bs':>6}{'ops/s':>10}{'MB/s':>9}{'p50 us':>9}"
                     f"{'p99 us':>9}{'cpu us/op':>10}{'irq/req':>8}")
        for r in io:
            if r.get("kind") == "stream" and r is next(x for x in io if x.get("kind") == "stream"):
                lines.append(f"streaming, {_size(r['fifo_depth'])} FIFO:")
            lines.append(f"{r['path']:10}{r['qd']:>3}{_size(r['bs']):>6}{r['ops_per_s']:>10.0f}"
                         f"{r['mb_per_s']:>9.1f}{r['p50_us']:>9.1f}{r['p99_us']:>9.1f}"
                         f"{r['cpu_us_per_op']:>10.1f}{r['irqs_per_req']:>8.2f}")
    for r in recs:
        if r.get("kind") == "notify":
            lines.append(f"notification {r['mode']:6} round trip  p50 {r['p50_us']:8.1f} us  "
                         f"p99 {r['p99_us']:8.1f} us  ({r['count']} bytes)")
        elif r.get("kind") == "coalescing":
            lines.append(f"interrupt coalescing on/off, {r['path']} QD {r['qd']} "
                         f"{_size(r['bs'])}: irq/req {r['irqs_per_req_on']:.2f}/"
                         f"{r['irqs_per_req_off']:.2f}, p50 {r['p50_us_on']:.0f}/"
                         f"{r['p50_us_off']:.0f} us, ops/s {r['ops_per_s_on']:.0f}/"
                         f"{r['ops_per_s_off']:.0f}")
        elif r.get("kind") == "boot":
            lines.append(f"boot to driver loaded {r['ready_s']:.2f} s; trivial-initramfs floor "
                         f"{r['floor_s']:.2f} s (x{r['ratio']:.2f})")
        elif r.get("kind") == "ceiling":
            lines.append(f"ceilings: host memcpy {r['host_memcpy_mb_per_s']:.0f} MB/s, model copy "
                         f"{r['model_copy_mb_per_s']:.0f} MB/s, model FIFO in+out "
                         f"{r['model_fifo_mb_per_s']:.0f} MB/s")
    gl = [r for r in recs if r.get("kind") == "goal"]
    if gl:
        lines.append("goals:")
        for g in gl:
            state = {True: "met    ", False: "NOT met", None: "n/a    "}[g["met"]]
            val = "-" if g["value"] is None else f"{g['value']:.2f}"
            lines.append(f"  {state} {g['goal']}: {val} (target {g['op']} {g['target']}) "
                         f"- {g['detail']}")
    return "\n".join(lines)


def plot(recs: list[dict], dest: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    io = [r for r in recs if r.get("kind") == "io"]
    bs_plot = 4096 if any(r["bs"] == 4096 for r in io) else io[0]["bs"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    names = [p for p, _ in PATHS]
    qds = sorted({r["qd"] for r in io})
    width = 0.8 / len(qds)
    for j, qd in enumerate(qds):
        xs, ys, p50, p99 = [], [], [], []
        for i, p in enumerate(names):
            r = _find(io, path=p, qd=qd, bs=bs_plot)
            if r:
                xs.append(i + (j - (len(qds) - 1) / 2) * width)
                ys.append(r["ops_per_s"])
                p50.append(r["p50_us"])
                p99.append(r["p99_us"])
        axes[0].bar(xs, ys, width, label=f"QD {qd}")
        axes[1].bar(xs, p50, width, label=f"QD {qd} p50")
        axes[1].scatter(xs, p99, marker="_", s=120, color="black", zorder=3,
                        label="p99" if j == len(qds) - 1 else None)
    for ax, title, ylabel in ((axes[0], f"operations/s, {_size(bs_plot)} blocks", "ops/s"),
                              (axes[1], f"request latency, {_size(bs_plot)} blocks", "µs")):
        ax.set_xticks(range(len(names)), names)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    axes[1].set_yscale("log")
    for p in names:
        best_qd = max(r["qd"] for r in io if r["path"] == p) if any(
            r["path"] == p for r in io) else None
        pts = sorted((r["bs"], r["mb_per_s"]) for r in io if r["path"] == p and r["qd"] == best_qd)
        if pts:
            axes[2].plot([b for b, _ in pts], [m for _, m in pts], marker="o",
                         label=f"{p} QD {best_qd}")
    for r in (r for r in recs if r.get("kind") == "stream"):
        axes[2].scatter([r["bs"]], [r["mb_per_s"]], marker="*", s=90, zorder=3,
                        label=f"{r['path']} QD {r['qd']}, {_size(r['fifo_depth'])} FIFO")
    ceil = _find(recs, kind="ceiling")
    if ceil:
        axes[2].axhline(ceil["model_copy_mb_per_s"], ls="--", color="gray",
                        label="model copy rate")
    axes[2].set_xscale("log", base=2)
    axes[2].set_yscale("log")
    axes[2].set_title("throughput by block size")
    axes[2].set_xlabel("block size (bytes)")
    axes[2].set_ylabel("MB/s")
    axes[2].legend(fontsize=8)
    m = _find(recs, kind="machine")
    if m:
        fig.suptitle(f"fifolab bench — {m['cpus']} CPUs {m['cpu']}, {m['qemu']} (TCG), "
                     f"{m['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(dest, dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------------ the command

def run(plan: Plan, kernel: str = "default", say=print) -> list[dict]:
    recs: list[dict] = [machine()]
    image = images.build(kernel_name=kernel)
    say("ceilings (host)")
    recs.append(ceilings(plan.reps))
    cfg = lab_config(kernel)
    say("boot times")
    recs.append(boot_times(cfg, image, plan.boot_reps, say))
    say("I/O paths")
    with Lab(cfg, image) as lab:
        recs += io_matrix(lab, plan, say)
        say("interrupt coalescing on and off")
        recs += coalescing(lab, plan, say)
        say("notification latency")
        recs += notification(lab, plan, say)
    say(f"streaming 1 MiB blocks, {_size(STREAM_FIFO)} FIFO")
    recs += streaming(image, plan, say, kernel)
    recs += goals(recs)
    return recs


def cmd_bench(args: argparse.Namespace) -> int:
    plan = Plan.quick() if args.quick else Plan()
    if args.reps:
        plan.reps = args.reps
    if args.seconds:
        plan.seconds = args.seconds
    recs = run(plan, kernel=args.kernel, say=lambda s: print(s, file=sys.stderr, flush=True))
    print(table(recs))
    if args.json:
        Path(args.json).write_text(json.dumps(recs, indent=1) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        plot(recs, Path(args.plot))
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def add_command(sub, kernel_opt) -> None:
    sp = sub.add_parser("bench", help="measure every I/O path side by side (ops/s, MB/s, "
                                      "latency, interrupts), notification and boot times")
    kernel_opt(sp)
    sp.add_argument("--quick", action="store_true",
                    help="one repetition, 4K and 1M blocks, QD 1 and 32 (about a minute)")
    sp.add_argument("--reps", type=int, help="repetitions of each measurement (default 3)")
    sp.add_argument("--seconds", type=float, help="seconds per I/O measurement (default 1)")
    sp.add_argument("--json", metavar="FILE", help="write every record as JSON")
    sp.add_argument("--plot", metavar="FILE.png", help="write the plot")
    sp.set_defaults(func=cmd_bench)
