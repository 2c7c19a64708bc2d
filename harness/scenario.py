"""Fault scenarios: YAML files that say what to run in the guest, which faults to inject and
when, and what must come out; ``fifolab scenario FILE...`` runs them (docs/faults.md,
"Scenarios, soak and fuzzing").

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
errors.  Running (``run``): scenarios whose ``lab`` sections are equal share one booted lab.
Before each scenario the driver is reloaded (``rmmod``/``insmod`` with its ``modparams``):
that resets the device, empties the FIFOs and clears sticky errors and counters.  After the
steps the runner clears the faults (``fault-clear``, ``fault-resume``, ``cont``, replug), then
checks the kernel log and the device (``fifotest loop`` on the scenario's device unless it is
wired or ``integrity: false``) -- so recovery is the driver's own.  A scenario that leaves the
lab unusable (QEMU or the model died, the driver cannot be reloaded) is failed and the next
one gets a fresh lab; ``own: true`` (file) or ``isolate: true`` (scenario) asks for a fresh lab
from the start.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import shlex
import string
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from .checks import pattern
from .kmsg import KernelLogError
from .lab import GuestJob, Lab, LabConfig, LabError

PATHS = ("sync", "nonblock", "poll", "sigio", "posix-aio", "libaio", "io_uring")
CLASSES = ("none", "dma-error", "lost-irq", "spurious-irq", "stall", "slow", "corrupt",
           "device-reset", "hostile", "flood", "hot-unplug", "stop-cont", "mixed")
FAULTS = ("dma-error", "lost-irq", "spurious-irq", "stall", "resume", "slow", "corrupt",
          "reset", "hostile", "flood", "clear")
POLL_FLAGS = ("POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLNVAL", "POLLRDNORM",
              "POLLWRNORM")
SI_CODES = ("POLL_IN", "POLL_OUT", "POLL_MSG", "POLL_ERR", "POLL_PRI", "POLL_HUP", "none")
STATIC_VARS = ("path", "dev", "n", "wdev", "depth")
RUNTIME_VARS = ("ready", "go")
COMPARE = re.compile(r"^\s*(==|!=|>=|<=|>|<)?\s*(-?\d+)\s*$")


class ScenarioError(ValueError):
    """A scenario file is malformed: the message names the file, the line and the field."""


# ---------------------------------------------------------------- schema

@dataclasses.dataclass
class _Ctx:
    file: str
    vars: frozenset[str] = frozenset()

    def error(self, node: yaml.Node, field: str, msg: str) -> ScenarioError:
        return ScenarioError(f"{self.file}:{node.start_mark.line + 1}: {field or '(top)'}: "
                             f"{msg}")


_constructor = yaml.constructor.SafeConstructor()


def _scalar(node: yaml.Node) -> Any:
    return _constructor.construct_object(node, deep=True)


_KIND = {yaml.ScalarNode: "a scalar", yaml.SequenceNode: "a list", yaml.MappingNode: "a mapping"}


class Schema:
    what = "a value"

    def load(self, node: yaml.Node, ctx: _Ctx, field: str) -> Any:
        raise NotImplementedError


class Scalar(Schema):
    """A scalar of one of `types`; optionally one of `choices`, or passing `check`."""

    def __init__(self, *types: type, choices: tuple | None = None,
                 check: Callable[[Any], str | None] | None = None, what: str = ""):
        self.types, self.choices, self.check = types, choices, check
        names = "/".join({int: "integer", float: "number", str: "string",
                          bool: "boolean"}[t] for t in types)
        self.what = what or (f"one of {', '.join(map(str, choices))}" if choices else names)

    def load(self, node, ctx, field):
        if not isinstance(node, yaml.ScalarNode):
            raise ctx.error(node, field, f"expected {self.what}, got {_KIND[type(node)]}")
        value = _scalar(node)
        ok = any(isinstance(value, t) and not (t is int and isinstance(value, bool))
                 for t in self.types)
        if not ok and float in self.types and isinstance(value, int) \
                and not isinstance(value, bool):
            ok = True
        if not ok or (self.choices is not None and value not in self.choices):
            raise ctx.error(node, field, f"expected {self.what}, got {value!r}")
        if self.check:
            problem = self.check(value)
            if problem:
                raise ctx.error(node, field, problem)
        if isinstance(value, str):
            _check_placeholders(value, node, ctx, field)
        return value


def _check_placeholders(text: str, node, ctx: _Ctx, field: str) -> None:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as err:
        raise ctx.error(node, field, f"bad placeholder in {text!r}: {err} "
                                     f"(write {{{{ and }}}} for literal braces)") from None
    for name in names:
        if name not in ctx.vars:
            raise ctx.error(node, field, f"unknown placeholder {{{name}}} (known: "
                                         f"{', '.join(sorted(ctx.vars))})")


class Seq(Schema):
    def __init__(self, item: Schema, min_len: int = 0):
        self.item, self.min_len = item, min_len
        self.what = f"a list of {item.what}"

    def load(self, node, ctx, field):
        if isinstance(node, yaml.ScalarNode) and not isinstance(self.item, (Seq, Record)):
            return [self.item.load(node, ctx, field)]       # one value for a list of one
        if not isinstance(node, yaml.SequenceNode):
            raise ctx.error(node, field, f"expected {self.what}, got {_KIND[type(node)]}")
        if len(node.value) < self.min_len:
            raise ctx.error(node, field, f"needs at least {self.min_len} item(s)")
        return [self.item.load(n, ctx, f"{field}[{i}]") for i, n in enumerate(node.value)]


class Dict(Schema):
    """A mapping with free keys (fault arguments, counters)."""

    def __init__(self, value: Schema, keys: tuple[str, ...] | None = None):
        self.value, self.keys = value, keys
        self.what = f"a mapping of {value.what}"

    def load(self, node, ctx, field):
        if not isinstance(node, yaml.MappingNode):
            raise ctx.error(node, field, f"expected {self.what}, got {_KIND[type(node)]}")
        out = {}
        for knode, vnode in node.value:
            key = _scalar(knode) if isinstance(knode, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise ctx.error(knode, field, "keys must be strings")
            if self.keys is not None and key not in self.keys:
                raise ctx.error(knode, f"{field}.{key}",
                                f"unknown key (expected one of {', '.join(self.keys)})")
            out[key] = self.value.load(vnode, ctx, f"{field}.{key}")
        return out


class Any_(Schema):
    """Any plain YAML value (QMP arguments are checked by the monitor itself)."""
    what = "any value"

    def load(self, node, ctx, field):
        return _constructor.construct_document(node) if not isinstance(
            node, yaml.ScalarNode) else _scalar(node)


class Record(Schema):
    """A mapping with known fields, loaded in the order declared; unknown fields are
    errors.  `exactly_one` names fields of which exactly one must be given (a step's
    action)."""

    def __init__(self, fields: dict[str, tuple[Schema, bool]], what: str = "a mapping",
                 exactly_one: tuple[str, ...] = (),
                 hook: Callable[[dict, yaml.Node, _Ctx, str], None] | None = None):
        self.fields, self.what, self.exactly_one, self.hook = fields, what, exactly_one, hook

    def load(self, node, ctx, field):
        if not isinstance(node, yaml.MappingNode):
            raise ctx.error(node, field, f"expected {self.what}, got {_KIND[type(node)]}")
        given: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for knode, vnode in node.value:
            key = _scalar(knode) if isinstance(knode, yaml.ScalarNode) else None
            sub = f"{field}.{key}" if field else str(key)
            if key not in self.fields:
                raise ctx.error(knode, sub, f"unknown field (known: "
                                            f"{', '.join(self.fields)})")
            if key in given:
                raise ctx.error(knode, sub, "given twice")
            given[key] = (knode, vnode)
        if self.exactly_one:
            acts = [k for k in self.exactly_one if k in given]
            if len(acts) != 1:
                raise ctx.error(node, field, f"needs exactly one of "
                                             f"{', '.join(self.exactly_one)}"
                                             f"{' (got ' + ', '.join(acts) + ')' if acts else ''}")
        out: dict[str, Any] = {"_line": node.start_mark.line + 1}
        for key, (schema, required) in self.fields.items():
            sub = f"{field}.{key}" if field else key
            if key not in given:
                if required:
                    raise ctx.error(node, sub, "missing (required)")
                continue
            out[key] = schema.load(given[key][1], ctx, sub)
            if self.hook:
                self.hook(out, given[key][1], ctx, sub)
        return out


def _compare_check(v: Any) -> str | None:
    if isinstance(v, int) or COMPARE.match(str(v)):
        return None
    return f"expected a number or a comparison like '>=1', got {v!r}"


def _result_check(v: Any) -> str | None:
    if isinstance(v, int) or v in ("ok", "timeout") or re.fullmatch(r"-E[A-Z0-9]+", str(v)) \
            or COMPARE.match(str(v)):
        return None
    return f"expected ok, timeout, -ERRNO (e.g. -EIO), a byte count or a comparison, got {v!r}"


CMP = Scalar(int, str, check=_compare_check, what="a number or a comparison ('>=1')")
RESULT = Scalar(int, str, check=_result_check, what="ok, timeout, -ERRNO or a byte count")
POLLSET = Seq(Scalar(str, choices=POLL_FLAGS))

EXPECT = Record({
    "exit": (Scalar(int), False),
    "result": (Seq(RESULT, 1), False),           # any of
    "errno": (Seq(Scalar(str), 1), False),
    "bytes": (CMP, False),
    "data": (Scalar(str, choices=("ok", "corrupt")), False),
    "revents": (POLLSET, False),                 # all of these set
    "revents_not": (POLLSET, False),             # none of these set
    "post_revents": (POLLSET, False),
    "post_revents_not": (POLLSET, False),
    "si_code": (Seq(Scalar(str, choices=SI_CODES), 1), False),     # any of
    "signals": (Seq(Scalar(str, choices=SI_CODES)), False),       # all of these seen
    "time_ms": (Seq(CMP, 1), False),             # all of these comparisons
    "stdout": (Scalar(str), False),
}, what="an expectation")


def _check_lab(out, node, ctx, field):
    if field.endswith("wired") and any(not 0 <= w < out.get("devices", 3) for w in out["wired"]):
        raise ctx.error(node, field, "a wired device number must be below `devices`")


LAB = Record({
    "devices": (Scalar(int, check=lambda v: None if 1 <= v <= 8 else "must be 1..8"), False),
    "wired": (Seq(Scalar(int)), False),
    "fifo_depth": (Scalar(int, check=lambda v: None if 4096 <= v <= 1 << 24
                          else "must be 4096..16 MiB"), False),
    "memory": (Scalar(int, check=lambda v: None if 128 <= v <= 8192 else "must be 128..8192"),
               False),
    "own": (Scalar(bool), False),
}, what="a lab configuration", hook=_check_lab)

STEP_ACTIONS = ("guest", "wait", "fault", "event", "sleep", "qmp", "unplug", "replug",
                "inject", "receive")
STEP = Record({
    # actions
    "guest": (Scalar(str), False),               # a guest shell command
    "wait": (Scalar(str), False),                # a background command's name
    "fault": (Scalar(str, choices=FAULTS), False),  # the model's fault-<name>
    "event": (Scalar(str), False),               # wait for this model event
    "sleep": (Scalar(float), False),             # seconds
    "qmp": (Scalar(str), False),                 # a command on QEMU's monitor
    "unplug": (Scalar(int), False),              # hot-unplug device N (device_del)
    "replug": (Scalar(int), False),              # plug it back (chardev + device_add)
    "inject": (Scalar(int), False),              # host sends N bytes into a wired device
    "receive": (Scalar(int), False),             # host reads N bytes from a wired device
    # modifiers
    "background": (Scalar(str), False),          # guest: run as this name, `wait` later
    "ready": (Scalar(bool), False),              # guest: wait until it creates {ready}
    "timeout": (Scalar(float), False),
    "expect": (EXPECT, False),                   # guest (foreground) / wait
    "expect_for": (Dict(EXPECT, keys=PATHS), False),   # extra expectations per path
    "args": (Dict(Any_()), False),               # fault / qmp arguments
    "device": (Scalar(int), False),              # fault / inject / receive
    "after_bytes": (Scalar(int), False),         # fault: once the device moved N more bytes
    "queue": (Scalar(str, choices=("tx", "rx")), False),  # ... on this queue (default rx)
    "match": (Dict(Any_()), False),              # event: data that must match
    "pattern": (Scalar(str, choices=("harness", "counter")), False),  # inject / receive
    "seed": (Scalar(int), False),                # inject / receive: stream offset
}, what="a step", exactly_one=STEP_ACTIONS)

EVENT = Record({"name": (Scalar(str), True), "match": (Dict(Any_()), False)},
               what="an event")


class EventSpec(Schema):
    what = "an event name or {name, match}"

    def load(self, node, ctx, field):
        if isinstance(node, yaml.ScalarNode):
            return {"name": Scalar(str).load(node, ctx, field), "match": {}}
        out = EVENT.load(node, ctx, field)
        out.setdefault("match", {})
        return out


SCENARIO_EXPECT = Record({
    "events": (Seq(EventSpec()), False),
    "no_events": (Seq(EventSpec()), False),
    "counters": (Dict(CMP), False),
    "fifo_empty": (Scalar(bool), False),
}, what="the scenario's expectations")


def _scenario_vars(out, node, ctx, field):
    # {path} and matrix variables become known as soon as they are loaded
    if field.endswith(".matrix"):
        ctx.vars = ctx.vars | set(out["matrix"])


SCENARIO = Record({
    "name": (Scalar(str), True),
    "class": (Scalar(str, choices=CLASSES), True),
    "paths": (Seq(Scalar(str, choices=PATHS), 1), False),
    "matrix": (Dict(Seq(Scalar(str, int), 1)), False),
    "device": (Scalar(int), False),
    "modparams": (Dict(Scalar(int, str)), False),
    "timeout": (Scalar(float), False),
    "integrity": (Scalar(bool), False),
    "isolate": (Scalar(bool), False),
    "steps": (Seq(STEP, 1), True),
    "expect": (SCENARIO_EXPECT, False),
}, what="a scenario", hook=_scenario_vars)

FILE = Record({
    "lab": (LAB, False),
    "scenarios": (Seq(SCENARIO, 1), True),
}, what="a scenario file")


# ---------------------------------------------------------------- loaded scenarios

@dataclasses.dataclass(frozen=True)
class LabSpec:
    devices: int = 3
    wired: tuple[int, ...] = (2,)
    fifo_depth: int = 65536
    memory: int = 512
    own: bool = False

    def config(self, kernel: str) -> LabConfig:
        return LabConfig(devices=self.devices, wired=self.wired, fifo_depth=self.fifo_depth,
                         memory_mb=self.memory, kernel=kernel)


@dataclasses.dataclass
class Scenario:
    name: str
    cls: str
    path: str                       # "-" when the scenario has no paths
    vars: dict[str, Any]
    device: int
    modparams: dict[str, Any]
    timeout: float
    integrity: bool
    isolate: bool
    steps: list[dict]
    expect: dict
    lab: LabSpec
    file: str
    line: int

    @property
    def title(self) -> str:
        extra = [f"{v}" for k, v in self.vars.items() if k != "path"]
        return self.name + (f" [{', '.join(extra)}]" if extra else "")

    @property
    def unplugs(self) -> bool:
        return any("unplug" in st for st in self.steps)

    @property
    def fault(self) -> str:
        """The faults and machine actions of the steps, for the table."""
        parts = []
        for st in self.steps:
            if "fault" in st and st["fault"] not in ("clear", "resume"):
                args = ",".join(f"{k}={v}" for k, v in st.get("args", {}).items()
                                if k not in ("count",))
                parts.append(st["fault"] + (f"({args})" if args else ""))
            elif "qmp" in st and st["qmp"] in ("stop", "cont"):
                parts.append(st["qmp"])
            elif "unplug" in st:
                parts.append(f"unplug {st['unplug']}")
        return " ".join(dict.fromkeys(parts)) or "-"


def _subst(value: Any, env: dict[str, Any]) -> Any:
    """Fill the static placeholders of every string; runtime ones ({ready}, {go}) stay."""
    if isinstance(value, str):
        keep = {k: "{" + k + "}" for k in RUNTIME_VARS}
        return value.format_map({**keep, **env})
    if isinstance(value, list):
        return [_subst(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _subst(v, env) for k, v in value.items()}
    return value


def load_text(text: str, file: str) -> list[Scenario]:
    """Validate and expand one scenario file's text; raises ScenarioError."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else "?"
        raise ScenarioError(f"{file}:{line}: (syntax): {err.problem or err}") from None
    if node is None:
        raise ScenarioError(f"{file}:1: (top): the file is empty")
    ctx = _Ctx(file, frozenset(STATIC_VARS + RUNTIME_VARS))
    # matrix variables are per scenario: reset the known set for each one
    snode = dict((_scalar(k), v) for k, v in node.value).get("scenarios") \
        if isinstance(node, yaml.MappingNode) else None
    data = _load_file(node, ctx, snode)
    lab = LabSpec(**{k: (tuple(v) if k == "wired" else v)
                     for k, v in data.get("lab", {}).items() if k != "_line"})
    if "wired" not in data.get("lab", {}) and lab.devices <= 2:
        lab = dataclasses.replace(lab, wired=())
    out = []
    for sc in data["scenarios"]:
        out += _expand(sc, lab, file, ctx)
    return out


