"""The scenario package's tables agree with what they mirror, and its JSON Schema with its
loader (no VM): the faults a step may arm are the model's fault commands, every step action
and expectation field has its handler, the committed scenarios/scenario.schema.json is the
generated one, and the shipped files (and broken ones) are judged alike by both."""

import json
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import yaml

from device.monitor import Monitor
from harness import scenario
from harness.cli import main
from harness.lab import LabConfig
from harness.machine import device_ids, ivshmem_device, qemu_command
from harness.scenario import judge, spec, steps
from harness.scenario.cli import schema_text
from test_scenario_schema import GOOD

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO / "scenarios" / "scenario.schema.json"


def test_faults_are_the_models_fault_commands():
    listed = {c["name"] for c in Monitor([]).query_commands({})}
    acting = {n.removeprefix("fault-") for n in listed if n.startswith("fault-")} - {"list"}
    assert set(scenario.FAULTS) == acting
    assert {"dma-error", "stall", "resume", "clear", "flood"} <= set(scenario.FAULTS)


def test_every_step_action_and_expectation_has_its_handler():
    assert set(steps.STEPS) == set(spec.STEP_ACTIONS)
    assert set(judge.JUDGES) == set(spec.EXPECT.fields)


def test_committed_json_schema_is_the_generated_one():
    assert SCHEMA_FILE.read_text() == schema_text(), (
        "regenerate it: fifolab scenario --schema > scenarios/scenario.schema.json")


def test_cli_prints_the_schema(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["scenario", "--schema"])
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out) == scenario.json_schema()


def _validator():
    schema = scenario.json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_shipped_files_are_valid_under_the_json_schema():
    v = _validator()
    files = sorted((REPO / "scenarios").glob("*.yaml"))
    assert files
    for f in files:
        errors = [e.message for e in v.iter_errors(yaml.safe_load(f.read_text()))]
        assert not errors, (f.name, errors[:3])
        first = f.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=scenario.schema.json", f.name




@pytest.mark.parametrize("old, new", [
    ("        args: {queue: rx}", "        argz: {queue: rx}"),         # unknown field
    ("paths: [sync, poll]", "paths: [sync, pole]"),                     # not a path
    ("expect: {result: -EIO}", "expect: {result: EIO}"),                # not a result
    ("counters: {rx_bytes: 0}", "counters: {rx_bytes: lots}"),          # not a comparison
    ("    class: dma-error\n", ""),                                     # required
    ("      - fault: dma-error\n", "      - fault: dma-error\n        sleep: 1\n"),  # 2 actions
    ("      - fault: dma-error\n", "      - fault: teleport\n"),        # not a model fault
    ("lab: {devices: 3, wired: [2]}", "lab: {devices: 9}"),             # out of range
    ("poll: {post_revents: [POLLERR]}", "pole: {post_revents: [POLLERR]}"),  # not a path
])
def test_the_json_schema_rejects_what_the_loader_rejects(old, new):
    assert old in GOOD
    bad = GOOD.replace(old, new)
    with pytest.raises(scenario.ScenarioError):
        scenario.load_text(bad, "bad.yaml")
    assert list(_validator().iter_errors(yaml.safe_load(bad))), new
    assert not list(_validator().iter_errors(yaml.safe_load(GOOD)))


def test_qemu_ids_have_one_home():
    ids = device_ids(1)
    assert (ids.port, ids.chardev, ids.device) == ("rp1", "ivsh1", "fifolab1")
    img = SimpleNamespace(boot="/b", initrd="/i")
    cmd = qemu_command(LabConfig(devices=2), img, Path("/r"), Path("/ram"),
                       [Path("/r/model0.sock"), Path("/r/model1.sock")])
    dev = ivshmem_device(1)
    assert ",".join([dev.pop("driver")] + [f"{k}={v}" for k, v in dev.items()]) in cmd
    assert f"pcie-root-port,id={ids.port},chassis=2,slot=0" in cmd
    assert f"socket,id={ids.chardev},path=/r/model1.sock" in cmd


def _res(stdout="", returncode=0):
    return SimpleNamespace(stdout=stdout, returncode=returncode, cmd="faultio ...")


@pytest.mark.parametrize("expect, stdout, ok", [
    ({"result": ["-EIO"]}, "path=sync op=read result=-EIO errno=EIO bytes=0", True),
    ({"result": ["-EIO"]}, "path=sync op=read result=4096 bytes=4096 data=ok", False),
    ({"result": ["ok"], "data": "ok"}, "path=sync result=-EIO errno=EIO", False),
    ({"result": [">0"]}, "path=sync result=12", True),
    ({"result": ["timeout"]}, "path=sync result=4096", False),
    ({"data": "ok"}, "path=sync result=-EIO", True),                 # no bytes: vacuous
    ({"data": "ok"}, "path=sync result=4096 data=corrupt", False),
    ({"post_revents": ["POLLERR"]}, "path=poll result=-EIO post_revents=POLLOUT|POLLERR", True),
    ({"post_revents_not": ["POLLERR"]}, "path=poll result=0 post_revents=POLLOUT|POLLERR",
     False),
    ({"revents": ["POLLIN"]}, "path=poll result=0", False),           # not reported
    ({"signals": ["POLL_ERR"]}, "path=sigio result=0 signals=POLL_IN,POLL_ERR", True),
    ({"si_code": ["POLL_HUP"]}, "path=sigio result=0 si_code=POLL_IN", False),
    ({"time_ms": [">=1400", "<5000"]}, "path=sync result=-ETIMEDOUT time_ms=1500", True),
    ({"time_ms": [">=1400"]}, "path=sync result=-ETIMEDOUT time_ms=20", False),
    ({"bytes": ">=1"}, "path=sync result=0 bytes=0", False),
    ({"errno": ["EIO", "ENODEV"]}, "path=sync result=-ENODEV errno=ENODEV", True),
    ({"stdout": "ok 100"}, "ok 100000", True),
])
def test_judge_step(expect, stdout, ok):
    got = scenario.judge_step(expect, _res(stdout), "step 1 ")
    assert all(v.ok for v in got) == ok, got
    assert all(v.field.startswith("step 1 ") for v in got)


def test_judge_exit_status():
    assert not scenario.judge_step({"exit": 0}, _res(returncode=1), "")[0].ok
    assert scenario.judge_step(scenario.implied_expect("faultio sync write /dev/x 4096"),
                               _res("path=sync result=4096"), "")[1].ok
