"""A hostile guest against the device model (GitHub issue 13, item 4b).

``hostile`` (guest_driver/programs/hostile.c) unbinds the driver and drives the device's BAR2
and doorbell from user space for SECONDS with random and adversarial values -- garbage
descriptors, MAX_SEGS chains past 1 GiB and 4 GiB, a whole ring of 261-descriptor walks,
AVAIL_IDX jumps, reposted heads, CONTROL and doorbell storms, garbage in the device's own
registers -- with loopback traffic in between; meanwhile the host times a query-status on the
model's monitor every 50 ms and samples its memory (harness/hostile.py, the same run as
``fifolab fuzz --device``).  One boot, one run; each test reads one part of its report.
"""

import pytest

from harness import hostile
from harness.lab import Lab, LabConfig

pytestmark = pytest.mark.vm

SECONDS = 10
SEED = 13


@pytest.fixture(scope="module")
def report(kernel):
    with Lab(LabConfig(devices=1, kernel=kernel)) as lab:
        rep = hostile.fuzz_device(lab, SECONDS, SEED)
        print(rep)
        yield rep


def test_the_hostile_guest_did_every_kind_of_op(report):
    g = report.guest
    assert g, report.problems
    assert g["ops"] >= 100 and g["doorbells"] >= 1000, g
    assert set(g["kinds"]) >= {"loopback", "random-desc", "max-chain", "ring-walk",
                               "bad-chain", "avail-jump", "repost", "control-storm",
                               "int-garbage", "cancel", "doorbell-storm", "ro-garbage"}
    assert all(n > 0 for n in g["kinds"].values()), g["kinds"]
    # the garbage reached the device and came back as errors the guest can read
    assert g["err_count"] > 0 and g["err_codes"], g
    # and the program put everything back
    assert g["left_reset"] is True and g["rebound"] is True, g


def test_loopback_traffic_went_through_in_between(report):
    loop = report.guest["loop"]
    # right after a reset the device is a plain FIFO: data comes back (how much matches is
    # reported, not judged: garbage may interleave with the other runs)
    assert loop["clean_runs"] > 0 and loop["clean_got"] > 0, loop
    assert loop["runs"] >= loop["clean_runs"]


def test_the_model_lived_and_logged_no_error(report):
    assert report.model_alive
    assert report.model_trouble == []


def test_the_model_monitor_answered_within_the_limit(report):
    # a probe every 50 ms for the whole run (at least half of them: TCG, 2 shared cores)
    assert len(report.latencies) >= SECONDS / hostile.PROBE_INTERVAL_S / 2, \
        len(report.latencies)
    assert report.worst_busy <= hostile.MAX_MONITOR_LATENCY_S, \
        f"the model worked {report.worst_busy * 1000:.0f} ms while a probe waited"
    assert report.worst_latency <= hostile.MAX_MONITOR_WALL_S, \
        f"worst {report.worst_latency * 1000:.0f} ms at {report.worst_at:.1f} s"


def test_the_model_log_and_memory_stay_bounded(report):
    assert report.log_bytes_per_minute <= hostile.MAX_LOG_BYTES_PER_MINUTE, report.log_bytes
    assert report.mem_before.get("RssAnon", 0) > 0 and report.mem_peak.get("RssAnon", 0) > 0
    assert report.anon_growth <= hostile.MAX_RSS_ANON_GROWTH, report.anon_growth


def test_the_guest_kernel_log_is_clean(report):
    assert report.kernel_reports == []


def test_the_device_works_through_the_driver_afterwards(report):
    assert report.after_ok, report.after
    assert report.after.startswith("driver bound; ok 100000 ")


def test_the_verdict_is_pass(report):
    assert report.ok and report.problems == [], "\n".join(report.problems)