def _load_file(node, ctx: _Ctx, snode) -> dict:
    base_vars = ctx.vars

    class PerScenario(Schema):
        what = SCENARIO.what

        def load(self, n, c, field):
            c.vars = base_vars
            return SCENARIO.load(n, c, field)

    schema = Record({"lab": FILE.fields["lab"],
                     "scenarios": (Seq(PerScenario(), 1), True)}, what=FILE.what)
    return schema.load(node, ctx, "")


def _expand(sc: dict, lab: LabSpec, file: str, ctx: _Ctx) -> list[Scenario]:
    device = sc.get("device", 0)
    if device >= lab.devices:
        raise ScenarioError(f"{file}:{sc['_line']}: device: device {device} does not exist "
                            f"(the lab has {lab.devices})")
    axes: dict[str, list] = {}
    if "paths" in sc:
        axes["path"] = sc["paths"]
    axes.update(sc.get("matrix", {}))
    for st in sc["steps"]:
        for key in ("expect", "expect_for"):
            if key in st and "guest" not in st and "wait" not in st:
                raise ScenarioError(f"{file}:{st['_line']}: {key}: only `guest` and `wait` "
                                    f"steps have expectations")
        if "guest" in st and "background" in st and "expect" in st:
            raise ScenarioError(f"{file}:{st['_line']}: expect: a background command is "
                                f"judged by its `wait` step")
        if st.get("ready") and "{ready}" not in st.get("guest", ""):
            raise ScenarioError(f"{file}:{st['_line']}: ready: the command must create "
                                f"{{ready}} (e.g. faultio ... --ready {{ready}})")
    names = [st["background"] for st in sc["steps"] if "background" in st]
    for st in sc["steps"]:
        if "wait" in st and st["wait"] not in names:
            raise ScenarioError(f"{file}:{st['_line']}: wait: no background command is "
                                f"named {st['wait']!r}")
    wired = lab.wired[0] if lab.wired else None
    out = []
    for combo in itertools.product(*axes.values()) if axes else [()]:
        vars_ = dict(zip(axes, combo))
        env = {"path": vars_.get("path", "-"), "dev": f"/dev/fifolab{device}", "n": device,
               "wdev": f"/dev/fifolab{wired}" if wired is not None else "/dev/null",
               "depth": lab.fifo_depth, **vars_}
        steps = []
        for st in sc["steps"]:
            st = _subst(st, env)
            if "expect_for" in st:
                extra = st.pop("expect_for").get(env["path"], {})
                st["expect"] = {**st.get("expect", {}), **extra}
            steps.append(st)
        out.append(Scenario(
            name=sc["name"], cls=sc["class"], path=env["path"], vars=vars_, device=device,
            modparams=sc.get("modparams", {}), timeout=sc.get("timeout", 30.0),
            integrity=sc.get("integrity", device not in lab.wired),
            isolate=sc.get("isolate", False), steps=steps,
            expect=_subst(sc.get("expect", {}), env), lab=lab, file=file, line=sc["_line"]))
    return out


