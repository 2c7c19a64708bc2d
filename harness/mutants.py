"""``fifolab mutants``: how strong is the suite?  Each mutant is a small edit of the driver or
the device model that breaks one contract a user relies on; the suite must fail on every one.

For each mutant the repository is copied to a scratch directory, the edit applied (its text
must occur exactly once, so a mutant that no longer fits the code is an error, not a silent
pass), and the suite run there in stages, each stopping at its first failure:

  check      ``fifolab check --fail-fast`` (the check table: every path, the stream contracts,
             the pipe oracle, pins, the kernel log)
  tests      the VM tests of the stream contracts, the fixes, the pipe oracle and the faults
  scenarios  every shipped fault scenario (``fifolab scenario scenarios/ --fail-fast``)

A mutant is *killed* by the first stage that fails (the failing check, test or scenario is
named), *survives* if all pass, and is an *error* if it does not build.  Guest images are
cached by content, so only the mutated part is rebuilt.

To add a mutant when you add a contract: append a ``Mutant`` below (name, file, the exact text
to find, its replacement, the contract it breaks), run ``fifolab mutants -k NAME``, and keep it
only if it is killed -- or add the test that kills it.  ``tests/test_mutants.py`` checks that
every mutant still applies and that every driver mutant compiles.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DRIVER_DIR = "guest_driver"      # the module's sources (docs/driver.md: which file holds what)


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    find: str
    replace: str
    breaks: str             # the contract
    equivalent: str = ""    # why no test in this lab can tell it apart (then it is not run)


def is_driver(m: Mutant) -> bool:
    return m.file.startswith(DRIVER_DIR + "/")


def _d(name: str, file: str, find: str, replace: str, breaks: str) -> Mutant:
    """A mutant of the driver (``file``: one of its sources in guest_driver/)."""
    return Mutant(name, f"{DRIVER_DIR}/{file}", find, replace, breaks)


def _m(name: str, file: str, find: str, replace: str, breaks: str) -> Mutant:
    """A mutant of the device model (``file``: one of its modules)."""
    return Mutant(name, file, find, replace, breaks)


MUTANTS: list[Mutant] = [
    # ---- every byte, every iovec
    _d("count-one-short", "fifolab_chrdev.c",
       "return total ? total : ret;", "return total ? total - 1 : ret;",
       "a sync read/write returns the bytes it moved"),
    _d("skip-first-byte", "fifolab_queue.c",
       "WRITE_ONCE(d->addr, cpu_to_le64(sg_dma_address(sg)));\n"
       "\t\tWRITE_ONCE(d->len, cpu_to_le32(sg_dma_len(sg)));",
       "WRITE_ONCE(d->addr, cpu_to_le64(sg_dma_address(sg) + (i == 0 && sg_dma_len(sg) > 1)));\n"
       "\t\tWRITE_ONCE(d->len, cpu_to_le32(sg_dma_len(sg) - (i == 0 && sg_dma_len(sg) > 1)));",
       "the device gets the caller's buffer from its first byte"),
    _d("first-iovec-only", "fifolab_queue.c",
       "\t\tlen += slen;\n\t\tiov_iter_advance(&walk, slen);\n\t}",
       "\t\tlen += slen;\n\t\tiov_iter_advance(&walk, slen);\n\t\tbreak;\n\t}",
       "a request carries every iovec segment"),
    _d("no-next-window", "fifolab_queue.c", "if (full && req->win_left > req->win_nents &&",
       "if (0 && full && req->win_left > req->win_nents &&",
       "a request larger than one descriptor chain moves every byte"),
    _d("short-write-returns", "fifolab_chrdev.c", "if (rx || (size_t)ret < want)", "if (1)",
       "a blocking write of any size returns when every byte is in"),
    _d("read-windows-wait", "fifolab_queue.c",
       "bool nowait = req->nowait || (q->qid == FIFOLAB_QUEUE_RX && req->moved);",
       "bool nowait = req->nowait;",
       "a read takes what is there; it does not wait for more"),
    _d("no-pipe-buf-atomicity", "fifolab_chrdev.c", "need = whole || len <= PIPE_BUF ? len : 1;",
       "need = whole ? len : 1;", "O_NONBLOCK writes of <= PIPE_BUF bytes are all or nothing"),
    # ---- async: complete once, never hold io_uring without bound
    _d("complete-twice", "fifolab_aio.c", "\treturn -EIOCBQUEUED;\n}", "\treturn 0;\n}",
       "a kiocb is completed exactly once (-EIOCBQUEUED, then ki_complete)"),
    _d("uring-waits-in-device", "fifolab_chrdev.c",
       "if (!is_sync_kiocb(iocb) && (!uring || nowait))",
       "if (!is_sync_kiocb(iocb))", "io_uring requests never wait in the driver without bound"),
    _d("uring-short-writes", "fifolab_chrdev.c",
       "bool whole = uring && !nonblock;", "bool whole = false;",
       "an io_uring write completes whole, not with a short count"),
    _d("no-completed-count", "fifolab_aio.c", "\t\tatomic64_inc(&fdev->aio.completed);\n", "",
       "sysfs async_completed counts completed kiocbs"),
    # ---- notification
    _d("no-kill-fasync", "fifolab_irq.c",
       "kill_fasync(&fdev->fasync, SIGIO, band);", "(void)band;",
       "SIGIO is sent to the file's owner"),
    _d("sigio-wrong-band", "fifolab_irq.c",
       "\t\tfifolab_notify(fdev, POLL_IN);", "\t\tfifolab_notify(fdev, POLL_OUT);",
       "SIGIO for arriving data carries POLL_IN"),
    _d("epollin-when-empty", "fifolab_chrdev.c",
       "if (fifolab_claimable(&fdev->queue[FIFOLAB_QUEUE_RX], lv.rx_level))",
       "if (1)", "poll says EPOLLIN only with bytes to read"),
    _d("no-wake-on-completion", "fifolab_queue.c",
       "if (done || level_changed)", "if (level_changed)",
       "a completed request wakes its owner"),
    _d("no-listener-watchdog", "fifolab_chrdev.c", "\t\tif (listen)\n", "\t\tif (0)\n",
       "a lost DATA_AVAIL message does not strand a poller"),
    # ---- cancel, unpin, timeouts
    _d("ignore-cancel", "fifolab_queue.c",
       "cpu_to_le16(req->head_flags | FIFOLAB_DESC_F_CANCEL));",
       "cpu_to_le16(req->head_flags));", "a signal or io_cancel gets a posted request back"),
    _d("skip-unpin", "fifolab_queue.c",
       "unpin_user_pages_dirty_lock(req->pages, pinned, dirty);", "(void)dirty;",
       "every pinned page goes back"),
    _d("timeout-not-forward", "fifolab_aio.c",
       "mod_delayed_work(system_wq, dw, fifolab_until(deadline));",
       "queue_delayed_work(system_wq, dw, fifolab_until(deadline));",
       "an earlier async deadline brings the timeout forward"),
    Mutant("unplug-keeps-master", f"{DRIVER_DIR}/fifolab_main.c",
           "\tpci_clear_master(pdev);\t\t/* before the pages go back */\n", "",
           "remove() stops the device's DMA before its pages go back",
           equivalent="after device_del QEMU no longer connects the model to the guest, so "
                      "nothing can DMA into the pages remove() frees, bus mastering or not; "
                      "only real hardware (or a model that kept writing RAM after its peer "
                      "left) would tell"),
    # ---- errors once
    _d("error-never-told", "fifolab_chrdev.c",
       "\tif (fifolab_err_take(ff))\n\t\treturn -EIO;\n", "",
       "a device error reaches every open file (its next read/write fails once)"),
    _d("error-told-forever", "fifolab_recover.c",
       "return seen != gen && cmpxchg(&ff->err_seen, seen, gen) == seen;",
       "return seen != gen;", "an error is reported once per file, then it is clean"),
    _d("caller-not-told", "fifolab_recover.c",
       "\t\tWRITE_ONCE(ff->err_seen, atomic_read(&ff->fdev->err_gen));\n",
       "\t\t(void)ff;\n",
       "the caller whose request failed is told by its -EIO, not again"),
    _d("dma-error-not-reported", "fifolab_queue.c",
       "\t\t\tfifolab_error(fdev);\n\t\t\terr = -EIO;",
       "\t\t\terr = -EIO;", "a DMA error is reported to the other open files"),
    # ---- an untrusted device
    _d("trust-long-entry", "fifolab_queue.c", "if (len > req->win_len) {", "if (0) {",
       "a used entry never reports more bytes than asked for"),
    _d("trust-used-idx", "fifolab_queue.c", "if (n > q->num_inflight) {", "if (0) {",
       "USED_IDX running ahead of the requests in flight is a broken device"),
    _d("trust-cancelled-status", "fifolab_queue.c",
       "\t\tcase FIFOLAB_ST_CANCELLED:\n\t\t\tif (!req->cancelled)\n"
                                 "\t\t\t\tq->stats.bad++;\n\t\t\treq->aborted = true;\n\t\t\tbreak;\n",
       "\t\tcase FIFOLAB_ST_CANCELLED:\n\t\t\tbreak;\n",
       "a cancelled request comes back cancelled, with what it moved"),
    # ---- ioctls
    _d("fionread-is-space", "fifolab_chrdev.c",
       "return put_user((int)min_t(u32, lv.rx_level, INT_MAX),",
       "return put_user((int)min_t(u32, lv.tx_space, INT_MAX),", "FIONREAD is the bytes to read"),
    _d("unknown-ioctl-ok", "fifolab_chrdev.c", "\t\treturn -ENOTTY;", "\t\treturn 0;",
       "an unknown ioctl fails with ENOTTY"),
    _d("clear-does-nothing", "fifolab_chrdev.c",
       "\tif (fifolab_recover(fdev, -ECANCELED, false))\n",
       "\tif (0)\n", "FIFOLAB_IOC_CLEAR empties the FIFO"),
    # ---- the device model
    _m("model-truncates-reads", "device/datapath.py",
       "                r.moved += fifo.get_into(seg)",
       "                r.moved += fifo.get_into(seg[:-1] if len(seg) > 1 else seg)",
       "the device fills a read's segments completely"),
    _m("model-no-data-avail", "device/core.py",
       "            self._irq.collect(regs.INT_DATA_AVAIL)\n",
       "            pass\n", "the device raises DATA_AVAIL when bytes arrive"),
    _m("model-stale-slot", "device/queue.py",
       "        self.last_avail = (self.last_avail + 1) & U32_MASK",
       "        self.last_avail = (self.last_avail + (slot != 5)) & U32_MASK",
       "the device takes each avail slot once"),
    _m("model-reorders-rx", "device/datapath.py",
       "            r = pend[0]\n            if not fifo.level and not r.nowait:",
       "            r = pend[-1]\n            if not fifo.level and not r.nowait:",
       "RX requests are served in the order posted"),
    _m("model-levels-late", "device/queue.py",
       "        self._bar2.w32(regs.REG_RX_LEVEL, rx_level)\n"
       "        self._bar2.w32(regs.REG_TX_SPACE, tx_space)\n"
       "        used = self.used_idx",
       "        used = self.used_idx",
       "RX_LEVEL/TX_SPACE are written before the used entry that follows them"),
]

STAGES = ("check", "tests", "scenarios")
VM_TESTS = ("tests/test_stream_vm.py", "tests/test_fixes_vm.py", "tests/test_pipediff_vm.py",
            "tests/test_faults_vm.py")


class MutantError(Exception):
    pass


def apply(root: Path, m: Mutant) -> None:
    """Edit `root`'s copy of m.file; the text to find must be there exactly once."""
    path = root / m.file
    text = path.read_text()
    n = text.count(m.find)
    if n != 1:
        raise MutantError(f"mutant {m.name}: its text occurs {n} times in {m.file} "
                          f"(the code changed: update the mutant)")
    path.write_text(text.replace(m.find, m.replace))


