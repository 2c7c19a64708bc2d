"""The ivshmem transport: a Unix-socket server speaking QEMU's ivshmem protocol for one device.

Knows nothing of the FIFO: it owns the shared memory (BAR2), the eventfds and the socket, calls
``on_doorbell(rings)`` when the guest rings us, and offers :meth:`IvshmemServer.raise_vector`.

Protocol (QEMU ``docs/specs/ivshmem-spec.rst``): every message is a little-endian int64, some
carry one fd (SCM_RIGHTS).  We are peer 0; each client (QEMU) gets the next id.  On connect::

    server -> client     value        fd
    1                    0            -              protocol version
    2                    <id>         -              the client's peer id
    3                    -1           memfd          shared memory (BAR2), BAR2_SIZE bytes
    4  x N               0            eventfd[v]     ring peer 0 (us) on vector v = 0..N-1
    5  x N               <id>         eventfd[v]     the client's own vectors: we write, it
                                                     injects MSI-X vector v

    later: <peer id> without fd = that peer left (we have no other peers, so never sent)

QEMU reads messages 1-3 synchronously while realizing the device, so the server must be
listening before QEMU starts.  One QEMU at a time: a connection while one is live is refused
(closed at once).  When a client leaves its eventfds are closed; the next one gets a new id.

State::

    NEW --start()--> LISTENING --close()--> CLOSED        (close() also from NEW)
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import mmap
import os
import socket
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import SocketInUseError, TransportError
from .listener import Acceptor
from .ratelimit import LogLimiter

__all__ = ["IvshmemServer", "State", "SERVER_PEER_ID", "PROTOCOL_VERSION", "listen_unix"]

SERVER_PEER_ID = 0
PROTOCOL_VERSION = 0
_MSG = struct.Struct("<q")
_EFD_FLAGS = os.EFD_NONBLOCK | os.EFD_CLOEXEC


class State(enum.Enum):
    NEW = "new"
    LISTENING = "listening"
    CLOSED = "closed"


@dataclass(eq=False)
class _Client:
    """A connected QEMU: its socket and the eventfds that interrupt it."""

    peer_id: int
    sock: socket.socket
    vector_fds: list[int] = field(default_factory=list)


class IvshmemServer:
    """Serve one ivshmem-doorbell device on the Unix socket ``path``.

    ``shm`` (an mmap of ``shm_size`` bytes) is the BAR2 the device core works on; it exists
    from construction so the core can power on before anyone connects.
    """

    def __init__(self, path: str, *, shm_size: int, num_vectors: int,
                 on_doorbell: Callable[[int], None] | None = None,
                 on_connect: Callable[[int], None] | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.path = path
        self.num_vectors = num_vectors
        self.on_doorbell = on_doorbell
        self.on_connect = on_connect
        self.log = logger or logging.getLogger("fifolab.ivshmem")
        self.state = State.NEW
        self._next_id = SERVER_PEER_ID + 1
        self._client: _Client | None = None
        self._listener: socket.socket | None = None
        self._acceptor: Acceptor | None = None
        self._limiter = LogLimiter(self.log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shm_fd = -1
        self._own_fds: list[int] = []
        try:
            self._shm_fd = os.memfd_create("fifolab-bar2", os.MFD_CLOEXEC)
            os.ftruncate(self._shm_fd, shm_size)
            self.shm = mmap.mmap(self._shm_fd, shm_size, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
            self._own_fds = [os.eventfd(0, _EFD_FLAGS) for _ in range(num_vectors)]
        except OSError as err:
            self._close_fds()
            raise TransportError(f"cannot create shared memory or eventfds: {err}") from err

    # ---- state ----

    @property
    def client_id(self) -> int | None:
        """Peer id of the connected QEMU, or None."""
        return self._client.peer_id if self._client else None

    @property
    def doorbell_fds(self) -> list[int]:
        """Our eventfds (QEMU writes them to ring us); for tests."""
        return list(self._own_fds)

    # ---- life cycle ----

    async def start(self) -> None:
        """Bind and listen on ``path``; :class:`SocketInUseError` if someone serves it."""
        if self.state is not State.NEW:
            raise TransportError(f"start() in state {self.state.value}")
        self._loop = asyncio.get_running_loop()
        self._listener = listen_unix(self.path)
        self._acceptor = Acceptor(self._listener, self._on_accept, self.log, "ivshmem")
        self._acceptor.start()
        for v, fd in enumerate(self._own_fds):
            self._loop.add_reader(fd, self._on_doorbell, v, fd)
        self.state = State.LISTENING
        self.log.info("listening on %s", self.path)

    def close(self) -> None:
        """Stop serving: drop the client, unlink the socket, close every fd and the mapping.

        The caller must have dropped its own references into ``shm`` first.
        """
        if self.state is State.CLOSED:
            return
        was_listening = self.state is State.LISTENING
        self.state = State.CLOSED
        self._drop_client("server closing")
        if self._loop is not None and not self._loop.is_closed():
            for fd in self._own_fds:
                self._loop.remove_reader(fd)
        if self._acceptor is not None:
            self._acceptor.close()
            self._acceptor = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if was_listening:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self._close_fds()
        self.log.info("closed")

    def _close_fds(self) -> None:
        for fd in self._own_fds:
            os.close(fd)
        self._own_fds = []
        shm = getattr(self, "shm", None)
        if shm is not None:
            try:
                shm.close()
            except BufferError:                 # a view is still alive; the fd closes anyway
                self.log.warning("BAR2 mapping still in use at close")
        if self._shm_fd >= 0:
            os.close(self._shm_fd)
            self._shm_fd = -1

    # ---- interrupts to the guest ----

    def raise_vector(self, vector: int) -> None:
        """Send MSI-X ``vector`` to the connected QEMU (dropped if none is connected)."""
        client = self._client
        if client is None or not 0 <= vector < len(client.vector_fds):
            self.log.debug("vector %d dropped: no client", vector)
            return
        try:
            os.eventfd_write(client.vector_fds[vector], 1)
        except OSError as err:      # EAGAIN at a counter of 2**64-2: nobody is reading anyway
            self._limiter.warning("vector lost", "vector %d to peer %d lost: %s", vector,
                                  client.peer_id, err)
        else:
            self.log.debug("vector %d -> peer %d", vector, client.peer_id)

    # ---- event-loop callbacks ----

    def _on_doorbell(self, vector: int, fd: int) -> None:
        try:
            rings = os.eventfd_read(fd)
        except BlockingIOError:
            return
        self.log.debug("doorbell on vector %d (x%d)", vector, rings)
        if self.on_doorbell is None:
            return
        try:
            self.on_doorbell(rings)
        except Exception:                       # the device must outlive a model bug
            if self._limiter.allow("doorbell failed")[0]:
                self.log.exception("doorbell handler failed")

    def _on_accept(self, sock: socket.socket) -> None:
        if self._client is not None:
            self._limiter.warning("refused", "refusing a second client while peer %d is "
                                  "connected", self._client.peer_id)
            sock.close()
            return
        client = _Client(self._next_id, sock)
        self._next_id += 1
        try:
            client.vector_fds = [os.eventfd(0, _EFD_FLAGS) for _ in range(self.num_vectors)]
            if self.on_connect is not None:
                self.on_connect(client.peer_id)
            self._greet(client)
        except Exception as err:
            self._limiter.warning("handshake", "handshake with peer %d failed: %s",
                                  client.peer_id, err)
            _close_client(client)
            return
        sock.setblocking(False)
        self._client = client
        assert self._loop is not None           # accepting: started
        self._loop.add_reader(sock.fileno(), self._on_client_readable)
        self.log.info("peer %d connected", client.peer_id)

    def _greet(self, client: _Client) -> None:
        """Send the connect sequence (module docstring, messages 1-5)."""
        sock = client.sock
        sock.settimeout(5.0)    # a few hundred bytes into an empty socket buffer
        _send(sock, PROTOCOL_VERSION)
        _send(sock, client.peer_id)
        _send(sock, -1, self._shm_fd)
        for fd in self._own_fds:
            _send(sock, SERVER_PEER_ID, fd)
        for fd in client.vector_fds:
            _send(sock, client.peer_id, fd)

    def _on_client_readable(self) -> None:
        client = self._client
        if client is None:
            return
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._drop_client(f"receive failed: {err}")
            return
        if not data:
            self._drop_client("disconnected")
        else:
            self._limiter.log_as(logging.DEBUG, "ignored", "ignoring %d bytes from peer %d",
                                 len(data), client.peer_id)

    def _drop_client(self, why: str) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(client.sock.fileno())
        _close_client(client)
        self.log.info("peer %d gone: %s", client.peer_id, why)


def _send(sock: socket.socket, value: int, fd: int | None = None) -> None:
    data = _MSG.pack(value)
    if fd is None:
        sock.sendall(data)
    elif socket.send_fds(sock, [data], [fd]) != len(data):
        raise TransportError("short send of an fd message")


def _close_client(client: _Client) -> None:
    client.sock.close()
    for fd in client.vector_fds:
        os.close(fd)
    client.vector_fds = []


def listen_unix(path: str) -> socket.socket:
    """A non-blocking listening socket at ``path``; a stale socket file is replaced."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUseError(f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)                     # stale: nobody listens
        except OSError as err:
            raise SocketInUseError(f"cannot probe existing socket {path}: {err}") from err
        else:
            raise SocketInUseError(f"socket {path} is in use by a running server")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(path)
        sock.listen(4)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise SocketInUseError(f"socket {path} is in use") from err
        raise TransportError(f"cannot listen on {path}: {err.strerror}") from err
    return sock
