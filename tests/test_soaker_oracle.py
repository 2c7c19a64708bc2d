"""The soak's reader oracle, on the host: `soaker --judge FILE` judges a recorded stream as the
guest's reader does, so each way a stream can be damaged is checked against what the contract
says of it.  A flipped bit (a corrupt fault) is a detected corruption, one per damaged record,
adjacent records included; bytes lost, added, duplicated or replaced by other data are never
explained without an error (and a recorded stream has none).

The records are built here from the format in soaker.c's header comment (magic, seq,
zlib's CRC-32 of seq and payload, payload), not by the soaker itself.
"""

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECORD = 256
MAGIC = 0x4B414F53


@pytest.fixture(scope="module")
def soaker(tmp_path_factory) -> Path:
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed (scripts/setup.sh installs it)")
    exe = tmp_path_factory.mktemp("soaker") / "soaker"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe),
                    str(REPO / "guest_driver/programs/soaker.c"), "-laio", "-luring",
                    "-lpthread"], check=True)
    return exe


def record(seq: int) -> bytes:
    payload = bytes((seq * 31 + i * 7) & 0xFF for i in range(12, RECORD))
    crc = zlib.crc32(struct.pack("<I", seq) + payload)
    return struct.pack("<III", MAGIC, seq, crc) + payload


def stream(n: int = 64) -> bytearray:
    return bytearray(b"".join(record(s) for s in range(n)))


def flip(data: bytearray, byte: int, bit: int = 0) -> None:
    data[byte] ^= 1 << bit


def judge(soaker: Path, tmp_path: Path, data: bytes) -> tuple[int, dict[str, str], str]:
    f = tmp_path / "stream"
    f.write_bytes(bytes(data))
    res = subprocess.run([str(soaker), "--judge", str(f)], capture_output=True, text=True,
                         timeout=30)
    m = re.search(r"^soak (.*)$", res.stdout, re.M)
    assert m, (res.stdout, res.stderr)
    fields = dict(kv.split("=", 1) for kv in m.group(1).split())
    return res.returncode, fields, res.stderr


def test_an_intact_stream_has_no_gap(soaker, tmp_path):
    rc, f, err = judge(soaker, tmp_path, stream())
    assert (rc, f["records"], f["gaps"], f["unexplained"]) == (0, "64", "0", "0"), err


@pytest.mark.parametrize("byte", [0, 5, 9, 100, 255], ids=lambda b: f"byte{b}")
def test_one_flipped_bit_is_one_detected_corruption(soaker, tmp_path, byte):
    data = stream()
    flip(data, 10 * RECORD + byte, 3)
    rc, f, err = judge(soaker, tmp_path, data)
    assert (rc, f["records"], f["corrupt_detected"], f["unexplained"]) == (0, "63", "1", "0"), err


def test_flipped_bits_in_adjacent_records_are_two_corruptions(soaker, tmp_path):
    """CI saw this: two corrupt faults' bits in neighbouring records, one garbage run."""
    data = stream()
    flip(data, 10 * RECORD + 200)
    flip(data, 11 * RECORD + 17, 6)
    rc, f, err = judge(soaker, tmp_path, data)
    assert (rc, f["records"], f["corrupt_detected"], f["unexplained"]) == (0, "62", "2", "0"), err


def test_two_bits_in_one_record_are_not_one_fault(soaker, tmp_path):
    data = stream()
    flip(data, 10 * RECORD + 20)
    flip(data, 10 * RECORD + 21)
    rc, f, err = judge(soaker, tmp_path, data)
    assert (rc, f["unexplained"]) == (1, "1"), err


def _replace(data: bytearray, start: int, new: bytes) -> bytearray:
    data[start:start + len(new)] = new
    return data


@pytest.mark.parametrize("damage", [
    # stale bytes of the right length: what a read returning an old buffer delivers
    lambda d: _replace(d, 10 * RECORD, bytes(2 * RECORD)),
    lambda d: _replace(d, 10 * RECORD, bytes(d[10 * RECORD + 100:12 * RECORD + 100])),
    # bytes lost inside a record, a whole record lost, bytes added
    lambda d: d[:10 * RECORD + 7] + d[10 * RECORD + 107:],
    lambda d: d[:10 * RECORD] + d[11 * RECORD:],
    lambda d: d[:10 * RECORD] + bytes(RECORD) + d[10 * RECORD:],
    lambda d: d[:10 * RECORD + 30] + d[10 * RECORD + 29:],
    # a record delivered twice, records out of order
    lambda d: d[:11 * RECORD] + d[10 * RECORD:],
    lambda d: d[:10 * RECORD] + d[11 * RECORD:12 * RECORD] + d[10 * RECORD:11 * RECORD]
    + d[12 * RECORD:],
], ids=["zeros", "shifted", "100-bytes-lost", "record-lost", "record-added", "byte-added",
        "duplicate", "swapped"])
def test_damage_other_than_a_flipped_bit_is_unexplained(soaker, tmp_path, damage):
    rc, f, err = judge(soaker, tmp_path, damage(stream()))
    assert rc == 1 and int(f["unexplained"]) >= 1, (f, err)
    assert "soaker:" in err
