"""The device's stream semantics checked against the kernel's own pipe (GitHub issue 11).

`pipediff` (guest_driver/programs/pipediff.c) runs random operation sequences op by op on
/dev/fifolab0 and on a named FIFO in the same guest and compares everything a user sees: counts,
errno, the bytes, FIONREAD, poll/epoll, SIGIO, libaio and io_uring results; the one designed
difference (the device counts its space in bytes, a pipe in page slots) is applied as a rule.
Its top comment has the contract.  Every test runs on two labs: the datasheet's 64 KiB FIFO, and
an odd depth below PIPE_BUF, where "writable" means empty and every small write is all or nothing.

FIFOLAB_PIPEDIFF_SEQUENCES=N runs N sequences of the mixed profile (N/2 of the large one) instead
of the default: a soak.
"""

import os
import re

import pytest

from harness.lab import Lab, LabConfig

pytestmark = pytest.mark.vm

DEV = "/dev/fifolab0"
SEQUENCES = int(os.environ.get("FIFOLAB_PIPEDIFF_SEQUENCES", "80"))
MIN_OPS_PER_SEQUENCE = {"mixed": 20, "big": 10}     # the generator's least, before the drain
SUMMARY = re.compile(r"^pipediff: (\d+) sequences, (\d+) ops, (\d+) differences$", re.M)


@pytest.fixture(scope="module", params=[65536, 3000], ids=lambda d: f"depth{d}")
def lab(request, kernel):
    with Lab(LabConfig(devices=1, fifo_depth=request.param, kernel=kernel)) as lab:
        yield lab
        lab.leak_check()


def pipediff(lab, seed: int, sequences: int, *args: str):
    # TCG: some 300 ops a second (debug kernel: fewer); every wait inside pipediff is bounded
    return lab.exec(f"pipediff {DEV} {seed} {sequences} --quiet {' '.join(args)}",
                    timeout=120 + 2 * sequences)


def assert_no_difference(res, sequences: int, profile: str) -> None:
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"pipediff found a difference (exit {res.returncode}):\n{out}"
    m = SUMMARY.search(res.stdout)
    assert m, f"no closing line:\n{out}"
    seqs, ops, diffs = map(int, m.groups())
    assert (seqs, diffs) == (sequences, 0), out
    # a run that silently did nothing must fail
    assert ops >= MIN_OPS_PER_SEQUENCE[profile] * sequences, out
    print(res.stdout.strip())


def test_mixed_ops_match_the_pipe(lab):
    res = pipediff(lab, 0x11, SEQUENCES)
    assert_no_difference(res, SEQUENCES, "mixed")


def test_large_vectored_ops_match_the_pipe(lab):
    """Larger writes, 32..64 segments of up to 9000 bytes."""
    n = max(SEQUENCES // 2, 1)
    res = pipediff(lab, 0x5EED2, n, "--profile", "big")
    assert_no_difference(res, n, "big")


def test_the_oracle_can_fail(lab):
    """--mutate-device drops the last segment of the device's vectored reads: pipediff must
    see it, so the comparison is live."""
    res = pipediff(lab, 0x11, 20, "--mutate-device")
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(r"^pipediff: DIFFERENCE seed=0x11 sequence=\d+ op=\d+: ", res.stdout, re.M), \
        res.stdout + res.stderr
    assert "replay:" in res.stdout and "--mutate-device" in res.stdout
    assert not SUMMARY.search(res.stdout)
