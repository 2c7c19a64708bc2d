"""The harness itself, in real VMs: its CLI, its kernel-log oracle, its cleanup."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_run import run_harness
from harness.kmsg import KernelLogError
from harness.lab import GuestTimeout, Lab, LabConfig, LabError

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parents[1]


def leftovers(tag: str | None = None) -> set[str]:
    """Processes, /dev/shm files and run directories a lab could leave behind; with `tag`,
    only those of runs started with FIFOLAB_RUN_TAG=tag (other labs may run beside)."""
    procs = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if not re.search(r"qemu-system|python[0-9.]* -m (device|harness)", cmd):
            continue
        if tag is None or f"FIFOLAB_RUN_TAG={tag}".encode() in env:
            procs.add(f"proc {proc.name} {cmd[:120]}")
    pat = f"fifolab-{tag}-*" if tag else "fifolab*"
    shm = {f"shm {p.name}" for p in Path("/dev/shm").glob(pat)}
    runs = {f"dir {p}" for p in Path("/tmp").glob(pat if tag else "fifolab-*")}
    return procs | shm | runs


@pytest.fixture
def run_tag(monkeypatch):
    """A tag for the runs this test starts (children inherit it through the environment)."""
    tag = f"t{os.getpid()}x{int(time.time() * 1000) % 100000000}"
    monkeypatch.setenv("FIFOLAB_RUN_TAG", tag)
    return tag


KERNEL = os.environ.get("FIFOLAB_KERNEL", "default")


@pytest.fixture(autouse=True)
def _kernel_for_cli(kernel):
    global KERNEL
    KERNEL = kernel


def fifolab(*args, **kw):
    if args and args[0] in ("exec", "check", "shell"):
        args = (args[0], "--kernel", KERNEL, *args[1:])
    return run_harness(*args, **kw)


def test_exec_hello_and_nothing_left(run_tag):
    res = fifolab("exec", "--", "sh", "-c",
                  "printf hello > /dev/fifolab0 && dd if=/dev/fifolab0 bs=5 count=1 2>/dev/null")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "hello"
    assert leftovers(run_tag) == set()


def test_exec_propagates_exit_status():
    res = fifolab("exec", "--", "sh", "-c", "echo to-stderr >&2; exit 3")
    assert res.returncode == 3
    assert "to-stderr" in res.stderr


def test_interrupted_run_leaves_nothing(run_tag):
    proc = subprocess.Popen([sys.executable, "-m", "harness", "exec", "--kernel", KERNEL,
                             "--", "sleep", "600"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Wait until the VM is up (QEMU running), then Ctrl-C the harness.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any("qemu-system" in x for x in leftovers(run_tag)):
            break
        time.sleep(0.2)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    time.sleep(0.5)
    assert leftovers(run_tag) == set()


def test_kernel_warning_fails_the_run(kernel):
    with Lab(LabConfig(kernel=kernel)) as lab:
        lab.exec("true").check()
        with pytest.raises(KernelLogError) as err:
            lab.exec("echo 'WARNING: CPU: 0 PID: 1 at fake.c:1 injected' > /dev/kmsg; sleep 0.5")
        assert "injected" in str(err.value)


def test_dead_model_is_noticed(kernel):
    with Lab(LabConfig(kernel=kernel)) as lab:
        lab.model.kill()
        lab.model.wait()
        with pytest.raises(LabError, match="device model died"):
            lab.exec("true")


def test_shell_is_interactive():
    """`fifolab shell` on a terminal: a prompt, the driver's node, poweroff ends it."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "harness", "shell", "--kernel", KERNEL])
    out = b""

    def read_until(token: bytes, timeout: float) -> bool:
        nonlocal out
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    return token in out
                if not chunk:
                    return token in out
                out += chunk
            if token in out:
                return True
        return False

    try:
        assert read_until(b"fifolab guest shell", 120), out.decode(errors="replace")
        time.sleep(0.5)
        os.write(fd, b"echo node=$(ls /dev/fifolab0)\n")
        assert read_until(b"node=/dev/fifolab0", 30), out.decode(errors="replace")
        os.write(fd, b"poweroff -f\n")
        read_until(b"\0never", 60)          # until the harness exits and the pty closes
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0, out.decode(errors="replace")
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


def test_system_reset_reboots_the_guest(kernel):
    # loglevel=7: should a reboot not come back (seen once in CI, debug kernel), the error
    # shows how far the boot got
    with Lab(LabConfig(kernel=kernel, append="loglevel=7")) as lab:
        lab.exec("echo before > /tmp/marker").check()
        seconds = lab.reboot()
        assert seconds > 0
        res = lab.exec("test -e /tmp/marker; echo marker=$?; fifotest loop /dev/fifolab0 50000 1")
        assert "marker=1" in res.stdout          # a fresh boot: tmpfs is empty again
        assert "ok 50000" in res.stdout, res.stderr


def test_a_boot_that_does_not_end_says_where_the_guest_is(kernel, run_tag):
    """The agent's boot deadline passes (here: 1 s, too short for any boot): the error names
    QEMU's state and each vCPU's instruction pointer, and nothing is left behind."""
    with pytest.raises(GuestTimeout) as exc:
        with Lab(LabConfig(kernel=kernel, boot_timeout=1.0)):
            pass
    msg = str(exc.value)
    assert "did not answer within 1 s of boot" in msg
    assert re.search(r"QEMU: running; vCPU0 at [0-9a-f]{8,16}( \(halted\))?, "
                     r"vCPU1 at [0-9a-f]{8,16}", msg), msg
    time.sleep(0.5)
    assert leftovers(run_tag) == set()


def test_check_counts_the_checks_a_dead_lab_never_ran(run_tag):
    """QEMU killed part way through `fifolab check`: every check that did not run is a
    failure in the verdict, and the exit status says so."""
    proc = subprocess.Popen([sys.executable, "-m", "harness", "check", "--kernel", KERNEL],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines, passed = [], 0
    assert proc.stdout
    for line in proc.stdout:
        lines.append(line)
        passed += line.lstrip().startswith("PASS")
        if passed == 3:
            qemu = [p.split()[1] for p in leftovers(run_tag) if "qemu-system" in p]
            assert qemu, lines
            for pid in qemu:
                os.kill(int(pid), signal.SIGKILL)
            break
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=120) == 1, out
    m = re.search(r"^(\d+) passed, (\d+) failed$", out, re.M)
    assert m, out
    total = int(m.group(1)) + int(m.group(2))
    assert int(m.group(1)) <= 4 and total >= 40, out       # the whole table is in the verdict
    assert "checks did not run (the lab died" in out and "not run: the lab is gone" in out
    time.sleep(0.5)
    assert leftovers(run_tag) == set()


def test_a_wedged_guest_agent_ends_the_command_instead_of_hanging(kernel, monkeypatch):
    """An oops that holds a lock wedges the guest and its agent: a command must then end at
    its timeout (plus a grace), not wait for ever (fifolab mutants found it: a driver that
    completes a kiocb twice left `fifolab check` hanging).  Stopping qemu-ga does the same."""
    from harness.lab import GuestTimeout
    monkeypatch.setattr(Lab, "AGENT_GRACE", 2.0)
    with Lab(LabConfig(kernel=kernel)) as lab:
        lab.exec("true").check()
        t = time.monotonic()
        with pytest.raises(GuestTimeout, match="stopped answering"):
            lab.exec("kill -STOP $(pidof qemu-ga); sleep 60", timeout=3)
        assert time.monotonic() - t < 20
