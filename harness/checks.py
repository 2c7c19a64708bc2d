"""The end-to-end checks that ``fifolab check`` runs in a booted lab.

Each check is a guest shell command that exits 0 on success; the guest programs assert on
data, byte counts and errno values themselves.  A check with ``inject`` is armed first (the
program creates its ready file), then the harness sends that many bytes from the host side of
the wired device, so the notification or completion it waits for has no guest writer.  The
pytest suite (tests/test_e2e.py) runs the same list, one test each.

The lab of the checks (``lab_config``): /dev/fifolab0 and /dev/fifolab1 loop back,
/dev/fifolab2 is wired to a host socket.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

from .driver import GUEST_KO, node, sysfs
from .kmsg import KernelLogError
from .lab import Lab, LabConfig, LabError

DEV0 = node(0)
DEV1 = node(1)
WIRED = 2
DEVW = node(WIRED)

PATHS = ("driver", "sync", "non-blocking", "poll", "SIGIO", "POSIX AIO", "libaio", "io_uring",
         "stream")

# Shell function p: pages pinned now (FOLL_PIN acquired - released). stat_refresh folds the
# per-CPU counter deltas in first: /proc/vmstat alone lags.
PINS_SH = ("p() { echo 1 > /proc/sys/vm/stat_refresh; awk '/^nr_foll_pin_acquired/{a=$2} "
           "/^nr_foll_pin_released/{r=$2} END{print a-r}' /proc/vmstat; }")


def pattern(n: int) -> bytes:
    """The bytes the harness injects: byte i is (i * 7 + 3) mod 251 (the programs check it)."""
    period = bytes((i * 7 + 3) % 251 for i in range(251))
    return (period * (n // 251 + 1))[:n]


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    cmd: str                    # may use {ready}: the file the program creates once armed
    path: str = "sync"          # the I/O path it exercises (one of PATHS)
    expect: str | None = None   # text stdout must contain
    inject: int = 0             # bytes the host sends into DEVW once the program is armed

    def unsupported(self, cfg: LabConfig) -> str | None:
        """Why this check cannot run in a lab of `cfg` (one that `fifolab up` started with
        other devices), or None."""
        if (self.inject or DEVW in self.cmd) and WIRED not in cfg.wired:
            return f"needs /dev/fifolab{WIRED} wired to the host"
        if DEV1 in self.cmd and cfg.devices < 2:
            return "needs two devices"
        return None


@dataclasses.dataclass
class Outcome:
    ok: bool
    seconds: float
    detail: str = ""


def _loop(size: int, offset: int = 0) -> Check:
    return Check(f"loopback {size} B @+{offset}", f"fifotest loop {DEV0} {size} {offset}",
                 expect=f"ok {size}")


CHECKS: list[Check] = [
    Check("driver binds", f"test -c {DEV0} && grep -q '^fifolab ' /proc/modules "
                          f"&& ls {sysfs(0).rsplit('/', 1)[0]}/", path="driver"),
    Check("hello through the FIFO",
          f"printf hello > {DEV0} && dd if={DEV0} bs=5 count=1 2>/dev/null", expect="hello"),
    _loop(1),
    _loop(4095, 1),
    _loop(4096),
    _loop(10000, 4000),
    _loop(65536, 7),
    _loop(200000, 4095),
    _loop(1 << 20, 123),
    Check("blocked reader woken by another process's write", f"fifotest wake {DEV0}"),
    Check("signal interrupts a blocked read", f"fifotest signal {DEV0}"),
    Check("bad user pointers: EFAULT", f"fifotest efault {DEV0}"),
    Check("two devices, two independent nodes", f"fifotest two {DEV0} {DEV1}"),
    Check("non-blocking read of an empty FIFO: EAGAIN", f"fifotest nonblock-empty {DEV0}",
          path="non-blocking"),
    Check("host data reaches a blocking read",
          f"touch {{ready}}; dd if={DEVW} bs=4096 count=1 2>/dev/null | od -An -tx1 | head -1",
          inject=16, expect=" ".join(f"{b:02x}" for b in pattern(16))),
    # ---- poll/epoll
    Check("poll/select readiness in every FIFO state", f"poll_test {DEV0} states", path="poll"),
    Check("poll woken by another process", f"poll_test {DEV0} wake", path="poll"),
    Check("epoll edge- and level-triggered", f"poll_test {DEV0} epoll", path="poll"),
    Check("poll woken by host data", f"poll_test {DEVW} wake --external 3000 --ready {{ready}}",
          path="poll", inject=3000),
    # ---- SIGIO
    Check("signal() + F_SETOWN + FASYNC (book 9.2/9.11)", f"fasync_demo signal {DEV0}",
          path="SIGIO"),
    Check("SA_SIGINFO + F_SETSIG: si_fd, si_band, POLL_IN/POLL_OUT",
          f"fasync_demo siginfo {DEV0}", path="SIGIO"),
    Check("F_SETOWN_EX to one thread", f"fasync_demo thread {DEV0}", path="SIGIO"),
    Check("SIGIO for host data, no guest writer",
          f"fasync_demo siginfo {DEVW} --external 1000 --ready {{ready}}",
          path="SIGIO", inject=1000),
    Check("SIGIO -> eventfd -> epoll loop", f"sigio_epoll {DEV0}", path="SIGIO"),
    Check("SIGIO -> eventfd -> epoll loop, host data",
          f"sigio_epoll {DEVW} --external 70000 --ready {{ready}}", path="SIGIO", inject=70000),
    # ---- POSIX AIO (glibc threads)
    *[Check(f"POSIX AIO {sub}", f"posix_aio {DEV0} {sub}", path="POSIX AIO")
      for sub in ("basic", "pending", "cancel", "listio", "notify")],
    Check("POSIX AIO read pending until host data",
          f"posix_aio {DEVW} pending --external 5000 --ready {{ready}}",
          path="POSIX AIO", inject=5000),
    # ---- libaio (kernel AIO, truly asynchronous in the driver)
    *[Check(f"libaio {sub}", f"libaio_test {DEV0} {sub}", path="libaio")
      for sub in ("basic", "pending", "cancel", "destroy", "eventfd", "depth-pending",
                  "nowait")],
    Check("libaio read pending until host data",
          f"libaio_test {DEVW} pending --external 100000 --ready {{ready}}",
          path="libaio", inject=100000),
    # ---- io_uring
    *[Check(f"io_uring {sub}", f"uring_test {DEV0} {sub}", path="io_uring")
      for sub in ("basic", "pending", "cancel", "exit-pending")],
    Check("io_uring read pending until host data",
          f"uring_test {DEVW} pending --external 16 --ready {{ready}}",
          path="io_uring", inject=16),
    # ---- stream contracts: every iovec, every byte, nothing stuck, pipe semantics
    *[Check(f"streamtest {sub}", f"streamtest {sub} {DEV0}", path="stream", expect=f"ok {sub}")
      for sub in ("readv", "writev", "aio-writev", "aio-readv", "uring-writev", "uring-readv",
                  "ioctl", "clear-blocked", "nonblock-atomic", "pollout")],
    *[Check(f"3 MiB write, {p}: every byte", f"streamtest big-write {DEV0} {p} 3145728",
            path="stream", expect=f"ok big-write {p} 3145728") for p in ("sync", "libaio", "uring")],
    Check("9 MiB write, sync (more than the driver pins at once): every byte",
          f"streamtest big-write {DEV0} sync 9437184", path="stream",
          expect="ok big-write sync 9437184"),
    Check("1024 iovecs, two chains' worth in the FIFO: the read takes them, waits for no more",
          f"streamtest vec-many {DEV0} sync read partial", path="stream",
          expect="ok vec-many sync read 33280"),
    *[Check(f"1024 iovecs, {p} {d}", f"streamtest vec-many {DEV0} {p} {d}", path="stream",
            expect="ok vec-many") for p, d in (("sync", "read"), ("libaio", "write"),
                                               ("uring", "write"))],
    *[Check(f"io_uring write pending across {m}: ends within 1 s",
            f"streamtest uring-gone {DEV0} {m}", path="stream", expect="ok uring-gone")
      for m in ("exec", "ring-close")],
    Check("the same ops on the device and on a pipe agree (pipediff)",
          f"pipediff {DEV0} 7 30 --quiet", path="stream", expect=" 0 differences"),
    Check("io_uring at queue depth 32: no request ends with EAGAIN, every byte intact",
          f"fifobench io io_uring 32 4096 {DEV0} --seconds 0.3 --verify", path="io_uring",
          expect='"verified": true'),
    Check("every other path streams every byte intact (fifobench --verify)",
          "for a in 'sync 1' 'nonblock 1' 'posix_aio 8' 'libaio 32'; do "
          f"fifobench io $a 4096 {DEV0} --seconds 0.2 --verify || exit 1; done "
          "| grep -c '\"verified\": true' | sed 's/^/verified runs: /'", path="libaio",
          expect="verified runs: 4"),
    Check("every async request is counted once, as completed",
          f"a() {{ cat {sysfs(0)}/async_$1; }}; "
          "s=$(a submitted); "
          f"c=$(a completed); libaio_test {DEV0} basic >/dev/null && "
          f"uring_test {DEV0} basic >/dev/null; S=$(($(a submitted) - s)); "
          "C=$(($(a completed) - c)); echo async submitted $S completed $C; "
          "test $S -gt 0 && test $S -eq $C", path="driver", expect="async submitted"),
    Check("a cancelled libaio request is counted as cancelled, not failed",
          f"a() {{ cat {sysfs(0)}/async_$1; }}; "
          "c=$(a cancelled); "
          f"f=$(a failed); libaio_test {DEV0} cancel >/dev/null; C=$(($(a cancelled) - c)); "
          "F=$(($(a failed) - f)); echo async cancelled $C failed $F; "
          "test $C -ge 1 && test $F -eq 0", path="libaio", expect="async cancelled"),
    Check("every pinned page goes back",
          f"{PINS_SH}; b=$(p); fifotest loop {DEV0} 300000 5 >/dev/null && "
          f"libaio_test {DEV0} basic >/dev/null && uring_test {DEV0} basic >/dev/null; "
          f"a=$(p); echo pins before $b after $a; test \"$a\" -eq \"$b\"", path="driver",
          expect="pins before"),
    Check("rmmod, insmod, works again",
          f"rmmod fifolab && test ! -e {DEV0} && insmod {GUEST_KO} "
          f"&& fifotest loop {DEV0} 100000 3", path="driver", expect="ok 100000"),
]


def lab_config(**over) -> LabConfig:
    cfg = LabConfig(devices=3, wired=(WIRED,))
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


_ready_ids = itertools.count()


def run_check(lab: Lab, check: Check, timeout: float = 300) -> Outcome:
    """Run one check; a failure's detail holds the program's output or the kernel report."""
    t = time.monotonic()
    try:
        if check.inject:
            ready = f"/tmp/fifolab-ready.{next(_ready_ids)}"
            job = lab.spawn(check.cmd.format(ready=ready))
            lab.wait_for_guest_file(ready, job=job)
            with lab.wire(WIRED) as wire:
                wire.send(pattern(check.inject))
                res = lab.wait(job, timeout)
        else:
            res = lab.exec(check.cmd, timeout=timeout)
        ok = res.returncode == 0 and (check.expect is None or check.expect in res.stdout)
        detail = "" if ok else f"$ {res.cmd}\nexit {res.returncode}\n{res.stdout}{res.stderr}"
        if ok:
            left = leftover_bytes(lab)
            if left:
                ok, detail = False, f"$ {res.cmd}\nthe check left bytes behind: {left}"
    except (KernelLogError, LabError) as err:
        ok, detail = False, str(err)
    return Outcome(ok, time.monotonic() - t, detail)


def leftover_bytes(lab: Lab) -> str:
    """Bytes a check left in a device's FIFOs, as the device model counts them ("" if none):
    a check must read back what it wrote, so duplicated or stray bytes fail the check that
    left them, not the next one.  (A wired device's TX FIFO is the host's to read.)"""
    left = []
    for dev in range(lab.cfg.devices):
        fifo = lab.model_qmp("query-fifolab", {"device": dev})["fifo"]
        if fifo["rx_level"]:
            left.append(f"/dev/fifolab{dev}: {fifo['rx_level']} bytes unread")
    return "; ".join(left)
