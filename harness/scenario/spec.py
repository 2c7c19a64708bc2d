"""What a scenario file may say (its schema, built from ``schema.py``) and how a file becomes
:class:`Scenario` objects: validated first, then expanded per path and matrix value with the
placeholders filled in (``load_text``, ``load_files``).  ``json_schema()`` is the same schema
as JSON Schema (``fifolab scenario --schema``; ``scenarios/scenario.schema.json``).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path
from typing import Any

import yaml

from device.monitor import Monitor
from ..lab import LabConfig
from .schema import Any_, Dict, Field, Record, Scalar, ScenarioError, Schema, Seq, _Ctx, export

PATHS = ("sync", "nonblock", "poll", "sigio", "posix-aio", "libaio", "io_uring")
CLASSES = ("none", "dma-error", "lost-irq", "spurious-irq", "stall", "slow", "corrupt",
           "device-reset", "hostile", "flood", "hot-unplug", "stop-cont", "mixed")
# a step's `fault: X` runs the model's `fault-X`: every fault command of the model's own
# command table (device/monitor.py, built from device.faults.SPECS) but the query fault-list
FAULTS = tuple(name.removeprefix("fault-") for name in Monitor([]).table.names()
               if name.startswith("fault-") and name != "fault-list")
POLL_FLAGS = ("POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLNVAL", "POLLRDNORM",
              "POLLWRNORM")
SI_CODES = ("POLL_IN", "POLL_OUT", "POLL_MSG", "POLL_ERR", "POLL_PRI", "POLL_HUP", "none")
STATIC_VARS = ("path", "dev", "n", "wdev", "depth")
RUNTIME_VARS = ("ready", "go")
COMPARE = re.compile(r"^\s*(==|!=|>=|<=|>|<)?\s*(-?\d+)\s*$")
_ERRNO = r"-E[A-Z0-9]+"


# ---------------------------------------------------------------- the schema

def _compare_check(v: Any) -> str | None:
    if isinstance(v, int) or COMPARE.match(str(v)):
        return None
    return f"expected a number or a comparison like '>=1', got {v!r}"


def _result_check(v: Any) -> str | None:
    if isinstance(v, int) or v in ("ok", "timeout") or re.fullmatch(_ERRNO, str(v)) \
            or COMPARE.match(str(v)):
        return None
    return f"expected ok, timeout, -ERRNO (e.g. -EIO), a byte count or a comparison, got {v!r}"


def _range(lo: int, hi: int, shown: str = "") -> dict[str, Any]:
    """Scalar's arguments for an integer in lo..hi: the check and its JSON Schema."""
    return {"check": lambda v: None if lo <= v <= hi else f"must be {shown or f'{lo}..{hi}'}",
            "json": {"minimum": lo, "maximum": hi}}


CMP = Scalar(int, str, check=_compare_check, what="a number or a comparison ('>=1')",
             json={"pattern": COMPARE.pattern})
RESULT = Scalar(int, str, check=_result_check, what="ok, timeout, -ERRNO or a byte count",
                json={"pattern": rf"^(ok|timeout|{_ERRNO})$|{COMPARE.pattern}"})
POLLSET = Seq(Scalar(str, choices=POLL_FLAGS))

EXPECT = Record({
    "exit": Field(Scalar(int), doc="the command's exit status"),
    "result": Field(Seq(RESULT, 1), doc="faultio's result, any of: ok, timeout, -EIO, a byte "
                                        "count, '>0'"),
    "errno": Field(Seq(Scalar(str), 1), doc="faultio's errno, any of (EIO, ...)"),
    "bytes": Field(CMP, doc="bytes moved: a number or a comparison"),
    "data": Field(Scalar(str, choices=("ok", "corrupt")),
                  doc="the bytes that came back (--expect-pattern); an error passes it"),
    "revents": Field(POLLSET, doc="poll: all of these set in the revents that woke it"),
    "revents_not": Field(POLLSET, doc="poll: none of these set"),
    "post_revents": Field(POLLSET, doc="poll after the op: all of these set"),
    "post_revents_not": Field(POLLSET, doc="poll after the op: none of these set"),
    "si_code": Field(Seq(Scalar(str, choices=SI_CODES), 1),
                     doc="sigio: the first signal's si_code, any of"),
    "signals": Field(Seq(Scalar(str, choices=SI_CODES)), doc="sigio: all of these seen"),
    "time_ms": Field(Seq(CMP, 1), doc="the op's duration: all of these comparisons"),
    "stdout": Field(Scalar(str), doc="a substring of the command's output"),
}, what="an expectation", name="expect")


