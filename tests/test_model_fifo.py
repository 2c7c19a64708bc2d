"""ByteFifo: bounded, ordered, wraps, against a bytes reference model."""

from __future__ import annotations

import random

import pytest

from device.fifo import DEFAULT_DEPTH, ByteFifo


def test_default_depth():
    f = ByteFifo()
    assert f.depth == DEFAULT_DEPTH == 65536 and f.level == 0 and f.space == 65536


def test_put_is_bounded_and_get_returns_in_order():
    f = ByteFifo(10)
    assert f.put(memoryview(b"0123456789abc")) == 10
    assert f.level == 10 and f.space == 0
    assert f.put(memoryview(b"x")) == 0
    out = bytearray(4)
    assert f.get_into(memoryview(out)) == 4 and out == b"0123"
    assert f.put(memoryview(b"ABCDEF")) == 4            # wraps around the end
    out = bytearray(20)
    assert f.get_into(memoryview(out)) == 10
    assert out[:10] == b"456789ABCD" and out[10:] == bytes(10)
    assert f.get_into(memoryview(out)) == 0


def test_clear():
    f = ByteFifo(8)
    f.put(memoryview(b"abcdef"))
    f.clear()
    assert f.level == 0 and f.space == 8
    out = bytearray(8)
    f.put(memoryview(b"xy"))
    assert f.get_into(memoryview(out)) == 2 and out[:2] == b"xy"


def test_zero_depth_refused():
    with pytest.raises(ValueError, match="FIFO depth must be positive, not 0"):
        ByteFifo(0)


@pytest.mark.parametrize("depth", [1, 7, 64, 4096])
def test_random_against_reference(depth):
    rng = random.Random(depth)
    f = ByteFifo(depth)
    ref = bytearray()
    for _ in range(2000):
        if rng.random() < 0.5:
            data = rng.randbytes(rng.randrange(0, 2 * depth + 2))
            n = f.put(memoryview(data))
            assert n == min(len(data), depth - len(ref))
            ref += data[:n]
        else:
            out = bytearray(rng.randrange(0, 2 * depth + 2))
            n = f.get_into(memoryview(out))
            assert n == min(len(out), len(ref))
            assert out[:n] == ref[:n]
            del ref[:n]
        assert f.level == len(ref) and f.space == depth - len(ref)
