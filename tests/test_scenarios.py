"""Every shipped fault scenario (scenarios/*.yaml), a short soak and the fuzzer, in real VMs.

The scenarios run once, through one Runner (so they share as few labs as their configurations
allow, as `fifolab scenario` does); each is then its own test, named by file, path and name.
"""

from pathlib import Path

import pytest

from harness.lab import Lab, LabConfig
from harness.scenario import Runner, load_files
from harness.soak import soak

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = load_files([REPO / "scenarios"])


def _id(sc) -> str:
    return f"{Path(sc.file).stem}:{sc.path}:{sc.title}"


@pytest.fixture(scope="module")
def results(kernel):
    runner = Runner(kernel=kernel, out=lambda s: None)
    return {_id(r.scenario): r for r in runner.run_all(SCENARIOS)}


@pytest.mark.parametrize("sc", SCENARIOS, ids=[_id(s) for s in SCENARIOS])
def test_scenario(results, sc):
    r = results[_id(sc)]
    assert r.ok, r.detail


@pytest.fixture(scope="module")
def lab(kernel):
    with Lab(LabConfig(devices=1, kernel=kernel)) as lab:
        yield lab
        lab.leak_check()


def test_short_soak(lab):
    report = soak(lab, seconds=18, seed=11)
    assert report.ok, str(report)
    assert int(report.guest["records"]) > 1000
    assert sum(report.fired.values()) > 0
    for path in ("sync", "nonblock", "poll", "posix-aio", "libaio", "io_uring"):
        assert f"{path}:0" not in report.guest["ops_w"].split(","), report.guest["ops_w"]
    assert "sigio:0" not in report.guest["ops_r"].split(","), report.guest["ops_r"]
    assert report.pipediff >= 20            # a batch compared with a pipe, no difference


def test_fuzzer_leaves_a_clean_kernel_and_a_working_device(lab):
    # lab.exec fails on any kernel report (KernelLogError)
    res = lab.exec("fuzzfifo /dev/fifolab0 20000 5", timeout=600).check()
    assert "fuzz iterations=20000" in res.stdout
    res = lab.exec("fifotest loop /dev/fifolab0 100000 7", timeout=120).check()
    assert "ok 100000" in res.stdout
