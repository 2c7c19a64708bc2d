"""The driver developer's loop: a lab that stays up, exec/check into it, reload, down."""

import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from cli_run import run_harness
from test_harness_vm import leftovers, run_tag  # noqa: F401 (a fixture)

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def labdir(tmp_path, kernel, run_tag):
    d = tmp_path / "lab"
    env = dict(os.environ, FIFOLAB_LAB_DIR=str(d))

    def run(*args, timeout=600):
        if args[0] in ("up", "check", "exec"):
            args = (args[0], "--kernel", kernel, *args[1:])
        return run_harness(*args, env=env, timeout=timeout)
    yield run
    run("down")


def test_up_exec_reload_down(labdir, tmp_path, run_tag):
    res = labdir("up")
    assert res.returncode == 0, res.stderr
    assert "lab up: 3 device(s)" in res.stdout
    again = labdir("up")
    assert again.returncode == 1 and "already up" in again.stderr

    st = labdir("status")
    assert st.returncode == 0 and "lab       UP" in st.stdout
    assert "driver    loaded: /dev/fifolab0, /dev/fifolab1, /dev/fifolab2" in st.stdout

    # Two commands, one VM: what the first leaves in the FIFO, the second reads.
    assert labdir("exec", "--", "sh", "-c", "printf kept > /dev/fifolab1").returncode == 0
    res = labdir("exec", "--", "dd", "if=/dev/fifolab1", "bs=4", "count=1")
    assert res.stdout == "kept"

    # reload a changed copy of the driver; the lab keeps working
    src = tmp_path / "drv"
    shutil.copytree(REPO / "guest_driver", src, ignore=shutil.ignore_patterns("programs"))
    with open(src / "fifolab_main.c", "a") as f:
        f.write('\nMODULE_INFO(fifolab_reload_test, "yes");\n')
    res = labdir("reload", "--src", str(src))
    assert res.returncode == 0, res.stderr
    assert "reloaded: build " in res.stdout and "(unchanged)" not in res.stdout
    assert "nodes: fifolab0 fifolab1 fifolab2" in res.stdout
    res = labdir("exec", "--", "fifotest", "loop", "/dev/fifolab0", "100000", "5")
    assert "ok 100000" in res.stdout, res.stderr

    # a build error names the file and line and leaves the module loaded
    with open(src / "fifolab_main.c", "a") as f:
        f.write("\nint broken = ;\n")
    res = labdir("reload", "--src", str(src))
    assert res.returncode == 1
    assert f"{src}/fifolab_main.c:" in res.stderr and "error:" in res.stderr
    assert "left as it was" in res.stderr
    res = labdir("exec", "--", "fifotest", "loop", "/dev/fifolab0", "5000", "0")
    assert "ok 5000" in res.stdout

    # the guest and model logs of the running lab
    assert "fifolab 1.0" in labdir("dmesg").stdout
    assert "connected" in labdir("log").stdout

    # check runs in the lab that is up (no boot)
    res = labdir("check", "-k", "loopback")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 failed" in res.stdout

    assert labdir("down").stdout.strip() == "lab stopped"
    assert labdir("status").returncode == 1
    time.sleep(0.5)
    assert leftovers(run_tag) == set()


def test_dead_lab_is_reported_and_cleaned(labdir, run_tag):
    assert labdir("up").returncode == 0
    st = labdir("status")
    qemu_pid = int(st.stdout.split("QEMU      pid ")[1].split()[0])
    os.kill(qemu_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = labdir("status")
        if "DEAD" in st.stdout:
            break
        time.sleep(0.3)
    assert st.returncode == 1 and "DEAD" in st.stdout
    res = labdir("exec", "--", "true")
    assert res.returncode != 0 and "fifolab down" in res.stderr
    assert labdir("down").returncode == 0
    time.sleep(0.5)
    assert leftovers(run_tag) == set()


def test_failed_load_puts_the_previous_module_back_and_shell_attaches(labdir, tmp_path):
    assert labdir("up", "--devices", "1").returncode == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "Kbuild").write_text("obj-m := fifolab.o\n")
    (bad / "fifolab.c").write_text(
        '#include <linux/module.h>\n'
        'static int __init bad_init(void) { pr_err("bad driver refuses to load\\n"); '
        'return -ENODEV; }\n'
        'module_init(bad_init);\nMODULE_LICENSE("GPL");\n')
    res = labdir("reload", "--src", str(bad))
    assert res.returncode == 1
    assert "insmod failed" in res.stderr and "bad driver refuses to load" in res.stderr
    assert "previous module is loaded again" in res.stderr
    res = labdir("exec", "--", "fifotest", "loop", "/dev/fifolab0", "20000", "3")
    assert "ok 20000" in res.stdout, res.stderr

    # `fifolab shell` into the running lab: a real terminal on /dev/hvc0
    import pty
    import select
    env = dict(os.environ, FIFOLAB_LAB_DIR=str(tmp_path / "lab"))
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(REPO)
        os.execve(sys.executable, [sys.executable, "-m", "harness", "shell"], env)
    out = b""
    try:
        deadline = time.monotonic() + 60
        sent = False
        while time.monotonic() < deadline and b"sum=42" not in out:
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
            if not sent and b"attached" in out:
                time.sleep(0.5)
                os.write(fd, b"echo sum=$((40+2))\n")
                sent = True
        assert b"sum=42" in out, out.decode(errors="replace")
        os.write(fd, b"\x1d")
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert labdir("status").returncode == 0      # detaching leaves the lab up