def load_files(paths: list[str | Path]) -> list[Scenario]:
    """Every scenario of the files (directories: their *.yaml), or ScenarioError listing
    every file's first problem."""
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(p.glob("*.yaml")) if p.is_dir() else [p]
    out, errors = [], []
    for f in files:
        try:
            out += load_text(f.read_text(), str(f))
        except OSError as err:
            errors.append(f"{f}: {err.strerror}")
        except ScenarioError as err:
            errors.append(str(err))
    if errors:
        raise ScenarioError("\n".join(errors))
    return out


# ---------------------------------------------------------------- judging

def parse_outcome(stdout: str) -> dict[str, str]:
    """The key=value fields of faultio's outcome line (the last line that has path=)."""
    for line in reversed(stdout.splitlines()):
        if "path=" in line and "result=" in line:
            return dict(f.split("=", 1) for f in line.split() if "=" in f)
    return {}


def compare(actual: int, spec: Any) -> bool:
    if isinstance(spec, int):
        return actual == spec
    op, num = COMPARE.match(str(spec)).groups()
    num = int(num)
    return {"==": actual == num, None: actual == num, "!=": actual != num, ">=": actual >= num,
            "<=": actual <= num, ">": actual > num, "<": actual < num}[op]


def _result_ok(out: dict, spec: Any) -> bool:
    res = out.get("result")
    if res is None:
        return False
    if spec == "timeout":
        return res == "timeout"
    if res == "timeout":
        return False
    if isinstance(spec, str) and spec.startswith("-E"):
        return res == spec
    value = int(res) if not res.startswith("-E") else -1
    if spec == "ok":
        return value >= 0
    return compare(value, spec)


