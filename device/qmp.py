"""A QMP server on a Unix socket: QEMU's monitor protocol, for the device model.

Three layers, as in qemu.qmp (transport apart from protocol), none of which knows a command::

    JsonSplitter   framing: a byte stream -> complete JSON texts, or framing errors.  Like
                   QEMU's json-streamer it needs no newlines (qemu.qmp's QMPClient sends none):
                   a text ends where its outermost {} or [] closes, a bare scalar at the next
                   whitespace or bracket.  It follows JSON's grammar token by token, so an
                   error is found at the first byte that cannot continue the text: a stray
                   character, a control character inside a string (as in QEMU's lexer: an
                   unterminated string ends at the line), a token where another is due (an
                   unterminated object followed by the next command: '{' where ',' or '}' is
                   due), a text over MAX_TEXT bytes or MAX_DEPTH deep.  After an error it skips
                   to the next newline or '{' (a '{' that caused the error starts the next
                   text; a closing bracket that ends the text ends it) and carries on.  One case it cannot tell: a text cut off where a
                   value is due ('{"execute": ') takes the next text as that value; the text
                   after that recovers.
    QmpSession     one client: greeting, capabilities negotiation, execute -> return/error,
                   events; replies in order.  Its phase is an explicit enum:

                       NEGOTIATION --qmp_capabilities--> COMMAND --EOF/error/close--> CLOSED
                       NEGOTIATION --EOF/error/close--> CLOSED

    QmpServer      the listening socket, the sessions, :meth:`~QmpServer.emit` (an event to
                   every session in COMMAND phase), :meth:`~QmpServer.close`.

What runs a command is a :class:`~device.commands.CommandTable` handed to the server.

Wire format (QEMU ``docs/interop/qmp-spec.rst``), one JSON object per message, CRLF after each::

    S: {"QMP": {"version": {"qemu": {"major": 1, "minor": 0, "micro": 0},
                            "package": "fifolab-model 0.1.0"}, "capabilities": []}}
    C: {"execute": "qmp_capabilities"}
    S: {"return": {}}
    C: {"execute": "fault-dma-error", "arguments": {"queue": "rx"}, "id": 7}
    S: {"return": {"id": 1}, "id": 7}
    S: {"event": "FAULT_FIRED", "data": {...}, "timestamp": {"seconds": s, "microseconds": us}}

Errors never end a session: bad JSON or a non-object gets an error reply *without* an id (as
QEMU does; there is nothing to echo), everything else gets one with the request's id.  A client
that does not read its replies and events (more than MAX_BACKLOG bytes queued) is dropped with
a log line; the others carry on.  At most MAX_SESSIONS clients are served at once: the one
over the cap gets an error instead of the greeting and is closed.

Strict JSON both ways: NaN, Infinity and numbers out of a double's range (``1e999``) are
parse errors on input (Python's json would take them, and echo an id as ``Infinity``), and
nothing non-finite is ever sent.  Log lines a client can cause at will (bad input,
connections) are rate limited.

Server state: ``NEW --start()--> LISTENING --close()--> CLOSED`` (close() also from NEW), kept
by :func:`require`.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import importlib.metadata
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from typing import Any

from . import regs
from .commands import ERR_GENERIC, ERR_NOT_FOUND, CommandTable
from .errors import CommandError, FifolabError, TransportError
from .ivshmem import State, listen_unix
from .ratelimit import LogLimiter

__all__ = ["QmpServer", "QmpSession", "JsonSplitter", "FramingError", "Phase", "require",
           "greeting", "package", "decode", "encode", "MAX_TEXT", "MAX_DEPTH", "MAX_BACKLOG",
           "MAX_SESSIONS"]

MAX_TEXT = 1 << 20          # bytes in one JSON text
MAX_DEPTH = 64              # nesting of {} and []
MAX_BACKLOG = 4 << 20       # bytes queued to a client that does not read
MAX_SESSIONS = 16           # clients served at once
READ_CHUNK = 65536
MODEL_NAME = "fifolab-model"

_WS = frozenset(b" \t\r\n")
_BARE = frozenset(b"0123456789-+.eEtruefalsn")       # numbers, true/false/null
_STRUCTURAL = frozenset(b'{}[],:"')
_NL, _LBRACE, _RBRACE, _LBRACKET, _RBRACKET = 0x0A, 0x7B, 0x7D, 0x5B, 0x5D
_QUOTE, _BSLASH, _COMMA, _COLON = 0x22, 0x5C, 0x2C, 0x3A
_STR_SPECIAL = re.compile(rb'["\\\x00-\x1f\xfe\xff]')   # ends a run of plain string bytes

# what the splitter expects next
_VALUE, _VALUE_OR_CLOSE, _KEY, _KEY_OR_CLOSE, _COLON_DUE, _AFTER = range(6)
_EXPECTED = {_VALUE: "a value", _VALUE_OR_CLOSE: "a value or ']'", _KEY: "a string key",
             _KEY_OR_CLOSE: "a string key or '}'", _COLON_DUE: "':'",
             _AFTER: "',' or a closing bracket"}


class Phase(enum.Enum):
    NEGOTIATION = "negotiation"
    COMMAND = "command"
    CLOSED = "closed"


def require(*states: State):
    """Method decorator: raise :class:`TransportError` unless ``self.state`` is one of
    ``states`` (works for plain and async methods)."""
    def decorate(fn):
        def check(self):
            if self.state not in states:
                raise TransportError(f"{fn.__name__}() in state {self.state.value}")
        if asyncio.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(self, *args, **kwargs):
                check(self)
                return await fn(self, *args, **kwargs)
            return async_wrapper

        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            check(self)
            return fn(self, *args, **kwargs)
        return wrapper
    return decorate


@functools.cache
def package() -> str:
    """The greeting's ``package``: who answers, ``fifolab-model X.Y.Z`` (not QEMU)."""
    try:
        version = importlib.metadata.version("fifolab")
    except importlib.metadata.PackageNotFoundError:     # run from a bare checkout
        version = "unknown"
    return f"{MODEL_NAME} {version}"