def _check_lab(out, node, ctx, field):
    if field.endswith("wired") and any(not 0 <= w < out.get("devices", 3) for w in out["wired"]):
        raise ctx.error(node, field, "a wired device number must be below `devices`")


LAB = Record({
    "devices": Field(Scalar(int, **_range(1, 8)), doc="fifolab devices (default 3)"),
    "wired": Field(Seq(Scalar(int)), doc="devices wired to a host socket (default [2])"),
    "fifo_depth": Field(Scalar(int, **_range(4096, 1 << 24, "4096..16 MiB")),
                        doc="bytes (default 65536)"),
    "memory": Field(Scalar(int, **_range(128, 8192)), doc="guest RAM, MiB (default 512)"),
    "own": Field(Scalar(bool), doc="true: this file's scenarios get a lab of their own"),
}, what="a lab configuration", hook=_check_lab, name="lab")

STEP_ACTIONS = ("guest", "wait", "fault", "event", "sleep", "qmp", "unplug", "replug",
                "inject", "receive")
STEP = Record({
    # actions
    "guest": Field(Scalar(str), doc="a guest shell command"),
    "wait": Field(Scalar(str), doc="wait for the background command of this name"),
    "fault": Field(Scalar(str, choices=FAULTS), doc="the model's fault-<name> command"),
    "event": Field(Scalar(str), doc="wait for this model event"),
    "sleep": Field(Scalar(float), doc="seconds"),
    "qmp": Field(Scalar(str), doc="a command on QEMU's monitor (stop, cont, ...)"),
    "unplug": Field(Scalar(int), doc="hot-unplug device N (device_del)"),
    "replug": Field(Scalar(int), doc="plug device N back (chardev + device_add)"),
    "inject": Field(Scalar(int), doc="the host sends N bytes into a wired device"),
    "receive": Field(Scalar(int), doc="the host reads N bytes from a wired device"),
    # modifiers
    "background": Field(Scalar(str), doc="guest: run as this name; a `wait` step judges it"),
    "ready": Field(Scalar(bool), doc="guest: wait until the command creates {ready}"),
    "timeout": Field(Scalar(float), doc="seconds (default: the scenario's)"),
    "expect": Field(EXPECT, doc="guest (foreground) / wait"),
    "expect_for": Field(Dict(EXPECT, keys=PATHS), doc="extra expectations per path"),
    "args": Field(Dict(Any_()), doc="fault / qmp arguments"),
    "device": Field(Scalar(int), doc="fault / inject / receive: the device"),
    "after_bytes": Field(Scalar(int), doc="fault: once the device moved N more bytes"),
    "queue": Field(Scalar(str, choices=("tx", "rx")), doc="after_bytes: on this queue "
                                                          "(default rx)"),
    "match": Field(Dict(Any_()), doc="event: data that must match"),
    "pattern": Field(Scalar(str, choices=("harness", "counter")), doc="inject / receive"),
    "seed": Field(Scalar(int), doc="inject / receive: stream offset"),
}, what="a step", exactly_one=STEP_ACTIONS, name="step")

EVENT = Record({"name": Field(Scalar(str), True), "match": Field(Dict(Any_()))},
               what="an event", name="event")


class EventSpec(Schema):
    what = "an event name or {name, match}"

    def load(self, node, ctx, field):
        if isinstance(node, yaml.ScalarNode):
            return {"name": Scalar(str).load(node, ctx, field), "match": {}}
        out = EVENT.load(node, ctx, field)
        out.setdefault("match", {})
        return out

    def json(self, defs):
        return {"anyOf": [{"type": "string"}, EVENT.json(defs)]}

    def scalar_json(self, defs):
        return {"type": "string"}


SCENARIO_EXPECT = Record({
    "events": Field(Seq(EventSpec()), doc="model events seen during the scenario"),
    "no_events": Field(Seq(EventSpec()), doc="model events not seen"),
    "counters": Field(Dict(CMP), doc="the change of the device's sysfs counters"),
    "fifo_empty": Field(Scalar(bool), doc="the device's RX_LEVEL is 0 afterwards"),
}, what="the scenario's expectations", name="scenario-expect")


def _scenario_vars(out, node, ctx, field):
    # {path} and matrix variables become known as soon as they are loaded
    if field.endswith(".matrix"):
        ctx.vars = ctx.vars | set(out["matrix"])