@dataclasses.dataclass
class Verdict:
    field: str
    expected: str
    got: str
    ok: bool
    show: bool = False          # one of the main step's: shown in the table


def judge_step(expect: dict, res, where: str) -> list[Verdict]:
    """Compare a guest command's exit status and faultio outcome with `expect`."""
    out = parse_outcome(res.stdout)
    v: list[Verdict] = []

    def flags(name: str) -> set[str]:
        return set(out.get(name, "0").split("|")) if name in out else set()
    for key, spec in expect.items():
        if key == "_line":
            continue
        if key == "exit":
            v.append(Verdict("exit", str(spec), str(res.returncode), res.returncode == spec))
        elif key == "stdout":
            v.append(Verdict("stdout", f"~{spec!r}", "found" if spec in res.stdout else
                             "missing", spec in res.stdout))
        elif key == "result":
            v.append(Verdict("result", "|".join(map(str, spec)), out.get("result", "none"),
                             any(_result_ok(out, s) for s in spec)))
        elif key == "errno":
            v.append(Verdict("errno", "|".join(spec), out.get("errno", "none"),
                             out.get("errno") in spec))
        elif key == "bytes":
            got = out.get("bytes")
            v.append(Verdict("bytes", str(spec), str(got),
                             got is not None and compare(int(got), spec)))
        elif key == "data":
            # about the bytes that came back: none (an error) leaves `result` to judge
            vacuous = "data" not in out and out.get("result", "").startswith("-E")
            v.append(Verdict("data", spec, out.get("data", "n/a: no bytes" if vacuous else "none"),
                             vacuous or out.get("data") == spec))
        elif key in ("revents", "post_revents"):
            have = flags(key)
            v.append(Verdict(key, "⊇" + "|".join(spec), out.get(key, "none"),
                             key in out and set(spec) <= have))
        elif key in ("revents_not", "post_revents_not"):
            base = key[:-4]
            have = flags(base)
            v.append(Verdict(base, "∌" + "|".join(spec), out.get(base, "none"),
                             base in out and not set(spec) & have))
        elif key == "si_code":
            v.append(Verdict("si_code", "|".join(spec), out.get("si_code", "none"),
                             out.get("si_code") in spec))
        elif key == "signals":
            have = set(out.get("signals", "").split(","))
            v.append(Verdict("signals", "⊇" + ",".join(spec), out.get("signals", "none"),
                             "signals" in out and set(spec) <= have))
        elif key == "time_ms":
            got = out.get("time_ms")
            v.append(Verdict("time_ms", " ".join(map(str, spec)), str(got),
                             got is not None and all(compare(int(got), s) for s in spec)))
    for x in v:
        x.field = f"{where}{x.field}"
    return v


