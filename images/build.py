"""Build the guest: Debian's kernel, the fifolab module, the guest programs, an initramfs.

Everything lands in a cache directory outside the clone (``$FIFOLAB_CACHE``, else
``$XDG_CACHE_HOME/fifolab``, else ``~/.cache/fifolab``), each artefact under a key made from
the content of its inputs, so a rebuild with nothing changed only hashes a few source files, and
a changed driver source rebuilds the module and the initramfs, nothing else::

    kernel/<abi>/vmlinux, modules/   Debian's linux-image of exactly the headers' ABI
    driver/<abi>-<hash>/fifolab.ko   kbuild against /usr/src/linux-headers-<abi>
    programs/<hash>/                 guest C programs, statically linked
    initramfs/<hash>.cpio            busybox + init + qemu-ga + all of the above

The kernel is booted uncompressed through its PVH entry (``-kernel vmlinux``): under TCG,
decompressing Debian's XZ bzImage costs more than half the boot.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import lzma
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger("fifolab.images")

REPO = Path(__file__).resolve().parents[1]
DRIVER_SRC = REPO / "guest_driver"
PROGRAMS_SRC = REPO / "guest_driver" / "programs"
UAPI_HEADER = REPO / "guest_driver" / "include" / "uapi" / "fifolab.h"
INIT_SCRIPT = Path(__file__).resolve().parent / "init.sh"

# Kernel modules the guest needs from Debian's image (dependencies are added).
GUEST_MODULES = ("virtio_pci", "virtio_console")

MOTD = """\
fifolab guest shell. The driver is loaded: /dev/fifolab*, counters under
/sys/class/fifolab/. Guest programs are in /usr/local/bin (fifotest ...).
Leave with `poweroff -f` (or Ctrl-a x).
"""


class MissingPrerequisite(RuntimeError):
    """A host package is missing; the message says which and how to install it."""

    def __init__(self, what: str, package: str):
        super().__init__(
            f"{what} is missing. Install it with:\n"
            f"    sudo apt-get install -y {package}\n"
            f"(or run ./scripts/setup, which installs every prerequisite)")


class BuildError(RuntimeError):
    """A build step failed; the message carries the tool's own output."""


def cache_dir() -> Path:
    base = os.environ.get("FIFOLAB_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "fifolab"


def _run(cmd: list[str], what: str, cwd: Path | None = None,
         env: dict | None = None) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise BuildError(f"{what}: {cmd[0]} not found") from err
    if proc.returncode != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n"
                         f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def _hash_paths(paths: list[Path], *extra: str) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.name).encode() + b"\0")
        h.update(p.read_bytes())
    for e in extra:
        h.update(e.encode() + b"\0")
    return h.hexdigest()[:16]


def _source_files(d: Path, recursive: bool) -> list[Path]:
    pat = "**/*" if recursive else "*"
    return [p for p in d.glob(pat) if p.is_file()
            and (p.suffix in (".c", ".h") or p.name in ("Makefile", "Kbuild"))]


@dataclasses.dataclass(frozen=True)
class Kernel:
    abi: str            # e.g. 6.1.0-56-amd64
    version: str        # Debian package version, e.g. 6.1.192-2
    boot: Path          # what QEMU's -kernel boots (vmlinux via PVH, or a bzImage)
    modules: Path       # directory of the .ko files the guest needs
    kbuild: Path        # tree to build external modules against


@dataclasses.dataclass(frozen=True)
class Image:
    kernel: Kernel
    initrd: Path
    driver: Path
    programs: Path

    @property
    def boot(self) -> Path:
        return self.kernel.boot


# ---------------------------------------------------------------- prerequisites

