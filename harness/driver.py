"""What the harness knows of the driver inside the guest: its module file, its /dev nodes and
sysfs directory, how to load it with parameters and wait until its nodes exist, how to read its
counters.  The one home for those paths and shell loops: checks, scenarios, the soak, the
hostile guest and ``fifolab reload`` build their guest commands from here.

The ``*_sh`` functions return guest shell text (for commands that combine them with more
shell); ``GuestDriver`` runs them in a lab.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:                        # pragma: no cover
    from .lab import Lab

MODULE = "fifolab"
GUEST_KO = "/lib/modules/fifolab.ko"     # what the guest's init loads at boot


def node(n: int = 0) -> str:
    """Device ``n``'s character device."""
    return f"/dev/fifolab{n}"


def sysfs(n: int = 0) -> str:
    """Device ``n``'s sysfs directory (its counters and state)."""
    return f"/sys/class/fifolab/fifolab{n}"


def modparams(params: Mapping[str, object] | str = "") -> str:
    """Module parameters as insmod takes them."""
    if isinstance(params, str):
        return params
    return " ".join(f"{k}={shlex.quote(str(v))}" for k, v in params.items())


def wait_nodes_sh(devices: Iterable[int] = (0,), seconds: float = 5.0) -> str:
    """Guest shell: exit 0 as soon as every device's node exists, 1 after ``seconds``."""
    test = " && ".join(f"[ -c {node(n)} ]" for n in devices) or "true"
    return (f"for i in $(seq {max(1, int(seconds * 20))}); do {test} && exit 0; sleep 0.05; "
            f"done; exit 1")


def reload_sh(params: Mapping[str, object] | str = "", devices: Iterable[int] = (0,),
              ko: str = GUEST_KO, seconds: float = 5.0) -> str:
    """Guest shell: unload the driver (if loaded), load ``ko`` with ``params`` and wait for the
    devices' nodes (exit 0), or exit 1.  A reload resets the device, its FIFOs, sticky errors
    and counters."""
    return (f"rmmod {MODULE} 2>/dev/null; insmod {ko} {modparams(params)} && "
            f"{{ {wait_nodes_sh(devices, seconds)}; }}")


def loop_when_running_sh(n: int = 0) -> str:
    """Guest shell: wait up to 10 s for device ``n``'s driver to be running again (a recovery
    is asynchronous; a missing attribute counts as running), then a checksummed 100000-byte
    loopback through its node, which prints ``ok 100000``."""
    running = f"{sysfs(n)}/running"
    return (f"for i in $(seq 200); do [ \"$(cat {running} 2>/dev/null || echo 1)\" = 1 ] && "
            f"break; sleep 0.05; done; fifotest loop {node(n)} 100000 7")


def parse_counters(text: str) -> dict[str, int]:
    """``grep -s . DIR/*`` output (``path:value`` lines) as {attribute: value}; text
    attributes are left out."""
    out = {}
    for line in text.splitlines():
        path, _, value = line.partition(":")
        with contextlib.suppress(ValueError):
            out[path.rsplit("/", 1)[-1]] = int(value.strip())
    return out


class GuestDriver:
    """The driver in one lab's guest."""

    def __init__(self, lab: Lab):
        self.lab = lab

    def reload(self, params: Mapping[str, object] | str = "",
               devices: Iterable[int] | None = None, timeout: float = 30.0) -> None:
        """Reload the driver with ``params`` and wait until every device's node is back."""
        devices = range(self.lab.cfg.devices) if devices is None else devices
        self.lab.exec(reload_sh(params, devices), timeout=timeout).check()

    def wait_nodes(self, devices: Iterable[int] = (0,), timeout: float = 5.0) -> None:
        """Wait until the devices' nodes exist (after a probe, a rebind, a hot-plug)."""
        self.lab.exec(wait_nodes_sh(devices, timeout), timeout=timeout + 5).check()

    def counters(self, n: int = 0) -> dict[str, int]:
        """Device ``n``'s sysfs counters, by name."""
        res = self.lab.exec(f"grep -s . {sysfs(n)}/*", check_log=False)
        return parse_counters(res.stdout)
