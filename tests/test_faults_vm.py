"""End-to-end fault injection: the device model misbehaves on purpose (docs/faults.md) and the
real driver in a real VM must survive every fault with nothing lost (datasheet section 7).

Each test arms a fault on the model's monitor, drives the driver through its sync path (and,
where it matters, libaio) with the guest program `faulttest` (guest_driver/programs/), and
asserts the errno the caller got, the driver's sysfs counters, and that a checksummed loop
(`fifotest loop`) passes afterwards.  The harness fails any step whose guest kernel log shows a
BUG, WARNING, oops, lockdep or KASAN report.

One lab serves the module: device 0 loops back, device 1 is wired to a host socket.
"""

import time

import pytest

from harness.lab import Lab, LabConfig

pytestmark = pytest.mark.vm

DEV0 = "/dev/fifolab0"
DEV1 = "/dev/fifolab1"
SYS0 = "/sys/class/fifolab/fifolab0"
STALL_MS = 2000             # stall_timeout_ms for these tests (the default is 5000)

EIO = "err 5 EIO"
ENODEV = "err 19 ENODEV"
ETIMEDOUT = "err 110 ETIMEDOUT"


@pytest.fixture(scope="module")
def lab(kernel):
    with Lab(LabConfig(devices=2, wired=(1,), kernel=kernel)) as lab:
        lab.exec(f"echo {STALL_MS} > /sys/module/fifolab/parameters/stall_timeout_ms").check()
        yield lab
        lab.leak_check()


@pytest.fixture(autouse=True)
def clean_faults(lab):
    yield
    lab.clear_faults()


def pat(seed: int, i: int) -> int:
    """fifotest's / faulttest's pattern: byte i of stream `seed`."""
    x = ((i + (seed << 32)) * 0x9E3779B97F4A7C15) & (2**64 - 1)
    x ^= x >> 29
    return (x >> 32) & 0xFF


def ft(lab, args: str) -> str:
    res = lab.exec(f"faulttest {args}").check()
    return res.stdout.strip()


def loop_ok(lab, size: int = 200_000, dev: str = DEV0) -> None:
    """The checksummed loop: nothing lost, duplicated or reordered (FIFO empty at the end)."""
    res = lab.exec(f"fifotest loop {dev} {size}")
    assert res.returncode == 0 and res.stdout.startswith(f"ok {size} crc32="), \
        res.stdout + res.stderr


def counters(lab) -> dict[str, int]:
    return lab.counters(0)


def wait_pending(lab, device: int, queue: str, n: int, timeout: float = 10.0) -> None:
    """Until the model holds `n` pending requests on `queue` (so they are in flight)."""
    deadline = time.monotonic() + timeout
    while True:
        q = lab.model_qmp("query-fifolab", {"device": device})["queues"][queue]
        pending = q["pending"] if isinstance(q["pending"], int) else len(q["pending"])
        if pending >= n:
            return
        assert time.monotonic() < deadline, f"{n} {queue} requests never reached the device: {q}"
        time.sleep(0.05)