def _dpkg_field(package: str, field: str) -> str | None:
    proc = subprocess.run(["dpkg-query", "-W", "-f", "${" + field + "}", package],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def require_host_tools() -> None:
    checks = [
        ("qemu-system-x86_64", "qemu-system-x86_64", "qemu-system-x86"),
        ("busybox (static)", "/bin/busybox", "busybox-static"),
        ("gcc", "gcc", "gcc"),
        ("make", "make", "make"),
        ("qemu-ga", "/usr/sbin/qemu-ga", "qemu-guest-agent"),
        ("dpkg-deb", "dpkg-deb", "dpkg"),
    ]
    for what, exe, pkg in checks:
        if not (shutil.which(exe) or Path(exe).exists()):
            raise MissingPrerequisite(what, pkg)
    if _dpkg_field("busybox-static", "Status") != "install ok installed":
        raise MissingPrerequisite("busybox-static (a statically linked busybox)",
                                  "busybox-static")
    for lib, pkg in (("/usr/lib/x86_64-linux-gnu/libaio.a", "libaio-dev"),
                     ("/usr/lib/x86_64-linux-gnu/liburing.a", "liburing-dev")):
        if not Path(lib).exists():
            raise MissingPrerequisite(lib, pkg)


def headers_abi() -> tuple[str, str]:
    """(abi, package version) of the kernel that linux-headers-amd64 provides."""
    deps = _dpkg_field("linux-headers-amd64", "Depends")
    if not deps:
        raise MissingPrerequisite("linux-headers-amd64", "linux-headers-amd64")
    m = re.search(r"linux-headers-(\d[^\s,(]*-amd64)\s*\(=\s*([^)\s]+)\)", deps)
    if not m:
        m2 = re.search(r"linux-headers-(\d[^\s,(]*-amd64)", deps)
        if not m2:
            raise BuildError(f"cannot read the kernel ABI from linux-headers-amd64's "
                             f"dependencies: {deps!r}")
        abi = m2.group(1)
        version = _dpkg_field(f"linux-headers-{abi}", "Version") or ""
    else:
        abi, version = m.group(1), m.group(2)
    if not Path(f"/usr/src/linux-headers-{abi}/Makefile").exists():
        raise MissingPrerequisite(f"linux-headers-{abi}", f"linux-headers-{abi}")
    return abi, version


# ---------------------------------------------------------------- kernel

def _modinfo_depends(ko: Path) -> list[str]:
    data = ko.read_bytes()
    m = re.search(rb"depends=([^\0]*)\0", data)
    return [d for d in m.group(1).decode().split(",") if d] if m else []


def _extract_vmlinux(bzimage: Path, out: Path) -> None:
    data = bzimage.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")
    if start < 0:
        raise BuildError(f"{bzimage}: no XZ stream inside; cannot extract vmlinux")
    elf = lzma.LZMADecompressor().decompress(data[start:])
    if elf[:4] != b"\x7fELF":
        raise BuildError(f"{bzimage}: the XZ stream is not an ELF kernel")
    out.write_bytes(elf)


def fetch_kernel() -> Kernel:
    """Debian's linux-image matching the installed headers, extracted once."""
    abi, version = headers_abi()
    kbuild = Path(f"/usr/src/linux-headers-{abi}")
    dest = cache_dir() / "kernel" / f"{abi}_{version}"
    if (dest / "vmlinux").exists() and (dest / "modules").is_dir():
        return Kernel(abi, version, dest / "vmlinux", dest / "modules", kbuild)
    log.info("fetching linux-image-%s (%s)", abi, version)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        tmpd = Path(tmp)
        pkg = f"linux-image-{abi}"
        proc = subprocess.run(["apt-get", "download", f"{pkg}={version}"], cwd=tmpd,
                              capture_output=True, text=True)
        debs = list(tmpd.glob("*.deb"))
        if proc.returncode != 0 or not debs:
            raise BuildError(
                f"could not download {pkg}={version} (the kernel matching the installed "
                f"linux-headers-amd64):\n{proc.stderr.strip()}\n"
                f"Run `sudo apt-get update` and try again; the headers and the image must "
                f"be of the same version.")
        root = tmpd / "root"
        _run(["dpkg-deb", "-x", str(debs[0]), str(root)], f"unpacking {debs[0].name}")
        stage = tmpd / "stage"
        (stage / "modules").mkdir(parents=True)
        _extract_vmlinux(root / "boot" / f"vmlinuz-{abi}", stage / "vmlinux")
        shutil.copy2(root / "boot" / f"config-{abi}", stage / "config")
        kos = {p.stem: p for p in (root / "lib" / "modules" / abi).rglob("*.ko")}
        order: list[str] = []

        def want(name: str) -> None:
            if name in order:
                return
            if name not in kos:
                raise BuildError(f"module {name} is not in {pkg}")
            for dep in _modinfo_depends(kos[name]):
                want(dep)
            order.append(name)

        for name in GUEST_MODULES:
            want(name)
        for name in order:
            shutil.copy2(kos[name], stage / "modules" / f"{name}.ko")
        (stage / "modules" / "order").write_text("\n".join(order) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(stage, dest)
    return Kernel(abi, version, dest / "vmlinux", dest / "modules", kbuild)


# ---------------------------------------------------------------- driver, programs

def build_driver(kernel: Kernel, src: Path = DRIVER_SRC) -> Path:
    """The module built from `src` (fifolab.ko for guest_driver/, or whatever a developer's own
    Kbuild names) for `kernel`; rebuilt only when a source under `src` changed."""
    files = _source_files(src, recursive=False)
    key = _hash_paths(files + [DRIVER_SRC / "fifolab_hw.h", UAPI_HEADER],
                      kernel.abi, kernel.version)
    dest = cache_dir() / "driver" / f"{kernel.abi}-{key}"
    if dest.is_dir():
        built = sorted(dest.glob("*.ko"))
        if built:
            return built[0]
    log.info("building %s against %s", src, kernel.kbuild)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        bdir = Path(tmp) / "src"
        bdir.mkdir()
        for f in files:
            shutil.copy2(f, bdir / f.name)
        if not (bdir / "fifolab_hw.h").exists():
            # A driver of your own gets the device's register map too.
            shutil.copy2(DRIVER_SRC / "fifolab_hw.h", bdir / "fifolab_hw.h")
        _copy_uapi(bdir)
        try:
            # one job per CPU: the module is several compilation units (docs/driver.md)
            out = _run(["make", "-C", str(kernel.kbuild), f"M={bdir}", "W=1",
                        f"-j{os.cpu_count() or 1}", "modules"],
                       "building the driver (kbuild)")
        except BuildError as err:
            # Point the compiler's file:line messages at the sources, not the scratch copy.
            raise BuildError(str(err).replace(f"{bdir}/", f"{src}/")) from None
        kos = sorted(bdir.glob("*.ko"))
        if len(kos) != 1:
            raise BuildError(f"kbuild should produce exactly one module in {src}, "
                             f"made {[k.name for k in kos]}:\n{out}")
        built = kos[0]
        warnings = [ln for ln in out.splitlines() if "warning:" in ln]
        stage = Path(tmp) / "out"
        stage.mkdir()
        shutil.copy2(built, stage / built.name)
        (stage / "build.log").write_text(out)
        if warnings:
            log.warning("driver build warnings:\n%s", "\n".join(warnings))
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(stage, dest)
    return dest / built.name


def _copy_uapi(root: Path) -> None:
    """The uapi header (ioctl numbers) where a build under `root` finds it: include/uapi/."""
    (root / "include" / "uapi").mkdir(parents=True, exist_ok=True)
    shutil.copy2(UAPI_HEADER, root / "include" / "uapi" / UAPI_HEADER.name)


def build_programs(src: Path = PROGRAMS_SRC) -> Path:
    """The guest C programs, statically linked, in a directory of their own."""
    files = _source_files(src, recursive=True) + [UAPI_HEADER, DRIVER_SRC / "fifolab_hw.h"]
    key = _hash_paths(files)
    dest = cache_dir() / "programs" / key
    if (dest / ".done").exists():
        return dest
    log.info("building the guest programs")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        stage = Path(tmp) / "out"
        stage.mkdir()
        bdir = Path(tmp) / "src"
        shutil.copytree(src, bdir)
        _copy_uapi(bdir.parent)     # programs include ../include/uapi/fifolab.h
        # hostile.c drives the device itself: ../fifolab_hw.h, the register map
        shutil.copy2(DRIVER_SRC / "fifolab_hw.h", bdir.parent / "fifolab_hw.h")
        _run(["make", "-C", str(bdir), f"OUT={stage}"], "building the guest programs")
        (stage / ".done").write_text("")
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(stage, dest)
    return dest


# ---------------------------------------------------------------- initramfs

def _qga_files() -> list[tuple[Path, str]]:
    """qemu-ga and the shared libraries it needs, as (host path, guest path)."""
    qga = Path("/usr/sbin/qemu-ga")
    out = _run(["ldd", str(qga)], "listing qemu-ga's libraries")
    files = [(qga, "/usr/sbin/qemu-ga")]
    for line in out.splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            # Copied by content to the path the loader asks for: no symlinks to chase.
            files.append((Path(m.group(1)), m.group(1)))
    return files


class Cpio:
    """A newc-format cpio archive written in memory (what the kernel unpacks)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1
        self._dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        name = name.lstrip("/")
        fields = [self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        self._ino += 1
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        rec = hdr + name.encode() + b"\0"
        rec += b"\0" * (-len(rec) % 4)
        rec += data + b"\0" * (-len(data) % 4)
        self._parts.append(rec)

    def dir(self, path: str) -> None:
        path = path.strip("/")
        if not path or path in self._dirs:
            return
        parent = path.rpartition("/")[0]
        if parent:
            self.dir(parent)
        self._dirs.add(path)
        self._entry(path, 0o040755)

    def file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self.dir(path.strip("/").rpartition("/")[0])
        self._entry(path, 0o100000 | mode, data)

    def symlink(self, path: str, target: str) -> None:
        self.dir(path.strip("/").rpartition("/")[0])
        self._entry(path, 0o120777, target.encode())

    def bytes(self) -> bytes:
        trailer = Cpio()
        trailer._ino = 0
        trailer._entry("TRAILER!!!", 0)
        return b"".join(self._parts + trailer._parts)


def build_initramfs(kernel: Kernel, driver: Path, programs: Path) -> Path:
    qga = _qga_files()
    busybox = Path("/bin/busybox")
    prog_files = sorted(p for p in programs.iterdir() if p.is_file() and p.name != ".done")
    mod_order = (kernel.modules / "order").read_text().split()
    inputs = [INIT_SCRIPT, busybox, driver, *prog_files, *(h for h, _ in qga),
              *(kernel.modules / f"{m}.ko" for m in mod_order)]
    key = _hash_paths(inputs, kernel.abi, MOTD, " ".join(mod_order),
                      " ".join(g for _, g in qga))
    dest = cache_dir() / "initramfs" / f"{key}.cpio"
    if dest.exists():
        return dest
    log.info("writing the initramfs")
    c = Cpio()
    for d in ("dev", "proc", "sys", "tmp", "run", "root", "etc/fifolab", "usr/local/bin",
              "lib/modules", "var"):
        c.dir(d)
    c.file("init", INIT_SCRIPT.read_bytes(), 0o755)
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    c.symlink("bin/sh", "busybox")
    for host, guest in qga:
        c.file(guest, host.read_bytes(), 0o755)
    for m in mod_order:
        c.file(f"lib/modules/{m}.ko", (kernel.modules / f"{m}.ko").read_bytes())
    c.file("etc/fifolab/modules", ("\n".join(mod_order) + "\n").encode())
    c.file("lib/modules/fifolab.ko", driver.read_bytes())
    for p in prog_files:
        c.file(f"usr/local/bin/{p.name}", p.read_bytes(), 0o755)
    c.file("etc/motd", MOTD.encode())
    c.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    c.file("etc/group", b"root:x:0:\n")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(c.bytes())
    os.rename(tmp, dest)
    return dest


FLOOR_INIT = b"""#!/bin/busybox sh
# The floor of `fifolab bench`'s boot measurement: the least a userspace can do.
/bin/busybox mount -t devtmpfs devtmpfs /dev
echo "fifolab-floor: userspace" > /dev/console
while :; do /bin/busybox sleep 3600; done
"""


def build_floor_initramfs() -> Path:
    """A trivial initramfs (busybox and an /init that prints one line): what the same kernel
    and QEMU take to reach userspace with nothing to do there, the floor the lab's boot is
    measured against."""
    busybox = Path("/bin/busybox")
    dest = cache_dir() / "initramfs" / f"floor-{_hash_paths([busybox], FLOOR_INIT.decode())}.cpio"
    if dest.exists():
        return dest
    c = Cpio()
    c.dir("dev")
    c.file("init", FLOOR_INIT, 0o755)
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(c.bytes())
    os.rename(tmp, dest)
    return dest


KERNELS = ("default", "debug")


def build(driver_src: Path = DRIVER_SRC, programs_src: Path = PROGRAMS_SRC,
          kernel_name: str = "default") -> Image:
    """Everything the lab boots, built where missing; returns the paths.

    `kernel_name` is "default" (Debian's production kernel) or "debug" (strict mode)."""
    require_host_tools()
    if kernel_name == "debug":
        from .debug import build_debug_kernel
        kernel = build_debug_kernel()
    elif kernel_name == "default":
        kernel = fetch_kernel()
    else:
        raise BuildError(f"unknown kernel {kernel_name!r}: choose one of {', '.join(KERNELS)}")
    driver = build_driver(kernel, driver_src)
    programs = build_programs(programs_src)
    initrd = build_initramfs(kernel, driver, programs)
    return Image(kernel, initrd, driver, programs)