def copy_repo(dest: Path) -> None:
    """The files git tracks (and new ones it does not ignore), as they are now."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    for rel in out.splitlines():
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _stage_cmd(stage: str, kernel: str) -> list[str]:
    py = sys.executable
    if stage == "check":
        return [py, "-m", "harness", "check", "--kernel", kernel, "--fail-fast",
                "--timeout", "120"]
    if stage == "tests":
        return [py, "-m", "pytest", "-x", "-q", "-m", "vm", "--kernel", kernel,
                "-p", "no:cacheprovider", *VM_TESTS]
    return [py, "-m", "harness", "scenario", "scenarios/", "--kernel", kernel, "--fail-fast"]


_KILLER = (re.compile(r"^\s*FAIL\s+[\d.]+ s\s+(\[.*)$", re.M),          # check, scenario
           re.compile(r"^FAILED (\S+)", re.M),                           # pytest
           re.compile(r"^(fifolab: .*)$", re.M))                         # a build or lab error


def _killer(output: str) -> str:
    for pat in _KILLER:
        m = pat.search(output)
        if m:
            return m.group(1).strip()[:120]
    return output.strip().splitlines()[-1][:120] if output.strip() else "?"


@dataclasses.dataclass
class Outcome:
    mutant: str
    status: str             # killed | survived | error
    stage: str = ""
    by: str = ""
    seconds: float = 0.0


def _run_stage(cmd: list[str], cwd: Path, env: dict, timeout: float) -> tuple[str, int]:
    """Run one stage; past `timeout` it gets SIGTERM (the harness then removes its lab, run
    directory and RAM file), and SIGKILL only if that does not end it."""
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        try:
            out, _ = proc.communicate(timeout=timeout)
            return out, proc.returncode
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                out, _ = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            return out + f"\nfifolab: timed out after {timeout:.0f} s (the suite hangs)", -1
        except BaseException:
            proc.terminate()
            proc.communicate(timeout=60)
            raise


def run_mutant(m: Mutant, kernel: str, stages: tuple[str, ...], timeout: float,
               keep: Path | None = None) -> Outcome:
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"fifolab-mutant-{m.name}-") as tmp:
        root = Path(tmp)
        copy_repo(root)
        apply(root, m)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        for stage in stages:
            output, rc = _run_stage(_stage_cmd(stage, kernel), root, env, timeout)
            if keep:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"{m.name}.{stage}.log").write_text(output)
            if rc != 0:
                build = "building the driver" in output and "failed" in output
                return Outcome(m.name, "error" if build else "killed", stage, _killer(output),
                               time.monotonic() - t0)
    return Outcome(m.name, "survived", "", "", time.monotonic() - t0)


def cmd_mutants(args: argparse.Namespace) -> int:
    chosen = [m for m in MUTANTS if not args.filter or args.filter in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name:<24} {m.file:<32} {m.breaks}")
        return 0
    if not chosen:
        print("fifolab mutants: no mutant matches")
        return 2
    stages = tuple(args.stages.split(","))
    if set(stages) - set(STAGES):
        print(f"fifolab mutants: stages are {', '.join(STAGES)}")
        return 2
    print(f"{len(chosen)} mutant(s), stages {', '.join(stages)}, kernel {args.kernel}",
          flush=True)
    outcomes = []
    for m in chosen:
        if m.equivalent:
            print(f"  EQUIV              {m.name:<24} {m.equivalent}", flush=True)
            continue
        try:
            o = run_mutant(m, args.kernel, stages, args.timeout,
                           Path(args.keep_logs) if args.keep_logs else None)
        except MutantError as err:
            o = Outcome(m.name, "error", "apply", str(err))
        outcomes.append(o)
        print(f"  {o.status.upper():<8} {o.seconds:6.0f} s  {m.name:<24} "
              f"{o.stage + ': ' + o.by if o.by else ''}", flush=True)
    killed = sum(o.status == "killed" for o in outcomes)
    survived = [o.mutant for o in outcomes if o.status == "survived"]
    errors = [o.mutant for o in outcomes if o.status == "error"]
    equiv = sum(bool(m.equivalent) for m in chosen)
    print(f"\nmutation score: {killed}/{len(outcomes)} killed"
          + (f" ({equiv} equivalent, not run)" if equiv else "")
          + (f"; survived: {', '.join(survived)}" if survived else "")
          + (f"; errors: {', '.join(errors)}" if errors else ""))
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(o) for o in outcomes],
                                              indent=1) + "\n")
    return 0 if killed == len(outcomes) else 1


def add_command(sub, kernel_opt) -> None:
    sp = sub.add_parser("mutants", help="run the suite against broken drivers and models: "
                                        "every mutant must be killed")
    kernel_opt(sp)
    sp.add_argument("-k", dest="filter", help="only mutants whose name contains this")
    sp.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    sp.add_argument("--stages", default=",".join(STAGES),
                    help=f"comma-separated, in order (default {','.join(STAGES)})")
    sp.add_argument("--timeout", type=float, default=1200, help="per stage, seconds")
    sp.add_argument("--json", metavar="FILE", help="write the outcomes as JSON")
    sp.add_argument("--keep-logs", metavar="DIR", help="keep every stage's output here")
    sp.set_defaults(func=cmd_mutants)
