"""``fifolab``: the user's commands.

    fifolab check                       build what is missing, boot, run the end-to-end checks
    fifolab exec [--put H[:G]]... -- CMD  boot, copy files in, run CMD, exit with its status
    fifolab shell                       interactive guest shell with the driver loaded
    fifolab build                       build the guest image only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import time
from pathlib import Path

from qemu.qmp import QMPError

from images import build as images
from . import bench, hostile, mutants, reload, scenario, soak, terminal, uplab
from .checks import CHECKS, WIRED, Check, Outcome, lab_config, run_check
from .kmsg import KernelLogError
from .lab import Lab, LabConfig, LabError


def _config(args: argparse.Namespace, **over) -> LabConfig:
    cfg = LabConfig(devices=args.devices, memory_mb=args.memory, accel=args.accel,
                    fifo_depth=args.fifo_depth, model_debug=args.model_debug,
                    kernel=args.kernel)
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def cmd_build(args: argparse.Namespace) -> int:
    img = images.build(kernel_name=args.kernel)
    print(f"kernel   {img.kernel.abi} ({img.kernel.version})  {img.boot}")
    print(f"driver   {img.driver}")
    print(f"initrd   {img.initrd}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    image = images.build(kernel_name=args.kernel)
    build_s = time.monotonic() - t0
    rows: list[tuple[str, str, Outcome]] = []

    def record(name: str, path: str, out: Outcome) -> None:
        rows.append((name, path, out))
        print(f"  {'PASS' if out.ok else 'FAIL'}  {out.seconds:6.2f} s  [{path}] {name}",
              flush=True)
        if out.detail:
            print("        " + out.detail.replace("\n", "\n        "))

    cfg = _config(args)
    cfg = lab_config(**{k: getattr(cfg, k) for k in (
        "memory_mb", "accel", "fifo_depth", "model_debug", "kernel")})
    not_run = 0
    with open_lab(args, cfg, image) as lab:
        print(f"booted: {lab.boot_seconds:.2f} s to ready (QEMU start to guest agent "
              f"answering, driver loaded){' [strict mode]' if lab.strict else ''}", flush=True)
        todo: list[tuple[str, str, Check | None]] = []     # None: the kmemleak scan
        for check in CHECKS:
            if args.filter and args.filter not in check.name and args.filter != check.path:
                continue
            why_not = check.unsupported(lab.cfg)
            if why_not:
                print(f"  SKIP            [{check.path}] {check.name}: {why_not}")
                continue
            todo.append((check.name, check.path, check))
        if lab.strict:
            todo.append(("kmemleak scan: no leaks", "driver", None))
        for i, (name, path, todo_check) in enumerate(todo):
            stop = "" if not i else ("the lab is gone" if not lab_usable(lab) else
                                     "--fail-fast" if args.fail_fast and not rows[-1][2].ok
                                     else "")
            if stop:
                # a verdict counts what did not run: each is a failure
                for name, path, _ in todo[i:]:
                    record(name, path, Outcome(False, 0.0, f"not run: {stop}"))
                not_run = len(todo) - i
                break
            record(name, path, run_check(lab, todo_check, args.timeout) if todo_check
                   else leak_scan(lab))
        boot = lab.boot_seconds
    width = max(len(r[0]) for r in rows)
    pwidth = max(len(r[1]) for r in rows)
    print()
    print(f"{'path':<{pwidth}}  {'check':<{width}}  result  time")
    print(f"{'-' * pwidth}  {'-' * width}  ------  ------")
    for name, path, out in rows:
        print(f"{path:<{pwidth}}  {name:<{width}}  {'pass' if out.ok else 'FAIL':<6}  "
              f"{out.seconds:5.2f}s")
    failed = sum(not out.ok for _, _, out in rows)
    print(f"\nboot-to-ready {boot:.2f} s, image build {build_s:.2f} s")
    if not_run:
        print(f"{not_run} checks did not run (the lab died, or --fail-fast): counted as failed")
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


def leak_scan(lab: Lab) -> Outcome:
    """Strict mode's last check: kmemleak finds nothing."""
    t = time.monotonic()
    try:
        lab.leak_check()
        return Outcome(True, time.monotonic() - t)
    except (KernelLogError, LabError) as err:
        return Outcome(False, time.monotonic() - t, str(err))


def lab_usable(lab: Lab) -> bool:
    try:
        lab.check_alive()
        return True
    except LabError as err:
        print(f"  lab is gone: {err}")
        return False


def _parse_put(spec: str) -> tuple[str, str | None]:
    host, sep, guest = spec.partition(":")
    return host, (guest if sep else None)


@contextlib.contextmanager
def open_lab(args: argparse.Namespace, cfg: LabConfig, image=None):
    """The lab that `fifolab up` started, if one is up; else a fresh one for this command."""
    state = uplab.read_state()
    if state is not None:
        problem = uplab.health(state)
        if problem:
            raise LabError(f"a lab is up but {problem}; run `fifolab down` (then `fifolab up` "
                           f"for a new one)")
        lab = Lab.attach(state)
    else:
        lab = Lab(cfg, image)
        try:
            lab.start()
        except BaseException:
            lab.close()
            raise
    try:
        yield lab
    finally:
        lab.close()


