"""The host end of a wired device (``LabConfig.wired``): a plain Unix-socket client."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from .errors import LabError


class HostWire:
    """The host end of a wired device: bytes sent arrive in the guest's read FIFO, what the
    guest writes comes out here.  Raw bytes, no framing; flow control is the device's."""

    def __init__(self, path: Path, timeout: float = 30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise LabError(f"the wire closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> HostWire:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