def cross_check(device: int, before: dict, after: dict, events: list[dict]) -> list[Verdict]:
    """The driver's fault counters against the model's own events, in every scenario: the
    driver may not claim more than the device did -- a recovery needs a reset the device saw
    it ask for, a device reset one the device made, a rejected completion a hostile fault that
    fired, a stall a device that stalled."""
    def seen(name: str, **match: Any) -> int:
        return sum(e.get("event") == name and e.get("data", {}).get("device", device) == device
                   and all(e.get("data", {}).get(k) == val for k, val in match.items())
                   for e in events)
    rules = (("recoveries", seen("DEVICE_RESET", initiator="driver"), "driver resets"),
             ("device_resets", seen("DEVICE_RESET", initiator="device"), "device resets"),
             ("bad_completions", 1_000_000 if seen("FAULT_FIRED", kind="hostile") else 0,
              "hostile faults fired"),
             ("stalls", 1_000_000 if seen("STATE_CHANGE", stalled=True) else 0,
              "stalls the model reported"))
    out: list[Verdict] = []
    if not after:
        return out          # the device was removed (hot-unplug): its counters went with it
    for counter, allowed, what in rules:
        if counter not in after or counter not in before:
            out.append(Verdict(f"counter {counter}", "present", "no such counter", False))
            continue
        delta = after[counter] - before[counter]
        if delta:
            shown = "any" if allowed >= 1_000_000 else str(allowed)
            out.append(Verdict(f"{counter} vs model", f"<= {shown} ({what})", f"Δ{delta}",
                               delta <= allowed))
    return out


def implied_expect(cmd: str) -> dict:
    """What a guest step without `expect` must do: exit 0 -- and a faultio set-up step (which
    exits 0 whenever its op completed, whatever the result) must move every byte it asked for,
    and the right ones (``faultio PATH OP DEV SIZE``)."""
    words = cmd.split()
    if len(words) >= 5 and words[0] == "faultio" and words[4].isdigit():
        expect: dict[str, Any] = {"exit": 0, "result": [int(words[4])]}
        if "--expect-pattern" in words:
            expect["data"] = "ok"
        return expect
    return {"exit": 0}


def _event_matches(ev: dict, spec: dict) -> bool:
    data = ev.get("data", {})
    return ev.get("event") == spec["name"] and all(
        data.get(k) == val for k, val in spec["match"].items())


# ---------------------------------------------------------------- running

@dataclasses.dataclass
class Result:
    scenario: Scenario
    ok: bool
    seconds: float
    verdicts: list[Verdict]
    detail: str = ""

    @property
    def expected(self) -> str:
        return " ".join(f"{v.field}={v.expected}" for v in self.verdicts if v.show) or "-"

    @property
    def got(self) -> str:
        return " ".join(f"{v.field}={v.got}" for v in self.verdicts if v.show) or "-"


_ids = itertools.count()


