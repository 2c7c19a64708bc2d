"""The end-to-end checks that ``fifolab check`` runs in a booted lab.

Each check is a guest shell command that exits 0 on success; the guest programs
(``fifotest``) assert on data, byte counts and errno values themselves.  The pytest suite
(tests/test_e2e.py) runs the same list, one test each, so the two never drift apart.
"""

from __future__ import annotations

import dataclasses

DEV0 = "/dev/fifolab0"
DEV1 = "/dev/fifolab1"


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    cmd: str
    devices: int = 1          # devices the lab needs for this check
    expect: str | None = None  # text stdout must contain


def _loop(size: int, offset: int = 0) -> Check:
    return Check(f"loopback {size} B @+{offset}", f"fifotest loop {DEV0} {size} {offset}",
                 expect=f"ok {size}")


CHECKS: list[Check] = [
    Check("driver binds", f"test -c {DEV0} && grep -q '^fifolab ' /proc/modules "
                          f"&& ls /sys/class/fifolab/"),
    Check("hello through the FIFO",
          f"printf hello > {DEV0} && dd if={DEV0} bs=5 count=1 2>/dev/null", expect="hello"),
    _loop(1),
    _loop(4095, 1),
    _loop(4096),
    _loop(10000, 4000),
    _loop(65536, 7),
    _loop(200000, 4095),
    _loop(1 << 20, 123),
    Check("non-blocking read of an empty FIFO: EAGAIN", f"fifotest nonblock-empty {DEV0}"),
    Check("blocked reader woken by another process's write", f"fifotest wake {DEV0}"),
    Check("signal interrupts a blocked read", f"fifotest signal {DEV0}"),
    Check("bad user pointers: EFAULT", f"fifotest efault {DEV0}"),
    Check("two devices, two independent nodes", f"fifotest two {DEV0} {DEV1}", devices=2),
    Check("rmmod, insmod, works again",
          f"rmmod fifolab && test ! -e {DEV0} && insmod /lib/modules/fifolab.ko "
          f"&& fifotest loop {DEV0} 100000 3", devices=1, expect="ok 100000"),
]
