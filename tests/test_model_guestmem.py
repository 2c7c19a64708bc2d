"""GuestMemory: the q35 layout, views that alias the RAM file, DMA range errors."""

from __future__ import annotations

import pytest

from device.errors import ConfigError, DmaRangeError
from device.guestmem import FOUR_GIB, GuestMemory, Region, open_ram_file, q35_low_limit

GIB = 1 << 30


@pytest.mark.parametrize("ram,limit", [
    (512 << 20, 0xB0000000), (0xAFFFF000, 0xB0000000),
    (0xB0000000, 0x80000000), (3 * GIB, 0x80000000), (8 * GIB, 0x80000000)])
def test_q35_low_limit(ram, limit):
    assert q35_low_limit(ram) == limit


def test_regions_small_ram_all_low():
    m = GuestMemory(bytearray(1 << 20))
    assert m.regions == (Region(0, 1 << 20, 0),)


def test_view_aliases_buffer_no_copy():
    buf = bytearray(8192)
    m = GuestMemory(buf)
    v = m.view(100, 10)
    v[:] = b"0123456789"
    assert buf[100:110] == b"0123456789"
    buf[105] = ord("X")
    assert bytes(v) == b"01234X6789"


def test_small_low_limit_layout():
    buf = bytearray(1 << 20)
    m = GuestMemory(buf, low_limit=0x40000)
    assert m.regions == (Region(0, 0x40000, 0), Region(FOUR_GIB, FOUR_GIB + 0xC0000, 0x40000))
    m.view(FOUR_GIB + 0x10, 4)[:] = b"high"
    assert buf[0x40010:0x40014] == b"high"
    for gpa, n in [(0x3FFFF, 2), (0x40000, 1), (FOUR_GIB - 1, 2), (FOUR_GIB + 0xC0000, 1),
                   (FOUR_GIB + 0xBFFFF, 2), (-1, 1), (0, -1), (1 << 64, 1)]:
        with pytest.raises(DmaRangeError):
            m.view(gpa, n)
        assert not m.contains(gpa, n)
    assert m.contains(0x3FFFF, 1) and m.contains(FOUR_GIB + 0xBFFFF, 1)


def test_real_q35_layout_on_sparse_file(tmp_path):
    """3 GiB of RAM (a sparse file): 2 GiB low, 1 GiB from 4 GiB."""
    path = tmp_path / "ram"
    size = 3 * GIB
    with open(path, "wb") as f:
        f.truncate(size)
    mm = open_ram_file(str(path), size)
    try:
        m = GuestMemory(mm, size)
        assert m.regions == (Region(0, 2 * GIB, 0), Region(FOUR_GIB, FOUR_GIB + GIB, 2 * GIB))
        m.view(2 * GIB - 4, 4)[:] = b"LOW!"
        m.view(FOUR_GIB, 4)[:] = b"HIGH"
        m.view(FOUR_GIB + GIB - 4, 4)[:] = b"END!"
        for gpa, n in [(2 * GIB - 4, 5), (2 * GIB, 4), (0xFEE00000, 4), (FOUR_GIB + GIB, 1),
                       (FOUR_GIB + GIB - 4, 5)]:
            with pytest.raises(DmaRangeError):
                m.view(gpa, n)
        m.close()
        mm.flush()
    finally:
        mm.close()
    with open(path, "rb") as f:
        f.seek(2 * GIB - 4)
        assert f.read(8) == b"LOW!HIGH"
        f.seek(size - 4)
        assert f.read(4) == b"END!"


def test_ram_size_must_fit_buffer():
    for size in (200, 0, -1):
        with pytest.raises(ValueError, match=f"ram_size {size} does not fit the 100-byte"):
            GuestMemory(bytearray(100), size)
    assert GuestMemory(bytearray(100), 1).ram_size == 1      # the smallest RAM there is


def test_open_ram_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        open_ram_file(str(tmp_path / "missing"), 4096)
    short = tmp_path / "short"
    short.write_bytes(bytes(100))
    with pytest.raises(ConfigError, match="less than"):
        open_ram_file(str(short), 4096)
    # the errors name the file and the reason (mutmut: a survivor replaced each message)
    with pytest.raises(ConfigError, match=f"cannot open guest RAM file '{tmp_path}': Is a dir"):
        open_ram_file(str(tmp_path), 4096)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(ConfigError, match="cannot map guest RAM file .*empty'"):
        open_ram_file(str(empty), 0)


def test_close_releases_mapping(tmp_path):
    path = tmp_path / "ram"
    path.write_bytes(bytes(8192))
    mm = open_ram_file(str(path), 8192)
    m = GuestMemory(mm)
    v = m.view(0, 10)
    v.release()
    m.close()
    mm.close()                     # BufferError if an export were left
    assert mm.closed
