"""Property-based tests of the QMP monitor (Hypothesis): whatever a client sends -- random
command names, random argument objects, garbage bytes cut at random places -- every reply is
one line of strict JSON with exactly one of return/error, the session stays usable, and the
model logs no exception.  In-process: a QmpServer + Monitor over fake devices, one server for
all examples (each example is a new client)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.monitor import Monitor
from device.qmp import QmpServer
from model_driver import Driver

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
NAMES = ["query-status", "query-fifolab", "fault-list", "fault-clear", "fault-dma-error",
         "fault-spurious-irq", "fault-slow", "fault-corrupt", "fault-hostile",
         "fault-lost-irq", "fault-reset", "set-coalescing", "qmp_capabilities", "nope"]
ARG_NAMES = ["device", "count", "probability", "seed", "queue", "kind", "vector", "when",
             "bits", "latency_us", "per_byte_ns", "id", "enabled", "bytes", "x"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=8)


class Errors(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


class Lab:
    """A monitor served in a loop of its own thread, for the whole module."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors = Errors()
        logging.getLogger("fifolab").addHandler(self.errors)
        self.driver = Driver()
        devs = [SimpleNamespace(core=self.driver.dev, wire=None, wire_path=None, path="f",
                                server=SimpleNamespace(client_id=None))]
        self.loop = asyncio.new_event_loop()
        self.monitor = Monitor(devs, logger=logging.getLogger("fifolab.props"))
        self.server = QmpServer(path, self.monitor.table,
                                logger=logging.getLogger("fifolab.props.qmp"))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.server.start())
        self.monitor.emit = self.server.emit

    def call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        self.driver.dev.close()
        logging.getLogger("fifolab").removeHandler(self.errors)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(str(tmp_path_factory.mktemp("props") / "q.sock"))
    yield lab
    lab.close()
    assert lab.errors.records == [], [r.getMessage() for r in lab.errors.records]


def strict(line: bytes) -> dict:
    assert line.endswith(b"\r\n"), line
    reply = json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} sent"))
    assert isinstance(reply, dict)
    return reply


async def session(path: str, payloads: list[bytes], negotiate: bool = True) -> list[dict]:
    """Send the payloads, then a marker command; return every reply up to the marker's."""
    r, w = await asyncio.open_unix_connection(path)
    try:
        assert "QMP" in strict(await asyncio.wait_for(r.readline(), 5))
        if negotiate:
            w.write(b'{"execute": "qmp_capabilities"}')
            assert strict(await asyncio.wait_for(r.readline(), 5)) == {"return": {}}
        for p in payloads:
            w.write(p)
        # whatever came before, a newline and a good command end it and get an answer
        w.write(b'\n{"execute": "query-status", "id": "marker"}\n'
                b'{"execute": "query-status", "id": "marker"}\n')
        replies = []
        while True:
            reply = strict(await asyncio.wait_for(r.readline(), 5))
            if "event" in reply:
                continue
            assert ("return" in reply) != ("error" in reply), reply
            assert set(reply) <= {"return", "error", "id"}, reply
            if "error" in reply:
                assert set(reply["error"]) == {"class", "desc"}
            replies.append(reply)
            if reply.get("id") == "marker":      # (an error before negotiation)
                return replies
    finally:
        w.close()


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(NAMES) | st.text(max_size=12),
                          st.dictionaries(st.sampled_from(ARG_NAMES), json_values,
                                          max_size=4),
                          json_values), min_size=1, max_size=6))
def test_random_commands_get_json_replies(lab, commands):
    payloads = [json.dumps({"execute": name, "arguments": args, "id": cid}).encode()
                for name, args, cid in commands]
    replies = lab.call(session(lab.path, payloads))
    answered = replies[:len(payloads)]
    assert len(answered) == len(payloads)
    for (_, _, cid), reply in zip(commands, answered, strict=True):
        assert reply["id"] == cid
    lab.call(_clear(lab))


async def _clear(lab):
    lab.driver.dev.faults.clear(None)
    lab.driver.vectors.clear()


GARBAGE = st.lists(st.sampled_from([b"{", b"}", b"[", b"]", b'"', b"\\", b":", b",", b" ",
                                    b"\n", b"\r", b"\t", b"null", b"1e999", b"NaN", b"-0",
                                    b'"execute"', b'"arguments"', b'"id"', b'"query-status"',
                                    b"\x00", b"\xff", b"\xc3\xa9", b"x"]) | st.binary(max_size=8),
                   max_size=40).map(b"".join)


@SETTINGS
@given(st.lists(GARBAGE, min_size=1, max_size=4), st.booleans())
def test_garbage_never_breaks_the_session(lab, chunks, negotiate):
    replies = lab.call(session(lab.path, chunks, negotiate=negotiate))
    assert replies[-1]["id"] == "marker"
