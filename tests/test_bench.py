"""`fifolab bench`: the goal arithmetic on made-up records, and `--quick` end to end in a VM.

No test asserts a speed: the machine is shared and noisy.  The VM test checks that every
measurement was made and that its figures agree with each other (bytes, seconds, ops/s, MB/s),
that the JSON, the table and the plot are written, and that nothing is left behind."""

import json

import pytest

from cli_run import run_harness
from device import perf
from harness import bench
from test_harness_vm import leftovers, run_tag  # noqa: F401 (a fixture)


def io(path, qd, bs, ops, p50=100.0, irqs_per_req=0.5):
    return {"kind": "io", "path": path, "qd": qd, "bs": bs, "ops_per_s": ops,
            "mb_per_s": ops * bs / 1e6, "p50_us": p50, "p99_us": 2 * p50, "requests": 1000,
            "irqs": irqs_per_req * 1000, "irqs_per_req": irqs_per_req, "cpu_us_per_op": 1.0}


def records(libaio=40000.0):
    return [io("sync", 1, 4096, 5000), io("posix_aio", 32, 4096, 4000),
            io("libaio", 32, 4096, libaio, irqs_per_req=0.02), io("io_uring", 32, 4096, 30000,
                                                                   irqs_per_req=0.3),
            io("libaio", 1, 4096, 3000, p50=105.0),
            dict(io("libaio", 8, 1 << 20, 2000), kind="stream", fifo_depth=4 << 20),
            {"kind": "ceiling", "model_copy_mb_per_s": 20000.0, "host_memcpy_mb_per_s": 1.0,
             "model_fifo_mb_per_s": 1.0},
            {"kind": "notify", "mode": "sigio", "p50_us": 300.0, "p99_us": 1.0, "count": 1},
            {"kind": "notify", "mode": "epoll", "p50_us": 250.0, "p99_us": 1.0, "count": 1},
            {"kind": "boot", "ready_s": 2.0, "floor_s": 1.8, "ratio": 2.0 / 1.8},
            {"kind": "coalescing", "path": "libaio", "qd": 1, "bs": 4096, "p50_us_on": 105.0,
             "p50_us_off": 100.0, "irqs_per_req_on": 0.5, "irqs_per_req_off": 0.5,
             "ops_per_s_on": 1.0, "ops_per_s_off": 1.0}]


def test_goals_are_ratios_of_the_run_met_or_not():
    g = {x["goal"]: x for x in bench.goals(records())}
    assert g["libaio QD32 4K ops/s vs POSIX AIO QD32"]["value"] == pytest.approx(10.0)
    assert g["libaio QD32 4K ops/s vs POSIX AIO QD32"]["met"] is True
    assert g["libaio QD32 4K ops/s vs sync"]["value"] == pytest.approx(8.0)
    assert g["io_uring QD32 4K ops/s vs libaio QD32"]["met"] is False
    assert g["1 MiB streaming vs the model's copy rate"]["value"] == pytest.approx(
        2000 * (1 << 20) / 1e6 / 20000)
    assert g["SIGIO p50 vs epoll p50"]["value"] == pytest.approx(1.2)
    assert g["SIGIO p50 vs epoll p50"]["met"] is True
    assert g["boot-to-ready vs trivial-initramfs floor"]["met"] is True
    assert g["libaio QD32 4K interrupts per request"]["met"] is True
    assert g["io_uring QD32 4K interrupts per request"]["met"] is False
    assert g["QD1 4K p50 with interrupt coalescing vs without (no added latency)"]["value"] == \
        pytest.approx(1.05)
    # a goal whose measurements are missing is reported, not guessed
    g = {x["goal"]: x for x in bench.goals([r for r in records() if r["kind"] != "boot"])}
    assert g["boot-to-ready vs trivial-initramfs floor"]["met"] is None
    text = bench.table(records() + bench.goals(records()))
    assert "NOT met io_uring QD32 4K ops/s vs libaio QD32" in text
    assert "met     libaio QD32 4K ops/s vs POSIX AIO QD32: 10.00" in text


def test_copy_ceilings_are_rates():
    for rate in (perf.memcpy_rate(4 << 20, reps=1), perf.model_copy_rate(4 << 20, reps=1),
                 perf.model_fifo_rate(4 << 20, reps=1)):
        assert 0 < rate < 1e7            # MB/s: more than nothing, less than 10 TB/s


@pytest.mark.vm
def test_bench_quick_measures_every_path(tmp_path, kernel, run_tag):  # noqa: F811
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    res = run_harness("bench", "--quick", "--kernel", kernel, "--json", str(out),
                      "--plot", str(png), timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    recs = json.loads(out.read_text())
    plan = bench.Plan.quick()
    want = {(p, qd, bs) for p, qds in bench.PATHS for qd in qds if qd in plan.qds
            for bs in plan.block_sizes}
    got = {(r["path"], r["qd"], r["bs"]): r for r in recs if r["kind"] == "io"}
    assert set(got) == want
    for (_path, _qd, bs), r in got.items():
        assert r["bytes"] > 0 and r["bytes"] % bs == 0, r
        assert r["ops_per_s"] == pytest.approx(r["bytes"] / bs / r["seconds"], rel=0.01), r
        assert r["mb_per_s"] == pytest.approx(r["bytes"] / r["seconds"] / 1e6, rel=0.01), r
        # every byte was written and read back: at least one write and one read per block
        assert r["requests"] >= 2 * r["bytes"] // bs, r
        assert 0 < r["p50_us"] <= r["p99_us"], r
        assert r["irqs"] > 0, r
    stream = {(r["path"], r["qd"]): r for r in recs if r["kind"] == "stream"}
    assert set(stream) == set(plan.stream_paths)
    for r in stream.values():
        assert r["bs"] == 1 << 20 and r["fifo_depth"] == bench.STREAM_FIFO, r
        assert r["mb_per_s"] == pytest.approx(r["bytes"] / r["seconds"] / 1e6, rel=0.01), r
    co = {r["qd"]: r for r in recs if r["kind"] == "coalescing"}
    assert set(co) == {1, 32}
    # both measured (how many messages the guest takes either way is not a fixed ratio: an
    # MSI that arrives while its handler runs is merged, more so on a busy host)
    assert all(c["irqs_per_req_on"] > 0 and c["irqs_per_req_off"] > 0 for c in co.values())
    notify = {r["mode"]: r for r in recs if r["kind"] == "notify"}
    assert set(notify) == set(bench.NOTIFY_MODES)
    assert all(n["count"] == plan.notify_count and n["p50_us"] > 0 for n in notify.values())
    boot = next(r for r in recs if r["kind"] == "boot")
    assert 0 < boot["floor_s"] and 0 < boot["ready_s"]
    ceil = next(r for r in recs if r["kind"] == "ceiling")
    assert ceil["model_copy_mb_per_s"] > 0 and ceil["host_memcpy_mb_per_s"] > 0
    assert len([r for r in recs if r["kind"] == "goal"]) == 9
    assert "goals:" in res.stdout and "libaio" in res.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert leftovers(run_tag) == set()