def greeting() -> dict:
    """The QMP greeting in QEMU's shape -- qemu.qmp requires ``QMP.version`` (an object:
    qmp-shell prints its ``qemu`` major.minor.micro) and ``QMP.capabilities`` (an array).
    ``qemu`` holds the device's VERSION register; ``package`` names the model."""
    return {"QMP": {"version": {"qemu": {"major": regs.VERSION_VALUE >> 16,
                                         "minor": regs.VERSION_VALUE & 0xFFFF, "micro": 0},
                                "package": package()},
                    "capabilities": []}}


def _error(desc: str, error_class: str = ERR_GENERIC) -> dict:
    return {"error": {"class": error_class, "desc": desc}}


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def decode(text: bytes) -> Any:
    """Strict JSON: ValueError for NaN, Infinity and numbers beyond a double."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)


def encode(obj: Any) -> bytes:
    """One message on the wire; ValueError for anything that is not strict JSON."""
    return json.dumps(obj, separators=(", ", ": "), allow_nan=False).encode() + b"\r\n"


# ---- framing ----

class FramingError:
    """An item of :meth:`JsonSplitter.feed`'s output: input that is not JSON."""

    __slots__ = ("desc",)

    def __init__(self, desc: str) -> None:
        self.desc = desc

    def __repr__(self) -> str:
        return f"FramingError({self.desc!r})"


