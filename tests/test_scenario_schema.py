"""Scenario files are validated before anything runs: every error names the file, the line
and the field (no VM)."""

from pathlib import Path

import pytest

from harness import scenario
from harness.scenario import ScenarioError, load_files, load_text

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
lab: {devices: 3, wired: [2]}
scenarios:
  - name: a read fails
    class: dma-error
    paths: [sync, poll]
    steps:
      - guest: faultio sync write {dev} 4096
      - fault: dma-error
        args: {queue: rx}
      - guest: faultio {path} read {dev} 4096
        expect: {result: -EIO}
        expect_for:
          poll: {post_revents: [POLLERR]}
    expect:
      events: [DMA_ERROR]
      counters: {rx_bytes: 0}
"""


def error(text: str) -> str:
    with pytest.raises(ScenarioError) as exc:
        load_text(text, "bad.yaml")
    return str(exc.value)


def test_good_file_expands_per_path():
    got = load_text(GOOD, "good.yaml")
    assert [s.path for s in got] == ["sync", "poll"]
    assert got[0].steps[2]["guest"] == "faultio sync read /dev/fifolab0 4096"
    expect = {k: v for k, v in got[1].steps[2]["expect"].items() if k != "_line"}
    assert expect == {"result": ["-EIO"], "post_revents": ["POLLERR"]}
    assert "post_revents" not in got[0].steps[2]["expect"]
    assert got[0].fault == "dma-error(queue=rx)"


def test_unknown_field_names_file_line_field():
    msg = error(GOOD.replace("        args: {queue: rx}", "        argz: {queue: rx}"))
    assert msg.startswith("bad.yaml:9: scenarios[0].steps[1].argz: unknown field"), msg


def test_unknown_top_level_field():
    assert error("labs: {}\n" + GOOD).startswith("bad.yaml:1: labs: unknown field")


def test_wrong_type_names_line_and_field():
    msg = error(GOOD.replace("paths: [sync, poll]", "paths: [sync, pole]"))
    assert msg.startswith("bad.yaml:5: scenarios[0].paths[1]: expected one of"), msg


def test_bad_expectation_value():
    msg = error(GOOD.replace("expect: {result: -EIO}", "expect: {result: EIO}"))
    assert msg.startswith("bad.yaml:11: scenarios[0].steps[2].expect.result:"), msg
    msg = error(GOOD.replace("counters: {rx_bytes: 0}", "counters: {rx_bytes: lots}"))
    assert msg.startswith("bad.yaml:16: scenarios[0].expect.counters.rx_bytes:"), msg


def test_missing_required_field():
    msg = error(GOOD.replace("    class: dma-error\n", ""))
    assert msg.startswith("bad.yaml:3: scenarios[0].class: missing (required)"), msg


def test_step_needs_exactly_one_action():
    msg = error(GOOD.replace("      - fault: dma-error\n", "      - fault: dma-error\n"
                                                            "        sleep: 1\n"))
    assert msg.startswith("bad.yaml:8: scenarios[0].steps[1]: needs exactly one of"), msg


def test_unknown_placeholder():
    msg = error(GOOD.replace("read {dev} 4096", "read {device} 4096"))
    assert msg.startswith("bad.yaml:10: scenarios[0].steps[2].guest: unknown placeholder "
                          "{device}"), msg


def test_wait_for_unknown_background_and_bad_device():
    msg = error(GOOD.replace("      - fault: dma-error\n        args: {queue: rx}\n",
                             "      - wait: nobody\n"))
    assert msg.startswith("bad.yaml:8: wait: no background command"), msg
    msg = error(GOOD.replace("    paths: [sync, poll]\n", "    paths: [sync, poll]\n"
                                                            "    device: 7\n"))
    assert msg.startswith("bad.yaml:3: device: device 7 does not exist"), msg


def test_a_wire_step_needs_a_wired_device():
    inject = GOOD.replace("      - guest: faultio sync write {dev} 4096\n", "      - inject: 100\n")
    msg = error(inject.replace("lab: {devices: 3, wired: [2]}", "lab: {devices: 2}"))
    assert msg.startswith("bad.yaml:7: inject: the lab has no wired device"), msg
    msg = error(inject.replace("      - inject: 100\n", "      - inject: 100\n        device: 1\n"))
    assert msg.startswith("bad.yaml:7: inject: device 1 is not wired to the host"), msg
    assert load_text(inject, "good.yaml")


def test_yaml_syntax_error_has_a_line():
    msg = error("scenarios:\n  - name: [unclosed\n")
    assert msg.startswith("bad.yaml:3: (syntax):"), msg


def test_every_error_is_reported_per_file(tmp_path):
    (tmp_path / "a.yaml").write_text(GOOD.replace("class: dma-error", "class: dma"))
    (tmp_path / "b.yaml").write_text("scenarios: []\n")
    with pytest.raises(ScenarioError) as exc:
        load_files([tmp_path])
    lines = str(exc.value).splitlines()
    assert lines[0].startswith(f"{tmp_path / 'a.yaml'}:4: scenarios[0].class:")
    assert lines[1].startswith(f"{tmp_path / 'b.yaml'}:1: scenarios: needs at least 1")


def test_shipped_scenarios_are_valid_and_cover_the_matrix():
    got = load_files([REPO / "scenarios"])
    seen = {(s.cls, s.path) for s in got}
    for cls in ("dma-error", "lost-irq", "spurious-irq", "stall", "slow", "corrupt",
                "device-reset", "hostile", "flood", "hot-unplug", "stop-cont"):
        paths = {p for c, p in seen if c == cls}
        assert paths == set(scenario.PATHS), (cls, set(scenario.PATHS) - paths)
    kinds = {s.vars.get("kind") for s in got if s.cls == "hostile"}
    assert kinds == {"long", "unknown-id", "duplicate", "index"}


def test_cli_rejects_a_bad_file(tmp_path, capsys):
    from harness.cli import main
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("queue: rx", "queue: rx}\n"))
    assert main(["scenario", str(bad)]) == 2
    assert f"{bad}:" in capsys.readouterr().out