def cmd_exec(args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not cmd:
        print("fifolab exec: no command given. Usage: fifolab exec [--put FILE] -- CMD [ARG...]",
              file=sys.stderr)
        return 2
    puts = [_parse_put(p) for p in args.put]
    with open_lab(args, _config(args)) as lab:
        for host, guest in puts:
            lab.put(host, guest)
        res = lab.exec(cmd if len(cmd) > 1 else cmd[0], timeout=args.timeout)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res.returncode


def cmd_shell(args: argparse.Namespace) -> int:
    state = uplab.read_state()
    if state is not None:
        problem = uplab.health(state)
        if problem:
            raise LabError(f"a lab is up but {problem}; run `fifolab down`")
        return terminal.bridge(Path(state["run_dir"]) / "shell.sock")
    print("fifolab shell: booting; leave with `poweroff -f` or Ctrl-a x", file=sys.stderr)
    with Lab(_config(args, shell=True)) as lab:
        status = lab.wait_exit()
        assert lab.kmsg is not None
        lab.kmsg.check()            # a BUG or WARNING during the session fails it too
        return status


def cmd_up(args: argparse.Namespace) -> int:
    cfg = _config(args)
    cfg.devices = args.devices if args.devices is not None else 3
    cfg.wired = tuple(args.wired) if args.wired is not None else \
        ((WIRED,) if cfg.devices > WIRED else ())
    t = time.monotonic()
    images.build(kernel_name=cfg.kernel)
    print(f"image ready ({time.monotonic() - t:.1f} s); booting", file=sys.stderr)
    state = uplab.up(cfg)
    print(f"lab up: {cfg.devices} device(s) /dev/fifolab0..{cfg.devices - 1}"
          f"{f', wired: {list(cfg.wired)}' if cfg.wired else ''}; kernel {state['kernel']}; "
          f"boot-to-ready {state['boot_seconds']:.2f} s")
    print("now: fifolab exec -- CMD | fifolab shell | fifolab reload | fifolab down")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    print(uplab.down())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = uplab.read_state()
    if state is None:
        print("no lab is up (start one with `fifolab up`)")
        return 1
    problem = uplab.health(state)
    up_s = time.time() - state["started"]
    cfg = state["config"]
    print(f"lab       {'UP' if not problem else 'DEAD: ' + problem}")
    print(f"uptime    {int(up_s) // 3600}:{int(up_s) // 60 % 60:02d}:{int(up_s) % 60:02d}")
    print(f"kernel    {state['kernel']} ({cfg['kernel']}), {cfg['memory_mb']} MiB, "
          f"{cfg['accel']}")
    print(f"QEMU      pid {state['qemu_pid']}"
          f"{'' if uplab._alive(state['qemu_pid']) else ' (not running)'}")
    print(f"model     pid {state['model_pid']}"
          f"{'' if uplab._alive(state['model_pid']) else ' (not running)'}; "
          f"{cfg['devices']} device(s), wired {cfg['wired']}")
    print(f"sockets   {state['run_dir']}/ (qmp.sock, qga.sock, shell.sock, model*.sock, "
          f"wire*.sock)")
    print(f"logs      {state['run_dir']}/console.log, model.log")
    if not problem:
        lab = Lab.attach(state)
        try:
            res = lab.exec("grep '^fifolab ' /proc/modules; ls /dev | grep fifolab", timeout=30)
        finally:
            lab.close()
        loaded = "fifolab " in res.stdout
        nodes = [ln for ln in res.stdout.splitlines() if ln.startswith("fifolab") and " " not in ln]
        print(f"driver    {'loaded' if loaded else 'not loaded'}"
              f"{': /dev/' + ', /dev/'.join(nodes) if nodes else ''}")
    return 1 if problem else 0


def cmd_reload(args: argparse.Namespace) -> int:
    state = uplab.running()
    if state is None:
        print("fifolab reload: no lab is up; start one with `fifolab up`", file=sys.stderr)
        return 1
    src = Path(args.src).resolve()
    if not args.watch:
        return reload.reload_once(state, src)
    return reload.watch(state, src)


def cmd_follow(args: argparse.Namespace) -> int:
    state = uplab.read_state()
    if state is None:
        print(f"fifolab {args.command}: no lab is up; start one with `fifolab up`",
              file=sys.stderr)
        return 1
    name = "console.log" if args.command == "dmesg" else "model.log"
    return terminal.follow(Path(state["run_dir"]) / name, args.follow)


def _qmp_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def cmd_qmp(args: argparse.Namespace) -> int:
    state = uplab.running()
    if state is None:
        print("fifolab qmp: no lab is up; start one with `fifolab up` (or use the QMP sockets "
              "of your own run: qmp-shell RUN_DIR/qmp.sock, RUN_DIR/model-qmp.sock)",
              file=sys.stderr)
        return 1
    arguments = {}
    for kv in args.args:
        key, sep, value = kv.partition("=")
        if not sep:
            print(f"fifolab qmp: argument {kv!r} is not KEY=VALUE", file=sys.stderr)
            return 2
        arguments[key] = _qmp_value(value)
    lab = Lab.attach(state)
    try:
        if args.model:
            out = lab.model_qmp(args.cmd, arguments or None)
        else:
            out = lab.qmp(args.cmd, arguments or None)
    except QMPError as err:
        print(f"fifolab qmp: {err}", file=sys.stderr)
        return 1
    finally:
        lab.close()
    print(json.dumps(out, indent=2))
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    return uplab.daemon_main(Path(args.dir))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fifolab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="log what the harness does")
    sub = p.add_subparsers(dest="command", required=True)

    def lab_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--devices", type=int, default=1, help="fifolab devices (default 1)")
        sp.add_argument("--memory", type=int, default=512, help="guest RAM in MiB")
        sp.add_argument("--accel", choices=("tcg", "kvm"), default="tcg",
                        help="tcg (default; KVM hangs in early boot on some hosts)")
        sp.add_argument("--fifo-depth", type=int, default=65536, help="FIFO depth in bytes")
        sp.add_argument("--model-debug", action="store_true",
                        help="device model logs doorbells, descriptors and interrupts")
        sp.add_argument("--timeout", type=float, default=300, help="per command, seconds")
        kernel_opt(sp)

    def kernel_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--kernel", choices=images.KERNELS, default="default",
                        help="default: Debian's kernel; debug: strict mode (KASAN, lockdep, "
                             "kmemleak), built from linux-source-6.1 the first time")

    sp = sub.add_parser("check", help="boot and run the end-to-end checks")
    lab_opts(sp)
    sp.add_argument("-k", dest="filter", help="only checks whose name contains this")
    sp.add_argument("-x", "--fail-fast", action="store_true",
                    help="stop at the first failure (the checks left count as failed)")
    sp.set_defaults(func=cmd_check)

    sp = sub.add_parser("exec", help="run a command in a fresh guest")
    lab_opts(sp)
    sp.add_argument("--put", action="append", default=[], metavar="HOST_FILE[:GUEST_PATH]",
                    help="copy a file in first (default guest path /tmp/<basename>)")
    sp.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    sp.set_defaults(func=cmd_exec)

    sp = sub.add_parser("shell", help="interactive guest shell")
    lab_opts(sp)
    sp.set_defaults(func=cmd_shell)

    sp = sub.add_parser("up", help="start a lab that stays up in the background")
    lab_opts(sp)
    sp.set_defaults(devices=None)
    sp.add_argument("--wired", type=int, nargs="*", metavar="N",
                    help="devices wired to a host socket (default: device 2 when there are 3+)")
    sp.set_defaults(func=cmd_up)
    sp = sub.add_parser("down", help="stop the lab and remove everything it made")
    sp.set_defaults(func=cmd_down)
    sp = sub.add_parser("status", help="what is running")
    sp.set_defaults(func=cmd_status)
    sp = sub.add_parser("reload", help="rebuild the driver if changed and reload it in the lab")
    sp.add_argument("--watch", action="store_true", help="reload on every save of a source")
    sp.add_argument("--src", default=str(images.DRIVER_SRC),
                    help="driver source directory (default: the reference driver, "
                         "guest_driver/); a directory of your own with a Kbuild")
    sp.set_defaults(func=cmd_reload)
    for name, what in (("dmesg", "the guest kernel log"), ("log", "the device model's log")):
        sp = sub.add_parser(name, help=f"print {what} of the lab that is up")
        sp.add_argument("-f", "--follow", action="store_true", help="keep following it")
        sp.set_defaults(func=cmd_follow)
    sp = sub.add_parser("qmp", help="a QMP command on the running lab's QEMU, or with --model "
                                    "on the device model's monitor (faults)")
    sp.add_argument("--model", action="store_true", help="the device model's monitor")
    sp.add_argument("cmd", help="e.g. query-status, fault-dma-error, query-fifolab")
    sp.add_argument("args", nargs="*", metavar="KEY=VALUE", help="arguments (JSON values)")
    sp.set_defaults(func=cmd_qmp)
    scenario.add_command(sub, kernel_opt)
    soak.add_command(sub, kernel_opt)
    bench.add_command(sub, kernel_opt)
    mutants.add_command(sub, kernel_opt)
    hostile.add_command(sub, kernel_opt)
    sp = sub.add_parser("_daemon")
    sp.add_argument("dir")
    sp.set_defaults(func=cmd_daemon)

    sp = sub.add_parser("build", help="build the guest image")
    kernel_opt(sp)
    sp.set_defaults(func=cmd_build)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(name)s: %(message)s")
    logging.getLogger("qemu").setLevel(logging.WARNING if not args.verbose else logging.DEBUG)
    # SIGTERM unwinds like Ctrl-C, so every `with Lab` cleans up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return args.func(args)
    except images.MissingPrerequisite as err:
        print(f"fifolab: {err}", file=sys.stderr)
        return 3
    except (images.BuildError, LabError, KernelLogError) as err:
        print(f"fifolab: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fifolab: interrupted; everything it started was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