class JsonSplitter:
    """Bytes in, complete JSON texts (bytes) and :class:`FramingError` out, in order.

    A token-level check of JSON's grammar (``_expect``: what may come next; ``_stack``: the
    open brackets); the values themselves (numbers, escapes, UTF-8) are left to the parser.
    """

    def __init__(self, max_text: int = MAX_TEXT, max_depth: int = MAX_DEPTH) -> None:
        self.max_text = max_text
        self.max_depth = max_depth
        self._buf = bytearray()
        self._stack = bytearray()
        self._expect = _VALUE
        self._in_str = False
        self._key = False           # the string being read is an object key
        self._esc = False
        self._in_bare = False
        self._skip = False

    def _fail(self, out: list, desc: str) -> None:
        out.append(FramingError(desc))
        self._buf.clear()
        self._stack.clear()
        self._expect = _VALUE
        self._in_str = self._esc = self._in_bare = False
        self._skip = True

    def feed(self, data: bytes) -> list:
        out: list = []
        i, n = 0, len(data)
        while i < n:
            if self._in_str and not self._esc and not self._skip:
                m = _STR_SPECIAL.search(data, i)        # plain string bytes in one go
                end = m.start() if m else n
                if end > i:
                    self._buf += data[i:end]
                    i = end
                    if len(self._buf) > self.max_text:
                        self._fail(out, f"JSON text longer than {self.max_text} bytes")
                    continue
            self._step(data[i], out)
            i += 1
        return out

    def _step(self, b: int, out: list) -> None:
        if self._skip:
            if b == _NL:
                self._skip = False
                return
            if b != _LBRACE:
                return
            self._skip = False
        if self._in_str:
            self._string_byte(b, out)
        elif self._in_bare and b in _BARE:
            self._put(b, out)
        else:
            if self._in_bare:                   # a number or keyword ends here
                self._in_bare = False
                if b not in _WS and b not in _STRUCTURAL:
                    self._fail(out, f"JSON parse error, stray {_show(b)}")
                    return
                self._value_done(out)
            self._token_byte(b, out)

    def _string_byte(self, b: int, out: list) -> None:
        if b < 0x20 or b >= 0xFE:
            self._fail(out, f"JSON parse error, {_show(b)} inside a string (unterminated "
                       "string?)")
            return
        if self._esc:
            self._esc = False
        elif b == _BSLASH:
            self._esc = True
        elif b == _QUOTE:
            self._in_str = False
            if self._key:
                self._expect = _COLON_DUE
                self._put(b, out)
                return
            self._put(b, out)
            self._value_done(out)
            return
        self._put(b, out)

    def _token_byte(self, b: int, out: list) -> None:
        expect = self._expect
        if b in _WS:
            if self._stack:
                self._put(b, out)
            return
        if b == _QUOTE and expect in (_VALUE, _VALUE_OR_CLOSE, _KEY, _KEY_OR_CLOSE):
            self._in_str = True
            self._key = expect in (_KEY, _KEY_OR_CLOSE)
        elif b in (_LBRACE, _LBRACKET) and expect in (_VALUE, _VALUE_OR_CLOSE):
            self._stack.append(b)
            self._expect = _KEY_OR_CLOSE if b == _LBRACE else _VALUE_OR_CLOSE
            if len(self._stack) > self.max_depth:
                self._fail(out, f"JSON nesting deeper than {self.max_depth}")
                return
        elif b in (_RBRACE, _RBRACKET) and self._stack and b == self._stack[-1] + 2 and \
                expect in (_AFTER, _KEY_OR_CLOSE if b == _RBRACE else _VALUE_OR_CLOSE):
            self._stack.pop()                   # '}' = '{' + 2, ']' = '[' + 2
            self._put(b, out)
            self._value_done(out)
            return
        elif b == _COMMA and expect == _AFTER:
            self._expect = _KEY if self._stack[-1] == _LBRACE else _VALUE
        elif b == _COLON and expect == _COLON_DUE:
            self._expect = _VALUE
        elif b in _BARE and expect in (_VALUE, _VALUE_OR_CLOSE):
            self._in_bare = True
        else:
            self._unexpected(b, out)
            return
        self._put(b, out)

    def _unexpected(self, b: int, out: list) -> None:
        if b not in _BARE and b not in _STRUCTURAL:
            self._fail(out, f"JSON parse error, stray {_show(b)}")
            return
        ends_text = len(self._stack) == 1 and b == self._stack[0] + 2    # '{'+2 = '}'
        self._fail(out, f"JSON parse error, unexpected {_show(b)}: expected "
                   f"{_EXPECTED[self._expect]}")
        if ends_text:                           # '{"a": 1,}': the text is over all the same
            self._skip = False
        elif b == _LBRACE:                      # the start of the next text, most likely
            self._step(b, out)

    def _put(self, b: int, out: list) -> None:
        self._buf.append(b)
        if len(self._buf) > self.max_text:
            self._fail(out, f"JSON text longer than {self.max_text} bytes")

    def _value_done(self, out: list) -> None:
        if self._stack:
            self._expect = _AFTER
        elif self._buf:
            out.append(bytes(self._buf))
            self._buf.clear()
            self._expect = _VALUE


