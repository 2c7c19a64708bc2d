"""The "debug" guest kernel: Debian's linux-source-6.1 built with KASAN, lockdep and friends.

Strict mode (``--kernel debug``) runs the same driver and tests on a kernel that checks every
memory access (KASAN), every lock (PROVE_LOCKING), sleeping in atomic context, leaks
(kmemleak) and hung tasks.  The configuration is ``x86_64_defconfig`` + ``kvm_guest.config`` +
``images/debug.config`` (a small fragment: the checkers, what the lab needs built in, and
graphics, sound, USB, wireless and network drivers off).

The build takes about 15 minutes on 2 cores; it is cached under the cache directory by the
content of its inputs (source package version + fragment), and the tree is kept so that
external modules (fifolab.ko) build against it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import build as images

log = logging.getLogger("fifolab.images")

FRAGMENT = Path(__file__).resolve().parent / "debug.config"
# Booted as a bzImage: the PVH entry of a KASAN kernel faults before the first printk.
BZIMAGE = Path("arch/x86/boot/bzImage")
SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
BUILD_PACKAGES = ("linux-source-6.1", "bc", "bison", "flex", "libssl-dev", "libelf-dev")


def _source_version() -> str:
    v = images._dpkg_field("linux-source-6.1", "Version")
    if not v or not SOURCE_TARBALL.exists():
        raise images.MissingPrerequisite("linux-source-6.1 (the debug kernel's source)",
                                         " ".join(BUILD_PACKAGES))
    for exe, pkg in (("bc", "bc"), ("bison", "bison"), ("flex", "flex")):
        if not shutil.which(exe):
            raise images.MissingPrerequisite(exe, pkg)
    for header, pkg in (("/usr/include/openssl/ssl.h", "libssl-dev"),
                        ("/usr/include/gelf.h", "libelf-dev")):
        if not Path(header).exists():
            raise images.MissingPrerequisite(header, pkg)
    return v


def _key(version: str) -> str:
    h = hashlib.sha256(version.encode() + b"\0" + FRAGMENT.read_bytes())
    return h.hexdigest()[:16]


def _make(tree: Path, args: list[str], logfile: Path, what: str) -> None:
    """Run make in `tree`, logging everything and printing a progress line now and then."""
    cmd = ["make", "-C", str(tree), f"-j{os.cpu_count() or 2}", *args]
    t0 = time.monotonic()
    last_print = t0
    last_line = ""
    with open(logfile, "a") as lf:
        lf.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        assert proc.stdout
        for line in proc.stdout:
            lf.write(line)
            if line.strip():
                last_line = line.strip()
            now = time.monotonic()
            if now - last_print > 15:
                print(f"[debug kernel] {what}: {int(now - t0) // 60}:{int(now - t0) % 60:02d} "
                      f"elapsed, {last_line[:70]}", file=sys.stderr, flush=True)
                last_print = now
        rc = proc.wait()
    if rc != 0:
        tail = "".join(logfile.read_text(errors="replace").splitlines(True)[-40:])
        raise images.BuildError(f"debug kernel {what} failed (exit {rc}); log {logfile}:\n"
                                f"{tail}")


def build_debug_kernel() -> images.Kernel:
    version = _source_version()
    dest = images.cache_dir() / "kernel-debug" / _key(version)
    tree = dest / "linux"
    done = dest / ".done"
    if done.exists():
        abi = done.read_text().strip()
        return images.Kernel(abi, version, tree / BZIMAGE, dest / "modules", tree)
    log.info("building the debug kernel from linux-source-6.1 %s (about 15 minutes on "
             "2 cores; cached afterwards)", version)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    logfile = dest / "build.log"
    print("[debug kernel] unpacking linux-source-6.1", file=sys.stderr, flush=True)
    images._run(["tar", "-xf", str(SOURCE_TARBALL), "-C", str(dest)], "unpacking the source")
    os.rename(dest / "linux-source-6.1", tree)
    _make(tree, ["x86_64_defconfig"], logfile, "configure")
    merge = subprocess.run(
        ["scripts/kconfig/merge_config.sh", "-m", ".config", "kernel/configs/kvm_guest.config",
         str(FRAGMENT)], cwd=tree, capture_output=True, text=True)
    if merge.returncode != 0:
        raise images.BuildError(f"merging the config fragment failed:\n{merge.stderr}")
    _make(tree, ["olddefconfig"], logfile, "configure")
    _check_config(tree / ".config")
    _make(tree, ["bzImage", "modules"], logfile, "build")
    abi = subprocess.run(["make", "-s", "-C", str(tree), "kernelrelease"],
                         capture_output=True, text=True).stdout.strip()
    (dest / "modules").mkdir()
    (dest / "modules" / "order").write_text("")   # the lab's needs are built in
    done.write_text(abi + "\n")
    return images.Kernel(abi, version, tree / BZIMAGE, dest / "modules", tree)


def _check_config(config: Path) -> None:
    """Every option the fragment asks for must have survived olddefconfig."""
    have = config.read_text().splitlines()
    missing = []
    for line in FRAGMENT.read_text().splitlines():
        line = line.strip()
        if line.startswith("CONFIG_") and line.endswith("=y") and line not in have:
            missing.append(line)
    if missing:
        raise images.BuildError("the debug config lost options (a dependency is missing): "
                                + ", ".join(missing))
