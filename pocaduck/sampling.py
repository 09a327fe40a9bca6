"""Deterministic uniform samples of a label's points, and the stored order that makes them one range read.

A sample is a function of the label's points alone, a multiset of rows: not of
the order they were written in, of the files they sit in, nor of any
compaction. Its positions count in the label's *value order*, the rows sorted
by their values (column after column, as numbers, ties only between identical
rows: -0.0 sorts just below 0.0, NaNs by their bits at the ends), which no
storage changes; identical rows are interchangeable, so their order among
themselves does not matter. A sample comes back in value order.

Every random choice here comes from a counter-based hash (splitmix64 of a
stream key plus the position), computed with numpy's wrapping uint64
arithmetic: the same on every machine, process and numpy version, with no
generator state to carry. Distinct positions of one stream get distinct keys
(the mixer is a bijection), so "the ``n`` positions with the smallest keys" is a
uniform sample without replacement with no ties to break.

**Levels.** A label's positions are split into *levels* by a pseudo-random
permutation keyed by the label: level 0 holds ``first_level`` positions
(1,024), each next level ``growth - 1`` (3) times all the levels before it, so
the level prefixes hold 1,024, 4,096, 16,384, ... rows, each a uniform random
subset of the label. ``seed=None`` gives the label's own sample, drawn from
the shortest level prefix holding ``n`` rows (its *pool*, at most ``growth * n``
rows): every level of it but the last, and of the last level the rows with the
smallest keys in that level's value order. An integer seed takes the ``n``
positions of the whole label with the smallest keys of its own. Either way a
larger sample holds every smaller one (with the same seed): a view refining
from 1,000 points to 10,000 only adds points.

**The stored order** (written by compaction) puts a label's rows level after
level; inside a level the rows keep their block order, so the index still has
one row per (label, level, block) run: block lookups, bounding boxes and box
queries stay as selective as before. A ``seed=None`` sample of a compacted
label thus reads its pool, one contiguous range, and sorts only its last level
by value; elsewhere it sorts the whole label to find the same pool. A label
of at most ``first_level`` rows is one level and keeps exactly its former order.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .errors import InvalidArgumentError

# Written into the footer of every file compaction writes in this order. Readers take the fast path only
# for files in exactly this order: version 1 split rows by their stored order, not their value order, and
# other constants would give other pools, so such files are sampled as if never compacted, with the same result.
ORDER_KEY = b"pocaduck.row_order"
ORDER = {"order": "sample-levels", "version": 2, "first_level": 1024, "growth": 4}

_MASK = 2**64 - 1
_GAMMA = 0x9E3779B97F4A7C15
_ORDER_STREAM, _POOL_STREAM, _SEEDED_STREAM = 1, 2, 3


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


def level_ends(count: int) -> np.ndarray:
    """Where each level of a ``count``-row label ends: the sizes of its level prefixes.

    >>> level_ends(20_000).tolist(), level_ends(700).tolist()
    ([1024, 4096, 16384, 20000], [700])
    """
    ends = []
    end = ORDER["first_level"]
    while end < count:
        ends.append(end)
        end *= ORDER["growth"]
    return np.array([*ends, count], dtype=np.int64)


def pool_size(count: int, sample: int) -> int:
    """Rows of the shortest level prefix that holds ``min(sample, count)`` rows: what a sample reads.

    >>> pool_size(20_000, 1024), pool_size(20_000, 1025), pool_size(20_000, 10**6)
    (1024, 4096, 20000)
    """
    ends = level_ends(count)
    return int(ends[np.searchsorted(ends, min(sample, count))])


def value_order(points: np.ndarray) -> np.ndarray:
    """The permutation that sorts ``points`` (N, D) into value order: by column 0, then 1, ...

    Floats sort by their bits mapped to an order of numbers, so only identical
    rows tie and the order of ties cannot show: the result is the same however
    the rows were ordered.

    >>> value_order(np.array([[1.0, 5.0], [0.0, 9.0], [-0.0, 9.0], [1.0, -2.0]])).tolist()
    [2, 1, 3, 0]
    """
    return np.lexsort([_exact_key(points[:, column]) for column in reversed(range(points.shape[1]))])


def _exact_key(column: np.ndarray) -> np.ndarray:
    """Integers as they are; floats as unsigned integers of their bits, negatives flipped, in the order of numbers."""
    if column.dtype.kind != "f":
        return column
    bits = np.ascontiguousarray(column).view(f"u{column.dtype.itemsize}")
    sign = bits.dtype.type(1 << (8 * column.dtype.itemsize - 1))
    return np.where(bits & sign, ~bits, bits | sign)


def levels(label: int, count: int) -> np.ndarray:
    """The level of each of a ``count``-row label's positions in value order.

    >>> found = levels(5, 20_000)
    >>> np.bincount(found).tolist(), levels(5, 1000).tolist() == [0] * 1000
    ([1024, 3072, 12288, 3616], True)
    """
    ends = level_ends(count)
    if len(ends) == 1:
        return np.zeros(count, dtype=np.uint8)
    ranked = np.argpartition(row_keys(stream(label, _ORDER_STREAM), count), ends[:-1] - 1)
    found = np.empty(count, dtype=np.uint8)  # level j's positions rank between ends[j-1] and ends[j]
    found[ranked] = np.repeat(np.arange(len(ends), dtype=np.uint8), np.diff(ends, prepend=0))
    return found


def stored_order(point_labels: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The permutation that puts label-sorted rows into the stored order of every label: level after level.

    >>> labels = np.repeat(np.array([3, 9], dtype=np.uint64), [2, 5000])
    >>> order = stored_order(labels, np.arange(5002)[:, None])
    >>> order[:2].tolist(), sorted(order[2:].tolist()) == list(range(2, 5002))
    ([0, 1], True)
    """
    order = np.arange(len(point_labels))
    starts = np.flatnonzero(np.concatenate([[True], point_labels[1:] != point_labels[:-1]])) if len(order) else order
    ends = np.append(starts[1:], len(order))
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        if end - start > ORDER["first_level"]:  # only labels of several levels move
            of_row = np.empty(end - start, dtype=np.uint8)
            of_row[value_order(points[start:end])] = levels(int(point_labels[start]), end - start)
            order[start:end] = start + np.argsort(of_row, kind="stable")  # stable: a level keeps its block order
    return order


