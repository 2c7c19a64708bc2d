"""The stream semantics users rely on (GitHub issue 11), clause by clause, in a real VM.

Each test runs one subcommand of the guest program `streamtest`
(guest_driver/programs/streamtest.c), which does the system calls, checks every byte it
moves against a pattern, prints what it saw as `key=value` lines and exits non-zero at the
first violation of the contract.  The tests assert on those lines (byte counts, results,
errno names, revents), on the driver's sysfs counters and on the model's events -- never on
timing, except the contract's own bounds, measured in the guest with clock_gettime:
exec/exit/ring close within 1 s, a lost wake-up repaired within 2 x completion_timeout_ms
(+ 500 ms).

One lab serves the module: device 0 loops back, device 1 is wired to a host socket.
"""

import re
import time

import pytest

from harness.checks import pattern
from harness.lab import Lab, LabConfig

pytestmark = pytest.mark.vm

DEV0 = "/dev/fifolab0"
DEV1 = "/dev/fifolab1"          # wired (host socket)
BIG = 3 << 20                   # contract 2: 3 MiB in one call
BOUND_MS = 1000.0               # contract 3: exec / exit / ring close


@pytest.fixture(scope="module")
def lab(kernel):
    with Lab(LabConfig(devices=2, wired=(1,), kernel=kernel)) as lab:
        yield lab
        lab.leak_check()


@pytest.fixture(autouse=True)
def clean_faults(lab):
    yield
    lab.clear_faults()


def st(lab, args: str, timeout: float = 150.0):
    """Run `streamtest ARGS` in the guest; its result (stdout, stderr, returncode)."""
    return lab.exec(f"streamtest {args}", timeout=timeout)


def out(res) -> str:
    return f"$ {res.cmd}\n(exit {res.returncode})\n{res.stdout}{res.stderr}"


def passed(res) -> str:
    """The program saw no violation; its stdout."""
    assert res.returncode == 0 and res.stdout.splitlines()[-1].startswith("ok "), out(res)
    return res.stdout


def fields(stdout: str, prefix: str) -> dict[str, str]:
    """key=value pairs of the first line that starts with `prefix`."""
    for line in stdout.splitlines():
        if line.startswith(prefix):
            return dict(re.findall(r"(\w+)=(\S+)", line))
    raise AssertionError(f"no line starting with {prefix!r} in:\n{stdout}")


def pat_stream(seed: int, n: int) -> bytes:
    """Bytes 0..n-1 of streamtest's stream `seed` (common.h pat())."""
    m, base = 2**64 - 1, seed << 32
    return bytes(((x ^ (x >> 29)) >> 32) & 0xFF
                 for x in (((i + base) * 0x9E3779B97F4A7C15) & m for i in range(n)))


def wait_running(lab, node: int = 0, timeout: float = 15.0) -> None:
    """Until the driver has the device running again (after a fault it recovers from)."""
    deadline = time.monotonic() + timeout
    while lab.counters(node).get("running", 1) != 1:
        assert time.monotonic() < deadline, "the driver did not bring the device back"
        time.sleep(0.1)


# ------------------------------------------------------------------ 1. vectors


def test_1_readv_fills_every_segment_with_the_bytes_the_fifo_holds(lab):
    stdout = passed(st(lab, f"readv {DEV0}"))
    assert "readv res=4096" in stdout


def test_1_writev_of_64_odd_segments_puts_every_byte_in_order(lab):
    stdout = passed(st(lab, f"writev {DEV0}"))
    assert fields(stdout, "writev ") == {"segments": "64", "total": "28672", "res": "28672"}


@pytest.mark.parametrize("sub", ["aio-writev", "aio-readv", "uring-writev", "uring-readv"])
def test_1_async_vectored_request_moves_all_its_iovecs(lab, sub):
    """libaio IOCB_CMD_PWRITEV/PREADV and io_uring WRITEV/READV of 3 iovecs totalling
    4096: res 4096, every segment's bytes in order."""
    stdout = passed(st(lab, f"{sub} {DEV0}"))
    assert fields(stdout, f"{sub} ")["res"] == "4096"


