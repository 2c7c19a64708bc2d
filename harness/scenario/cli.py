"""``fifolab scenario FILE...``: validate, run, print the table; ``--schema`` prints the
scenario file's JSON Schema."""

from __future__ import annotations

import argparse
import json
import time

from .judge import Result
from .runner import Runner
from .schema import ScenarioError
from .spec import json_schema, load_files


def table(results: list[Result], width: int = 44) -> str:
    def cut(s: str) -> str:
        return s if len(s) <= width else s[:width - 1] + "…"
    rows = [(r.scenario.title, r.scenario.path, r.scenario.fault, cut(r.expected),
             cut(r.got), "pass" if r.ok else "FAIL", f"{r.seconds:5.2f}s") for r in results]
    head = ("scenario", "path", "fault", "expected", "got", "result", "time")
    widths = [max(len(x[i]) for x in rows + [head]) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    return "\n".join(lines)


def schema_text() -> str:
    """The JSON Schema as ``scenarios/scenario.schema.json`` holds it."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


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


class _PrintSchema(argparse.Action):
    """``--schema``: print the JSON Schema and exit, as ``--version`` does (no FILE needed)."""

    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(schema_text(), end="")
        parser.exit()


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
    sp.add_argument("--schema", action=_PrintSchema,
                    help="print the scenario file's JSON Schema (what "
                         "scenarios/scenario.schema.json holds) and exit")
    sp.set_defaults(func=cmd_scenario)
