"""The QMP monitor in-process: qemu.qmp's QMPClient (and raw sockets, for what QMPClient will
not send) against QmpServer + Monitor over devices driven by the test's fake driver.  Greeting,
negotiation, execute, error classes, events, malformed input, several clients."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from contextlib import asynccontextmanager
from types import SimpleNamespace

import pytest
from qemu.qmp import ExecuteError, QMPClient

from device import qmp as qmp_mod
from device import regs
from device.commands import Arg, CommandTable
from device.faults import SPECS
from device.monitor import EVENTS, Monitor
from device.qmp import FramingError, JsonSplitter, QmpServer
from model_driver import Driver, Used

TX, RX = regs.QUEUE_TX, regs.QUEUE_RX
TIMEOUT = 5


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 30))


@asynccontextmanager
async def monitor_on(path: str, ndev: int = 2):
    """A QmpServer + Monitor over ``ndev`` loopback devices (Drivers), started."""
    drivers = [Driver() for _ in range(ndev)]
    devs = [SimpleNamespace(core=d.dev, wire=None, wire_path=None, path=f"fake{i}.sock",
                            server=SimpleNamespace(client_id=None))
            for i, d in enumerate(drivers)]
    mon = Monitor(devs)
    srv = QmpServer(path, mon.table)
    await srv.start()
    mon.emit = srv.emit
    for i, d in enumerate(drivers):
        d.dev.emit = lambda name, data, i=i: srv.emit(name, {"device": i, **data})
    try:
        yield srv, drivers
    finally:
        await srv.close()
        for d in drivers:
            d.dev.close()
    assert not os.path.exists(path)


@asynccontextmanager
async def client(path: str, negotiate: bool = True):
    c = QMPClient("test")
    c.negotiate = negotiate
    await c.connect(path)
    try:
        yield c
    finally:
        await c.disconnect()


async def error_of(c: QMPClient, cmd: str, args: dict | None = None) -> tuple[str, str]:
    with pytest.raises(ExecuteError) as info:
        await c.execute(cmd, args)
    return info.value.error_class, info.value.error.error.desc


async def next_event(listener, name: str, match: dict | None = None,
                     timeout: float = TIMEOUT) -> dict:
    """The next event ``name`` whose data contains ``match`` (earlier ones are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            ev = await listener.get()
            if ev["event"] == name and all(ev["data"].get(k) == v
                                           for k, v in (match or {}).items()):
                return dict(ev)


class Raw:
    """A bare client: bytes out, CRLF-terminated JSON lines in."""

    def __init__(self, reader, writer):
        self.r, self.w = reader, writer

    @classmethod
    async def open(cls, path: str, negotiate: bool = True) -> Raw:
        raw = cls(*await asyncio.open_unix_connection(path))
        greeting = await raw.recv()
        assert "QMP" in greeting
        if negotiate:
            assert await raw.call(b'{"execute": "qmp_capabilities"}') == {"return": {}}
        return raw

    async def recv(self) -> dict:
        line = await asyncio.wait_for(self.r.readline(), TIMEOUT)
        assert line.endswith(b"\r\n"), line
        return json.loads(line)

    async def call(self, data: bytes) -> dict:
        self.w.write(data)
        await self.w.drain()
        return await self.recv()

    async def close(self) -> None:
        self.w.close()
        try:
            await self.w.wait_closed()
        except ConnectionError:
            pass


# ---- framing ----

def test_splitter_needs_no_newlines_and_respects_strings():
    sp = JsonSplitter()
    stream = b'{"a": "}{\\"x"}{"b": [1, {"c": 2}]}  42 [3]\n"s" '
    out = []
    for i in range(len(stream)):                    # byte by byte
        out += sp.feed(stream[i:i + 1])
    assert [json.loads(x) for x in out] == [{"a": '}{"x'}, {"b": [1, {"c": 2}]}, 42, [3], "s"]


def test_splitter_errors_and_resyncs():
    sp = JsonSplitter(max_text=100, max_depth=4)
    out = sp.feed(b'{bad} trailing junk\n{"ok": 1}')
    assert isinstance(out[0], FramingError) and "stray 'b'" in out[0].desc
    assert out[1:] == [b'{"ok": 1}']
    out = sp.feed(b'}{"ok": 2}')                   # a stray closer; resync at '{'
    assert isinstance(out[0], FramingError) and out[1:] == [b'{"ok": 2}']
    out = sp.feed(b"[[[[[1]]]]]\n[1]")
    assert isinstance(out[0], FramingError) and "deeper" in out[0].desc and out[1:] == [b"[1]"]
    out = sp.feed(b'{"x": "' + b"y" * 200 + b'"}\n{}')
    assert isinstance(out[0], FramingError) and "longer" in out[0].desc and out[1:] == [b"{}"]
    out = sp.feed(b"\xff{}")
    assert isinstance(out[0], FramingError) and "\\xff" in out[0].desc and out[1:] == [b"{}"]


# ---- the command table ----

def test_command_table_validates_uniformly():
    t = CommandTable()
    seen = []
    t.command("x", Arg("n", "int", required=True, min=1), Arg("p", "number", default=0.5,
                                                               min=0, max=1),
              Arg("k", "str", choices=("a", "b")))(seen.append)
    t.run("x", {"n": 3, "p": "0.25"})               # qmp-shell sends numbers as strings
    assert seen == [{"n": 3, "p": 0.25, "k": None}]
    for args, msg in (({}, "Parameter 'n' is missing"),
                      ({"n": True}, "Invalid parameter type for 'n', expected: integer"),
                      ({"n": 1.5}, "expected: integer"),
                      ({"n": 0}, "expects a value in [1, inf]"),
                      ({"n": 1, "p": "nan"}, "expected: number"),
                      ({"n": 1, "k": "c"}, "does not accept value 'c'"),
                      ({"n": 1, "z": 1}, "Parameter 'z' is unexpected")):
        with pytest.raises(Exception) as info:
            t.run("x", args)
        assert msg in str(info.value), (args, str(info.value))
    with pytest.raises(Exception, match="has not been found"):
        t.run("y", {})


# ---- protocol, with QMPClient ----

def test_greeting_negotiation_and_queries(tmp_path):
    path = str(tmp_path / "q.sock")

    async def scenario():
        async with monitor_on(path) as (srv, drivers):
            async with client(path) as c:
                assert c.greeting.QMP.version["qemu"] == {"major": 1, "minor": 0, "micro": 0}
                assert list(c.greeting.QMP.capabilities) == []
                assert (await c.execute("query-version"))["qemu"]["major"] == 1
                cmds = await c.execute("query-commands")
                names = {x["name"] for x in cmds}
                assert {"qmp_capabilities", "query-status", "query-fifolab", "fault-list",
                        "fault-clear", "fault-stall", "fault-resume", "fault-flood"} <= names
                assert {f"fault-{k.value}" for k in SPECS} <= names
                hostile = next(x for x in cmds if x["name"] == "fault-hostile")
                assert {"name": "kind", "type": "str", "required": True,
                        "choices": ["long", "unknown-id", "duplicate", "index"]} in \
                    hostile["arguments"]
                assert [e["name"] for e in await c.execute("query-events")] == list(EVENTS)
                st = await c.execute("query-status")
                assert st["running"] is True and st["status"] == "running"
                assert [x["state"] for x in st["devices"]] == ["ready", "ready"]

                d = drivers[1]
                d.tx(b"abcdef")
                h, _ = d.rx(100, ring=False)
                info = await c.execute("query-fifolab", {"device": 1})
                assert info["device"] == 1 and info["state"] == "ready"
                assert info["fifo"]["rx_level"] == 6
                assert info["queues"]["rx"]["pending"] == 0
                assert info["queues"]["rx"]["avail_idx"] == 1       # posted, not rung
                assert info["statistics"]["tx_bytes"] == 6
                assert info["registers"]["RX_LEVEL"] == 6
                assert info["host_wire"] is None
                d.ring()
                info = await c.execute("query-fifolab", {"device": 1})
                assert info["fifo"]["rx_level"] == 0 and info["statistics"]["rx_bytes"] == 6
                assert d.used(RX) == [Used(h, 6, regs.ST_OK)]
                dev0 = await c.execute("query-fifolab")
                assert dev0["device"] == 0 and dev0["statistics"]["tx_bytes"] == 0

    run(scenario())


def test_commands_before_negotiation_are_refused(tmp_path):
    path = str(tmp_path / "q.sock")

    async def scenario():
        async with monitor_on(path):
            async with client(path, negotiate=False) as c:
                cls, desc = await error_of(c, "query-status")
                assert cls == "CommandNotFound" and "qmp_capabilities" in desc
                cls, desc = await error_of(c, "qmp_capabilities", {"enable": ["oob"]})
                assert cls == "GenericError" and "oob" in desc
                assert await c.execute("qmp_capabilities") == {}
                assert (await c.execute("query-status"))["running"] is True
                cls, desc = await error_of(c, "qmp_capabilities")
                assert cls == "CommandNotFound" and "already complete" in desc

    run(scenario())


def test_error_replies_carry_classes_and_keep_the_session(tmp_path):
    path = str(tmp_path / "q.sock")

    async def scenario():
        async with monitor_on(path):
            async with client(path) as c:
                cases = [
                    ("no-such-command", None, "CommandNotFound", "has not been found"),
                    ("fault-hostile", {}, "GenericError", "Parameter 'kind' is missing"),
                    ("fault-dma-error", {"count": "3"}, "GenericError",
                     "Invalid parameter type for 'count', expected: integer"),
                    ("fault-dma-error", {"probability": 2}, "GenericError", "[0, 1]"),
                    ("fault-dma-error", {"queue": "up"}, "GenericError", "does not accept"),
                    ("fault-dma-error", {"bogus": 1}, "GenericError", "'bogus' is unexpected"),
                    ("fault-dma-error", {"device": 2}, "DeviceNotFound", "Device 2 not found"),
                    ("fault-slow", {}, "GenericError", "latency_us or per_byte_ns"),
                    ("fault-clear", {"id": 999}, "GenericError", "no armed fault"),
                    ("fault-flood", {}, "GenericError", "not wired"),
                    ("fault-spurious-irq", {"count": 0}, "GenericError", "when=doorbell"),
                ]
                for cmd, args, cls, text in cases:
                    got_cls, desc = await error_of(c, cmd, args)
                    assert (got_cls, text in desc) == (cls, True), (cmd, got_cls, desc)
                assert (await c.execute("query-version"))["qemu"]["major"] == 1
                assert await c.execute("fault-list") == []          # nothing got armed

    run(scenario())


def test_arm_list_clear_and_events(tmp_path):
    path = str(tmp_path / "q.sock")

    async def scenario():
        async with monitor_on(path) as (srv, drivers):
            async with client(path) as c:
                listener = c.events
                d = drivers[0]
                a = await c.execute("fault-dma-error", {"queue": "tx", "count": 2, "seed": 1})
                b = await c.execute("fault-lost-irq", {"device": 1, "probability": 0.5})
                assert a["kind"] == "dma-error" and a["remaining"] == 2 and a["seed"] == 1
                assert [f["id"] for f in await c.execute("fault-list")] == [a["id"]]
                assert [f["id"] for f in await c.execute("fault-list", {"device": 1})] == \
                    [b["id"]]
                gpa = d.alloc(8)
                head = d.post(TX, [(gpa, 8)])
                assert d.used(TX) == [Used(head, 0, regs.ST_DMA_ERROR)]
                fired = await next_event(listener, "FAULT_FIRED")
                assert fired["data"] == {"device": 0, "id": a["id"], "kind": "dma-error",
                                         "remaining": 1, "queue": "tx", "head": head,
                                         "addr": gpa}
                assert set(fired["timestamp"]) == {"seconds", "microseconds"}
                err = await next_event(listener, "DMA_ERROR")
                assert err["data"] == {"device": 0, "queue": "tx", "head": head, "addr": gpa,
                                       "code": regs.ERR_DMA_RANGE, "injected": True}
                [left] = await c.execute("fault-list")
                assert left["remaining"] == 1 and left["fired"] == 1 and left["seen"] == 1
                assert await c.execute("fault-clear", {"id": a["id"]}) == {"cleared": [a["id"]]}
                assert await c.execute("fault-list") == []
                assert await c.execute("fault-clear", {"device": 1}) == {"cleared": [b["id"]]}

                # reset now: events in order, device needs a driver reset
                r = await c.execute("fault-reset")
                assert r["fired"] == 1
                fired = await next_event(listener, "FAULT_FIRED")
                assert fired["data"]["kind"] == "reset" and fired["data"]["id"] == r["id"]
                reset = await next_event(listener, "DEVICE_RESET")
                assert reset["data"]["initiator"] == "device" and reset["data"]["device"] == 0
                state = await next_event(listener, "STATE_CHANGE")
                assert state["data"]["state"] == "need-reset" and not state["data"]["ready"]
                assert (await c.execute("query-fifolab"))["need_reset"] is True

                # interrupt coalescing off and on again
                assert await c.execute("set-coalescing", {"enabled": False}) == {
                    "enabled": False, "changed": True}
                with pytest.raises(ExecuteError, match="enabled"):
                    await c.execute("set-coalescing", {})
                assert await c.execute("set-coalescing", {"enabled": True}) == {
                    "enabled": True, "changed": True}

                # stall / resume
                d.bring_up()
                assert await c.execute("fault-stall") == {"stalled": True, "changed": True}
                await next_event(listener, "STATE_CHANGE", {"stalled": True, "ready": True})
                st = await c.execute("query-status")
                assert st["status"] == "paused" and st["devices"][0]["stalled"] is True
                head = d.tx(b"held")
                d.ring()
                assert d.used(TX) == []
                assert (await c.execute("query-fifolab"))["stalled_doorbells"] == 2
                assert await c.execute("resume") == {"stalled": False, "changed": True,
                                                     "doorbells": 2}
                assert d.used(TX) == [Used(head, 4, regs.ST_OK)]

                # spurious now, to device 1
                d1 = drivers[1]
                d1.vectors.clear()
                r = await c.execute("fault-spurious-irq", {"device": 1, "vector": 1,
                                                           "count": 2})
                assert r["fired"] == 2 and d1.vectors == [1, 1]
                # armed at a doorbell
                r = await c.execute("fault-spurious-irq", {"device": 1, "when": "doorbell"})
                assert (await c.execute("fault-list", {"device": 1}))[0]["id"] == r["id"]
                d1.ring()
                assert d1.vectors == [1, 1, 0]

    run(scenario())


def test_qmp_shell_style_string_numbers(tmp_path):
    path = str(tmp_path / "q.sock")

    async def scenario():
        async with monitor_on(path, ndev=1):
            async with client(path) as c:
                f = await c.execute("fault-corrupt", {"probability": "0.25", "bits": 3})
                assert f["probability"] == 0.25 and f["bits"] == 3

    run(scenario())


# ---- malformed input, several clients ----

def test_malformed_input_gets_error_replies_and_the_connection_stays(tmp_path):
    path = str(tmp_path / "q.sock")

    async def scenario():
        async with monitor_on(path, ndev=1) as (srv, drivers):
            async with client(path) as good:
                raw = await Raw.open(path)
                try:
                    cases = [
                        (b'{"execute": bad}\n', "JSON parse error"),
                        (b"not json at all\n", "JSON parse error"),
                        (b'{"execute": "query-version", }', "JSON parse error"),
                        (b"[1, 2]", "must be a JSON object"),
                        (b"42\n", "must be a JSON object"),
                        (b"\xff\xfe\n", "JSON parse error"),
                        (b'{"execute": "x\xff"}', "JSON parse error"),
                    ]
                    for data, text in cases:
                        reply = await raw.call(data)
                        assert "id" not in reply and reply["error"]["class"] == \
                            "GenericError" and text in reply["error"]["desc"], (data, reply)
                    id_cases = [
                        (b'{"id": 5, "arguments": {}}', "lacks member 'execute'"),
                        (b'{"execute": 3, "id": [1]}', "'execute' must be a string"),
                        (b'{"execute": "query-version", "arguments": [], "id": null}',
                         "'arguments' must be an object"),
                        (b'{"execute": "query-version", "colour": 1, "id": "c"}',
                         "'colour' is unexpected"),
                        (b'{"exec-oob": "query-version", "id": "o"}', "Out-of-band"),
                    ]
                    for data, text in id_cases:
                        reply = await raw.call(data)
                        assert reply["id"] == json.loads(data)["id"]
                        assert text in reply["error"]["desc"], (data, reply)
                    reply = await raw.call(b'{"execute": "query-version", "id": {"n": 1}}')
                    assert reply == {"return": (await good.execute("query-version")),
                                     "id": {"n": 1}}
                    # two messages in one write, no separator: two replies in order
                    raw.w.write(b'{"execute":"fault-list","id":1}{"execute":"query-events",'
                                b'"id":2}')
                    assert (await raw.recv())["id"] == 1 and (await raw.recv())["id"] == 2
                finally:
                    await raw.close()
                assert (await good.execute("query-status"))["running"] is True

    run(scenario())


def test_two_clients_both_get_events_and_a_vanishing_one_harms_nobody(tmp_path):
    path = str(tmp_path / "q.sock")

    async def scenario():
        async with monitor_on(path, ndev=1) as (srv, drivers):
            async with client(path) as a, client(path) as b:
                unneg = await Raw.open(path, negotiate=False)
                la, lb = a.events, b.events
                await a.execute("fault-dma-error")
                drivers[0].tx(b"x")
                ea = await next_event(la, "DMA_ERROR")
                eb = await next_event(lb, "DMA_ERROR")
                assert ea["data"] == eb["data"] and ea["data"]["injected"] is True
                # a negotiating client gets no events: its next line is its own reply
                reply = await unneg.call(b'{"execute": "qmp_capabilities", "id": 1}')
                assert reply == {"return": {}, "id": 1}
                # clients vanish mid-message, abruptly
                r1, w1 = await asyncio.open_unix_connection(path)
                w1.write(b'{"execute": "query-st')
                await w1.drain()
                w1.transport.abort()
                r2, w2 = await asyncio.open_unix_connection(path)
                w2.close()
                await unneg.close()
                await b.disconnect()
                await a.execute("fault-reset")
                assert (await next_event(la, "DEVICE_RESET"))["data"]["initiator"] == "device"
                for _ in range(100):
                    if len(srv.sessions) == 1:
                        break
                    await asyncio.sleep(0.01)
                assert len(srv.sessions) == 1

    run(scenario())


def test_a_client_that_does_not_read_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(qmp_mod, "MAX_BACKLOG", 4096)
    path = str(tmp_path / "q.sock")

    async def scenario():
        async with monitor_on(path, ndev=1) as (srv, drivers):
            async with client(path) as good:
                lazy = await Raw.open(path)
                lazy.w.transport.pause_reading()            # never reads again
                lazy.w.transport.get_extra_info("socket").setsockopt(
                    socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                n = 0
                while len(srv.sessions) == 2 and n < 20000:
                    await good.execute("fault-spurious-irq")     # a FAULT_FIRED to both
                    n += 1
                assert len(srv.sessions) == 1, "the lazy client was never dropped"
                assert (await good.execute("query-status"))["running"] is True
                await lazy.close()

    run(scenario())


def test_a_handler_bug_is_an_error_reply_not_a_crash(tmp_path):
    path = str(tmp_path / "q.sock")

    async def scenario():
        async with monitor_on(path, ndev=1) as (srv, drivers):
            def boom(args):
                raise ZeroDivisionError("oops")
            srv.commands.command("boom")(boom)
            async with client(path) as c:
                cls, desc = await error_of(c, "boom")
                assert cls == "GenericError" and "internal error in boom" in desc
                assert (await c.execute("query-status"))["running"] is True

    run(scenario())


def test_closing_the_server_ends_connected_sessions_cleanly(tmp_path):
    path = str(tmp_path / "q.sock")

    async def scenario():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda loop, ctx: errors.append(ctx))
        drivers = [Driver()]
        devs = [SimpleNamespace(core=drivers[0].dev, wire=None, wire_path=None, path="f",
                                server=SimpleNamespace(client_id=None))]
        srv = QmpServer(path, Monitor(devs).table)
        await srv.start()
        c = QMPClient("closing")
        await c.connect(path)
        raw = await Raw.open(path)
        half = await Raw.open(path, negotiate=False)
        half.w.write(b'{"execute": "qmp_')
        await half.w.drain()
        while len(srv.sessions) < 3:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(srv.close(), 3)
        assert srv.sessions == [] and not os.path.exists(path)
        for r in (raw, half):       # EOF (or a reset, if the server had unread input)
            try:
                assert await asyncio.wait_for(r.r.read(), 3) == b""
            except ConnectionResetError:
                pass
        with pytest.raises(EOFError):       # QMPClient reports the server's hang-up
            await c.disconnect()
        await raw.close()
        await half.close()
        drivers[0].dev.close()
        await asyncio.sleep(0.05)
        assert errors == []

    run(scenario())


def test_fuzzed_input_never_raises():
    import logging
    import random

    from device.qmp import QmpSession
    from device.ratelimit import LogLimiter
    d = Driver()
    devs = [SimpleNamespace(core=d.dev, wire=None, wire_path=None, path="f",
                            server=SimpleNamespace(client_id=None))]
    server = SimpleNamespace(log=logging.getLogger("fuzz"), commands=Monitor(devs).table,
                             limiter=LogLimiter(logging.getLogger("fuzz")))
    session = QmpSession(server, None, None, 0)
    session.phase = qmp_mod.Phase.COMMAND
    rng = random.Random(1)
    pieces = [b"{", b"}", b"[", b"]", b'"', b"\\", b":", b",", b" ", b"\n", b"null", b"1e5",
              b'"execute"', b'"arguments"', b'"id"', b'"fault-dma-error"', b'"count"',
              b'"query-fifolab"', b'"device"', b"-1", b"true", b"\xff", b"x"]
    sp = JsonSplitter(max_text=4096, max_depth=16)
    replies = 0
    for _ in range(3000):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 40)))
        for item in sp.feed(data):
            reply = session.handle(item)
            assert set(reply) <= {"return", "error", "id"} and ("return" in reply) != \
                ("error" in reply)
            replies += 1
    assert replies > 100
    d.dev.close()