@pytest.mark.parametrize("path", ["sync", "libaio", "uring"])
@pytest.mark.parametrize("direction", ["write", "read"])
def test_1_vectored_request_of_1024_scattered_segments_moves_every_byte(lab, path, direction):
    """IOV_MAX segments with a gap after each (more descriptors than the device chains in
    one request): a writev of 211816 bytes with a reader draining returns all of them, in
    order; a readv of a full FIFO into 1024 segments fills every one."""
    depth = lab.counters(0)["fifo_depth"]
    total = 211816 if direction == "write" else depth // 1024 * 1024
    res = st(lab, f"vec-many {DEV0} {path} {direction}")
    assert f"segments=1024 total={total} res={total}" in res.stdout, out(res)
    stdout = passed(res)
    if direction == "write":
        assert fields(stdout, "reader ")["bytes"] == str(total)


# ------------------------------------------------------------------ 2. unlimited writes


@pytest.mark.parametrize("path", ["sync", "libaio", "uring"])
def test_2_one_3mib_write_completes_whole_while_a_reader_drains(lab, path):
    before = lab.counters(0)
    res = st(lab, f"big-write {DEV0} {path} {BIG}")
    assert fields(res.stdout, "big-write ").get("res") == str(BIG), out(res)
    stdout = passed(res)
    reader = fields(stdout, "reader ")
    assert reader["bytes"] == str(BIG) and reader["crc"] == "ok"
    assert int(reader["max_read"]) <= int(lab.counters(0)["fifo_depth"])
    after = lab.counters(0)
    assert after["tx_bytes"] - before["tx_bytes"] == BIG
    assert after["rx_bytes"] - before["rx_bytes"] == BIG


@pytest.mark.parametrize("path", ["sync", "libaio", "uring"])
def test_2_one_3mib_write_to_the_wired_device_reaches_the_host_whole(lab, path):
    with lab.wire(1) as w:
        job = lab.spawn(f"streamtest big-write {DEV1} {path} {BIG} host")
        got = w.recv_exactly(BIG)
        res = lab.wait(job, 120)
    assert fields(res.stdout, "big-write ").get("res") == str(BIG), out(res)
    passed(res)
    assert got == pat_stream(21, BIG), "the host received other bytes than were written"


@pytest.mark.parametrize("path", ["sync", "libaio", "uring"])
def test_2_a_read_gets_what_the_fifo_holds_up_to_iovec_total_and_depth(lab, path):
    depth = lab.counters(0)["fifo_depth"]
    stdout = passed(st(lab, f"read-amount {DEV0} {path}"))
    assert "held=10000 buffer=65536 res=10000" in stdout
    assert f"held={depth} buffer={1 << 20} res={depth}" in stdout
    assert "held=3000 iovecs=400+600 res=1000" in stdout
    assert f"held=2000 buffer={1 << 20} res=2000" in stdout


# ------------------------------------------------------------------ 3. nothing stays in the driver


@pytest.mark.parametrize("mode", ["exec", "exit-open", "exit-closed", "fixed", "ring-close"])
def test_3_pending_io_uring_write_ends_with_exec_exit_or_ring_close_within_1s(lab, mode):
    """An io_uring WRITE of 2 x depth bytes with no reader, then exec() / exit() with the fd
    open / exit() after close(fd) / a registered file and exit() / io_uring_queue_exit() in
    a live process: done within 1 s, the request ended (the FIFO holds a prefix of the write,
    nothing follows once drained), and the device works after."""
    depth = lab.counters(0)["fifo_depth"]
    res = st(lab, f"uring-gone {DEV0} {mode}")
    took = re.search(r"^gone mode=\S+ took_ms=(\S+)", res.stdout, re.M)
    assert took and re.fullmatch(r"[\d.]+", took[1]) and float(took[1]) <= BOUND_MS, \
        f"{mode} with an io_uring write pending: not done within {BOUND_MS:.0f} ms\n{out(res)}"
    stdout = passed(res)
    ended = fields(stdout, "ended ")
    assert ended["late"] == "0" and ended["data"] == "ok", stdout
    assert int(ended["moved"]) <= depth


@pytest.mark.parametrize("op", ["read", "write"])
@pytest.mark.parametrize("mode", ["cancel", "destroy", "exit"])
def test_3_libaio_cancel_destroy_exit_with_a_pending_request_return_within_1s(lab, mode, op):
    """A libaio read pending on the empty FIFO (or a write of 2 x depth bytes, no reader):
    io_cancel (event -ECANCELED, or the count a write moved) / io_destroy / exit within
    1 s; a write has ended (nothing follows once the FIFO is drained); the device works."""
    depth = lab.counters(0)["fifo_depth"]
    res = st(lab, f"aio-gone {DEV0} {mode} {op}")
    took = re.search(r"^gone mode=\S+ op=\S+ took_ms=(\S+)", res.stdout, re.M)
    assert took and re.fullmatch(r"[\d.]+", took[1]) and float(took[1]) <= BOUND_MS, out(res)
    stdout = passed(res)
    if mode == "cancel" and op == "read":
        assert "event res=-1 ECANCELED" in stdout
    if op == "write":
        ended = fields(stdout, "ended ")
        assert ended["late"] == "0" and int(ended["moved"]) <= depth


