"""End-to-end: a real QEMU, Debian's kernel, the real driver and the device model.

One lab (two devices) serves the module; each of harness.checks.CHECKS is a test, so
`fifolab check` and the suite run the same checks.
"""

import pytest

from harness.checks import CHECKS, lab_config, run_check
from harness.lab import Lab

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def lab(kernel):
    with Lab(lab_config(kernel=kernel)) as lab:
        yield lab
        lab.leak_check()


@pytest.mark.parametrize("check", CHECKS, ids=[c.name for c in CHECKS])
def test_check(lab, check):
    out = run_check(lab, check)
    assert out.ok, out.detail


def test_exit_status_and_stderr(lab):
    res = lab.exec("echo out; echo err >&2; exit 7")
    assert (res.returncode, res.stdout, res.stderr) == (7, "out\n", "err\n")


def test_put_keeps_content_and_mode(lab, tmp_path):
    f = tmp_path / "script.sh"
    f.write_text("#!/bin/sh\necho put-ok $1\n")
    f.chmod(0o750)
    guest = lab.put(f)
    assert guest == "/tmp/script.sh"
    res = lab.exec(f"stat -c %a {guest}; {guest} x").check()
    assert res.stdout == "750\nput-ok x\n"
    big = tmp_path / "big.bin"
    data = bytes(range(256)) * 8192 + b"tail"
    big.write_bytes(data)
    lab.put(big, "/root/deep/big.bin")
    res = lab.exec("wc -c < /root/deep/big.bin; md5sum /root/deep/big.bin").check()
    import hashlib
    assert res.stdout.split()[:2] == [str(len(data)), hashlib.md5(data).hexdigest()]


def _delta(after, before, *names):
    # a counter that disappeared is an error (KeyError), never a silent 0
    return {n: after[n] - before[n] for n in names}


ASYNC = ("async_submitted", "async_completed", "async_cancelled", "async_failed")


def test_libaio_read_completes_from_the_interrupt_path_only_after_host_data(lab):
    """io_submit returns at once on an empty FIFO, nothing completes while it is empty, and
    the counters show the request submitted, pending, then completed by the driver's
    interrupt path once the harness injects bytes from the host side."""
    from harness.checks import DEVW, WIRED, pattern
    n = 4000
    before = lab.counters(WIRED)
    job = lab.spawn(f"libaio_test {DEVW} pending --external {n} --ready /tmp/aio.ready")
    lab.wait_for_guest_file("/tmp/aio.ready", job=job)
    pending = lab.counters(WIRED)
    assert _delta(pending, before, *ASYNC) == {
        "async_submitted": 1, "async_completed": 0, "async_cancelled": 0, "async_failed": 0}
    with lab.wire(WIRED) as wire:
        wire.send(pattern(n))
        res = lab.wait(job)
    assert res.returncode == 0, res.stdout + res.stderr
    done = lab.counters(WIRED)
    assert _delta(done, before, *ASYNC) == {
        "async_submitted": 1, "async_completed": 1, "async_cancelled": 0, "async_failed": 0}
    assert done["rx_bytes"] - before["rx_bytes"] == n
    assert done["irqs"] > pending["irqs"]


def test_sigio_for_host_data_is_sent_by_the_driver(lab):
    from harness.checks import DEVW, WIRED, pattern
    before = lab.counters(WIRED)
    job = lab.spawn(f"fasync_demo siginfo {DEVW} --external 1000 --ready /tmp/sig.ready")
    lab.wait_for_guest_file("/tmp/sig.ready", job=job)
    with lab.wire(WIRED) as wire:
        wire.send(pattern(1000))
        res = lab.wait(job)
    assert res.returncode == 0, res.stdout + res.stderr
    assert lab.counters(WIRED)["sigio_sent"] > before["sigio_sent"]


def test_posix_aio_never_reaches_the_async_path(lab):
    """glibc's POSIX AIO is threads doing read(): synchronous kiocbs in the driver."""
    before = lab.counters(0)
    res = lab.exec("posix_aio /dev/fifolab0 basic")
    assert res.returncode == 0, res.stderr
    after = lab.counters(0)
    assert _delta(after, before, "async_submitted")["async_submitted"] == 0
    assert after["rx_bytes"] > before["rx_bytes"]


def test_io_uring_and_libaio_use_the_async_path(lab):
    before = lab.counters(0)
    assert lab.exec("libaio_test /dev/fifolab0 basic").returncode == 0
    mid = lab.counters(0)
    assert mid["async_submitted"] - before["async_submitted"] >= 8
    assert mid["async_completed"] - before["async_completed"] >= 8
    assert lab.exec("uring_test /dev/fifolab0 basic").returncode == 0
    after = lab.counters(0)
    assert after["async_completed"] > mid["async_completed"]
