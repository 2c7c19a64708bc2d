"""End-to-end: a real QEMU, Debian's kernel, the real driver and the device model.

One lab (two devices) serves the module; each of harness.checks.CHECKS is a test, so
`fifolab check` and the suite run the same checks.
"""

import pytest

from harness.checks import CHECKS, lab_config, run_check
from harness.lab import Lab

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def lab(kernel):
    with Lab(lab_config(kernel=kernel)) as lab:
        yield lab
        lab.leak_check()


@pytest.mark.parametrize("check", CHECKS, ids=[c.name for c in CHECKS])
def test_check(lab, check):
    out = run_check(lab, check)
    assert out.ok, out.detail


def test_exit_status_and_stderr(lab):
    res = lab.exec("echo out; echo err >&2; exit 7")
    assert (res.returncode, res.stdout, res.stderr) == (7, "out\n", "err\n")


def test_put_keeps_content_and_mode(lab, tmp_path):
    f = tmp_path / "script.sh"
    f.write_text("#!/bin/sh\necho put-ok $1\n")
    f.chmod(0o750)
    guest = lab.put(f)
    assert guest == "/tmp/script.sh"
    res = lab.exec(f"stat -c %a {guest}; {guest} x").check()
    assert res.stdout == "750\nput-ok x\n"
    big = tmp_path / "big.bin"
    data = bytes(range(256)) * 8192 + b"tail"
    big.write_bytes(data)
    lab.put(big, "/root/deep/big.bin")
    res = lab.exec("wc -c < /root/deep/big.bin; md5sum /root/deep/big.bin").check()
    import hashlib
    assert res.stdout.split()[:2] == [str(len(data)), hashlib.md5(data).hexdigest()]