SCENARIO = Record({
    "name": Field(Scalar(str), True),
    "class": Field(Scalar(str, choices=CLASSES), True, "the fault class, for the table"),
    "paths": Field(Seq(Scalar(str, choices=PATHS), 1), doc="one scenario per path: {path}"),
    "matrix": Field(Dict(Seq(Scalar(str, int), 1)),
                    doc="one scenario per value of each variable: {name}"),
    "device": Field(Scalar(int), doc="the device under test (default 0): {dev}, {n}"),
    "modparams": Field(Dict(Scalar(int, str)), doc="fifolab.ko is loaded with these"),
    "timeout": Field(Scalar(float), doc="seconds per step (default 30)"),
    "integrity": Field(Scalar(bool), doc="fifotest loop afterwards (default: unless wired)"),
    "isolate": Field(Scalar(bool), doc="a fresh lab for this scenario"),
    "steps": Field(Seq(STEP, 1), True, "in order; each has exactly one action"),
    "expect": Field(SCENARIO_EXPECT),
}, what="a scenario", hook=_scenario_vars, name="scenario")

FILE = Record({
    "lab": Field(LAB, doc="the machine; files with equal `lab` share one boot"),
    "scenarios": Field(Seq(SCENARIO, 1), True),
}, what="a scenario file")


def json_schema() -> dict:
    """The scenario file's schema as JSON Schema (``scenarios/scenario.schema.json``)."""
    return export(FILE, "fifolab scenario file",
                  "Fault scenarios run by `fifolab scenario` (docs/faults.md, \"Scenario "
                  "files\"). Strings may use the placeholders {" + "} {".join(
                      STATIC_VARS + RUNTIME_VARS) + "} and the matrix variables.")


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


def action(step: dict) -> str:
    """The step's action (STEP_ACTIONS: the loader saw to it that there is exactly one)."""
    return next(a for a in STEP_ACTIONS if a in step)


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
    data = _load_file(node, ctx)
    fields: dict[str, Any] = {k: (tuple(v) if k == "wired" else v)
                              for k, v in data.get("lab", {}).items() if k != "_line"}
    lab = LabSpec(**fields)
    if "wired" not in data.get("lab", {}) and lab.devices <= 2:
        lab = dataclasses.replace(lab, wired=())
    out = []
    for sc in data["scenarios"]:
        out += _expand(sc, lab, file)
    return out


def _load_file(node, ctx: _Ctx) -> dict:
    base_vars = ctx.vars

    class PerScenario(Schema):
        """Matrix variables are per scenario: the known set starts afresh for each one."""
        what = SCENARIO.what

        def load(self, n, c, field):
            c.vars = base_vars
            return SCENARIO.load(n, c, field)

    schema = Record({"lab": FILE.fields["lab"],
                     "scenarios": Field(Seq(PerScenario(), 1), True)}, what=FILE.what)
    return schema.load(node, ctx, "")


def _check_steps(sc: dict, file: str) -> None:
    """What the schema cannot say about a scenario's steps."""
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


def _check_wire_steps(sc: dict, lab: LabSpec, file: str) -> None:
    """``inject``/``receive`` use the host side of a wired device: the step's ``device``, or
    the lab's first wired one; the lab must have it."""
    for st in sc["steps"]:
        for key in ("inject", "receive"):
            if key not in st:
                continue
            dev = st.get("device", lab.wired[0] if lab.wired else None)
            if dev is None:
                raise ScenarioError(f"{file}:{st['_line']}: {key}: the lab has no wired device "
                                    f"(add `wired: [N]` to the file's `lab`)")
            if dev not in lab.wired:
                raise ScenarioError(f"{file}:{st['_line']}: {key}: device {dev} is not wired "
                                    f"to the host (the lab's wired devices: "
                                    f"{list(lab.wired)})")


def _expand(sc: dict, lab: LabSpec, file: str) -> list[Scenario]:
    device = sc.get("device", 0)
    if device >= lab.devices:
        raise ScenarioError(f"{file}:{sc['_line']}: device: device {device} does not exist "
                            f"(the lab has {lab.devices})")
    axes: dict[str, list] = {}
    if "paths" in sc:
        axes["path"] = sc["paths"]
    axes.update(sc.get("matrix", {}))
    _check_steps(sc, file)
    _check_wire_steps(sc, lab, file)
    wired = lab.wired[0] if lab.wired else None
    out = []
    for combo in itertools.product(*axes.values()) if axes else [()]:
        vars_ = dict(zip(axes, combo, strict=True))
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
