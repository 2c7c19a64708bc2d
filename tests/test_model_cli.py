"""``python -m device`` as the harness runs it: READY, a working socket, clean SIGTERM exit,
clear errors without tracebacks."""

from __future__ import annotations

import argparse
import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import MODEL_RAM
from device import regs
from device.cli import parse_size

ROOT = Path(__file__).resolve().parent.parent
RAM = MODEL_RAM          # the size of the ram_file fixture (conftest.py)


@contextmanager
def model(*args: str):
    proc = subprocess.Popen([sys.executable, "-m", "device", *args], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def wait_ready(proc, timeout=10.0) -> str:
    assert select.select([proc.stdout], [], [], timeout)[0], "no READY in time"
    return proc.stdout.readline()


def test_ready_serve_and_sigterm(tmp_path, ram_file):
    socks = [str(tmp_path / "a.sock"), str(tmp_path / "b.sock")]
    with model("--socket", socks[0], "--socket", socks[1], "--ram-path", ram_file,
               "--ram-size", "64M", "--fifo-depth", "8K") as proc:
        assert wait_ready(proc) == "READY\n"
        assert all(os.path.exists(s) for s in socks)
        for path in socks:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(path)
                fds = []
                try:
                    for _ in range(3):
                        _, got, _, _ = socket.recv_fds(s, 8, 1)
                        fds += got
                    with mmap.mmap(fds[0], regs.BAR2_SIZE) as bar2:
                        magic, _, _, peer, depth = struct.unpack_from("<5I", bar2, 0)
                    assert (magic, peer, depth) == (regs.MAGIC_VALUE, 0, 8192), path
                finally:
                    for fd in fds:
                        os.close(fd)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        err = proc.stderr.read()
        assert "Traceback" not in err
    assert not any(os.path.exists(s) for s in socks)


def test_sigint_exits_cleanly(tmp_path, ram_file):
    sock = str(tmp_path / "c.sock")
    with model("--socket", sock, "--ram-path", ram_file, "--ram-size", str(RAM),
               "--debug", "--log", str(tmp_path / "model.log")) as proc:
        assert wait_ready(proc) == "READY\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    assert not os.path.exists(sock)
    assert "listening on" in (tmp_path / "model.log").read_text()


def test_missing_ram_file_is_a_clear_error(tmp_path):
    with model("--socket", str(tmp_path / "s"), "--ram-path", str(tmp_path / "nope"),
               "--ram-size", "1G") as proc:
        assert proc.wait(10) == 2
        err = proc.stderr.read()
        out = proc.stdout.read()
    assert "does not exist" in err and "Traceback" not in err and "READY" not in out
    assert not os.path.exists(tmp_path / "s")


def test_socket_in_use_is_a_clear_error(tmp_path, ram_file):
    sock = str(tmp_path / "d.sock")
    with model("--socket", sock, "--ram-path", ram_file, "--ram-size", "64M") as first:
        assert wait_ready(first) == "READY\n"
        with model("--socket", str(tmp_path / "e.sock"), "--socket", sock,
                   "--ram-path", ram_file, "--ram-size", "64M") as second:
            assert second.wait(10) == 2
            err = second.stderr.read()
        assert "in use" in err and "Traceback" not in err
        assert not os.path.exists(tmp_path / "e.sock")      # the one it did bind is gone
        assert first.poll() is None and os.path.exists(sock)
        first.send_signal(signal.SIGTERM)
        assert first.wait(10) == 0


@pytest.mark.parametrize("text,value", [("512M", 512 << 20), ("1G", 1 << 30),
                                        ("65536", 65536), ("64K", 65536), ("2GiB", 2 << 30),
                                        ("0x1000", 4096)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "12Q", "-1", "0", "M"])
def test_parse_size_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)