def wait_running(lab, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while lab.exec(f"cat {SYS0}/running").stdout.strip() != "1":
        assert time.monotonic() < deadline, "the driver did not recover the device"
        time.sleep(0.1)


def spawn_blocked_reads(lab):
    """A blocking read(2) and a libaio read on the empty FIFO of device 0, both in flight."""
    jobs = [lab.spawn(f"faulttest read {DEV0} 100"), lab.spawn(f"faulttest aread {DEV0} 100")]
    wait_pending(lab, 0, "rx", 2)
    return jobs


def results(lab, jobs, timeout: float = 20.0) -> list[str]:
    return [lab.wait(j, timeout).check().stdout.strip() for j in jobs]


# ------------------------------------------------------------------ errors


def test_dma_error_fails_request_with_eio_and_sigio_once(lab):
    before = counters(lab)
    sig = lab.spawn(f"rm -f /tmp/sigio-armed; faulttest sigio {DEV0} 2000 /tmp/sigio-armed")
    lab.wait_for_guest_file("/tmp/sigio-armed", job=sig)

    lab.model_qmp("fault-dma-error", {"device": 0, "queue": "tx"})
    assert ft(lab, f"write {DEV0} 100") == EIO
    lab.model_event("DMA_ERROR", device=0, queue="tx", injected=True)
    # reported once per open file: one opened after the error does not see it
    assert "ERR" not in ft(lab, f"poll {DEV0}").split()
    assert "sigio POLL_ERR" in lab.wait(sig, 20).check().stdout

    lab.model_qmp("fault-dma-error", {"device": 0, "queue": "rx"})
    assert ft(lab, f"aread {DEV0} 100") == EIO                 # async: ki_complete(-EIO)
    after = counters(lab)
    assert after["async_failed"] == before["async_failed"] + 1
    assert after["bad_completions"] == before["bad_completions"]
    loop_ok(lab)


# ------------------------------------------------------------------ interrupts


def test_lost_interrupt_is_recovered_by_completion_timeout(lab):
    before = counters(lab)
    lab.model_qmp("fault-lost-irq", {"device": 0, "count": 1})
    t = time.monotonic()
    assert ft(lab, f"write {DEV0} 100 7") == "ok 100"           # TX_DONE's message is lost
    took = time.monotonic() - t
    assert ft(lab, f"read {DEV0} 100 7") == "ok 100 pattern"   # exactly once, intact
    after = counters(lab)
    assert after["lost_irqs"] >= before["lost_irqs"] + 1
    # the watchdog runs every completion_timeout_ms (1000) while requests are in flight
    assert took < 5, f"the write took {took:.2f} s"

    # many lost messages during a transfer: nothing lost, nothing twice
    lab.model_qmp("fault-lost-irq", {"device": 0, "count": 0, "probability": 0.3, "seed": 5})
    loop_ok(lab, 300_000)
    lab.model_qmp("fault-clear", {"device": 0})
    loop_ok(lab)


def test_spurious_interrupts_are_harmless(lab):
    before = counters(lab)
    lab.model_qmp("fault-spurious-irq", {"device": 0, "vector": 0, "count": 5})
    lab.model_qmp("fault-spurious-irq", {"device": 0, "vector": 1, "count": 3,
                                         "when": "doorbell"})
    loop_ok(lab)
    after = counters(lab)
    assert after["spurious_irqs"] > before["spurious_irqs"]
    assert after["bad_completions"] == before["bad_completions"]
    assert after["recoveries"] == before["recoveries"]


# ------------------------------------------------------------------ resets and stalls


def test_device_initiated_reset_fails_inflight_with_eio_and_recovers(lab):
    before = counters(lab)
    jobs = spawn_blocked_reads(lab)
    lab.model_qmp("fault-reset", {"device": 0})
    assert results(lab, jobs) == [EIO, EIO]
    wait_running(lab)
    after = counters(lab)
    assert after["device_resets"] == before["device_resets"] + 1
    assert after["recoveries"] == before["recoveries"] + 1
    assert after["async_failed"] == before["async_failed"] + 1
    loop_ok(lab)

    # at the next doorbell, before it is handled: the write that rang it fails
    lab.model_qmp("fault-reset", {"device": 0, "when": "doorbell"})
    assert ft(lab, f"write {DEV0} 100") == EIO
    wait_running(lab)
    assert counters(lab)["recoveries"] == before["recoveries"] + 2
    loop_ok(lab)


def test_stall_fails_inflight_with_etimedout_then_recovers_on_resume(lab):
    before = counters(lab)
    jobs = spawn_blocked_reads(lab)
    lab.model_qmp("fault-stall", {"device": 0})
    t = time.monotonic()
    assert results(lab, jobs) == [ETIMEDOUT, ETIMEDOUT]
    took = time.monotonic() - t
    assert STALL_MS / 1000 <= took < STALL_MS / 1000 + 6, took
    mid = counters(lab)
    assert mid["stalls"] == before["stalls"] + 1
    assert mid["running"] == 0
    # still stalled: new requests fail at once, and poll says EPOLLERR while that lasts
    assert ft(lab, f"write {DEV0} 100") == EIO
    assert "ERR" in ft(lab, f"poll {DEV0}").split()

    lab.model_qmp("fault-resume", {"device": 0})
    lab.model_event("DEVICE_RESET", device=0, initiator="driver")
    wait_running(lab)
    assert counters(lab)["recoveries"] == before["recoveries"] + 1
    loop_ok(lab)


def test_slow_device_completes_late_but_correctly(lab):
    before = counters(lab)
    lab.model_qmp("fault-slow", {"device": 0, "queue": "any", "latency_us": 300_000,
                                 "count": 4})
    loop_ok(lab)
    after = counters(lab)
    assert after["stalls"] == before["stalls"]
    assert after["recoveries"] == before["recoveries"]


# ------------------------------------------------------------------ hostile completions


@pytest.mark.parametrize("kind", ["long", "unknown-id", "duplicate", "index"])
def test_hostile_completion_is_rejected_counted_and_device_reset(lab, kind):
    before = counters(lab)
    lab.model_qmp("fault-hostile", {"device": 0, "kind": kind, "queue": "tx"})
    assert ft(lab, f"write {DEV0} 100") == EIO
    wait_running(lab)
    after = counters(lab)
    assert after["bad_completions"] >= before["bad_completions"] + 1
    assert after["recoveries"] == before["recoveries"] + 1
    loop_ok(lab)


def test_hostile_long_read_never_returns_more_than_asked(lab):
    before = counters(lab)
    assert ft(lab, f"write {DEV0} 100") == "ok 100"
    lab.model_qmp("fault-hostile", {"device": 0, "kind": "long", "queue": "rx"})
    assert ft(lab, f"read {DEV0} 100") == EIO
    wait_running(lab)
    assert counters(lab)["bad_completions"] == before["bad_completions"] + 1
    loop_ok(lab)


# ------------------------------------------------------------------ data faults


def test_corrupted_data_is_caught_by_the_checksum_only(lab):
    """The device says OK: the driver cannot tell.  The end-to-end check can."""
    before = counters(lab)
    lab.model_qmp("fault-corrupt", {"device": 0, "queue": "tx", "bits": 4})
    res = lab.exec(f"fifotest loop {DEV0} 1000")
    assert res.returncode != 0 and "data read back" in res.stderr, res.stdout + res.stderr
    assert lab.model_event("FAULT_FIRED", device=0, kind="corrupt")["bits"]
    assert counters(lab)["bad_completions"] == before["bad_completions"]
    loop_ok(lab)


def test_host_flood_loses_nothing(lab):
    n = 300_000
    lab.model_qmp("fault-flood", {"device": 1, "bytes": n, "pattern": "counter"})
    assert ft(lab, f"counter {DEV1} {n}") == f"ok {n}"
    lab.model_event("FLOOD_DONE", device=1, accepted=n)


# ------------------------------------------------------------------ the VM itself


def test_stop_cont_with_io_pending_completes_after_cont(lab):
    data = bytes(pat(1, i) for i in range(100))
    job = lab.spawn(f"faulttest read {DEV1} 100")
    wait_pending(lab, 1, "rx", 1)
    lab.qmp("stop")
    try:
        with lab.wire(1) as w:
            w.send(data)            # DMA and the MSI-X message while the guest is stopped
            time.sleep(0.5)
    finally:
        lab.qmp("cont")
    assert results(lab, [job]) == ["ok 100 pattern"]

    big = lab.spawn(f"fifotest loop {DEV0} 1000000")
    time.sleep(0.3)
    lab.qmp("stop")
    time.sleep(1.0)
    lab.qmp("cont")
    res = lab.wait(big, 60)
    assert res.returncode == 0 and res.stdout.startswith("ok 1000000"), res.stdout + res.stderr


def test_rmmod_is_refused_while_a_file_is_open(lab):
    job = lab.spawn(f"rm -f /tmp/held1; faulttest hold {DEV1} /tmp/held1")
    lab.wait_for_guest_file("/tmp/held1", job=job)
    res = lab.exec("rmmod fifolab 2>&1")        # busybox: O_NONBLOCK, so EAGAIN, not EBUSY
    assert res.returncode != 0, res.stdout
    assert lab.exec("grep -q '^fifolab ' /proc/modules").returncode == 0
    with lab.wire(1) as w:
        w.send(bytes(128))          # both of hold's reads (64 bytes each) are served
        out = results(lab, [job])[0].splitlines()
    assert out[:2] == ["first ok 64", "second ok 64"], out
    assert out[-1] == "closed 0"


def _peripherals(lab) -> list[str]:
    return [p["name"] for p in lab.qmp("qom-list", {"path": "/machine/peripheral"})]


def test_hot_unplug_with_requests_in_flight_then_replug(lab, kernel):
    """device_del fails what is in flight with ENODEV, open files get ENODEV and EPOLLHUP and
    close cleanly; device_add (after a fresh chardev: the ivshmem protocol starts over) binds a
    new, working /dev/fifolab0.

    QEMU 7.2's q35 hot-plugs on root ports through ACPI (acpiphp), not native pciehp: the
    guest kernel needs CONFIG_HOTPLUG_PCI_ACPI (Debian's has it; images/debug.config sets it),
    else device_del never completes."""
    if lab.exec("test -d /sys/module/acpiphp").returncode != 0:
        pytest.skip(f"the {kernel} kernel has no ACPI PCI hotplug (CONFIG_HOTPLUG_PCI_ACPI)")
    hold = lab.spawn("rm -f /tmp/held0; faulttest hold /dev/fifolab0 /tmp/held0")
    lab.wait_for_guest_file("/tmp/held0", job=hold)
    aio = lab.spawn(f"faulttest aread {DEV0} 100")
    wait_pending(lab, 0, "rx", 2)

    lab.qmp("device_del", {"id": "fifolab0"})
    deadline = time.monotonic() + 30
    while "fifolab0" in _peripherals(lab):        # DEVICE_DELETED
        assert time.monotonic() < deadline, "fifolab0 was not deleted"
        time.sleep(0.1)
    assert results(lab, [hold])[0].splitlines() == [
        f"first {ENODEV}", f"second {ENODEV}", "revents HUP", "closed 0"]
    assert results(lab, [aio]) == [ENODEV]
    assert lab.exec(f"test -e {DEV0}").returncode != 0

    # QEMU reads the ivshmem greeting synchronously in realize: reusing the old, connected
    # chardev would block QEMU for good.  A new connection makes the model power on afresh.
    lab.qmp("chardev-remove", {"id": "ivsh0"})
    lab.qmp("chardev-add", {"id": "ivsh0", "backend": {"type": "socket", "data": {
        "addr": {"type": "unix", "data": {"path": str(lab.run_dir / "model0.sock")}},
        "server": False}}})
    lab.qmp("device_add", {"driver": "ivshmem-doorbell", "id": "fifolab0", "chardev": "ivsh0",
                           "vectors": 2, "bus": "rp0"})
    deadline = time.monotonic() + 30
    while lab.exec(f"test -e {DEV0} && test -e {SYS0}/running").returncode != 0:
        assert time.monotonic() < deadline, "/dev/fifolab0 did not come back"
        time.sleep(0.1)
    assert counters(lab)["recoveries"] == 0      # a new device: fresh counters
    loop_ok(lab)
    assert ft(lab, f"write {DEV0} 100 3") == "ok 100"
    assert ft(lab, f"read {DEV0} 100 3") == "ok 100 pattern"
