"""A small schema library for YAML files that are checked line by line, and exported as JSON
Schema.

A schema object loads a node of a composed YAML document (``yaml.compose``, which keeps every
node's line) into plain Python values, or raises :class:`ScenarioError` naming the file, the
line and the field (``scenarios[0].steps[2].expect.result``).  The same object describes itself
as JSON Schema (``json(defs)``), so that editors validate and complete the files as they are
typed; what JSON Schema cannot say (a placeholder that must be known, a wired device below
``devices``) only the loader checks.

    Scalar(int, str, check=f)       one of the types; optionally `choices`, or passing `check`
    Seq(item, min_len)              a list (a lone scalar is a list of one)
    Dict(value, keys=None)          a mapping with free (or these) keys
    Record({name: Field(...)})      a mapping with known fields; unknown ones are errors
    Any_()                          any value (checked elsewhere: QMP arguments)
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable
from typing import Any, NamedTuple

import yaml


class ScenarioError(ValueError):
    """A scenario file is malformed: the message names the file, the line and the field."""


@dataclasses.dataclass
class _Ctx:
    """Where a load is: the file (for messages) and the placeholders strings may use."""
    file: str
    vars: frozenset[str] = frozenset()

    def error(self, node: yaml.Node, field: str, msg: str) -> ScenarioError:
        return ScenarioError(f"{self.file}:{node.start_mark.line + 1}: {field or '(top)'}: "
                             f"{msg}")


_constructor = yaml.constructor.SafeConstructor()


def _scalar(node: yaml.Node) -> Any:
    return _constructor.construct_object(node, deep=True)


_KIND = {yaml.ScalarNode: "a scalar", yaml.SequenceNode: "a list", yaml.MappingNode: "a mapping"}
_JSON_TYPE = {int: "integer", float: "number", str: "string", bool: "boolean"}

# JSON Schema's `definitions`, filled by the records that have a name
Defs = dict[str, dict]


class Schema:
    what = "a value"

    def load(self, node: yaml.Node, ctx: _Ctx, field: str) -> Any:
        raise NotImplementedError

    def json(self, defs: Defs) -> dict:
        """This schema as JSON Schema (draft-07); named records go to `defs`."""
        raise NotImplementedError

    def scalar_json(self, defs: Defs) -> dict | None:
        """The JSON Schema of the scalars this schema takes (None: it takes none)."""
        return None


class Scalar(Schema):
    """A scalar of one of `types`; optionally one of `choices`, or passing `check`.  `json`
    adds to the JSON Schema what `check` checks (a pattern, a range)."""

    def __init__(self, *types: type, choices: tuple | None = None,
                 check: Callable[[Any], str | None] | None = None, what: str = "",
                 json: dict | None = None):
        self.types, self.choices, self.check = types, choices, check
        self.extra = json or {}
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

    def json(self, defs):
        types = [_JSON_TYPE[t] for t in self.types]
        out: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
        if self.choices is not None:
            out["enum"] = list(self.choices)
        return {**out, **self.extra}

    scalar_json = json


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

    def _one_is_a_list(self) -> bool:
        return not isinstance(self.item, (Seq, Record))

    def load(self, node, ctx, field):
        if isinstance(node, yaml.ScalarNode) and self._one_is_a_list():
            return [self.item.load(node, ctx, field)]       # one value for a list of one
        if not isinstance(node, yaml.SequenceNode):
            raise ctx.error(node, field, f"expected {self.what}, got {_KIND[type(node)]}")
        if len(node.value) < self.min_len:
            raise ctx.error(node, field, f"needs at least {self.min_len} item(s)")
        return [self.item.load(n, ctx, f"{field}[{i}]") for i, n in enumerate(node.value)]

    def json(self, defs):
        out: dict[str, Any] = {"type": "array", "items": self.item.json(defs)}
        if self.min_len:
            out["minItems"] = self.min_len
        one = self.item.scalar_json(defs) if self._one_is_a_list() else None
        return {"anyOf": [one, out]} if one is not None else out


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

    def json(self, defs):
        out: dict[str, Any] = {"type": "object", "additionalProperties": self.value.json(defs)}
        if self.keys is not None:
            out["propertyNames"] = {"enum": list(self.keys)}
        return out


class Any_(Schema):
    """Any plain YAML value (QMP arguments are checked by the monitor itself)."""
    what = "any value"

    def load(self, node, ctx, field):
        return _constructor.construct_document(node) if not isinstance(
            node, yaml.ScalarNode) else _scalar(node)

    def json(self, defs):
        return {}

    def scalar_json(self, defs):
        return {"type": ["string", "number", "boolean", "null"]}


class Field(NamedTuple):
    """One field of a :class:`Record`: its schema, whether it must be given, what it is."""
    schema: Schema
    required: bool = False
    doc: str = ""


class Record(Schema):
    """A mapping with known fields, loaded in the order declared; unknown fields are
    errors.  `exactly_one` names fields of which exactly one must be given (a step's
    action).  A record with a `name` is one entry of the JSON Schema's definitions."""

    def __init__(self, fields: dict[str, Field], what: str = "a mapping",
                 exactly_one: tuple[str, ...] = (),
                 hook: Callable[[dict, yaml.Node, _Ctx, str], None] | None = None,
                 name: str = ""):
        self.fields, self.what, self.exactly_one, self.hook = fields, what, exactly_one, hook
        self.name = name

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
        for key, (schema, required, _) in self.fields.items():
            sub = f"{field}.{key}" if field else key
            if key not in given:
                if required:
                    raise ctx.error(node, sub, "missing (required)")
                continue
            out[key] = schema.load(given[key][1], ctx, sub)
            if self.hook:
                self.hook(out, given[key][1], ctx, sub)
        return out

    def json(self, defs):
        if self.name and self.name in defs:
            return {"$ref": f"#/definitions/{self.name}"}
        if self.name:
            defs[self.name] = {}            # taken: a record that holds itself refers to it
        props = {}
        for key, f in self.fields.items():
            sub = f.schema.json(defs)
            if f.doc:       # draft-07 ignores whatever stands beside a $ref
                sub = {"description": f.doc, **({"allOf": [sub]} if "$ref" in sub else sub)}
            props[key] = sub
        out: dict[str, Any] = {"type": "object", "description": self.what,
                               "properties": props, "additionalProperties": False}
        required = [k for k, f in self.fields.items() if f.required]
        if required:
            out["required"] = required
        if self.exactly_one:
            out["oneOf"] = [{"required": [k]} for k in self.exactly_one]
        if not self.name:
            return out
        defs[self.name] = out
        return {"$ref": f"#/definitions/{self.name}"}


def export(top: Schema, title: str, description: str) -> dict:
    """`top` as a JSON Schema document (draft-07: what editors' YAML support reads)."""
    defs: Defs = {}
    body = top.json(defs)
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": title, **body,
            "description": description, "definitions": dict(sorted(defs.items()))}