# ------------------------------------------------------------------ 4. errors reported once


@pytest.mark.parametrize("path", ["sync", "libaio", "uring"])
def test_4_dma_error_is_reported_once_to_each_open_file(lab, path):
    """One read (read(), a libaio or an io_uring read) fails with EIO (fault-dma-error
    queue=rx): that fd's poll is clean after;
    an fd opened before (no I/O) sees POLLERR, then EIO once from its read or write, then a
    clean poll and working I/O; the bytes written before the fault are still there in order;
    SIGIO carries POLL_ERR; an fd opened after the error sees none."""
    passed(st(lab, f"drain {DEV0}"))
    lab.model_events()
    before = lab.counters(0)
    lab.model_qmp("fault-dma-error", {"device": 0, "queue": "rx"})
    res = st(lab, f"err-once {DEV0} {path}")
    ev = lab.model_event("DMA_ERROR", timeout=5, device=0, queue="rx")
    assert ev["injected"] is True
    stdout = res.stdout
    assert "read A (the faulty request) res=-1 EIO" in stdout, out(res)
    assert "poll A after its read failed revents=" in stdout and \
        "ERR" not in fields(stdout, "poll A after its read failed")["revents"], out(res)
    assert "sigio POLL_ERR" in stdout, out(res)
    passed(res)
    assert "ERR" in fields(stdout, "poll B (opened before")["revents"]
    assert "read B res=-1 EIO" in stdout
    assert "read B again res=1000" in stdout
    assert "write B2 res=-1 EIO" in stdout
    assert "write B2 again res=100" in stdout
    assert "ERR" not in fields(stdout, "poll C (opened after")["revents"]
    after = lab.counters(0)
    assert after["recoveries"] == before["recoveries"]      # an error, not a reset


def test_4_device_reset_is_reported_once_to_every_open_file_and_counted(lab):
    """fault-reset with 1000 bytes in the FIFO: every open fd shows POLLERR until its next
    read/write, which fails with EIO once; device_resets grows; the FIFO is empty after,
    an fd opened after sees no error, and I/O works."""
    before = lab.counters(0)
    job = lab.spawn(f"rm -f /tmp/rs.ready /tmp/rs.go; streamtest reset-once {DEV0} "
                    f"--ready /tmp/rs.ready --go /tmp/rs.go")
    lab.wait_for_guest_file("/tmp/rs.ready", job=job)
    lab.model_events()
    lab.model_qmp("fault-reset", {"device": 0})
    lab.model_event("DEVICE_RESET", timeout=10, device=0, initiator="device")
    wait_running(lab)
    lab.exec("touch /tmp/rs.go").check()
    res = lab.wait(job, 120)
    after = lab.counters(0)
    assert after["device_resets"] == before["device_resets"] + 1
    stdout = passed(res)
    assert "sigio POLL_ERR" in stdout
    assert "ERR" in fields(stdout, "poll A after the reset")["revents"]
    assert "ERR" in fields(stdout, "poll B after the reset")["revents"]
    assert "read A res=-1 EIO" in stdout
    assert "write B res=-1 EIO" in stdout
    assert "read C (non-blocking) res=-1 EAGAIN" in stdout


def test_4_a_read_failed_by_a_reset_was_its_files_report(lab):
    """A read blocked on fd R when the device resets fails with EIO; that was R's report
    (R's poll is clean, its next read does not fail); an idle fd sees POLLERR and EIO once."""
    before = lab.counters(0)
    job = lab.spawn(f"rm -f /tmp/rb.ready /tmp/rb.go; streamtest reset-blocked {DEV0} "
                    f"--ready /tmp/rb.ready --go /tmp/rb.go")
    lab.wait_for_guest_file("/tmp/rb.ready", job=job)
    lab.model_events()
    lab.model_qmp("fault-reset", {"device": 0})
    lab.model_event("DEVICE_RESET", timeout=10, device=0, initiator="device")
    wait_running(lab)
    lab.exec("touch /tmp/rb.go").check()
    res = lab.wait(job, 120)
    assert lab.counters(0)["device_resets"] == before["device_resets"] + 1
    assert "blocked read res=-1 EIO" in res.stdout, out(res)
    stdout = passed(res)
    assert "ERR" not in fields(stdout, "poll R after its read failed")["revents"]
    assert "read R again (non-blocking) res=-1 EAGAIN" in stdout
    assert "read B res=-1 EIO" in stdout


