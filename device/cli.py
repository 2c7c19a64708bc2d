"""Command line: ``python -m device --socket PATH[:WIREPATH] [--socket ...] --ram-path FILE
--ram-size SIZE [--fifo-depth N] [--qmp PATH] [-v|--debug] [--log FILE]``.

``--socket PATH`` serves a loopback device on PATH; ``--socket PATH:WIREPATH`` serves a device
wired to the host, whose host end is the Unix socket WIREPATH (raw bytes both ways, one client
at a time: see ``device/wire.py``).  PATH must not contain a ``:``.

``--qmp PATH`` serves a QMP monitor on the Unix socket PATH: queries and fault injection for
every device (``docs/faults.md``).

Prints ``READY`` on stdout once every socket (wire and QMP sockets included) listens.  SIGTERM
or SIGINT: unlink the sockets, close everything, exit 0.  Configuration problems print one line on
stderr and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import sys

from .errors import FifolabError
from .fifo import DEFAULT_DEPTH
from .service import serve

__all__ = ["main", "parse_size", "parse_socket", "build_parser"]

PROG = "python -m device"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(0x[0-9a-f]+|\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"512M"`` -> 536870912; accepts K/M/G/T (binary), optional ``iB``/``B``, or hex."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 512M, 1G, 65536)")
    value = int(m.group(1), 0) * _UNITS[m.group(2).upper()]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def parse_socket(text: str) -> tuple[str, str | None]:
    """``"a.sock"`` -> ``("a.sock", None)``; ``"a.sock:a.wire"`` -> ``("a.sock", "a.wire")``."""
    path, sep, wire = text.partition(":")
    if not path or (sep and not wire):
        raise argparse.ArgumentTypeError(f"not PATH or PATH:WIREPATH: {text!r}")
    return path, (wire if sep else None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="fifolab FIFO peripheral model "
                                "(ivshmem-doorbell server, one device per --socket)")
    p.add_argument("--socket", action="append", required=True, type=parse_socket,
                   metavar="PATH[:WIREPATH]",
                   help="Unix socket to serve a device on (repeat for more devices); with "
                   ":WIREPATH the device is wired to the host on the Unix socket WIREPATH "
                   "instead of looping back")
    p.add_argument("--ram-path", required=True, metavar="FILE",
                   help="guest RAM file (QEMU memory-backend-file mem-path, share=on)")
    p.add_argument("--ram-size", required=True, type=parse_size, metavar="BYTES",
                   help="guest RAM size, as given to QEMU (-m / backend size): 512M, 1G ...")
    p.add_argument("--fifo-depth", type=parse_size, default=DEFAULT_DEPTH, metavar="N",
                   help=f"FIFO capacity in bytes (default {DEFAULT_DEPTH})")
    p.add_argument("--qmp", metavar="PATH",
                   help="serve a QMP monitor (queries, fault injection) on the Unix socket "
                   "PATH; commands take \"device\": N for the N-th --socket")
    p.add_argument("-v", "--debug", action="store_true",
                   help="log doorbells, descriptors, interrupts and wire traffic (DEBUG)")
    p.add_argument("--log", metavar="FILE", help="log to FILE instead of stderr")
    return p


def _setup_logging(debug: bool, log_file: str | None) -> None:
    handler: logging.Handler
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s.%(msecs)03d %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("fifolab")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


async def _run(opts: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await serve(opts.socket, opts.ram_path, opts.ram_size, opts.fifo_depth, stop,
                    qmp_path=opts.qmp)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    opts = parser.parse_args(argv)
    paths = [p for spec in opts.socket for p in spec if p is not None]
    if opts.qmp is not None:
        paths.append(opts.qmp)
    if len(set(paths)) != len(paths):
        parser.error("the same socket path is given twice")
    if opts.fifo_depth > 0xFFFFFFFF:
        parser.error("--fifo-depth must fit in 32 bits")
    try:
        _setup_logging(opts.debug, opts.log)
    except OSError as err:
        parser.error(f"cannot open log file: {err}")
    try:
        asyncio.run(_run(opts))
    except FifolabError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:       # a SIGINT before the handlers were installed
        return 0
    return 0