def _show(b: int) -> str:
    return f"'{chr(b)}'" if 0x20 <= b < 0x7F else f"'\\x{b:02x}'"


# ---- one client ----

class QmpSession:
    """One client connection: greeting, negotiation, commands, events."""

    def __init__(self, server: QmpServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, number: int) -> None:
        self.server = server
        self.number = number
        self.phase = Phase.NEGOTIATION
        self.log = server.log.getChild(f"client{number}")
        self._reader = reader
        self._writer = writer
        self._splitter = JsonSplitter()

    # ---- transport ----

    def send(self, obj: dict) -> None:
        """Queue one message; drop the session if the client stopped reading long ago."""
        if self.phase is Phase.CLOSED:
            return
        transport = self._writer.transport
        if transport.is_closing():
            self._close("connection closing")
            return
        try:
            data = encode(obj)
        except ValueError as err:       # a bug put NaN or the like in a reply: say so
            self.server.limiter.warning("not JSON", "reply is not strict JSON: %s", err)
            fixed = _error(f"internal error: the reply is not JSON ({err})")
            if "id" in obj:
                fixed["id"] = obj["id"]
            data = encode(fixed)
        self._writer.write(data)
        if transport.get_write_buffer_size() > MAX_BACKLOG:
            self.log.warning("client is not reading (%d bytes queued): dropping it",
                             transport.get_write_buffer_size())
            self._close("not reading", abort=True)

    def _close(self, why: str, abort: bool = False) -> None:
        if self.phase is Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
        self.server.limiter.info("disconnected", "client%d disconnected: %s", self.number, why)
        try:
            if abort:
                self._writer.transport.abort()
            else:
                self._writer.close()
        except Exception as err:        # the peer may be long gone
            self.log.debug("close: %s", err)

    def shutdown(self, why: str) -> None:
        """End the session from outside: close the connection (at once if the client is not
        reading what is queued for it); :meth:`run` then returns."""
        backlog = self._writer.transport.get_write_buffer_size()
        self._close(why, abort=backlog > 0)

    async def run(self) -> None:
        """Serve the client until EOF, an error, or cancellation (server closing)."""
        self.server.limiter.info("connected", "client%d connected", self.number)
        why = "EOF"
        try:
            self.send(greeting())
            while self.phase is not Phase.CLOSED:
                data = await self._reader.read(READ_CHUNK)
                if not data:
                    break
                for item in self._splitter.feed(data):
                    reply = self.handle(item)
                    if reply is not None:
                        self.send(reply)
                    if self.phase is Phase.CLOSED:
                        break
                if self.phase is not Phase.CLOSED:
                    await self._writer.drain()
        except (ConnectionError, OSError) as err:
            why = f"connection lost: {err}"
        except asyncio.CancelledError:
            why = "cancelled"
            raise
        finally:
            self._close(why)

    # ---- protocol ----

    def handle(self, item: bytes | FramingError) -> dict | None:
        """One JSON text (or framing error) -> its reply."""
        if isinstance(item, FramingError):
            self.server.limiter.info("bad input", "client%d: bad input: %s", self.number,
                                     item.desc)
            return _error(item.desc)
        try:
            msg = decode(item)
        except (ValueError, RecursionError) as err:     # UnicodeDecodeError is a ValueError
            self.server.limiter.info("bad input", "client%d: bad JSON: %s", self.number, err)
            return _error(f"JSON parse error, {err}")
        if not isinstance(msg, dict):
            return _error("QMP input must be a JSON object")
        reply = self._execute(msg)
        if "id" in msg:
            reply["id"] = msg["id"]
        return reply

    def _execute(self, msg: dict) -> dict:
        for key in msg:
            if key not in ("execute", "arguments", "id", "control"):
                if key == "exec-oob":
                    return _error("Out-of-band execution is not supported: the greeting "
                                  "offers no 'oob' capability")
                return _error(f"QMP input member '{key}' is unexpected")
        if "execute" not in msg:
            return _error("QMP input lacks member 'execute'")
        name = msg["execute"]
        if not isinstance(name, str):
            return _error("QMP input member 'execute' must be a string")
        args = msg.get("arguments", {})
        if not isinstance(args, dict):
            return _error("QMP input member 'arguments' must be an object")
        cmd = self.server.commands.get(name)
        if self.phase is Phase.NEGOTIATION and not (cmd and cmd.negotiation):
            return _error("Expecting capabilities negotiation with 'qmp_capabilities'",
                          ERR_NOT_FOUND)
        if self.phase is Phase.COMMAND and cmd and cmd.negotiation:
            return _error("Capabilities negotiation is already complete, command ignored",
                          ERR_NOT_FOUND)
        try:
            result = self.server.commands.run(name, args)
        except CommandError as err:
            self.log.debug("%s: %s: %s", name, err.error_class, err.desc)
            return _error(err.desc, err.error_class)
        except FifolabError as err:
            self.log.debug("%s: %s", name, err)
            return _error(str(err))
        except Exception as err:        # a monitor bug must not take the model down
            self.log.exception("command %s failed", name)
            return _error(f"internal error in {name}: {type(err).__name__}: {err}")
        if cmd is not None and cmd.negotiation:
            self.phase = Phase.COMMAND
            self.log.debug("capabilities negotiated")
        return {"return": {} if result is None else result}

    def event(self, message: dict) -> None:
        if self.phase is Phase.COMMAND:
            self.send(message)