def sample_rows(
    points: np.ndarray, label: int, sample: int, seed: int | None, *, stored_pool: bool = False
) -> np.ndarray:
    """Where, in ``points`` (a label's rows in any order), its sample lies, in value order.

    ``stored_pool`` says ``points`` is the pool of a ``seed=None`` sample as a
    compacted label stores it: the prefix of its levels up to the one holding
    ``sample``, level after level.

    >>> points = np.arange(3000)[:, None]
    >>> chosen = points[sample_rows(points, 5, 4, None)]
    >>> reversed_points = points[::-1]
    >>> chosen.ravel().tolist(), np.array_equal(chosen, reversed_points[sample_rows(reversed_points, 5, 4, None)])
    ([84, 215, 943, 1428], True)
    >>> set(chosen.ravel()) <= set(points[sample_rows(points, 5, 2000, None)].ravel())
    True
    """
    if seed is not None:
        chosen = value_order(points)[smallest(row_keys(stream(label, _SEEDED_STREAM, seed), len(points)), sample)]
    else:
        pool = np.arange(len(points)) if stored_pool else _stored_pool(points, label, sample)
        chosen = pool[_from_pool(points[pool], label, sample)]
    return chosen[value_order(points[chosen])]


def _stored_pool(points: np.ndarray, label: int, sample: int) -> np.ndarray:
    """Positions in ``points`` (a whole label) of the pool a compacted label would store for ``sample``."""
    in_levels = value_order(points)[np.argsort(levels(label, len(points)), kind="stable")]
    return in_levels[: pool_size(len(points), sample)]


def _from_pool(pool: np.ndarray, label: int, sample: int) -> np.ndarray:
    """Positions in a pool (stored level after level) of the sample: every level but the last whole, and of the
    last, the rows with the smallest keys in its value order. A larger sample thus holds every smaller one."""
    ends = level_ends(len(pool))
    start = int(ends[-2]) if len(ends) > 1 else 0
    last = value_order(pool[start:])
    keys = row_keys(stream(label, _POOL_STREAM, len(ends) - 1), len(last))
    return np.concatenate([np.arange(start), start + last[smallest(keys, min(sample, len(pool)) - start)]])


def order_marker() -> dict[bytes, bytes]:
    """The footer metadata that says a file's labels are in the stored order."""
    return {ORDER_KEY: json.dumps(ORDER, sort_keys=True).encode()}


def read_marker(metadata: dict[bytes, bytes] | None) -> dict[str, Any] | None:
    """``ORDER`` when a file's footer metadata declares it, else None: the rows are in no order a sample can use.

    >>> version_1 = b'{"first_level": 1024, "growth": 4, "order": "sample-levels", "version": 1}'
    >>> read_marker(order_marker()) == ORDER, read_marker({ORDER_KEY: version_1}), read_marker(None)
    (True, None, None)
    """
    raw = (metadata or {}).get(ORDER_KEY)
    return ORDER if raw is not None and json.loads(raw) == ORDER else None


def check_sample(sample: object, name: str = "sample") -> int:
    """A positive integer count (numpy integers too; bools and floats are refused).

    >>> check_sample(np.int64(5))
    5
    >>> check_sample(0)
    Traceback (most recent call last):
    pocaduck.errors.InvalidArgumentError: sample must be a positive integer (how many points to return), got 0
    """
    if isinstance(sample, bool) or not isinstance(sample, int | np.integer) or int(sample) <= 0:
        what = "how many points to return" if name == "sample" else "points per chunk"
        raise InvalidArgumentError(f"{name} must be a positive integer ({what}), got {sample!r}")
    return int(sample)


def check_seed(seed: object) -> int | None:
    """None, or an integer in [0, 2**64).

    >>> check_seed(None), check_seed(np.uint64(2**64 - 1))
    (None, 18446744073709551615)
    """
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= int(seed) < 2**64:
        raise InvalidArgumentError(f"seed must be None or an integer in [0, 2**64), got {seed!r}")
    return int(seed)
