"""QEMU's side of a lab: the command line (q35, PVH boot, shared guest RAM, one
ivshmem-doorbell per fifolab device on its own PCIe root port), the ids it gives each device --
the one home of those names, which hot-plug and the scenarios use -- and the process helpers
for QEMU and the model (both die with the harness).
"""

from __future__ import annotations

import ctypes
import dataclasses
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from images import build as images

if TYPE_CHECKING:                        # pragma: no cover
    from .lab import LabConfig

QEMU = "qemu-system-x86_64"
PR_SET_PDEATHSIG = 1


class PidProcess:
    """A process this harness did not start (a lab brought up by `fifolab up`): the subset
    of Popen that the lab uses, by pid.  A zombie counts as dead."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self.stdout = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                state = "X"
            if state in ("Z", "X"):
                self.returncode = -1
        return self.returncode


def die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclasses.dataclass(frozen=True)
class DeviceIds:
    """QEMU's ids of fifolab device N: its PCIe root port, the chardev of its ivshmem socket
    and the ivshmem-doorbell device itself (the id ``device_del`` takes)."""
    port: str
    chardev: str
    device: str


def device_ids(n: int) -> DeviceIds:
    """The ids of device N, as the command line (``qemu_command``) names them."""
    return DeviceIds(port=f"rp{n}", chardev=f"ivsh{n}", device=f"fifolab{n}")


def ivshmem_device(n: int) -> dict[str, Any]:
    """Device N's ivshmem-doorbell, as ``device_add`` takes it (``-device`` says the same)."""
    ids = device_ids(n)
    return {"driver": "ivshmem-doorbell", "id": ids.device, "chardev": ids.chardev,
            "vectors": 2, "bus": ids.port}


def ivshmem_chardev(n: int, sock: Path) -> dict[str, Any]:
    """Device N's chardev to the model's socket `sock`, as ``chardev-add`` takes it."""
    return {"id": device_ids(n).chardev, "backend": {"type": "socket", "data": {
        "addr": {"type": "unix", "data": {"path": str(sock)}}, "server": False}}}


def qemu_command(cfg: LabConfig, image: images.Image, run: Path, ram: Path,
                 model_sockets: list[Path]) -> list[str]:
    """The QEMU command line of a lab (q35, PVH boot, shared RAM, ivshmem on root ports)."""
    append = "console=ttyS0 quiet panic=-1 i8042.nokbd i8042.noaux"
    if not cfg.load_driver:
        append += " fifolab.noload"
    if cfg.shell:
        append += " fifolab.shell"
    if cfg.append:
        append += " " + cfg.append
    mem = f"{cfg.memory_mb}M"
    cmd = [
        QEMU, "-machine", f"q35,accel={cfg.accel},memory-backend=ram0",
        "-m", mem, "-smp", str(cfg.smp),
        "-object", f"memory-backend-file,id=ram0,size={mem},mem-path={ram},share=on",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(image.boot), "-initrd", str(image.initrd), "-append", append,
        "-chardev", f"socket,id=qmp,path={run / 'qmp.sock'},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-device", "virtio-serial-pci,id=vser0",
        "-chardev", f"socket,id=qga,path={run / 'qga.sock'},server=on,wait=off",
        "-device", "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
        # A second guest shell on /dev/hvc0, for `fifolab shell` into a lab that is up.
        "-chardev", f"socket,id=gsh,path={run / 'shell.sock'},server=on,wait=off",
        "-device", "virtconsole,chardev=gsh,name=fifolab.shell",
    ]
    if cfg.shell:
        cmd += ["-chardev", f"stdio,id=con,mux=on,signal=off,logfile={run / 'console.log'}",
                "-serial", "chardev:con", "-mon", "chardev=con,mode=readline"]
    else:
        cmd += ["-chardev", f"file,id=con,path={run / 'console.log'}", "-serial", "chardev:con"]
    for i, sock in enumerate(model_sockets):
        ids, dev = device_ids(i), ivshmem_device(i)
        cmd += ["-device", f"pcie-root-port,id={ids.port},chassis={i + 1},slot=0",
                "-chardev", f"socket,id={ids.chardev},path={sock}",
                "-device", ",".join([dev.pop("driver")] + [f"{k}={v}" for k, v in dev.items()])]
    return cmd