# ---- the server ----

class QmpServer:
    """Serve QMP on the Unix socket ``path`` with the commands of ``commands``."""

    def __init__(self, path: str, commands: CommandTable,
                 logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.time,
                 max_sessions: int = MAX_SESSIONS) -> None:
        self.path = path
        self.commands = commands
        self.max_sessions = max_sessions
        self.log = logger or logging.getLogger("fifolab.qmp")
        self.limiter = LogLimiter(self.log, burst=20)
        self.state = State.NEW
        self._clock = clock
        self._server: asyncio.AbstractServer | None = None
        self._sessions: dict[QmpSession, asyncio.Task] = {}
        self._count = 0
        self.events_sent = 0

    @property
    def sessions(self) -> list[QmpSession]:
        return list(self._sessions)

    @require(State.NEW)
    async def start(self) -> None:
        sock = listen_unix(self.path)
        try:
            self._server = await asyncio.start_unix_server(self._on_client, sock=sock)
        except BaseException:
            sock.close()
            os.unlink(self.path)
            raise
        self.state = State.LISTENING
        self.log.info("QMP monitor listening on %s", self.path)

    async def close(self) -> None:
        """Stop listening, end every session, unlink the socket.

        Sessions end by having their connection closed (their reads see EOF), not by
        cancelling their tasks: asyncio's stream server would report a cancelled
        client-connected task as an error.  One that does not end in time is cancelled.
        """
        if self.state is State.CLOSED:
            return
        was_listening = self.state is State.LISTENING
        self.state = State.CLOSED
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions):
            session.shutdown("server closing")
        tasks = list(self._sessions.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=2.0)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if was_listening:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.log.info("QMP monitor closed")

    async def _on_client(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        if self.state is not State.LISTENING:
            writer.close()
            return
        if len(self._sessions) >= self.max_sessions:
            self.limiter.warning("refused", "refusing a QMP client: %d sessions are open (the "
                                 "most served at once)", len(self._sessions))
            writer.write(encode(_error(f"Too many QMP sessions: {len(self._sessions)} are "
                                       f"open, the most this monitor serves at once; try "
                                       f"again when one has closed")))
            writer.close()
            return
        self._count += 1
        session = QmpSession(self, reader, writer, self._count)
        task = asyncio.current_task()
        assert task is not None                 # a coroutine runs in its task
        self._sessions[session] = task
        try:
            await session.run()
        except Exception:               # a bug in a session must not end the others
            self.log.exception("QMP session %d failed", session.number)
        finally:
            self._sessions.pop(session, None)
            try:
                writer.close()
            except Exception:
                pass

    def emit(self, name: str, data: dict[str, Any]) -> None:
        """Send event ``name`` to every negotiated session."""
        now = self._clock()
        seconds = int(now)
        message = {"event": name, "data": data,
                   "timestamp": {"seconds": seconds,
                                 "microseconds": int((now - seconds) * 1_000_000)}}
        self.log.debug("event %s %s", name, data)
        for session in list(self._sessions):
            session.event(message)
        self.events_sent += 1
