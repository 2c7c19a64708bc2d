"""Commands with argument schemas, validated uniformly -- the QMP monitor's command table.

No I/O here: :class:`~device.qmp.QmpServer` (the protocol) looks a command up by name and calls
:meth:`CommandTable.run` with the ``arguments`` object of an ``execute``; what a handler
returns is the ``return`` value, a :class:`~device.errors.CommandError` it raises becomes an
``error`` reply with that error class.

Every argument is declared once, as an :class:`Arg` (name, type, required or default, allowed
values, range), and checked the same way for every command, with QEMU's wording::

    missing        Parameter 'queue' is missing
    unknown        Parameter 'queue2' is unexpected
    wrong type     Invalid parameter type for 'count', expected: integer
    bad value      Parameter 'kind' does not accept value 'huge'
    out of range   Parameter 'probability' expects a value in [0, 1]

Types: ``int`` (a JSON integer), ``number`` (a JSON number -- or a string holding one, since
``qmp-shell`` passes ``probability=0.5`` as the string ``"0.5"``), ``bool``, ``str``,
``array`` (a JSON array).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import CommandError

__all__ = ["Arg", "Command", "CommandTable", "ERR_GENERIC", "ERR_NOT_FOUND",
           "ERR_DEVICE_NOT_FOUND"]

# QEMU's error classes (qapi/error.json) that we use
ERR_GENERIC = "GenericError"
ERR_NOT_FOUND = "CommandNotFound"
ERR_DEVICE_NOT_FOUND = "DeviceNotFound"

_TYPE_WORD = {"int": "integer", "number": "number", "bool": "boolean", "str": "string",
              "array": "array"}


def _as_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):          # qmp-shell: key=0.5 arrives as "0.5"
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _num(x: float) -> str:
    """A bound as people write it: 1000000, not 1e+06."""
    if isinstance(x, int):
        return str(x)
    return str(int(x)) if x.is_integer() else f"{x:g}"


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "int": _as_int,
    "number": _as_number,
    "bool": lambda v: v if isinstance(v, bool) else None,
    "str": lambda v: v if isinstance(v, str) else None,
    "array": lambda v: v if isinstance(v, list) else None,
}


@dataclass(frozen=True)
class Arg:
    """One argument of a command: ``type`` is int, number, bool, str or array."""

    name: str
    type: str
    required: bool = False
    default: Any = None
    choices: tuple = ()              # allowed values (an enum), for str
    min: float | None = None
    max: float | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.type not in _CONVERT:
            raise ValueError(f"argument {self.name}: unknown type {self.type!r}")

    def check(self, value: Any) -> Any:
        """The value as the handler gets it, or :class:`CommandError`."""
        got = _CONVERT[self.type](value)
        if got is None or (isinstance(got, float) and not math.isfinite(got)):
            raise CommandError(f"Invalid parameter type for '{self.name}', expected: "
                               f"{_TYPE_WORD[self.type]}")
        if self.choices and got not in self.choices:
            raise CommandError(f"Parameter '{self.name}' does not accept value {value!r} "
                               f"(one of: {', '.join(map(str, self.choices))})")
        if (self.min is not None and got < self.min) or (self.max is not None
                                                          and got > self.max):
            lo = "-inf" if self.min is None else _num(self.min)
            hi = "inf" if self.max is None else _num(self.max)
            raise CommandError(f"Parameter '{self.name}' expects a value in [{lo}, {hi}]")
        return got

    def describe(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "type": self.type,
                               "required": self.required}
        if not self.required and self.default is not None:
            out["default"] = self.default
        if self.choices:
            out["choices"] = list(self.choices)
        for bound in ("min", "max"):
            if getattr(self, bound) is not None:
                out[bound] = getattr(self, bound)
        return out


@dataclass(frozen=True)
class Command:
    """A command: its name, handler (``handler(args) -> return value``) and argument schema.

    ``negotiation``: runs in capabilities-negotiation mode (only ``qmp_capabilities``), and
    only there.
    """

    name: str
    handler: Callable[[dict], Any]
    args: tuple[Arg, ...] = ()
    doc: str = ""
    negotiation: bool = False
    _by_name: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [a.name for a in self.args]
        if len(set(names)) != len(names):
            raise ValueError(f"command {self.name}: an argument is declared twice")
        object.__setattr__(self, "_by_name", {a.name: a for a in self.args})

    def validate(self, arguments: dict) -> dict:
        """Check ``arguments`` against the schema; fill in defaults."""
        for key in arguments:
            if key not in self._by_name:
                raise CommandError(f"Parameter '{key}' is unexpected")
        out = {}
        for arg in self.args:
            if arguments.get(arg.name) is not None:
                out[arg.name] = arg.check(arguments[arg.name])
            elif arg.required:
                raise CommandError(f"Parameter '{arg.name}' is missing")
            else:
                out[arg.name] = arg.default
        return out

    def describe(self) -> dict:
        """``query-commands`` entry: QEMU's ``name``, plus the argument schema."""
        return {"name": self.name, "arguments": [a.describe() for a in self.args]}


class CommandTable:
    """Commands by name.  :meth:`command` registers a handler as a decorator."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def add(self, cmd: Command) -> Command:
        if cmd.name in self._commands:
            raise ValueError(f"command {cmd.name} registered twice")
        self._commands[cmd.name] = cmd
        return cmd

    def command(self, name: str, *args: Arg, doc: str = "", negotiation: bool = False):
        def register(fn: Callable[[dict], Any]) -> Callable[[dict], Any]:
            self.add(Command(name, fn, tuple(args), doc or (fn.__doc__ or "").strip(),
                             negotiation))
            return fn
        return register

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._commands

    def __iter__(self):
        return iter(self._commands.values())

    def names(self) -> list[str]:
        return list(self._commands)

    def run(self, name: str, arguments: dict) -> Any:
        """Validate and run; :class:`CommandError` for an unknown command or bad arguments."""
        cmd = self._commands.get(name)
        if cmd is None:
            raise CommandError(f"The command {name} has not been found", ERR_NOT_FOUND)
        return cmd.handler(cmd.validate(arguments))
