"""Fault injection: which faults exist, where in the device they fire, and when.

Pure: no sockets, no clocks, no I/O.  :class:`~device.core.FifoDevice` owns a
:class:`FaultSet` and asks it at a few **hook points** whether an armed fault fires there;
:mod:`device.inject` applies the fault's effect through the device's own paths (an injected
DMA error goes through the same ``_fail`` as a real one).  The monitor (``device/monitor.py``) arms faults
through QMP.

Hook points, in the order a doorbell meets them::

    DOORBELL  start of a doorbell, before CONTROL is read   reset, spurious-irq (when=doorbell)
    FETCH     a request passed validation, before it joins  dma-error, corrupt
              its queue's pending list
    DONE      a request moved its bytes and would complete  slow
    USED      a used entry is about to be written           hostile
    VECTOR    an MSI-X message is about to be sent          lost-irq

When a fault fires -- the same for every kind::

    count        fire at the next ``count`` opportunities (default 1: one-shot); 0 = until
                 cleared.  A fault whose count runs out disarms itself.
    probability  each opportunity fires with this probability (default 1); the draw uses the
                 fault's own ``random.Random(seed)``, so a seed replays the same pattern.
                 Without a seed one is chosen, and reported by ``fault-list``.
    scope        kind-specific parameters (``queue``, ``vector``) narrow the opportunities:
                 a fault for queue ``rx`` does not see TX requests.

Several faults may be armed at one hook; they are asked in the order they were armed, and the
core stops asking once one has decided the outcome (a request that got a DMA error is not also
corrupted).

A :class:`Flood` is not a hook fault: it is host-side traffic that the host wire feeds into a
wired device's RX FIFO as space frees (``device/wire.py``).
"""

from __future__ import annotations

import enum
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .commands import Arg
from .errors import CommandError, FaultError

__all__ = ["Hook", "Kind", "FaultSpec", "SPECS", "COMMON_ARGS", "Fault", "FaultSet", "Flood",
           "FLOOD_PATTERNS", "HOSTILE_KINDS", "MAX_COUNT", "MAX_SEED"]


class Hook(enum.Enum):
    DOORBELL = "doorbell"
    FETCH = "fetch"
    DONE = "done"
    USED = "used"
    VECTOR = "vector"


class Kind(str, enum.Enum):  # noqa: UP042 (StrEnum would change str() of a Kind)
    DMA_ERROR = "dma-error"
    LOST_IRQ = "lost-irq"
    SPURIOUS_IRQ = "spurious-irq"
    SLOW = "slow"
    CORRUPT = "corrupt"
    RESET = "reset"
    HOSTILE = "hostile"


HOSTILE_KINDS = ("long", "unknown-id", "duplicate", "index")
FLOOD_PATTERNS = ("counter", "random")

_QUEUE = Arg("queue", "str", default="any", choices=("tx", "rx", "any"),
             doc="tx (guest->device), rx (device->guest) or any")
_VECTOR = Arg("vector", "int", min=0, max=1, doc="MSI-X vector (default: any / 0)")

MAX_COUNT = 1_000_000       # opportunities an armed fault fires at (0 = until cleared)
MAX_SEED = (1 << 64) - 1

COMMON_ARGS = (
    Arg("count", "int", default=1, min=0, max=MAX_COUNT,
        doc="opportunities at which the fault fires; 0 = until cleared"),
    Arg("probability", "number", default=1.0, min=0, max=1,
        doc="chance of firing at each opportunity"),
    Arg("seed", "int", min=0, max=MAX_SEED, doc="seed of the fault's random draws (default: "
        "chosen, reported by fault-list)"),
)


@dataclass(frozen=True)
class FaultSpec:
    """A kind of fault: the hook it fires at, its parameters, which of them narrow it."""

    kind: Kind
    hook: Hook
    params: tuple[Arg, ...]
    scope: tuple[str, ...]
    doc: str


