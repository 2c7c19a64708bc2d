"""``fifolab reload [--watch]``: rebuild the driver if its sources changed and swap it into
the lab that is up, timing each step.  A build error leaves the running module alone; a failed
load puts the previous module back; a kernel report says whether the lab must restart."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from images import build as images
from . import uplab
from .driver import GUEST_KO
from .kmsg import KernelLogError
from .lab import Lab, LabError

PREVIOUS = GUEST_KO                      # what init loaded at boot


def _kernel(state: dict) -> images.Kernel:
    if state["config"]["kernel"] == "debug":
        from images.debug import build_debug_kernel
        return build_debug_kernel()
    return images.fetch_kernel()


def reload_once(state: dict, src: Path = images.DRIVER_SRC) -> int:
    steps: list[tuple[str, float]] = []
    t = time.monotonic()
    try:
        ko = images.build_driver(_kernel(state), src)
    except images.BuildError as err:
        print(f"fifolab reload: {err}\nThe running module was left as it was.", file=sys.stderr)
        return 1
    steps.append(("build" if str(ko) != state.get("driver") else "build (unchanged)",
                  time.monotonic() - t))
    name = ko.stem
    guest_ko = f"/tmp/{name}-{ko.parent.name.rsplit('-', 1)[-1]}.ko"
    old_ko = state.get("guest_ko", PREVIOUS)
    # Unload the reference driver, the module loaded last and this one: all bind the device.
    unload = " ".join(sorted({"fifolab", name, state.get("module", "fifolab")}))
    lab = Lab.attach(state)
    try:
        t = time.monotonic()
        lab.put(ko, guest_ko)
        steps.append(("copy", time.monotonic() - t))
        t = time.monotonic()
        res = lab.exec(f'for m in {unload}; do if grep -q "^$m " /proc/modules; then '
                       f'rmmod $m 2>&1 || exit 1; fi; done', timeout=60)
        if res.returncode != 0:
            print(f"fifolab reload: rmmod failed, the old module stays loaded:\n{res.stdout}"
                  f"(is a file still open on /dev/fifolab*?)", file=sys.stderr)
            return 1
        steps.append(("unload", time.monotonic() - t))
        t = time.monotonic()
        res = lab.exec(f"insmod {guest_ko} 2>&1", timeout=60)
        if res.returncode != 0:
            log = lab.exec("dmesg -s 1048576 | tail -n 20").stdout
            back = lab.exec(f"insmod {old_ko}").returncode == 0
            print(f"fifolab reload: insmod failed:\n{res.stdout}--- kernel log\n{log}"
                  f"{'The previous module is loaded again.' if back else 'The previous module could not be loaded again either.'}",
                  file=sys.stderr)
            return 1
        steps.append(("load", time.monotonic() - t))
        uplab.update_state(driver=str(ko), guest_ko=guest_ko, module=name)
        nodes = lab.exec("ls /dev | grep '^fifolab' | tr '\\n' ' '").stdout.strip()
    except KernelLogError as err:
        print(f"fifolab reload: the guest kernel reported a problem:\n{err}\n"
              f"An oops can leave locks held and memory corrupt: restart the lab with "
              f"`fifolab down && fifolab up` before trusting it again.", file=sys.stderr)
        return 1
    except LabError as err:
        print(f"fifolab reload: {err}", file=sys.stderr)
        return 1
    finally:
        lab.close()
    total = sum(dt for _, dt in steps)
    print("reloaded: " + ", ".join(f"{name} {dt:.2f} s" for name, dt in steps)
          + f"; total {total:.2f} s; nodes: {nodes or 'none'}")
    return 0


def watch(state: dict, src: Path = images.DRIVER_SRC) -> int:
    """Reload on every save of a driver source, until Ctrl-C."""
    def fingerprint():
        return [(p, p.stat().st_mtime_ns) for p in images._source_files(src, recursive=False)]
    print(f"watching {src} (Ctrl-C ends)", flush=True)
    last = fingerprint()
    reload_once(state, src)
    try:
        while True:
            time.sleep(0.3)
            now = fingerprint()
            if now != last:
                last = now
                time.sleep(0.1)         # let the editor finish writing
                now_up = uplab.running()
                if now_up is None:
                    print("the lab is gone; stopping", file=sys.stderr)
                    return 1
                reload_once(now_up, src)
    except KeyboardInterrupt:
        return 0