# ------------------------------------------------------------------ 5. ioctls


def test_5_fionread_depth_space_clear_enotty_efault(lab):
    depth = lab.counters(0)["fifo_depth"]
    res = st(lab, f"ioctl {DEV0}")
    assert "FIONREAD empty=0" in res.stdout, out(res)
    stdout = passed(res)
    assert "FIONREAD after 1234=1234" in stdout
    assert f"GET_DEPTH res=0 value={depth} sysfs={depth}" in stdout
    assert f"GET_SPACE res=0 value={depth - 1234} expected={depth - 1234}" in stdout
    assert "unknown _IO(0xF1,0x7f) res=-1 ENOTTY" in stdout
    assert "unknown _IOR('x',0x42) res=-1 ENOTTY" in stdout
    assert "GET_DEPTH bad pointer res=-1 EFAULT" in stdout
    assert "GET_SPACE bad pointer res=-1 EFAULT" in stdout
    assert "FIONREAD bad pointer res=-1 EFAULT" in stdout
    assert "CLEAR res=0" in stdout
    assert "FIONREAD after CLEAR=0" in stdout
    assert "non-blocking read after CLEAR res=-1 EAGAIN" in stdout


def test_5_fionread_counts_the_bytes_from_the_host(lab):
    n = 3333
    with lab.wire(1) as w:
        w.send(pattern(n))
        deadline = time.monotonic() + 10
        while lab.model_qmp("query-fifolab", {"device": 1})["fifo"]["rx_level"] < n:
            assert time.monotonic() < deadline, "the host's bytes did not reach the FIFO"
            time.sleep(0.05)
        stdout = passed(st(lab, f"fionread {DEV1} {n}"))
    assert f"FIONREAD held={n} res={n}" in stdout
    assert "FIONREAD after reading res=0" in stdout


def test_5_clear_ends_blocked_writer_blocked_reader_and_pending_libaio_read(lab):
    res = st(lab, f"clear-blocked {DEV0}")
    stdout = passed(res)
    assert "FIONREAD after the writer ended=0" in stdout
    assert re.search(r"^blocked write\(\) res=(-1 ECANCELED|\d+)$", stdout, re.M), stdout
    assert re.search(r"^blocked read\(\) res=(-1 ECANCELED|0)$", stdout, re.M), stdout
    assert re.search(r"^libaio read res=(-1 ECANCELED|0)$", stdout, re.M), stdout
    for what in ("libaio write", "io_uring write"):
        assert re.search(rf"^{what} res=(-1 ECANCELED|\d+)$", stdout, re.M), stdout
        assert f"FIONREAD after the {what} ended=0" in stdout


# ------------------------------------------------------------------ 6. lost wake-up


@pytest.mark.parametrize("how", ["poll", "epoll"])
@pytest.mark.parametrize("source", ["loop", "host"])
def test_6_waiter_wakes_although_the_data_avail_message_was_lost(lab, how, source):
    """A poll()/epoll_wait() on the empty FIFO with no request in flight; the model loses the
    next vector-0 message (fault-lost-irq), then bytes arrive -- written by another process
    (loop) or injected from the host (wired device): the waiter wakes within
    2 x completion_timeout_ms + 500 ms."""
    node, dev = (0, DEV0) if source == "loop" else (1, DEV1)
    n = 100
    cto = int(lab.exec("cat /sys/module/fifolab/parameters/completion_timeout_ms")
              .check().stdout)
    job = lab.spawn(f"rm -f /tmp/lw.ready /tmp/lw.go; streamtest lost-wake {dev} {how} "
                    f"{source} {n} --ready /tmp/lw.ready --go /tmp/lw.go")
    lab.wait_for_guest_file("/tmp/lw.ready", job=job)
    time.sleep(0.5)                 # the waiter is in its one poll()/epoll_wait()
    lab.model_events()
    lab.model_qmp("fault-lost-irq", {"device": node, "vector": 0, "count": 1})
    lab.exec("touch /tmp/lw.go").check()
    if source == "host":
        with lab.wire(1) as w:
            w.send(pattern(n))
            res = lab.wait(job, 60)
    else:
        res = lab.wait(job, 60)
    fired = lab.model_event("FAULT_FIRED", timeout=5, device=node, kind="lost-irq")
    assert fired["vector"] == 0
    line = fields(res.stdout, "lost-wake ")
    assert line.get("woke") == "yes", f"the waiter was never woken\n{out(res)}"
    assert float(line["woke_ms"]) <= 2 * cto + 500, out(res)
    passed(res)
    assert "IN" in line["revents"]