SPECS: dict[Kind, FaultSpec] = {s.kind: s for s in (
    FaultSpec(Kind.DMA_ERROR, Hook.FETCH, (_QUEUE,), ("queue",),
              "the request completes with DMA_ERROR (ERR_DMA_RANGE at its first segment's "
              "address, STATUS.DMA_ERROR, ERROR raised) instead of moving data"),
    FaultSpec(Kind.CORRUPT, Hook.FETCH,
              (_QUEUE, Arg("bits", "int", default=1, min=1, max=4096,
                           doc="bits flipped per request")), ("queue",),
              "flip bits in the request's payload: TX as it enters the FIFO (the guest's "
              "buffer is untouched), RX as it is written to guest memory"),
    FaultSpec(Kind.SLOW, Hook.DONE,
              (_QUEUE, Arg("latency_us", "int", default=0, min=0, max=60_000_000,
                           doc="delay per request, microseconds"),
               Arg("per_byte_ns", "int", default=0, min=0, max=1_000_000,
                   doc="extra delay per byte moved, nanoseconds")), ("queue",),
              "the request's used entry is written latency_us + bytes * per_byte_ns later "
              "(requests behind it on its queue stay in order)"),
    FaultSpec(Kind.HOSTILE, Hook.USED,
              (Arg("kind", "str", required=True, choices=HOSTILE_KINDS,
                   doc="long | unknown-id | duplicate | index"), _QUEUE), ("queue",),
              "a hostile completion: long = len beyond the request, unknown-id = an extra "
              "entry whose id is not in flight, duplicate = the entry written twice, index "
              "= USED_IDX jumps more than a ring ahead"),
    FaultSpec(Kind.LOST_IRQ, Hook.VECTOR, (_VECTOR,), ("vector",),
              "the MSI-X message is not sent; INT_RAISED and STAT_IRQS are updated as if it "
              "had been (it is lost on the way)"),
    FaultSpec(Kind.SPURIOUS_IRQ, Hook.DOORBELL, (_VECTOR,), (),
              "an MSI-X message with nothing to report: INT_RAISED unchanged"),
    FaultSpec(Kind.RESET, Hook.DOORBELL, (), (),
              "a device-initiated reset (datasheet section 3 reset, initiator 'device'); the "
              "device stays not READY until the driver resets it"),
)}


def _check(args: tuple[Arg, ...], values: dict[str, Any]) -> dict[str, Any]:
    known = {a.name: a for a in args}
    for key in values:
        if key not in known:
            raise FaultError(f"unknown parameter {key!r}")
    out = {}
    for a in args:
        v = values.get(a.name)
        try:
            out[a.name] = a.check(v) if v is not None else (
                a.default if not a.required else _missing(a))
        except CommandError as err:
            raise FaultError(err.desc) from None
    return out


def _missing(a: Arg):
    raise CommandError(f"Parameter '{a.name}' is missing")


@dataclass(eq=False)
class Fault:
    """An armed fault.  ``remaining`` is None for a fault armed until cleared."""

    id: int
    spec: FaultSpec
    params: dict[str, Any]
    remaining: int | None
    probability: float
    seed: int
    rng: random.Random = field(repr=False)
    seen: int = 0           # opportunities met
    fired: int = 0

    @property
    def kind(self) -> Kind:
        return self.spec.kind

    def matches(self, ctx: dict[str, Any]) -> bool:
        for key in self.spec.scope:
            want = self.params.get(key)
            if want is not None and want != "any" and ctx.get(key) != want:
                return False
        return True

    def draw(self) -> bool:
        """One opportunity: does the fault fire?  (Always draws, so a seed replays.)"""
        self.seen += 1
        if self.rng.random() >= self.probability:
            return False
        self.fired += 1
        if self.remaining is not None:
            self.remaining -= 1
        return True

    @property
    def spent(self) -> bool:
        return self.remaining == 0

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind.value, "hook": self.spec.hook.value,
                **self.params, "remaining": self.remaining,
                "probability": self.probability, "seed": self.seed, "seen": self.seen,
                "fired": self.fired}


