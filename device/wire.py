"""The host wire: a Unix-socket server joining a wired :class:`~device.core.FifoDevice` to a
program on the host.

Protocol: none.  Raw bytes both ways, no framing: what the client sends arrives in the guest's
RX FIFO (and so in its ``read()``s), what the guest ``write()``s comes out to the client.

One client at a time.  A connection while one is live is refused: closed at once, with a
warning in the log (rate limited).  EOF from the client ends its session (half-close is not
supported: a client that has finished sending but still reads keeps its write side open).  A
new client then continues the stream where the last one left it: TX FIFO bytes, and host bytes
this server received but the device has not taken yet, stay queued across clients.  (Bytes the
kernel already accepted into a client's socket are that client's; if it leaves without
reading them they are gone with it.)

A hang-up is noticed in every device state.  While reading is off (below) the socket is not
watched, so the client's going is checked with ``poll(POLLRDHUP)`` every ``HANGUP_POLL``
seconds, and at once when another client knocks.  What a client sent before it hung up is
still delivered, in order: its unread bytes (at most ``MAX_LEFT``; the kernel held them
already) are read out of its socket and held here, and a new client's bytes follow them.

Flow control, with nothing dropped::

    client --recv_into(<= min(chunk, host_rx_space()))--> host_write --> RX FIFO --> guest RX
        The reader is removed while host_rx_space() is 0 (RX FIFO full, or the device not
        READY) or while received bytes are still held; the socket then fills and the client's
        send() blocks (and its hang-up is polled for, above).  After each doorbell the core calls wake_host() (= kick()), and the
        reader comes back as soon as there is room.

    guest TX --> TX FIFO --host_tx_peek()--> send() --host_tx_commit(sent)--> (TX FIFO space)
        Bytes leave the TX FIFO only once the socket took them.  While the socket's buffer is
        full a writer waits for it to drain; while no client is connected the bytes stay in the
        TX FIFO, and TX requests wait behind them.

A **flood** (fault injection, ``fault-flood``): host traffic generated here from a
:class:`~device.faults.Flood` instead of read from a client -- more bytes than the RX FIFO holds,
pushed whenever it has room (at each update, i.e. after every doorbell), so the guest is always
behind.  It obeys the same flow control: the flood is queued here and fed as space frees, never
dropped.  Held client bytes go first, then flood bytes; a connected client's bytes interleave
with the flood's at chunk boundaries.

Events (``emit``): ``HOST_WIRE`` {connected, client} when a client comes or goes,
``FLOOD_DONE`` {id, offered, accepted, refused} when a flood has been taken whole.

State::

    NEW --start()--> LISTENING --close()--> CLOSED        (close() also from NEW)
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
from collections.abc import Callable

from .core import FifoDevice
from .errors import FaultError, TransportError
from .faults import Flood
from .ivshmem import State, listen_unix
from .listener import Acceptor
from .ratelimit import LogLimiter

__all__ = ["HostWire", "DEFAULT_CHUNK", "HANGUP_POLL", "MAX_LEFT"]

DEFAULT_CHUNK = 65536       # most bytes received from the client per read
HANGUP_POLL = 0.2           # seconds between hang-up checks while not reading
MAX_LEFT = 4 << 20          # most bytes kept from a client that hung up while not read
_HUNG_UP = select.POLLHUP | select.POLLRDHUP | select.POLLERR


class HostWire:
    """Serve the host end of ``core``'s wire on the Unix socket ``path``."""

    def __init__(self, path: str, core: FifoDevice, logger: logging.Logger | None = None,
                 chunk: int = DEFAULT_CHUNK) -> None:
        if not core.host_wire:
            raise TransportError("a host wire needs a device created with host_wire=True")
        self.path = path
        self.core = core
        self.log = logger or logging.getLogger("fifolab.wire")
        self.state = State.NEW
        self.bytes_in = 0           # host -> device, taken by the device
        self.bytes_out = 0          # device -> host, taken by a client's socket
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._acceptor: Acceptor | None = None
        self._limiter = LogLimiter(self.log, burst=20)
        self._hangup_timer: asyncio.TimerHandle | None = None
        self._client: socket.socket | None = None
        self._client_no = 0
        self._session = [0, 0]      # this client's bytes in, out
        self._reading = False
        self._writing = False
        self._update_soon = False
        self._inbuf = bytearray(chunk)
        self._in = memoryview(self._inbuf)
        self._held = (0, 0)         # _inbuf[start:end]: received, not yet taken by the device
        self._left = bytearray()    # then these: what a client that hung up had still sent
        self.flood: Flood | None = None         # the flood being fed, or the last one
        self.emit: Callable[[str, dict], None] = lambda name, data: None

    # ---- state ----

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def held(self) -> int:
        """Bytes received from a client that the device has not taken yet."""
        return self._held[1] - self._held[0] + len(self._left)

    # ---- life cycle ----

    async def start(self) -> None:
        if self.state is not State.NEW:
            raise TransportError(f"start() in state {self.state.value}")
        self._loop = asyncio.get_running_loop()
        self._listener = listen_unix(self.path)
        self._acceptor = Acceptor(self._listener, self._on_accept, self.log, "wire")
        self._acceptor.start()
        self.state = State.LISTENING
        self.log.info("host wire listening on %s", self.path)

    def close(self) -> None:
        """Drop the client, stop listening, unlink the socket."""
        if self.state is State.CLOSED:
            return
        was_listening = self.state is State.LISTENING
        self.state = State.CLOSED
        self._drop_client("wire closing")
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
        if self.held:
            self.log.warning("%d received host bytes never reached the guest", self.held)
        self._in.release()
        if was_listening:
            self.log.info("host wire closed (in %d, out %d bytes)", self.bytes_in,
                          self.bytes_out)

    # ---- fault injection: a flood ----

    def start_flood(self, flood: Flood) -> None:
        """Feed ``flood`` into the device as its RX FIFO frees (one flood at a time)."""
        if self.state is not State.LISTENING:
            raise FaultError("the host wire is not listening")
        if self.flood is not None and not self.flood.done:
            raise FaultError(f"flood {self.flood.id} is still running "
                             f"({self.flood.remaining} bytes to go)")
        self.flood = flood
        self.log.info("flood %d: %d bytes (%s)", flood.id, flood.total, flood.pattern)
        self.kick()

    def stop_flood(self) -> Flood | None:
        """Cancel the running flood; return it (None if none runs)."""
        flood = self.flood
        if flood is None or flood.done:
            return None
        flood.cancelled = True
        self.log.info("flood %d cancelled after %d of %d bytes", flood.id, flood.accepted,
                      flood.total)
        return flood

    def _push_flood(self) -> None:
        flood = self.flood
        if flood is None or flood.done:
            return
        while flood.remaining:
            space = self.core.host_rx_space()
            n = self.core.host_write(flood.peek(min(space, len(self._in)))) if space else 0
            flood.commit(n)
            self.bytes_in += n
            if not n:
                break
        if flood.done and not flood.cancelled:
            self.log.info("flood %d done: %d bytes, the RX FIFO was full %d times", flood.id,
                          flood.accepted, flood.refused)
            self.emit("FLOOD_DONE", {"id": flood.id, "offered": flood.total,
                                     "accepted": flood.accepted, "refused": flood.refused})

    # ---- the device's side ----

    def kick(self) -> None:
        """The device may take or give bytes now (its ``wake_host``): look again, soon."""
        if self._update_soon or self.state is not State.LISTENING:
            return
        self._update_soon = True
        assert self._loop is not None           # listening: started
        self._loop.call_soon(self._update)

    def _update(self) -> None:
        """Push held bytes, send TX FIFO bytes, and read again if the device has room."""
        self._update_soon = False
        if self.state is not State.LISTENING:
            return
        self._push_held()
        if not self.held:
            self._push_flood()
        if not self._writing:
            self._send_pending()
        self._set_reading(self._client is not None and not self.held
                          and self.core.host_rx_space() > 0)

    def _push_held(self) -> None:
        start, end = self._held
        if start != end:
            n = self.core.host_write(self._in[start:end])
            self._took_in(n)
            self._held = (0, 0) if start + n == end else (start + n, end)
            if start + n != end:
                return
        if self._left:
            with memoryview(self._left) as view:
                n = self.core.host_write(view)
            del self._left[:n]
            self._took_in(n)

    def _took_in(self, n: int) -> None:
        self.bytes_in += n
        self._session[0] += n

    # ---- the client's side ----

    def _on_accept(self, sock: socket.socket) -> None:
        self._check_hangup()
        if self._client is not None:
            self._limiter.warning("refused", "refusing a second host wire client on %s: "
                                  "client #%d is connected (one at a time)", self.path,
                                  self._client_no)
            sock.close()
            return
        sock.setblocking(False)
        self._client = sock
        self._client_no += 1
        self._session = [0, 0]
        self._limiter.info("connected", "wire client #%d connected (%d TX bytes queued, %d "
                           "host bytes held)", self._client_no, self.core.host_tx_pending(),
                           self.held)
        self.emit("HOST_WIRE", {"connected": True, "client": self._client_no})
        self._update()

    def _drop_client(self, why: str) -> None:
        sock, self._client = self._client, None
        if sock is None:
            return
        self._set_reading(False, sock)
        self._set_writing(False, sock)
        sock.close()
        self._limiter.info("gone", "wire client #%d gone: %s (in %d, out %d bytes)",
                           self._client_no, why, *self._session)
        self.emit("HOST_WIRE", {"connected": False, "client": self._client_no})

    # ---- a hang-up while reading is off ----

    def _check_hangup(self) -> None:
        """If the client has hung up, keep what it sent and drop it."""
        sock = self._client
        if sock is None:
            return
        p = select.poll()
        p.register(sock.fileno(), select.POLLRDHUP)
        if not any(ev & _HUNG_UP for _, ev in p.poll(0)):
            return
        lost = self._salvage(sock)
        self._drop_client("hung up while not read" + (f", {lost} bytes beyond the "
                                                       f"{MAX_LEFT} kept were lost"
                                                       if lost else ""))
        self.kick()

    def _salvage(self, sock: socket.socket) -> int:
        """Read what a client that hung up left in its socket into ``_left``; the bytes
        beyond ``MAX_LEFT`` are dropped: return how many."""
        lost = 0
        while True:
            room = MAX_LEFT - len(self._left)
            try:
                data = sock.recv(min(room, 65536) if room > 0 else 65536)
            except OSError:             # EAGAIN, ECONNRESET: nothing more
                break
            if not data:
                break
            if room > 0:
                self._left += data
            else:
                lost += len(data)
        if lost:
            self.log.warning("wire client #%d hung up with more unread bytes than %d: %d "
                             "dropped", self._client_no, MAX_LEFT, lost)
        return lost

    def _watch_hangup(self, on: bool) -> None:
        if on and self._hangup_timer is None and self._loop is not None:
            self._hangup_timer = self._loop.call_later(HANGUP_POLL, self._poll_hangup)
        elif not on and self._hangup_timer is not None:
            self._hangup_timer.cancel()
            self._hangup_timer = None

    def _poll_hangup(self) -> None:
        self._hangup_timer = None
        if self.state is not State.LISTENING:
            return
        self._check_hangup()
        self._watch_hangup(self._client is not None and not self._reading)

    def _on_readable(self) -> None:
        sock = self._client
        if sock is None:
            return
        space = self.core.host_rx_space()
        if space <= 0 or self.held:
            self._set_reading(False)            # woken again by kick()
            return
        try:
            n = sock.recv_into(self._in[:min(space, len(self._in))])
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._drop_client(f"receive failed: {err}")
            return
        if n == 0:
            self._drop_client("disconnected")
            return
        took = self.core.host_write(self._in[:n])
        self._took_in(took)
        if took < n:
            self._held = (took, n)
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("wire in: %d bytes received, %d taken (RX FIFO space now %d)", n,
                           took, self.core.host_rx_space())
        if self.held or not self.core.host_rx_space():
            self._set_reading(False)

    def _on_writable(self) -> None:
        self._send_pending()

    def _send_pending(self) -> None:
        """Send TX FIFO bytes until none are left or the socket is full (then wait for it)."""
        sock = self._client
        if sock is None:
            return
        blocked = False
        sent_total = 0
        while self.core.host_tx_pending():
            view = self.core.host_tx_peek()
            want = len(view)
            try:
                sent = sock.send(view)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as err:
                view.release()
                self._drop_client(f"send failed: {err}")
                return
            view.release()
            if sent:
                self.core.host_tx_commit(sent)
                sent_total += sent
            if sent < want:
                blocked = True
                break
        self.bytes_out += sent_total
        self._session[1] += sent_total
        if sent_total and self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("wire out: %d bytes sent (%d still queued%s)", sent_total,
                           self.core.host_tx_pending(), ", socket full" if blocked else "")
        self._set_writing(blocked)

    # ---- event-loop registrations ----

    def _set_reading(self, on: bool, sock: socket.socket | None = None) -> None:
        self._watch_hangup(not on and self._client is not None)
        sock = sock or self._client
        if on == self._reading or sock is None:
            return
        self._reading = on
        assert self._loop is not None           # a socket to watch: started
        if on:
            self._loop.add_reader(sock.fileno(), self._on_readable)
        elif not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())

    def _set_writing(self, on: bool, sock: socket.socket | None = None) -> None:
        sock = sock or self._client
        if on == self._writing or sock is None:
            return
        self._writing = on
        assert self._loop is not None           # a socket to watch: started
        if on:
            self._loop.add_writer(sock.fileno(), self._on_writable)
        elif not self._loop.is_closed():
            self._loop.remove_writer(sock.fileno())