class Runner:
    """Runs scenarios in as few labs as their configurations allow (module docstring)."""

    def __init__(self, kernel: str = "default", out: Callable[[str], None] = print,
                 image=None):
        self.kernel, self.out, self.image = kernel, out, image
        self.lab: Lab | None = None
        self.lab_spec: LabSpec | None = None
        self.boots: list[float] = []
        self.broken = False         # the last scenario left the lab in a state we cannot undo

    # ---- labs

    def _lab_for(self, sc: Scenario) -> Lab:
        fresh = sc.isolate or sc.lab != self.lab_spec or self.lab is None or self.broken
        if not fresh and not self._usable():
            self.out("  (the lab is unusable: booting a fresh one)")
            fresh = True
        if fresh:
            self.close()
            cfg = sc.lab.config(self.kernel)
            lab = Lab(cfg, self.image)
            try:
                lab.start()
            except BaseException:
                lab.close()
                raise
            self.lab, self.lab_spec, self.broken = lab, sc.lab, False
            self.boots.append(lab.boot_seconds)
            self._unplugged: set[int] = set()
            self.out(f"booted a lab ({cfg.devices} devices, wired {list(cfg.wired)}, "
                     f"fifo {cfg.fifo_depth}, kernel {cfg.kernel}) in "
                     f"{lab.boot_seconds:.1f} s")
        return self.lab

    def _usable(self) -> bool:
        try:
            self.lab.check_alive()
            return self.lab.exec("true", timeout=15).returncode == 0
        except (LabError, KernelLogError):
            return False

    def close(self) -> None:
        if self.lab is not None:
            self.lab.close()
        self.lab = self.lab_spec = None

    # ---- scenario

    def run_all(self, scenarios: list[Scenario], fail_fast: bool = False) -> list[Result]:
        # scenarios sharing a lab configuration run together, isolated ones last
        # and those that unplug a device last in their group (each one spends a lab)
        order = sorted(scenarios, key=lambda s: (s.isolate or s.lab.own,
                                                 [x.lab for x in scenarios].index(s.lab),
                                                 s.unplugs))
        results = []
        try:
            last_file = None
            for sc in order:
                if sc.lab.own and sc.file != last_file:
                    self.close()
                last_file = sc.file
                if fail_fast and results and not results[-1].ok:
                    r = Result(sc, False, 0.0, [], "not run: --fail-fast")
                else:
                    r = self.run_one(sc)
                results.append(r)
                self.out(f"  {'PASS' if r.ok else 'FAIL'}  {r.seconds:6.2f} s  "
                         f"[{sc.path}] {sc.title}")
                if not r.ok:
                    self.out("        " + r.detail.replace("\n", "\n        "))
        finally:
            self.close()
        return results

    def run_one(self, sc: Scenario) -> Result:
        t0 = time.monotonic()
        verdicts: list[Verdict] = []
        detail: list[str] = []
        try:
            lab = self._lab_for(sc)
        except (LabError, KernelLogError) as err:
            return Result(sc, False, time.monotonic() - t0, [], f"could not boot: {err}")
        jobs: dict[str, GuestJob] = {}
        self._wires: dict[int, Any] = {}
        try:
            try:
                self._prepare(lab, sc)
            except (LabError, KernelLogError):
                self.broken = True
                raise
            before = lab.counters(sc.device)
            stats0 = {d: self._stats(lab, d) for d in range(sc.lab.devices)}
            lab.model_events()                      # forget what came before
            events: list[dict] = []
            self._steps(lab, sc, jobs, events, stats0, verdicts, detail)
            events += lab.model_events(0.05)
            after = lab.counters(sc.device)
            events += lab.model_events(0.05)        # what the counters read may stem from
            verdicts += self._judge_scenario(lab, sc, before, after, events)
        except (LabError, KernelLogError, OSError) as err:      # OSError: the host wire
            detail.append(f"{type(err).__name__}: {err}")
            verdicts.append(Verdict("run", "completes", "error", False))
        finally:
            try:
                self._cleanup(lab, sc, jobs)
                verdicts += self._integrity(lab, sc)
            except (LabError, KernelLogError) as err:
                detail.append(f"after the scenario: {err}")
                verdicts.append(Verdict("integrity", "lab recovers", "error", False))
                self.broken = True
        if sc.unplugs:
            # QEMU 7.2 (q35, ACPI hot-plug) removes a device that was plugged back without
            # the guest noticing at its next device_del: never reuse such a lab.
            self.broken = True
        ok = all(v.ok for v in verdicts)
        if not ok:
            detail.insert(0, "; ".join(f"{v.field}: expected {v.expected}, got {v.got}"
                                       for v in verdicts if not v.ok))
            detail.insert(0, f"{sc.file}:{sc.line}")
        return Result(sc, ok, time.monotonic() - t0, verdicts, "\n".join(detail))

    def _prepare(self, lab: Lab, sc: Scenario) -> None:
        """Reload the driver (resets the device, FIFOs, sticky errors and counters) with the
        scenario's module parameters."""
        params = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in sc.modparams.items())
        nodes = " ".join(f"/dev/fifolab{i}" for i in range(sc.lab.devices))
        lab.exec(f"rmmod fifolab 2>/dev/null; insmod /lib/modules/fifolab.ko {params} && "
                 f"for i in $(seq 100); do ok=1; for d in {nodes}; do [ -c $d ] || ok=; done; "
                 f"[ -n \"$ok\" ] && exit 0; sleep 0.05; done; exit 1", timeout=30).check()

    def _stats(self, lab: Lab, device: int) -> dict[str, int]:
        return lab.model_qmp("query-fifolab", {"device": device})["statistics"]

    def _steps(self, lab, sc, jobs, events, stats0, verdicts, detail) -> None:
        go = f"/tmp/fl-go.{next(_ids)}"
        wired = sc.lab.wired[0] if sc.lab.wired else None
        for i, st in enumerate(sc.steps):
            where = f"step {i + 1} "
            timeout = st.get("timeout", sc.timeout)
            if "guest" in st:
                ready = f"/tmp/fl-ready.{next(_ids)}"
                cmd = st["guest"].format(ready=ready, go=go)
                if "background" in st:
                    jobs[st["background"]] = lab.spawn(cmd)
                    if st.get("ready"):
                        lab.wait_for_guest_file(ready, timeout=timeout,
                                                job=jobs[st["background"]])
                    continue
                res = lab.exec(cmd, timeout=timeout)
                self._record(st, res, where, verdicts, detail)
            elif "wait" in st:
                res = lab.wait(jobs.pop(st["wait"]), timeout=timeout)
                self._record(st, res, where, verdicts, detail)
            elif "fault" in st:
                dev = st.get("device", sc.device)
                if "after_bytes" in st:
                    self._wait_bytes(lab, dev, st.get("queue", "rx"), stats0[dev],
                                     st["after_bytes"], timeout)
                args = {"device": dev, **st.get("args", {})}
                reply = lab.model_qmp(f"fault-{st['fault']}", args)
                detail.append(f"{where}fault-{st['fault']} {st.get('args', {})} -> {reply}")
            elif "event" in st:
                spec = {"name": st["event"], "match": st.get("match", {})}
                deadline = time.monotonic() + timeout
                while True:
                    new = lab.model_events(0.02)
                    events += new
                    if any(_event_matches(e, spec) for e in events):
                        break
                    if time.monotonic() > deadline:
                        raise LabError(f"{where}no {st['event']} event within {timeout:.0f} s")
            elif "sleep" in st:
                time.sleep(st["sleep"])
            elif "qmp" in st:
                reply = lab.qmp(st["qmp"], st.get("args") or None)
                detail.append(f"{where}qmp {st['qmp']} -> {reply}")
            elif "unplug" in st:
                self._unplug(lab, st["unplug"], timeout)
            elif "replug" in st:
                self._replug(lab, st["replug"], timeout)
            elif "inject" in st:
                w = self._wire(lab, st.get("device", wired))
                w.send(_stream(st.get("pattern", "harness"), st.get("seed", 0), st["inject"]))
            elif "receive" in st:
                w = self._wire(lab, st.get("device", wired))
                w.sock.settimeout(timeout)
                data = w.recv_exactly(st["receive"])
                want = _stream(st.get("pattern", "harness"), st.get("seed", 0), len(data))
                verdicts.append(Verdict(f"{where}wire", "pattern",
                                        "ok" if data == want else "corrupt", data == want))
            events += lab.model_events()

    def _wire(self, lab: Lab, dev: int):
        """One host-wire connection per device for the whole scenario: bytes the model has
        pushed into a connection are gone with it."""
        if dev not in self._wires:
            self._wires[dev] = lab.wire(dev)
        return self._wires[dev]

    def _record(self, st, res, where, verdicts, detail) -> None:
        detail.append(f"{where}$ {res.cmd}\n  exit {res.returncode}: "
                      f"{res.stdout.strip()} {res.stderr.strip()}".rstrip())
        expect = st.get("expect")
        if expect is None:
            verdicts += judge_step(implied_expect(res.cmd), res, where)
            return
        new = judge_step(expect, res, "")
        if not any(v.show for v in verdicts):
            for v in new:
                v.show = True
        else:
            for v in new:
                v.field = where + v.field
        verdicts += new

    def _wait_bytes(self, lab, dev, queue, base, n, timeout) -> None:
        key = "tx_bytes" if queue == "tx" else "rx_bytes"
        deadline = time.monotonic() + timeout
        while self._stats(lab, dev)[key] - base[key] < n:
            if time.monotonic() > deadline:
                raise LabError(f"device {dev} did not move {n} {queue} bytes within "
                               f"{timeout:.0f} s")
            time.sleep(0.02)

    # ---- machine actions

    def _peripherals(self, lab) -> set[str]:
        return {p["name"] for p in lab.qmp("qom-list", {"path": "/machine/peripheral"})}

    def _unplug(self, lab: Lab, n: int, timeout: float) -> None:
        """Hot-unplug device N: device_del, then wait until the guest let it go."""
        lab.qmp("device_del", {"id": f"fifolab{n}"})
        self._unplugged.add(n)
        deadline = time.monotonic() + timeout
        while f"fifolab{n}" in self._peripherals(lab):
            if time.monotonic() > deadline:
                raise LabError(f"fifolab{n} was not unplugged within {timeout:.0f} s "
                               f"(the guest did not release it)")
            time.sleep(0.05)

    def _replug(self, lab: Lab, n: int, timeout: float) -> None:
        """Plug device N back: a new chardev connection (the model powers the device on
        afresh for a new client; the old connection's setup messages are spent), then
        device_add on its root port, then wait for /dev/fifolabN."""
        sock = lab.run_dir / f"model{n}.sock"
        deadline = time.monotonic() + timeout
        while True:     # the unplugged device lets its chardev go a little after it is gone
            try:
                lab.qmp("chardev-remove", {"id": f"ivsh{n}"})
                break
            except LabError as err:
                if "busy" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        lab.qmp("chardev-add", {"id": f"ivsh{n}", "backend": {"type": "socket", "data": {
            "addr": {"type": "unix", "data": {"path": str(sock)}}, "server": False}}})
        lab.qmp("device_add", {"driver": "ivshmem-doorbell", "id": f"fifolab{n}",
                               "chardev": f"ivsh{n}", "vectors": 2, "bus": f"rp{n}"})
        self._unplugged.discard(n)
        lab.exec(f"for i in $(seq {int(timeout * 20)}); do [ -c /dev/fifolab{n} ] && exit 0; "
                 f"sleep 0.05; done; exit 1", timeout=timeout + 5).check()

    # ---- judging and cleaning up

    def _judge_scenario(self, lab, sc, before, after, events) -> list[Verdict]:
        v = []
        exp = sc.expect
        for spec in exp.get("events", []):
            seen = any(_event_matches(e, spec) for e in events)
            v.append(Verdict(f"event {spec['name']}", "seen", "seen" if seen else "not seen",
                             seen))
        for spec in exp.get("no_events", []):
            seen = [e for e in events if _event_matches(e, spec)]
            v.append(Verdict(f"event {spec['name']}", "not seen",
                             f"seen {len(seen)}x" if seen else "not seen", not seen))
        for name, spec in exp.get("counters", {}).items():
            if name not in after:
                v.append(Verdict(f"counter {name}", str(spec), "no such counter", False))
                continue
            delta = after[name] - before.get(name, 0)
            v.append(Verdict(f"counter {name}", f"Δ{spec}", f"Δ{delta}", compare(delta, spec)))
        if exp.get("fifo_empty"):
            q = lab.model_qmp("query-fifolab", {"device": sc.device})
            lvl = q["fifo"]["rx_level"]
            v.append(Verdict("fifo rx_level", "0", str(lvl), lvl == 0))
        v += cross_check(sc.device, before, after, events)
        return v

    def _cleanup(self, lab: Lab, sc: Scenario, jobs: dict[str, GuestJob]) -> None:
        """Undo what the scenario armed, so that the driver can recover by itself."""
        for w in self._wires.values():
            w.close()
        self._wires.clear()
        if not lab.qmp("query-status")["running"]:
            lab.qmp("cont")
        for d in range(sc.lab.devices):
            lab.model_qmp("fault-clear", {"device": d})
            if lab.model_qmp("query-fifolab", {"device": d})["stalled"]:
                lab.model_qmp("fault-resume", {"device": d})
        for n in sorted(self._unplugged):
            self._replug(lab, n, 15)
        for name, job in jobs.items():
            lab.exec(f"kill -9 {job.pid} 2>/dev/null; true", check_log=False)
            try:
                lab.wait(job, timeout=10, check_log=False)
            except LabError:
                pass

    def _integrity(self, lab: Lab, sc: Scenario) -> list[Verdict]:
        lab.kmsg.check()
        if not sc.integrity:
            return []
        # recovery is asynchronous: give the driver up to 10 s to be running again
        node = f"/sys/class/fifolab/fifolab{sc.device}"
        res = lab.exec(f"for i in $(seq 200); do [ \"$(cat {node}/running 2>/dev/null || "
                       f"echo 1)\" = 1 ] && break; sleep 0.05; done; "
                       f"fifotest loop /dev/fifolab{sc.device} 100000 7", timeout=60)
        ok = res.returncode == 0 and "ok 100000" in res.stdout
        return [Verdict("integrity", "fifotest loop ok", "ok" if ok else
                        f"exit {res.returncode}: {(res.stdout + res.stderr).strip()[:200]}",
                        ok)]


