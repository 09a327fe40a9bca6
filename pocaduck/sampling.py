"""Deterministic uniform samples of a label's points, and the stored order that makes them one range read.

Every random choice here comes from a counter-based hash (splitmix64 of a
stream key plus the row number), computed with numpy's wrapping uint64
arithmetic: the same on every machine, process and numpy version, with no
generator state to carry. Distinct rows of one stream get distinct keys (the
mixer is a bijection), so "the ``n`` rows with the smallest keys" is a uniform
sample without replacement with no ties to break.

**The stored order** (written by compaction). A label's rows are split into
*levels* by a pseudo-random permutation keyed by the label: level 0 holds
``first_level`` rows (1,024), each next level ``growth - 1`` (3) times all the
levels before it, so the level prefixes hold 1,024, 4,096, 16,384, ... rows.
Every prefix of whole levels is thus a uniform random subset of the label.
Inside a level the rows keep their block order, so the index still has one
row per (label, level, block) run: block lookups, bounding boxes and box
queries stay as selective as before. A sample of ``n`` rows reads the shortest
level prefix holding ``n`` (at most ``growth * n`` rows, one contiguous range)
and keeps ``n`` of them, chosen by their keys. A label of at most
``first_level`` rows keeps exactly its former order.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

# Written into the footer of every file compaction writes in this order; readers parse it, so the
# constants can change in a later version without misreading files written with these.
ORDER_KEY = b"pocaduck.row_order"
ORDER = {"order": "sample-levels", "version": 1, "first_level": 1024, "growth": 4}

_MASK = 2**64 - 1
_GAMMA = 0x9E3779B97F4A7C15
_ORDER_STREAM, _POOL_STREAM, _SEEDED_STREAM, _UNSEEDED_STREAM = 1, 2, 3, 4


def _mix(value: int) -> int:
    """splitmix64's finalizer on a Python int."""
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def _mix_array(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on a uint64 array (numpy's uint64 arithmetic wraps, as the hash needs)."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def stream(label: int, purpose: int, seed: int = 0) -> int:
    """The 64-bit key of one stream of row keys: a label, what the keys are for, and a seed.

    >>> stream(5, _ORDER_STREAM) == stream(5, _ORDER_STREAM), stream(5, _ORDER_STREAM) == stream(6, _ORDER_STREAM)
    (True, False)
    """
    key = _mix((label + _GAMMA) & _MASK)
    for word in (purpose, seed):
        key = _mix((key ^ _mix((word + _GAMMA) & _MASK)) & _MASK)
    return key


def row_keys(key: int, count: int, start: int = 0) -> np.ndarray:
    """Pseudo-random, pairwise distinct uint64 keys of rows ``start .. start+count-1`` of stream ``key``.

    >>> keys = row_keys(stream(7, _POOL_STREAM), 5)
    >>> keys.dtype, len(set(keys.tolist())), bool((keys[3:] == row_keys(stream(7, _POOL_STREAM), 2, 3)).all())
    (dtype('uint64'), 5, True)
    """
    counters = (np.arange(start + 1, start + count + 1, dtype=np.uint64) * np.uint64(_GAMMA)) + np.uint64(key)
    return _mix_array(counters)


def smallest(keys: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` smallest keys, ascending: a uniform choice, as the keys are distinct.

    >>> smallest(np.array([9, 2, 7, 1], dtype=np.uint64), 2).tolist()
    [1, 3]
    """
    if count >= len(keys):
        return np.arange(len(keys))
    return np.sort(np.argpartition(keys, count - 1)[:count])


def choose(count: int, sample: int, key: int) -> np.ndarray:
    """``min(sample, count)`` of the positions ``0 .. count-1``, uniformly without replacement, ascending.

    A sample of a quarter of the rows or more keeps the rows with the smallest
    keys. A smaller one costs only about ``sample`` hashes: each key picks a
    position (its top 53 bits as a fraction of ``count``: IEEE arithmetic, the
    same everywhere), and the first ``sample`` distinct positions drawn are a
    uniform subset, as the draws are independent and uniform.

    >>> choose(10**9, 3, stream(1, _UNSEEDED_STREAM)).tolist()
    [2454134, 395503120, 764250088]
    >>> choose(10, 6, 123).tolist() == choose(10, 6, 123).tolist(), choose(4, 9, 123).tolist()
    (True, [0, 1, 2, 3])
    """
    if sample >= count:
        return np.arange(count)
    if sample * 4 >= count:
        return smallest(row_keys(key, count), sample)
    drawn = np.empty(0, dtype=np.int64)
    done = 0
    while len(drawn) < sample:
        more = 2 * (sample - len(drawn)) + 16
        fractions = (row_keys(key, more, done) >> np.uint64(11)).astype(np.float64) * 2.0**-53
        positions = np.minimum((fractions * count).astype(np.int64), count - 1)  # a product may round up to count
        drawn = np.concatenate([drawn, positions])
        done += more
        first = np.sort(np.unique(drawn, return_index=True)[1])  # keep each position's first draw, in draw order
        drawn = drawn[first]
    return np.sort(drawn[:sample])


def level_ends(count: int, order: dict[str, Any]) -> np.ndarray:
    """Where each level of a ``count``-row label ends: the sizes of its level prefixes.

    >>> level_ends(20_000, ORDER).tolist(), level_ends(700, ORDER).tolist()
    ([1024, 4096, 16384, 20000], [700])
    """
    ends = []
    end = int(order["first_level"])
    while end < count:
        ends.append(end)
        end *= int(order["growth"])
    return np.array([*ends, count], dtype=np.int64)


def pool_size(count: int, sample: int, order: dict[str, Any]) -> int:
    """Rows of the shortest level prefix that holds ``min(sample, count)`` rows: what a sample reads.

    >>> pool_size(20_000, 1024, ORDER), pool_size(20_000, 1025, ORDER), pool_size(20_000, 10**6, ORDER)
    (1024, 4096, 20000)
    """
    ends = level_ends(count, order)
    return int(ends[np.searchsorted(ends, min(sample, count))])


def level_order(label: int, count: int) -> np.ndarray:
    """The stored order of a label's ``count`` rows (given in block order): a permutation, stable inside a level.

    >>> order = level_order(5, 3000)
    >>> sorted(order.tolist()) == list(range(3000)), level_order(5, 1000).tolist() == list(range(1000))
    (True, True)
    """
    ends = level_ends(count, ORDER)
    if len(ends) == 1:
        return np.arange(count)
    keys = row_keys(stream(label, _ORDER_STREAM), count)
    ranked = np.argpartition(keys, ends[:-1] - 1)  # level j's rows land between ends[j-1] and ends[j]
    levels = np.empty(count, dtype=np.uint8)
    levels[ranked] = np.repeat(np.arange(len(ends), dtype=np.uint8), np.diff(ends, prepend=0))
    return np.argsort(levels, kind="stable")


def stored_order(point_labels: np.ndarray) -> np.ndarray:
    """The permutation that puts label-sorted rows into the stored order of every label.

    >>> labels = np.repeat(np.array([3, 9], dtype=np.uint64), [2, 5000])
    >>> order = stored_order(labels)
    >>> order[:2].tolist(), sorted(order[2:].tolist()) == list(range(2, 5002))
    ([0, 1], True)
    """
    order = np.arange(len(point_labels))
    starts = np.flatnonzero(np.concatenate([[True], point_labels[1:] != point_labels[:-1]])) if len(order) else order
    ends = np.append(starts[1:], len(order))
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        if end - start > ORDER["first_level"]:  # only labels of several levels move
            order[start:end] = start + level_order(int(point_labels[start]), end - start)
    return order


def order_marker() -> dict[bytes, bytes]:
    """The footer metadata that says a file's labels are in the stored order."""
    return {ORDER_KEY: json.dumps(ORDER, sort_keys=True).encode()}


def read_marker(metadata: dict[bytes, bytes] | None) -> dict[str, Any] | None:
    """The order a file's footer metadata declares, or None when its rows are in no sample order we know."""
    raw = (metadata or {}).get(ORDER_KEY)
    if raw is None:
        return None
    order = json.loads(raw)
    return order if order.get("order") == "sample-levels" and order.get("version") == 1 else None


def sample_key(label: int, seed: int | None) -> int:
    """The stream that picks a sample from a whole label: one per seed, and one for ``seed=None``."""
    return stream(label, _UNSEEDED_STREAM) if seed is None else stream(label, _SEEDED_STREAM, seed)


def pool_key(label: int) -> int:
    """The stream that picks a ``seed=None`` sample out of the stored prefix of a compacted label."""
    return stream(label, _POOL_STREAM)
