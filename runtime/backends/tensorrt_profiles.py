"""Pure logic of the TensorRT backend, testable without TensorRT or a GPU: batch buckets
(optimization profiles), the bucket chosen for a batch, CUDA-graph capture decisions per
execution context, and the pool of contexts with a `close()` that never strands a caller.

TensorRT's contract (NvInferRuntime.h): "each execution context in concurrent use must use a
separate optimization profile". So a plan carries one profile per bucket (and per extra copy of a
bucket for concurrent callers), the backend keeps one context per profile, and a batch goes to
the tightest free bucket that holds it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

_BUCKET = re.compile(r"^(?P<min>\d+)(?:-(?P<max>\d+))?(?:@(?P<opt>\d+))?(?:x(?P<copies>\d+))?$")
MAX_PROFILES = 16  # the manifest's limit


@dataclass(frozen=True)
class Bucket:
    """One batch range built as an optimization profile."""

    min: int
    opt: int
    max: int


def parse_profiles(spec: str, limit: int = 4096) -> list[Bucket]:
    """'1-4,8-32' -> two buckets (opt = max); 'MIN-MAX@OPT' sets opt; 'xN' repeats a bucket N times
    (N contexts may then run that bucket concurrently); 'N' alone is N-N."""
    buckets: list[Bucket] = []
    for part in (p.strip() for p in spec.split(",")):
        m = _BUCKET.match(part)
        if not m:
            raise ValueError(f"bad profile {part!r} in {spec!r}: use MIN-MAX[@OPT][xCOPIES], e.g. 1-4,8-32@16x2")
        lo = int(m["min"])
        hi = int(m["max"] or lo)
        opt = int(m["opt"] or hi)
        if not 1 <= lo <= opt <= hi <= limit:
            raise ValueError(f"profile {part!r} needs 1 <= min <= opt <= max <= {limit}")
        buckets += [Bucket(lo, opt, hi)] * int(m["copies"] or 1)
    if not 1 <= len(buckets) <= MAX_PROFILES:
        raise ValueError(f"{len(buckets)} profiles in {spec!r}: a plan holds 1 to {MAX_PROFILES}")
    return buckets


@dataclass(frozen=True)
class ProfileRange:
    """What one optimization profile of a plan accepts (input shapes, batch first)."""

    index: int
    min: tuple[int, ...]
    max: tuple[int, ...]

    def holds(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.min) and all(lo <= s <= hi for s, lo, hi in zip(shape, self.min, self.max))


def choose_profiles(ranges: list[ProfileRange], shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """(profile index, batch to run) for `shape`, best first: the profiles that hold the batch as it
    is (tightest max batch first); only when none does, those whose minimum needs padding (least
    padding first: waiting for a tight context beats computing padded rows). Empty when no profile
    takes it (its other dimensions out of range, or the batch above every max)."""
    n, rest = shape[0], tuple(shape[1:])
    exact, padded = [], []
    for r in ranges:
        if not all(lo <= s <= hi for s, lo, hi in zip(rest, r.min[1:], r.max[1:])) or n > r.max[0]:
            continue
        if n >= r.min[0]:
            exact.append(((r.max[0], r.index), (r.index, n)))
        else:
            padded.append(((r.min[0] - n, r.max[0], r.index), (r.index, r.min[0])))
    return [choice for _, choice in sorted(exact or padded)]


def split_batch(n: int, largest: int) -> list[tuple[int, int]]:
    """(start, stop) chunks of at most `largest` rows: batches above every profile are split."""
    return [(i, min(i + largest, n)) for i in range(0, n, largest)]


# ------------------------------------------------------------------------- CUDA graphs


REPLAY, CAPTURE, EXECUTE = "replay", "capture", "execute"


@dataclass
class GraphState:
    """CUDA-graph bookkeeping of ONE execution context. A graph records the shape and buffer
    addresses of its capture and is valid only until the context runs anything else
    (NVIDIA/TensorRT#3798: re-capture after an input-shape change), so a context holds at most one
    graph and a graph is never shared between contexts. A key is first run plainly (the warm-up
    that lets TensorRT finish its per-shape setup outside the capture), then captured on the next
    call with the same key, then replayed."""

    warmup_runs: int = 1
    key: tuple | None = None  # what the context last ran: (input shape, buffer addresses)
    runs: int = 0  # plain runs at `key`
    graph_key: tuple | None = None  # the key the held graph was captured with
    failed: set = field(default_factory=set)  # keys whose capture failed: never retried

    def decide(self, key: tuple) -> str:
        if self.graph_key == key and self.key == key:
            return REPLAY
        if self.key == key and self.runs >= self.warmup_runs and key not in self.failed:
            return CAPTURE
        return EXECUTE

    def stale_graph(self, key: tuple) -> bool:
        """Whether running `key` invalidates the held graph (the caller destroys it)."""
        return self.graph_key is not None and self.graph_key != key

    def ran(self, key: tuple, action: str, ok: bool = True) -> None:
        """Record what happened on this context."""
        if self.key != key:
            self.key, self.runs = key, 0
        if self.graph_key is not None and self.graph_key != key:
            self.graph_key = None
        if action == EXECUTE:
            self.runs += 1
        elif action == CAPTURE:
            if ok:
                self.graph_key = key
            else:
                self.failed.add(key)


# ------------------------------------------------------------------------- the pool of contexts


class PoolClosed(Exception):
    pass


class SlotPool:
    """Execution contexts by profile. `acquire` takes the first free slot among the candidate
    profiles (waiting when all are busy); `close` refuses new callers, wakes waiting ones, waits
    for calls in flight to hand their slot back, then closes every slot exactly once."""

    def __init__(self, slots: dict[int, list]):
        self._free = {p: list(s) for p, s in slots.items()}
        self._all = [s for group in slots.values() for s in group]
        self._taken = 0
        self._closed = False
        self._cond = threading.Condition()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._all)

    def acquire(self, candidates: list[int], timeout: float | None = None):
        """(profile, slot) for the first candidate profile with a free slot."""
        with self._cond:
            while True:
                if self._closed:
                    raise PoolClosed("closed")
                for profile in candidates:
                    if self._free.get(profile):
                        self._taken += 1
                        return profile, self._free[profile].pop()
                if not self._cond.wait(timeout):
                    raise TimeoutError(f"no free execution context for profiles {candidates}")

    def release(self, profile: int, slot) -> None:
        with self._cond:
            self._free[profile].append(slot)
            self._taken -= 1
            self._cond.notify_all()

    def close(self, close_slot) -> bool:
        """Close every slot once the calls in flight are done (they finish in bounded time and
        callers still waiting for a slot are refused); False if it was already closed."""
        with self._cond:
            if self._closed:
                return False
            self._closed = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._taken == 0)
            slots, self._all, self._free = self._all, [], {}
        for slot in slots:
            close_slot(slot)
        return True
