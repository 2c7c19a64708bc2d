"""Judging: a guest step's exit status and ``faultio`` outcome line against its ``expect``
(``judge_step``, one judge per expectation field), the model's events against the scenario's
(``event_matches``), and the driver's fault counters against what the model says it did
(``cross_check``).  Pure functions over strings and dicts: no lab, no VM.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .spec import COMPARE, Scenario


@dataclasses.dataclass
class Verdict:
    field: str
    expected: str
    got: str
    ok: bool
    show: bool = False          # one of the main step's: shown in the table


@dataclasses.dataclass
class Result:
    """One scenario's outcome: passed or not, its verdicts, the details of a failure."""
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


def parse_outcome(stdout: str) -> dict[str, str]:
    """The key=value fields of faultio's outcome line (the last line that has path=)."""
    for line in reversed(stdout.splitlines()):
        if "path=" in line and "result=" in line:
            return dict(f.split("=", 1) for f in line.split() if "=" in f)
    return {}


def compare(actual: int, spec: Any) -> bool:
    if isinstance(spec, int):
        return actual == spec
    m = COMPARE.match(str(spec))
    assert m is not None, spec          # the scenario's schema checked it
    op, num = m.groups()
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


def _flags(out: dict, name: str) -> set[str]:
    return set(out.get(name, "0").split("|")) if name in out else set()


# One judge per field of an expectation (spec.EXPECT): (key, spec, res, out) -> Verdict, where
# `res` is the command's ExecResult and `out` its faultio outcome (parse_outcome).
Judge = Callable[[str, Any, Any, dict], Verdict]


def _exit(key, spec, res, out):
    return Verdict("exit", str(spec), str(res.returncode), res.returncode == spec)


def _stdout(key, spec, res, out):
    return Verdict("stdout", f"~{spec!r}", "found" if spec in res.stdout else "missing",
                   spec in res.stdout)


def _result(key, spec, res, out):
    return Verdict("result", "|".join(map(str, spec)), out.get("result", "none"),
                   any(_result_ok(out, s) for s in spec))


def _any_of(key, spec, res, out):
    """errno, si_code: any of these."""
    return Verdict(key, "|".join(spec), out.get(key, "none"), out.get(key) in spec)


def _bytes(key, spec, res, out):
    got = out.get("bytes")
    return Verdict("bytes", str(spec), str(got), got is not None and compare(int(got), spec))


def _data(key, spec, res, out):
    # about the bytes that came back: none (an error) leaves `result` to judge
    vacuous = "data" not in out and out.get("result", "").startswith("-E")
    return Verdict("data", spec, out.get("data", "n/a: no bytes" if vacuous else "none"),
                   vacuous or out.get("data") == spec)


def _revents(key, spec, res, out):
    """revents, post_revents: all of these set."""
    return Verdict(key, "⊇" + "|".join(spec), out.get(key, "none"),
                   key in out and set(spec) <= _flags(out, key))


def _revents_not(key, spec, res, out):
    """revents_not, post_revents_not: none of these set."""
    base = key[:-4]
    return Verdict(base, "∌" + "|".join(spec), out.get(base, "none"),
                   base in out and not set(spec) & _flags(out, base))


def _signals(key, spec, res, out):
    have = set(out.get("signals", "").split(","))
    return Verdict("signals", "⊇" + ",".join(spec), out.get("signals", "none"),
                   "signals" in out and set(spec) <= have)


def _time_ms(key, spec, res, out):
    got = out.get("time_ms")
    return Verdict("time_ms", " ".join(map(str, spec)), str(got),
                   got is not None and all(compare(int(got), s) for s in spec))


JUDGES: dict[str, Judge] = {
    "exit": _exit, "stdout": _stdout, "result": _result, "errno": _any_of, "bytes": _bytes,
    "data": _data, "revents": _revents, "post_revents": _revents,
    "revents_not": _revents_not, "post_revents_not": _revents_not, "si_code": _any_of,
    "signals": _signals, "time_ms": _time_ms,
}


def judge_step(expect: dict, res, where: str) -> list[Verdict]:
    """Compare a guest command's exit status and faultio outcome with `expect`."""
    out = parse_outcome(res.stdout)
    v = [JUDGES[key](key, spec, res, out) for key, spec in expect.items() if key != "_line"]
    for x in v:
        x.field = f"{where}{x.field}"
    return v


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


def event_matches(ev: dict, spec: dict) -> bool:
    """A model event (``{"event", "data"}``) against an event spec (``{"name", "match"}``)."""
    data = ev.get("data", {})
    return ev.get("event") == spec["name"] and all(
        data.get(k) == val for k, val in spec["match"].items())


def judge_events(exp: dict, events: list[dict]) -> list[Verdict]:
    """The scenario's `events` (each seen) and `no_events` (none seen)."""
    v = []
    for spec in exp.get("events", []):
        seen = any(event_matches(e, spec) for e in events)
        v.append(Verdict(f"event {spec['name']}", "seen", "seen" if seen else "not seen", seen))
    for spec in exp.get("no_events", []):
        hits = [e for e in events if event_matches(e, spec)]
        v.append(Verdict(f"event {spec['name']}", "not seen",
                         f"seen {len(hits)}x" if hits else "not seen", not hits))
    return v


def judge_counters(exp: dict, before: dict, after: dict) -> list[Verdict]:
    """The scenario's `counters`: the change of each sysfs counter."""
    v = []
    for name, spec in exp.get("counters", {}).items():
        if name not in after:
            v.append(Verdict(f"counter {name}", str(spec), "no such counter", False))
            continue
        delta = after[name] - before.get(name, 0)
        v.append(Verdict(f"counter {name}", f"Δ{spec}", f"Δ{delta}", compare(delta, spec)))
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