# ------------------------------------------------------------------ 7. PIPE_BUF


def test_7_nonblocking_write_of_at_most_pipe_buf_is_all_or_eagain(lab):
    depth = lab.counters(0)["fifo_depth"]
    res = st(lab, f"nonblock-atomic {DEV0}")
    assert "free=4095 nonblock write n=4096 res=-1 EAGAIN" in res.stdout, out(res)
    stdout = passed(res)
    assert "free=4095 nonblock write n=2000 res=2000" in stdout
    assert "free=2095 nonblock write n=2096 res=-1 EAGAIN" in stdout
    assert "free=2095 nonblock write n=2095 res=2095" in stdout
    assert "free=0 nonblock write n=1 res=-1 EAGAIN" in stdout
    assert "free=4095 nonblock writev n=4096 res=-1 EAGAIN" in stdout
    assert f"read back {depth} bytes in order" in stdout


def test_7_pollout_only_while_pipe_buf_bytes_are_free(lab):
    res = st(lab, f"pollout {DEV0}")
    stdout = passed(res)
    for free, writable in ((4096, True), (4095, False), (1, False), (0, False),
                           (4097, True)):
        rev = fields(stdout, f"free={free} ")["revents"]
        assert ("OUT" in rev.split("|")) == writable, (free, rev)


def test_7_pollout_waiter_sleeps_below_pipe_buf_free_and_wakes_at_it(lab):
    stdout = passed(st(lab, f"pollout-wake {DEV0}"))
    assert "free=4095 waiter=asleep" in stdout
    assert "free=4096 waiter=returned revents=OUT" in stdout


# ------------------------------------------------------------------ a FIFO smaller than PIPE_BUF

SMALL = 1024


@pytest.fixture(scope="module")
def small(kernel):
    """A lab whose FIFO (1 KiB) is smaller than PIPE_BUF: min(PIPE_BUF, depth) is the depth,
    every transfer takes many windows."""
    with Lab(LabConfig(devices=1, fifo_depth=SMALL, kernel=kernel)) as lab:
        yield lab
        lab.leak_check()


def test_small_fifo_pollout_only_when_empty_and_the_waiter_woken_then(small):
    stdout = passed(st(small, f"pollout {DEV0}"))
    assert "OUT" in fields(stdout, f"free={SMALL} ")["revents"].split("|")
    assert "OUT" not in fields(stdout, f"free={SMALL - 1} ")["revents"].split("|")
    stdout = passed(st(small, f"pollout-wake {DEV0}"))
    assert f"free={SMALL} waiter=returned revents=OUT" in stdout


@pytest.mark.parametrize("path", ["sync", "libaio", "uring"])
def test_small_fifo_1mib_write_completes_whole_and_reads_stay_within_the_depth(small, path):
    res = st(small, f"big-write {DEV0} {path} {1 << 20}")
    assert fields(res.stdout, "big-write ").get("res") == str(1 << 20), out(res)
    reader = fields(passed(res), "reader ")
    assert reader["bytes"] == str(1 << 20) and int(reader["max_read"]) <= SMALL


@pytest.mark.parametrize("path", ["sync", "libaio", "uring"])
@pytest.mark.parametrize("direction", ["write", "read"])
def test_small_fifo_1024_segment_request_moves_every_byte(small, path, direction):
    total = 211816 if direction == "write" else SMALL
    res = st(small, f"vec-many {DEV0} {path} {direction}")
    assert f"segments=1024 total={total} res={total}" in res.stdout, out(res)
    passed(res)


@pytest.mark.parametrize("mode", ["exec", "exit-closed", "fixed", "ring-close"])
def test_small_fifo_pending_io_uring_write_ends_within_1s(small, mode):
    res = st(small, f"uring-gone {DEV0} {mode}")
    took = re.search(r"^gone mode=\S+ took_ms=(\S+)", res.stdout, re.M)
    assert took and re.fullmatch(r"[\d.]+", took[1]) and float(took[1]) <= BOUND_MS, out(res)
    ended = fields(passed(res), "ended ")
    assert ended["late"] == "0" and int(ended["moved"]) <= SMALL