class FaultSet:
    """The faults armed on one device.  ``ids`` may be shared between devices so that fault
    ids are unique in a process."""

    def __init__(self, ids: Iterator[int] | None = None) -> None:
        self._ids = ids if ids is not None else itertools.count(1)
        self._faults: dict[int, Fault] = {}
        self._hooks: set[Hook] = set()          # hooks with at least one fault: a fast "no"

    def new_id(self) -> int:
        return next(self._ids)

    def arm(self, fault_kind: Kind | str, /, *, count: int = 1, probability: float = 1.0,
            seed: int | None = None, **params: Any) -> Fault:
        """Arm a fault of ``fault_kind`` with its ``params`` (a hostile fault's own ``kind``
        among them); :class:`FaultError` for bad parameters."""
        try:
            spec = SPECS[Kind(fault_kind)]
        except ValueError:
            raise FaultError(f"unknown fault kind {fault_kind!r}") from None
        common = _check(COMMON_ARGS, {"count": count, "probability": probability,
                                      "seed": seed})
        params = _check(spec.params, params)
        if spec.kind is Kind.SLOW and not (params["latency_us"] or params["per_byte_ns"]):
            raise FaultError("a slow fault needs latency_us or per_byte_ns")
        if common["seed"] is None:
            common["seed"] = random.SystemRandom().randrange(1 << 32)
        f = Fault(self.new_id(), spec, params, common["count"] or None,
                  float(common["probability"]), common["seed"],
                  random.Random(common["seed"]))
        self._faults[f.id] = f
        self._hooks.add(spec.hook)
        return f

    def clear(self, fid: int | None = None) -> list[Fault]:
        """Disarm fault ``fid`` (:class:`FaultError` if there is none), or all; return them."""
        if fid is None:
            gone = list(self._faults.values())
            self._faults.clear()
        elif fid in self._faults:
            gone = [self._faults.pop(fid)]
        else:
            raise FaultError(f"no armed fault with id {fid}")
        self._rehook()
        return gone

    def _rehook(self) -> None:
        self._hooks = {f.spec.hook for f in self._faults.values()}

    def armed_at(self, hook: Hook) -> bool:
        return hook in self._hooks

    def fire(self, hook: Hook, **ctx: Any) -> Iterator[Fault]:
        """The faults at ``hook`` that match ``ctx`` and fire now, in arm order, one at a time.

        Lazy: a caller that stops iterating leaves the remaining faults undrawn.  A fault whose
        count runs out is disarmed before it is yielded.
        """
        if hook not in self._hooks:
            return
        for f in list(self._faults.values()):
            if f.spec.hook is not hook or f.id not in self._faults or not f.matches(ctx):
                continue
            if not f.draw():
                continue
            if f.spent:
                del self._faults[f.id]
                self._rehook()
            yield f

    def __iter__(self) -> Iterator[Fault]:
        return iter(list(self._faults.values()))

    def __len__(self) -> int:
        return len(self._faults)

    def __contains__(self, fid: int) -> bool:
        return fid in self._faults

    def describe(self) -> list[dict[str, Any]]:
        return [f.describe() for f in self._faults.values()]


class Flood:
    """``total`` bytes of host traffic from a pattern, handed out as the device takes them.

    ``counter``: byte i of the flood is ``i & 0xFF``; ``random``: ``random.Random(seed)``'s
    stream.  :meth:`peek` returns the next bytes, :meth:`commit` records how many the device
    took (the rest is offered again); ``refused`` counts offers met by a full RX FIFO.
    """

    def __init__(self, fid: int, total: int, pattern: str = "counter",
                 seed: int | None = None) -> None:
        if total <= 0:
            raise FaultError("a flood needs a positive byte count")
        if pattern not in FLOOD_PATTERNS:
            raise FaultError(f"unknown flood pattern {pattern!r}")
        self.id = fid
        self.total = total
        self.pattern = pattern
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
        self._rng = random.Random(self.seed)
        self._buf = b""                 # random: generated, not yet taken
        self.accepted = 0
        self.refused = 0
        self.cancelled = False

    @property
    def remaining(self) -> int:
        return 0 if self.cancelled else self.total - self.accepted

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def expected(self, start: int, n: int) -> bytes:
        """Bytes ``start .. start+n`` of the flood (counter pattern), for checks."""
        if self.pattern != "counter":
            raise FaultError("expected() works for the counter pattern only")
        return bytes((start + i) & 0xFF for i in range(n))

    def peek(self, n: int) -> bytes:
        n = min(n, self.remaining)
        if self.pattern == "counter":
            base = self.accepted & 0xFF
            reps = (base + n) // 256 + 1
            return (bytes(range(256)) * reps)[base:base + n]
        if len(self._buf) < n:
            self._buf += self._rng.randbytes(n - len(self._buf))
        return self._buf[:n]

    def commit(self, n: int) -> None:
        if n <= 0:
            self.refused += 1
            return
        self.accepted += n
        if self.pattern != "counter":
            self._buf = self._buf[n:]

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "kind": "flood", "pattern": self.pattern, "seed": self.seed,
                "offered": self.total, "accepted": self.accepted,
                "remaining": self.remaining, "refused": self.refused,
                "cancelled": self.cancelled}
