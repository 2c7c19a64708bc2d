"""Regression tests for the driver fixes of the stream-semantics work (GitHub issue 11), each
of which failed before its fix.  The oracles are the kernel's own counters: a thread's
voluntary context switches (/proc/.../status), the pins the kernel has handed out and taken
back (/proc/vmstat nr_foll_pin_acquired/released), and kmemleak on the debug kernel.

- wake-ups carry their events: an epoll waiter for EPOLLIN is not woken by the write side;
- the async timeout is brought forward (mod_delayed_work) when a request with an earlier
  deadline arrives, not left at the earlier, later one (queue_delayed_work);
- a stalled device that is then removed gives every pinned page back, and leaks no request.
"""

import time

import pytest

from harness.checks import PINS_SH
from harness.lab import Lab, LabConfig

pytestmark = pytest.mark.vm

DEV0 = "/dev/fifolab0"
DEV1 = "/dev/fifolab1"          # wired
PARAMS = "/sys/module/fifolab/parameters"
ETIMEDOUT = "err 110 ETIMEDOUT"


@pytest.fixture(scope="module")
def lab(kernel):
    with Lab(LabConfig(devices=2, wired=(1,), kernel=kernel)) as lab:
        yield lab
        lab.leak_check()


def test_epoll_waiter_is_not_woken_by_events_it_did_not_ask_for(lab):
    with lab.wire(1) as wire:
        res = lab.exec(f"poll_test {DEV1} keys").check()
        assert res.stdout.startswith("ok keys:"), res.stdout + res.stderr
        got = wire.recv_exactly(1 + 14 * 4096)     # what the guest wrote, to the last byte
    assert len(got) == 1 + 14 * 4096
    # and the loopback device says why it cannot run the check
    assert lab.exec(f"poll_test {DEV0} keys").check().stdout.startswith("skip keys:")


def test_async_timeout_is_brought_forward_by_an_earlier_deadline(lab):
    lab.exec(f"echo 20000 > {PARAMS}/async_timeout_ms").check()
    try:
        late = lab.spawn(f"faulttest aread {DEV0} 100")       # deadline in 20 s
        time.sleep(1.0)
        lab.exec(f"echo 300 > {PARAMS}/async_timeout_ms").check()
        t = time.monotonic()
        early = lab.exec(f"faulttest aread {DEV0} 100", timeout=30).check()   # in 0.3 s
        took = time.monotonic() - t
        assert early.stdout.strip() == ETIMEDOUT
        # the timeout work was due in 19 s; it must run at the new deadline instead
        assert took < 5, f"a 300 ms async timeout took {took:.1f} s"
        assert lab.wait(late, 40).check().stdout.strip() == ETIMEDOUT
    finally:
        lab.exec(f"echo 0 > {PARAMS}/async_timeout_ms").check()


def _pins(lab) -> int:
    """Pages pinned right now (FOLL_PIN), as the kernel counts them (stat_refresh first: the
    per-CPU deltas are folded into /proc/vmstat only now and then)."""
    return int(lab.exec(f"{PINS_SH}; p").check().stdout)


def _rx_pending(lab) -> int:
    pending = lab.model_qmp("query-fifolab", {"device": 0})["queues"]["rx"]["pending"]
    return pending if isinstance(pending, int) else len(pending)


def test_stalled_then_removed_device_gives_every_page_back(kernel):
    with Lab(LabConfig(devices=1, kernel=kernel)) as lab:
        if lab.exec("test -d /sys/module/acpiphp").returncode != 0:
            pytest.skip(f"the {kernel} kernel has no ACPI PCI hotplug")
        lab.exec(f"echo 1000 > {PARAMS}/stall_timeout_ms; "
                 f"echo 250 > {PARAMS}/completion_timeout_ms").check()
        before = _pins(lab)
        jobs = [lab.spawn(f"faulttest read {DEV0} 100"),
                lab.spawn(f"faulttest aread {DEV0} 100")]
        deadline = time.monotonic() + 10
        while _rx_pending(lab) < 2:
            assert time.monotonic() < deadline, "the reads never reached the device"
            time.sleep(0.05)
        lab.model_qmp("fault-stall", {"device": 0})
        assert [lab.wait(j, 30).check().stdout.strip() for j in jobs] == [ETIMEDOUT] * 2
        # the callers were answered; the stalled device still holds their pages
        assert _pins(lab) > before

        lab.qmp("device_del", {"id": "fifolab0"})
        deadline = time.monotonic() + 30
        while any(p["name"] == "fifolab0" for p in
                  lab.qmp("qom-list", {"path": "/machine/peripheral"})):
            assert time.monotonic() < deadline, "fifolab0 was not deleted"
            time.sleep(0.1)
        # bus mastering is off: every page goes back, and no request is left (kmemleak)
        deadline = time.monotonic() + 10
        while _pins(lab) != before:
            assert time.monotonic() < deadline, f"{_pins(lab) - before} pages stay pinned"
            time.sleep(0.2)
        lab.leak_check()
