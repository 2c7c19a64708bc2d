"""Terminal helpers: a raw bridge to the guest's shell socket, and following a log file."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import termios
import time
import tty
from pathlib import Path

ESCAPE = b"\x1d"    # Ctrl-]


def bridge(sock_path: Path) -> int:
    """Connect this terminal to the guest shell on /dev/hvc0 until Ctrl-] (or EOF)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(sock_path))
    except OSError as err:
        print(f"fifolab shell: cannot reach the guest shell at {sock_path}: {err}",
              file=sys.stderr)
        return 1
    print("fifolab shell: attached to the lab's guest shell; leave with Ctrl-]",
          file=sys.stderr)
    s.sendall(b"\n")
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    try:
        if saved is not None:
            tty.setraw(fd)
        while True:
            r, _, _ = select.select([fd, s], [], [])
            if s in r:
                data = s.recv(4096)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if fd in r:
                data = os.read(fd, 1024)
                if not data or ESCAPE in data:
                    s.sendall(data.split(ESCAPE)[0])
                    break
                s.sendall(data)
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        s.close()
    print("\r\nfifolab shell: detached (the lab is still up)", file=sys.stderr)
    return 0


def follow(path: Path, keep_following: bool) -> int:
    """Print a log file; with `keep_following`, go on printing what is appended (Ctrl-C ends)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        print(f"no log at {path}", file=sys.stderr)
        return 1
    with f, contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        out = sys.stdout.buffer
        while True:
            data = f.read()
            if data:
                out.write(data.replace(b"\r", b""))
                out.flush()
            elif not keep_following or not path.exists():
                break
            else:
                time.sleep(0.2)
    return 0
