"""Fault scenarios: YAML files that say what to run in the guest, which faults to inject and
when, and what must come out; ``fifolab scenario FILE...`` runs them (docs/faults.md,
"Scenarios, soak and fuzzing").

One concern per module::

    schema.py   a schema library: YAML checked line by line, exported as JSON Schema
    spec.py     what a scenario file may say (the schema), and loading: a file becomes
                Scenario objects, one per path and matrix value (load_files, load_text)
    judge.py    an outcome against its expectations (judge_step, cross_check): no VM
    steps.py    the step actions, one handler each (STEPS), and the machine actions
    runner.py   Runner: labs booted and shared, each scenario prepared, run, judged, undone
    cli.py      ``fifolab scenario`` and its table; ``--schema``

A file::

    lab: {devices: 3, wired: [2], fifo_depth: 65536, memory: 512, own: false}
    scenarios:
      - name: DMA error on a read
        class: dma-error                       # the fault class (CLASSES), for the table
        paths: [sync, poll, libaio]            # one scenario per path: {path} in strings
        device: 0                              # {dev} = /dev/fifolab0, {n} = 0
        modparams: {stall_timeout_ms: 1500}    # fifolab.ko is loaded with these
        steps:
          - guest: faultio sync write {dev} 4096
          - fault: dma-error
            args: {queue: rx}
          - guest: faultio {path} read {dev} 4096 --expect-pattern
            expect: {result: -EIO}
            expect_for: {poll: {post_revents: [POLLERR]}}
        expect:
          events: [FAULT_FIRED, {name: DMA_ERROR, match: {queue: rx}}]
          counters: {rx_bytes: 0, recoveries: ">=0"}    # deltas of the sysfs counters

Loading (``load_files``) validates everything before anything runs: an error names the file,
the line and the field (``scenarios[0].steps[2].expect.result``), and unknown fields are
errors.  Running (``Runner``): scenarios whose ``lab`` sections are equal share one booted lab.
Before each scenario the driver is reloaded (``rmmod``/``insmod`` with its ``modparams``):
that resets the device, empties the FIFOs and clears sticky errors and counters.  After the
steps the runner clears the faults (``fault-clear``, ``fault-resume``, ``cont``, replug), then
checks the kernel log and the device (``fifotest loop`` on the scenario's device unless it is
wired or ``integrity: false``) -- so recovery is the driver's own.  A scenario that leaves the
lab unusable (QEMU or the model died, the driver cannot be reloaded) is failed and the next
one gets a fresh lab; ``own: true`` (file) or ``isolate: true`` (scenario) asks for a fresh lab
from the start.
"""

from .cli import add_command, cmd_scenario, table
from .judge import (
    Result,
    Verdict,
    compare,
    cross_check,
    event_matches,
    implied_expect,
    judge_step,
    parse_outcome,
)
from .runner import Runner
from .schema import ScenarioError
from .spec import (
    CLASSES,
    FAULTS,
    PATHS,
    STEP_ACTIONS,
    LabSpec,
    Scenario,
    json_schema,
    load_files,
    load_text,
)

__all__ = ["CLASSES", "FAULTS", "PATHS", "STEP_ACTIONS", "LabSpec", "Result", "Runner",
           "Scenario", "ScenarioError", "Verdict", "add_command", "cmd_scenario", "compare",
           "cross_check", "event_matches", "implied_expect", "json_schema", "judge_step",
           "load_files", "load_text", "parse_outcome", "table"]