def _stream(kind: str, seed: int, n: int) -> bytes:
    if kind == "counter":
        return bytes((seed + i) % 256 for i in range(n))
    return pattern(seed + n)[seed:]


# ---------------------------------------------------------------- the table

def table(results: list[Result], width: int = 44) -> str:
    def cut(s: str) -> str:
        return s if len(s) <= width else s[:width - 1] + "…"
    rows = [(r.scenario.title, r.scenario.path, r.scenario.fault, cut(r.expected),
             cut(r.got), "pass" if r.ok else "FAIL", f"{r.seconds:5.2f}s") for r in results]
    head = ("scenario", "path", "fault", "expected", "got", "result", "time")
    widths = [max(len(x[i]) for x in rows + [head]) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- fifolab scenario

def cmd_scenario(args) -> int:
    """``fifolab scenario FILE...``: validate, run, print the table; 1 on any failure, 2 on a
    malformed file."""
    try:
        scenarios = load_files(args.files)
    except ScenarioError as err:
        print(f"fifolab scenario: invalid scenario file(s):\n{err}")
        return 2
    if args.filter:
        scenarios = [s for s in scenarios if args.filter in f"{s.title} {s.path} {s.cls}"]
    if args.list:
        for s in scenarios:
            print(f"{s.file}:{s.line}  [{s.path}] {s.title}  ({s.cls}: {s.fault})")
        return 0
    if not scenarios:
        print("fifolab scenario: no scenario matches")
        return 2
    t0 = time.monotonic()
    print(f"{len(scenarios)} scenario(s) from {len(set(s.file for s in scenarios))} file(s)",
          flush=True)
    runner = Runner(kernel=args.kernel, out=lambda s: print(s, flush=True))
    results = runner.run_all(scenarios, fail_fast=args.fail_fast)
    print()
    print(table(results))
    failed = sum(not r.ok for r in results)
    boots = ", ".join(f"{b:.1f}" for b in runner.boots)
    print(f"\n{len(results) - failed} passed, {failed} failed in {time.monotonic() - t0:.0f} s "
          f"({len(runner.boots)} lab boot(s): {boots} s)")
    return 1 if failed else 0


def add_command(sub, kernel_opt) -> None:
    """Register ``scenario`` on fifolab's subcommand parser."""
    sp = sub.add_parser("scenario", help="run fault scenarios (YAML; docs/faults.md)")
    kernel_opt(sp)
    sp.add_argument("files", nargs="+", metavar="FILE", help="scenario files or directories")
    sp.add_argument("-k", dest="filter", help="only scenarios whose name, path or class "
                                              "contains this")
    sp.add_argument("--list", action="store_true", help="validate and list, run nothing")
    sp.add_argument("-x", "--fail-fast", action="store_true",
                    help="stop at the first failure (the scenarios left count as failed)")
    sp.set_defaults(func=cmd_scenario)
