"""One lab: a QEMU VM with fifolab devices, their device model, and a command channel.

Lifecycle (a context manager; ``close()`` frees everything, also after a failed start)::

    Lab(config).start()
      _pre_launch   build the image, make the run directory and the shared guest RAM file,
                    start the device model and wait for its READY
      _launch       start qemu-system-x86_64, connect to its QMP monitor (qemu.qmp),
                    unlink the RAM file (both processes hold it now)
      _post_launch  connect to qemu-ga in the guest and wait until it answers (boot-to-ready)
    lab.exec(...), lab.put(...), lab.qmp(...)
    lab.close()     quit QEMU (kill if needed), stop the model, remove the run directory

Children get PR_SET_PDEATHSIG so that even a SIGKILLed harness leaves no QEMU or model behind;
the RAM file in /dev/shm is unlinked as soon as QEMU has opened it.

The lab owns the life of its parts and one event loop; each part has its own module:

    machine.py    QEMU's command line and the ids it gives each device
    model.py      the device model's process and a client of its QMP monitor
    agent.py      the guest agent (commands, files)
    driver.py     what the harness knows of the driver in the guest (``lab.driver``)
    kmsg.py, modellog.py   the guest kernel's and the model's logs as oracles
    hostwire.py   the host end of a wired device
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from qemu.qmp import ConnectError, QMPClient, QMPError

from images import build as images
from .agent import ExecResult, GuestAgent, GuestJob
from .driver import GuestDriver
from .errors import GuestTimeout, LabError
from .hostwire import HostWire
from .kmsg import KernelLogError, KernelLogWatcher
from .machine import PidProcess, die_with_parent, qemu_command
from .model import ModelMonitor, log_tail, model_command, start_model
from .modellog import ModelLogWatcher

__all__ = ["ExecResult", "GuestJob", "GuestTimeout", "HostWire", "Lab", "LabConfig", "LabError"]

log = logging.getLogger("fifolab.lab")
# guest-sync retries leave replies nobody waits for, and a guest that dies takes the agent's
# connection with it: qemu.qmp logs both loudly; the harness reports them itself.
logging.getLogger("qemu.qmp.protocol.fifolab-qga").setLevel(logging.CRITICAL)
logging.getLogger("qemu.qmp.protocol.fifolab-qemu").setLevel(logging.CRITICAL)

@dataclasses.dataclass
class LabConfig:
    devices: int = 1
    memory_mb: int = 512
    smp: int = 2
    accel: str = "tcg"
    fifo_depth: int = 65536
    wired: tuple[int, ...] = ()       # devices wired to a host socket instead of loopback
    kernel: str = "default"           # "default" (Debian's) or "debug" (strict mode)
    load_driver: bool = True
    shell: bool = False               # interactive console on this terminal
    boot_timeout: float = 120.0
    model_debug: bool = False
    append: str = ""


class Lab:
    """A running VM with the fifolab device(s); see the module docstring."""

    def __init__(self, config: LabConfig | None = None, image: images.Image | None = None):
        self.cfg = config or LabConfig()
        self.image = image
        self.run_dir: Path | None = None
        self.ram_path: Path | None = None
        # PidProcess: a lab that `fifolab up` started, used through attach()
        self.model: subprocess.Popen | PidProcess | None = None
        self.qemu: subprocess.Popen | PidProcess | None = None
        self.boot_seconds: float | None = None
        self.kmsg: KernelLogWatcher | None = None
        self.model_log: ModelLogWatcher | None = None
        self._qmp: QMPClient | None = None
        self.agent = GuestAgent(self.check_alive, self._console_tail)
        self.monitor: ModelMonitor | None = None      # the device model's own monitor
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(
            lambda loop, ctx: log.debug("asyncio: %s", ctx.get("message")))
        self._closed = False
        self._expect_exit = False
        self._attached = False
        self.driver = GuestDriver(self)

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> Lab:
        self._pre_launch()
        self._launch()
        self._post_launch()
        return self

    def _pre_launch(self) -> None:
        if self.image is None:
            self.image = images.build(kernel_name=self.cfg.kernel)
        # FIFOLAB_RUN_TAG (set by tests) marks every file of the run, so that a check for
        # leftovers can tell this run's from another's on a shared machine.
        tag = os.environ.get("FIFOLAB_RUN_TAG", "")
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"fifolab-{tag + '-' if tag else ''}"))
        self.kmsg = KernelLogWatcher(self.run_dir / "console.log")
        self.model_log = ModelLogWatcher(self.run_dir / "model.log")
        self.ram_path = Path(f"/dev/shm/fifolab-{tag + '-' if tag else ''}{os.getpid()}-"
                             f"{secrets.token_hex(4)}.ram")
        with open(self.ram_path, "wb") as f:
            f.truncate(self.cfg.memory_mb << 20)
        sockets = [self.model_socket(i) for i in range(self.cfg.devices)]
        self.model = start_model(model_command(self.cfg, self.run_dir, self.ram_path, sockets),
                                 self.run_dir / "model.log")
        self._model_sockets = sockets

    def _launch(self) -> None:
        assert self.image and self.run_dir and self.ram_path
        cmd = qemu_command(self.cfg, self.image, self.run_dir, self.ram_path,
                           self._model_sockets)
        self.qemu_cmdline = cmd
        log.debug("qemu: %s", shlex.join(cmd))
        self._t_launch = time.monotonic()
        if self.cfg.shell:
            self.qemu = subprocess.Popen(cmd, preexec_fn=die_with_parent)
        else:
            qlog = open(self.run_dir / "qemu.log", "wb")
            self.qemu = subprocess.Popen(cmd, stdout=qlog, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=die_with_parent)
            qlog.close()
        self._run(self._connect_qmp())
        # QEMU has mapped the RAM file and the model too: nothing needs its name any more.
        self.ram_path.unlink(missing_ok=True)

    def _post_launch(self) -> None:
        if self.cfg.shell:
            # The user's session on this terminal: it may end (poweroff -f) before the guest
            # agent would even answer, and it needs no agent.  QEMU exiting is the user leaving.
            self._expect_exit = True
            return
        self._run(self._connect_qga())
        self.boot_seconds = time.monotonic() - self._t_launch
        self.check_alive()
        assert self.kmsg is not None
        self.kmsg.check()
        if self.strict and not self.cfg.shell:
            # Leaks are judged from here on: forget what boot left behind.
            self.exec("echo clear > /sys/kernel/debug/kmemleak").check()

    @property
    def strict(self) -> bool:
        """Strict mode: the debug kernel, with KASAN, lockdep and kmemleak."""
        return self.cfg.kernel == "debug"

    def leak_check(self) -> None:
        """Strict mode: scan for leaks now; a suspected leak fails like any kernel report."""
        if not self.strict:
            return
        self.exec("echo scan > /sys/kernel/debug/kmemleak", timeout=300).check()
        res = self.exec("cat /sys/kernel/debug/kmemleak").check()
        if res.stdout.strip():
            from .kmsg import KernelLogError, Report
            raise KernelLogError([Report("kmemleak", res.stdout.splitlines()[:60])])

    @classmethod
    def attach(cls, state: dict) -> Lab:
        """Use a lab that `fifolab up` started (see harness.uplab): connect to its QMP and
        guest agent; close() then only disconnects.  One client at a time."""
        lab = cls(LabConfig(**state["config"]))
        lab._attached = True
        lab.run_dir = Path(state["run_dir"])
        lab.qemu = PidProcess(state["qemu_pid"])
        lab.model = PidProcess(state["model_pid"])
        lab.boot_seconds = state["boot_seconds"]
        lab.kmsg = KernelLogWatcher(lab.run_dir / "console.log")
        lab.kmsg.skip_existing()
        lab.model_log = ModelLogWatcher(lab.run_dir / "model.log")
        lab.model_log.skip_existing()
        try:
            lab.check_alive()
            lab._run(lab._connect_qmp())
            lab._run(lab._connect_qga())
        except BaseException:
            lab.close()
            raise
        return lab

    def release(self) -> None:
        """Drop the QMP and guest-agent connections (their sockets take one client at a
        time) so that other commands can use this lab."""
        self._run(self._drop_clients(), timeout=5)

    async def _drop_clients(self) -> None:
        for client in (self.agent.client, self._qmp):
            if client is not None:
                await client.disconnect()
        if self.monitor is not None:
            await self.monitor.disconnect()
        self.agent.client = self._qmp = None

    def close(self) -> None:
        """Stop QEMU and the model and remove every file of the run; safe to call twice."""
        if self._closed:
            return
        if self._attached:
            with contextlib.suppress(Exception):
                self._run(self._drop_clients(), timeout=5)
            self._closed = True
            self._loop.close()
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._run(self._disconnect(), timeout=5)
        for proc in (self.qemu, self.model):
            if proc is None or proc.poll() is not None:
                continue
            assert isinstance(proc, subprocess.Popen)   # an attached lab returned above
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for proc in (self.qemu, self.model):
            if proc is not None and proc.stdout:
                proc.stdout.close()
        if self.ram_path:
            self.ram_path.unlink(missing_ok=True)
        if self.run_dir and self.run_dir.exists():
            keep = os.environ.get("FIFOLAB_KEEP_LOGS")
            if keep:
                dest = Path(keep) / self.run_dir.name
                shutil.copytree(self.run_dir, dest, ignore=shutil.ignore_patterns("*.sock"))
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self._loop.close()

    # ------------------------------------------------------------ async plumbing

    def _run(self, coro, timeout: float | None = None):
        if timeout is not None:
            coro = asyncio.wait_for(coro, timeout)
        try:
            return self._loop.run_until_complete(coro)
        except (QMPError, ConnectionError, EOFError) as err:
            if self._closed:
                raise
            time.sleep(0.2)                 # let a dying QEMU's exit status arrive
            self.check_alive()
            raise LabError(f"lost the connection to the guest: {err!r}. Console:\n"
                           f"{self.kmsg.tail() if self.kmsg else ''}") from err

    async def _connect_qmp(self) -> None:
        assert self.run_dir is not None
        sock = self.run_dir / "qmp.sock"
        deadline = time.monotonic() + 30
        while not sock.exists():
            self._check_qemu_alive("while starting")
            if time.monotonic() > deadline:
                raise LabError("QEMU did not open its QMP socket within 30 s" + self._qemu_log())
            await asyncio.sleep(0.01)
        self._qmp = QMPClient("fifolab-qemu")
        await self._connect(self._qmp, sock)

    async def _connect(self, client: QMPClient, sock: Path, within: float = 30.0) -> None:
        """Connect ``client`` to QEMU's server socket ``sock``.  The socket file exists from
        QEMU's bind(), a moment before its listen(): a connect in between is refused (seen on
        a loaded host), so refusals are retried while QEMU lives, for ``within`` seconds."""
        deadline = time.monotonic() + within
        while True:
            try:
                await client.connect(str(sock))
                return
            except ConnectError as err:
                if not isinstance(err.exc, (ConnectionRefusedError, FileNotFoundError)) \
                        or time.monotonic() > deadline:
                    raise
            self._check_qemu_alive("while starting")
            await asyncio.sleep(0.05)

    async def _connect_qga(self) -> None:
        assert self.run_dir is not None and self.kmsg is not None
        await self._connect(self.agent.new_client(), self.run_dir / "qga.sock")
        # A KVM guest hangs in early boot on some hosts: give it seconds, not minutes.
        boot_timeout = min(self.cfg.boot_timeout, 20.0) if self.cfg.accel == "kvm" \
            else self.cfg.boot_timeout
        deadline = time.monotonic() + boot_timeout
        token = 0
        while True:
            self.check_alive()
            found = self.kmsg.poll()
            if found:
                raise KernelLogError(found)
            if time.monotonic() > deadline:
                hint = " Under KVM the guest may hang in early boot here: use --accel tcg." \
                    if self.cfg.accel == "kvm" else ""
                raise GuestTimeout(f"the guest agent did not answer within "
                                   f"{boot_timeout:.0f} s of boot.{hint}"
                                   f"{await self._where_is_the_guest()} Console (the kernel "
                                   f"runs 'quiet': append=loglevel=7 shows the boot):\n"
                                   f"{self.kmsg.tail()}{self._model_log_tail()}")
            token += 1
            if await self.agent.sync(token, 0.5):
                return

    async def _where_is_the_guest(self) -> str:
        """QEMU's run state and each vCPU's instruction pointer: a guest stuck in firmware
        (below 1 MiB), in the kernel (0xffff...) or halted, for a boot that never ends."""
        try:
            assert self._qmp is not None
            state: Any = await asyncio.wait_for(self._qmp.execute("query-status"), 5)
            regs = await asyncio.wait_for(self._qmp.execute(
                "human-monitor-command", {"command-line": "info registers -a"}), 5)
        except Exception as err:                    # noqa: BLE001 - a diagnosis only
            return f"\n(QEMU did not say where the guest is: {err!r})"
        cpus = []
        for block in str(regs).split("CPU#")[1:]:
            m = re.search(r"\b[RE]IP=([0-9a-f]+)\b.*\bHLT=(\d)", block)
            if m:
                cpus.append(f"vCPU{block.split()[0]} at {m[1]}"
                            f"{' (halted)' if m[2] == '1' else ''}")
        return f"\nQEMU: {state.get('status')}; {', '.join(cpus) or 'no vCPU state'}."

    async def _disconnect(self) -> None:
        if self.monitor is not None:
            await self.monitor.disconnect()
        if self.agent.client is not None:
            await self.agent.client.disconnect()
        if self._qmp is not None:
            if self.qemu and self.qemu.poll() is None:
                self._expect_exit = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._qmp.execute("quit"), 2)
            await self._qmp.disconnect()
        if self.qemu is not None:
            assert isinstance(self.qemu, subprocess.Popen)  # an attached lab only drops clients
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.qemu.wait(3)

    # ------------------------------------------------------------ health

    def _model_log_tail(self) -> str:
        return log_tail(self.run_dir / "model.log" if self.run_dir else None)

    def _console_tail(self) -> str:
        return self.kmsg.tail() if self.kmsg else ""

    def _qemu_log(self) -> str:
        if self.run_dir is None:
            return ""
        try:
            text = (self.run_dir / "qemu.log").read_text(errors="replace")
        except (OSError, TypeError):
            return ""
        return f"\n--- QEMU output\n{text}\n--- command line\n{shlex.join(self.qemu_cmdline)}"

    def _check_qemu_alive(self, when: str) -> None:
        if self.qemu is not None and self.qemu.poll() is not None and not self._expect_exit:
            raise LabError(f"QEMU exited (status {self.qemu.returncode}) {when}."
                           f"{self._qemu_log()}\n--- console\n"
                           f"{self.kmsg.tail() if self.kmsg else ''}")

    def check_alive(self) -> None:
        """Raise if QEMU or the device model died (QEMU cannot reconnect to a new model), or
        if the model logged an error or exception (harness/modellog.py)."""
        self._check_qemu_alive("unexpectedly")
        if self.model is not None and self.model.poll() is not None:
            raise LabError(f"the device model died (status {self.model.returncode}); the "
                           f"device is gone until the VM restarts.{self._model_log_tail()}")
        if self.model_log is not None:
            self.model_log.check()

    # ------------------------------------------------------------ guest commands

    def exec(self, cmd: str | list[str], timeout: float = 120.0, input: bytes | None = None,
             check_log: bool = True) -> ExecResult:
        """Run a shell command in the guest; returns its status and output."""
        text = cmd if isinstance(cmd, str) else shlex.join(cmd)
        self.check_alive()
        result = self._bounded(self.agent.exec(text, timeout, input), timeout, text)
        if check_log:
            assert self.kmsg is not None
            self.kmsg.check()
        return result

    # A wedged guest (an oops holding a lock, a stalled CPU) stops its agent answering, so the
    # command's own timeout, checked between the agent's answers, never comes: bound the
    # whole wait too, and show the kernel log, which says why.
    AGENT_GRACE = 30.0

    def _bounded(self, coro, timeout: float, what: str):
        try:
            return self._run(coro, timeout + self.AGENT_GRACE)
        except TimeoutError:
            assert self.kmsg is not None
            self.kmsg.check()           # a kernel report is the better error
            raise GuestTimeout(f"the guest agent stopped answering ({timeout:.0f} s + "
                               f"{self.AGENT_GRACE:.0f} s): {what}\n--- console (last lines)\n"
                               f"{self.kmsg.tail()}") from None

    def spawn(self, cmd: str | list[str], input: bytes | None = None) -> GuestJob:
        """Start a guest command in the background; `wait()` collects it."""
        text = cmd if isinstance(cmd, str) else shlex.join(cmd)
        self.check_alive()
        return self._run(self.agent.start(text, input))

    def wait(self, job: GuestJob, timeout: float = 120.0, check_log: bool = True) -> ExecResult:
        result = self._bounded(self.agent.wait(job, timeout), timeout, job.cmd)
        if check_log:
            assert self.kmsg is not None
            self.kmsg.check()
        return result

    def wait_for_guest_file(self, path: str, timeout: float = 60.0,
                            job: GuestJob | None = None) -> None:
        """Wait until `path` exists in the guest (a program's "I am armed" signal)."""
        deadline = time.monotonic() + timeout
        while self.exec(f"test -e {shlex.quote(path)}", check_log=False).returncode != 0:
            if job is not None:
                st = self._run(self.agent.status(job))
                if st.get("exited"):
                    res = self._run(self.agent.wait(job, 1))
                    raise LabError(f"{job.cmd} exited ({res.returncode}) before it created "
                                   f"{path}:\n{res.stdout}{res.stderr}")
            if time.monotonic() > deadline:
                raise GuestTimeout(f"{path} did not appear in the guest within {timeout:.0f} s")
            time.sleep(0.02)

    def counters(self, node: int = 0) -> dict[str, int]:
        """The driver's sysfs counters of /dev/fifolab<node>, by name."""
        return self.driver.counters(node)

    # ------------------------------------------------------------ the host side of a wired device

    def model_socket(self, device: int) -> Path:
        """The model's ivshmem socket of `device` (QEMU's chardev connects to it)."""
        assert self.run_dir is not None
        return self.run_dir / f"model{device}.sock"

    def wire(self, device: int) -> HostWire:
        """A connection to a wired device's host socket (LabConfig.wired)."""
        if device not in self.cfg.wired:
            raise LabError(f"device {device} is not wired to the host: "
                           f"start the lab with LabConfig(wired=({device},))")
        assert self.run_dir is not None
        return HostWire(self.run_dir / f"wire{device}.sock")

    def put(self, host: str | Path, guest: str | None = None) -> str:
        """Copy a host file into the guest (default /tmp/<basename>), keeping its mode."""
        host = Path(host)
        if not host.is_file():
            raise LabError(f"--put: {host} is not a file")
        guest = guest or f"/tmp/{host.name}"
        self._run(self.agent.put(host.read_bytes(), guest))
        mode = host.stat().st_mode & 0o7777
        self.exec(f"chmod {mode:o} {shlex.quote(guest)}").check()
        return guest

    # ------------------------------------------------------------ QEMU's monitor

    def qmp(self, cmd: str, args: dict | None = None) -> Any:
        """Execute a command on QEMU's QMP monitor."""
        assert self._qmp is not None
        return self._run(self._qmp.execute(cmd, args))

    # ------------------------------------------------------------ the device model's monitor

    def model_qmp(self, cmd: str, args: dict | None = None) -> Any:
        """Execute a command on the device model's QMP monitor (faults, queries)."""
        self.check_alive()
        return self._run(self._monitor().execute(cmd, args))

    def _monitor(self) -> ModelMonitor:
        if self.monitor is None:
            assert self.run_dir is not None
            self.monitor = ModelMonitor(self.run_dir / "model-qmp.sock")
        return self.monitor

    def clear_faults(self) -> None:
        """Disarm every fault on every device (what a test arms, it leaves armed otherwise)."""
        for dev in range(self.cfg.devices):
            self.model_qmp("fault-clear", {"device": dev})

    def model_event(self, name: str, timeout: float = 30.0, **match: Any) -> dict:
        """Wait for the model's event `name` whose data contains `match`; returns its data.
        Events since the monitor was first used are kept, so arm first, then wait."""
        try:
            return self._run(self._monitor().wait_event(name, match), timeout=timeout)
        except TimeoutError:
            raise GuestTimeout(f"no {name} event {match or ''} from the device model within "
                               f"{timeout:.0f} s{self._model_log_tail()}") from None

    def model_events(self, wait: float = 0.0) -> list[dict]:
        """Every model event that arrived since the monitor was first used or the last call
        (`model_event` consumes the ones it waits for), oldest first, after `wait` seconds in
        which more may arrive.  Does not block longer than `wait`."""
        return self._run(self._monitor().drain(wait))

    def reboot(self, timeout: float | None = None) -> float:
        """QEMU's system_reset: the guest reboots (the driver probes afresh) and the guest
        agent is reconnected.  Returns the seconds until the agent answered again.

        The lab runs with -no-reboot so that a panic ends QEMU; for this one reset the reboot
        action is switched to "reset", then back."""
        t = time.monotonic()
        self.qmp("set-action", {"reboot": "reset"})
        try:
            self.qmp("system_reset")
            assert self.agent.client is not None
            self._run(self.agent.client.disconnect())
            self._run(self._connect_qga_with(timeout))
        finally:
            self.qmp("set-action", {"reboot": "shutdown"})
        assert self.kmsg is not None
        self.kmsg.check()
        return time.monotonic() - t

    async def _connect_qga_with(self, timeout: float | None) -> None:
        if timeout is not None:
            self.cfg.boot_timeout = timeout
        await self._connect_qga()

    def wait_exit(self) -> int:
        """Wait until QEMU exits by itself (the interactive shell); returns its status."""
        assert isinstance(self.qemu, subprocess.Popen)
        self._expect_exit = True
        return self.qemu.wait()
