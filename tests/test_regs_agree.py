"""device/regs.py and guest_driver/fifolab_hw.h are one spec: every constant agrees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from device import regs

ROOT = Path(__file__).resolve().parent.parent
HEADER = ROOT / "guest_driver" / "fifolab_hw.h"

# Python-only names: not int constants a C driver needs as #defines.
SKIP = {"INT_VECTOR_OF"}

_DEFINE = re.compile(r"^#define\s+FIFOLAB_([A-Z0-9_]+)\s+(.+?)\s*(?:/\*.*)?$")


def _c_value(text: str) -> int | None:
    text = text.strip()
    m = re.fullmatch(r"BIT\((\d+)\)", text)
    if m:
        return 1 << int(m.group(1))
    m = re.fullmatch(r"\(?\s*(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\s*\)?", text)
    return int(m.group(1), 0) if m else None


def c_defines() -> dict[str, int]:
    out = {}
    for line in HEADER.read_text().splitlines():
        m = _DEFINE.match(line)
        if m:
            value = _c_value(m.group(2))
            if value is not None:
                out[m.group(1)] = value
    return out


def py_constants() -> dict[str, int]:
    return {name: value for name, value in vars(regs).items()
            if name.isupper() and isinstance(value, int) and not isinstance(value, bool)}


def test_header_parses():
    c = c_defines()
    assert c["MAGIC_VALUE"] == 0x424C4946 and c["DESC_F_CANCEL"] == 4
    assert len(c) > 60


@pytest.mark.parametrize("name", sorted(py_constants()))
def test_python_constant_has_equal_c_define(name):
    c = c_defines()
    assert name in c, f"regs.{name} has no FIFOLAB_{name} in {HEADER.name}"
    assert c[name] == getattr(regs, name), f"FIFOLAB_{name}"


def test_every_c_define_is_in_python():
    py = py_constants()
    extra = sorted(set(c_defines()) - set(py))
    assert extra == [], f"#defines missing from regs.py: {extra}"


def test_non_int_uppercase_names_are_skipped_explicitly():
    others = {n for n, v in vars(regs).items() if n.isupper() and not isinstance(v, int)}
    assert others == SKIP


def test_vector_map_matches_header_comments():
    """INT_VECTOR_OF has no #define; the header documents it as '/* vector N */'."""
    text = HEADER.read_text()
    for bit, vec in regs.INT_VECTOR_OF.items():
        name = next(n for n, v in vars(regs).items()
                    if n.startswith("INT_") and v == bit and n != "INT_ALL")
        assert re.search(rf"FIFOLAB_{name}\s+BIT\(\d+\)\s*/\*\s*vector {vec}\s*\*/", text), name
