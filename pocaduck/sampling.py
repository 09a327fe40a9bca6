"""Deterministic uniform samples of a label's points, and the stored order that makes them one range read.

A sample is a function of the label's points alone, a multiset of rows: not of
the order they were written in, of the files they sit in, nor of any
compaction. Each row gets a 64-bit *key*, a hash of its values (integers by
value, floats by their bits, so -0.0 is not 0.0) keyed by the label and the
seed; a sample of ``n`` is the ``n`` rows with the smallest keys, returned in
key order. Identical rows get equal keys, and are interchangeable; different
rows whose keys collide (about one pair in 2**64 / n) are ordered by value, so
nothing depends on where a row sits. Finding the sample costs one hash of
every row read and one pass over the keys (the smallest lie below a bound the
uniform keys predict), then a sort of the sample alone: O(n), no sort of the
label. A larger sample holds every smaller one of the same seed: a view
refining from 1,000 points to 10,000 only adds points.

The hash chains splitmix64's finalizer over a row's columns (mix the key xor
column 0, xor column 1, mix, ...) in numpy's wrapping uint64 arithmetic: the
same on every machine, process and numpy version, with no generator state to
carry. The mixer is a bijection, so rows differing only in their last column
never collide.

A body of a mapping version is sampled from its supervoxels' rows, each keyed
by its own supervoxel (``sample_of_union``): the body's sample then reads only
each supervoxel's sample.

**Levels.** Compaction splits a label's rows into *levels* by the rank of
their ``seed=None`` keys: level 0 holds the ``first_level`` (1,024) rows with
the smallest keys, each next level ``growth - 1`` (3) times all the levels
before it, so the level prefixes hold 1,024, 4,096, 16,384, ... rows: exactly
the rows with the smallest keys, each prefix a uniform random subset.

**The stored order** (written by compaction) puts a label's rows level after
level; inside a level the rows keep their block order, so the index still has
one row per (label, level, block) run: block lookups, bounding boxes and box
queries stay as selective as before. A ``seed=None`` sample of ``n`` rows of a
compacted label reads the shortest level prefix holding ``n`` (its *pool*, at
most ``growth * n`` rows, one contiguous range) and keeps the ``n`` with the
smallest keys, the same rows as from the whole label. A label of at most
``first_level`` rows is one level and keeps exactly its former order.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

# Written into the footer of every file compaction writes in this order. Readers take the short read only for
# files in exactly this order: version 1 split rows by their stored order, version 2 by their value order, and
# other constants would give other pools, so such files are sampled from the whole label, with the same result.
ORDER_KEY = b"pocaduck.row_order"
ORDER = {"order": "sample-levels", "version": 3, "first_level": 1024, "growth": 4}

_MASK = 2**64 - 1
_GAMMA = 0x9E3779B97F4A7C15
_UNSEEDED_STREAM, _SEEDED_STREAM = 4, 3
_CHUNK_ROWS = 1 << 15  # rows hashed at a time, so their scratch stays in cache: 2M rows twice as fast


def _mix(value: int) -> int:
    """splitmix64's finalizer on a Python int."""
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def _mix_in_place(values: np.ndarray, scratch: np.ndarray) -> None:
    """splitmix64's finalizer on a uint64 array, in place (numpy's uint64 arithmetic wraps, as the hash needs)."""
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB), (31, None)):
        np.right_shift(values, np.uint64(shift), out=scratch)
        values ^= scratch
        if factor is not None:
            values *= np.uint64(factor)


def stream(label: int, purpose: int, seed: int = 0) -> int:
    """The 64-bit key of one stream of row keys: a label, what the keys are for, and a seed.

    >>> stream(5, _SEEDED_STREAM) == stream(5, _SEEDED_STREAM), stream(5, _SEEDED_STREAM) == stream(6, _SEEDED_STREAM)
    (True, False)
    """
    key = _mix((label + _GAMMA) & _MASK)
    for word in (purpose, seed):
        key = _mix((key ^ _mix((word + _GAMMA) & _MASK)) & _MASK)
    return key


def sample_key(label: int, seed: int | None) -> int:
    """The key of a label's sample stream: its own (``seed=None``, which levels follow) or a seed's."""
    return stream(label, _UNSEEDED_STREAM) if seed is None else stream(label, _SEEDED_STREAM, seed)


def row_keys(points: np.ndarray, key: int) -> np.ndarray:
    """The uint64 key of each row of ``points`` (N, D): a hash of its values alone, keyed by ``key``.

    >>> points = np.array([[1, 2, 3], [3, 2, 1], [1, 2, 3]], dtype=np.int32)
    >>> keys = row_keys(points, 7)
    >>> bool(keys[0] == keys[2]), bool(keys[0] == keys[1]), bool((row_keys(points.astype(np.uint16), 7) == keys).all())
    (True, False, True)
    """
    keys = np.empty(len(points), dtype=np.uint64)
    scratch = np.empty(min(len(points), _CHUNK_ROWS), dtype=np.uint64)
    for start in range(0, len(points), _CHUNK_ROWS):
        rows, chunk = points[start : start + _CHUNK_ROWS], keys[start : start + _CHUNK_ROWS]
        chunk.fill(key)
        for column in range(points.shape[1]):
            # Mixed after every column: a linear fold (xor, times an odd constant) collides on small coordinates,
            # as negative ones sign-extend to complements (a 40^3 grid: 20,296 keys for 64,000 rows)
            np.bitwise_xor(chunk, _bits(rows[:, column]), out=chunk, dtype=np.uint64, casting="unsafe")
            _mix_in_place(chunk, scratch[: len(chunk)])
    return keys


def _bits(column: np.ndarray) -> np.ndarray:
    """A column for the hash: floats as their bits (-0.0 is not 0.0), integers as they are.

    The hash casts them to uint64 without a copy: integers sign- or zero-extend, so they count by value, whatever
    their width.
    """
    return column.view(f"u{column.dtype.itemsize}") if column.dtype.kind == "f" else column


def smallest(points: np.ndarray, keys: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` rows first in key order (ties by value), in that order: a uniform choice.

    >>> points = np.array([[9], [2], [7], [1]])
    >>> smallest(points, np.array([9, 2, 7, 1], dtype=np.uint64), 2).tolist()
    [3, 1]
    """
    if count >= len(keys):
        return _in_key_order(points, keys, np.arange(len(keys)))
    # The keys are uniform, so the smallest ``count`` almost surely lie below a bound that expects a few more:
    # one pass finds those candidates and only they are partitioned (2M keys: 1 ms, against 28 ms for all).
    expected = (count + 8 * math.sqrt(count) + 64) / len(keys)
    candidates = np.flatnonzero(keys <= np.uint64(min(_MASK, int(expected * 2**64))))
    if len(candidates) < count:  # many identical rows share keys, or bad luck: partition them all
        candidates = np.arange(len(keys))
    boundary = np.partition(keys[candidates], count - 1)[count - 1]
    below = candidates[keys[candidates] < boundary]
    at = candidates[keys[candidates] == boundary]
    needed = count - len(below)
    if len(at) > needed and not _identical(points[at]):  # different rows sharing the boundary key: by value
        at = at[_value_order(points[at])]
    return _in_key_order(points, keys, np.concatenate([below, at[:needed]]))


def _in_key_order(points: np.ndarray, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rows`` sorted by key, rows of equal keys by value: an order that depends on the rows' values alone."""
    # A radix pass on the keys' top 16 bits (of their range: a sample's keys are the smallest) leaves uniform keys
    # nearly sorted, which timsort (numpy's stable sort of uint64) finishes in about one pass: 16,384 keys in
    # 0.08 ms, against 0.6 ms for np.argsort
    ordered = keys[rows]
    if len(rows) > 1:
        shift = np.uint64(max(int(ordered.max()).bit_length() - 16, 0))
        by_top = np.argsort((ordered >> shift).astype(np.uint16), kind="stable")
        order = by_top[np.argsort(ordered[by_top], kind="stable")]
        rows, ordered = rows[order], ordered[order]
    tied = np.flatnonzero(ordered[1:] == ordered[:-1])
    # Ties are identical rows, in any order alike, or (about never) different rows whose keys collide
    if len(tied) and not _identical(points[rows[tied]], points[rows[tied + 1]]):
        in_ties = np.union1d(tied, tied + 1)
        tied_rows = rows[in_ties]
        rows[in_ties] = tied_rows[np.lexsort([*_value_columns(points[tied_rows])[::-1], keys[tied_rows]])]
    return rows


def _identical(points: np.ndarray, others: np.ndarray | None = None) -> bool:
    """Whether rows hold the same bits as ``others`` row for row (or, alone, as their first row)."""
    bits = points.view(f"u{points.dtype.itemsize}")
    return bool((bits == (bits[:1] if others is None else others.view(bits.dtype))).all())


def _value_order(points: np.ndarray) -> np.ndarray:
    """The permutation that sorts ``points`` (N, D) by value: by column 0, then 1, ..., as numbers.

    >>> _value_order(np.array([[1.0, 5.0], [0.0, 9.0], [-0.0, 9.0], [1.0, -2.0]])).tolist()
    [2, 1, 3, 0]
    """
    return np.lexsort(_value_columns(points)[::-1])


def _value_columns(points: np.ndarray) -> list[np.ndarray]:
    """Each column as numbers that sort in value order, ties only between identical values.

    Integers as they are; floats as unsigned integers of their bits, negatives flipped, so -0.0 sorts just
    below 0.0 and NaNs by their bits at the ends.
    """
    columns = []
    for column in points.T:
        if column.dtype.kind == "f":
            bits = np.ascontiguousarray(column).view(f"u{column.dtype.itemsize}")
            sign = bits.dtype.type(1 << (8 * column.dtype.itemsize - 1))
            column = np.where(bits & sign, ~bits, bits | sign)
        columns.append(column)
    return columns


def sample_rows(points: np.ndarray, label: int, sample: int, seed: int | None) -> np.ndarray:
    """Where, in ``points`` (a label's rows in any order, or a stored pool), its sample lies, in key order.

    >>> points = np.arange(3000)[:, None]
    >>> chosen = points[sample_rows(points, 5, 4, None)]
    >>> reversed_points = points[::-1]
    >>> chosen.ravel().tolist(), np.array_equal(chosen, reversed_points[sample_rows(reversed_points, 5, 4, None)])
    ([589, 703, 1666, 276], True)
    >>> set(chosen.ravel()) <= set(points[sample_rows(points, 5, 2000, None)].ravel())
    True
    """
    return smallest(points, row_keys(points, sample_key(label, seed)), sample)


def sample_of_union(parts: list[np.ndarray], labels: list[int], sample: int, seed: int | None) -> np.ndarray:
    """Where, in ``parts`` concatenated, the sample of their union lies, in key order, each row keyed by its own
    label's stream: a body's sample, from its supervoxels' rows.

    Each part holds a label's rows, or only its own sample of ``sample`` rows (the rows with its smallest
    keys): the union's smallest keys are among those, so the result is the same either way, and a body's
    sample reads no more than each supervoxel's sample (on a compacted store, one short range each). It is
    a function of the (label, row) pairs alone, and a body merged from others samples from their samples.

    >>> rows = np.arange(3000)[:, None]
    >>> whole = sample_of_union([rows[:2000], rows[2000:]], [5, 6], 4, None)
    >>> own = [rows[:2000][sample_rows(rows[:2000], 5, 4, None)], rows[2000:][sample_rows(rows[2000:], 6, 4, None)]]
    >>> np.array_equal(rows[whole], np.concatenate(own)[sample_of_union(own, [5, 6], 4, None)])
    True
    """
    if not parts:
        return np.empty(0, np.int64)
    keys = np.concatenate([row_keys(part, sample_key(label, seed)) for part, label in zip(parts, labels, strict=True)])
    return smallest(np.concatenate(parts), keys, sample)


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


def levels(points: np.ndarray, label: int) -> np.ndarray:
    """The level of each row of a label: level j holds the rows ranked ``ends[j-1] .. ends[j]-1`` in key order.

    >>> points = np.arange(20_000)[:, None]
    >>> found = levels(points, 5)
    >>> np.bincount(found).tolist(), set(sample_rows(points, 5, 4096, None).tolist()) == set(np.flatnonzero(found < 2))
    ([1024, 3072, 12288, 3616], True)
    """
    ends = level_ends(len(points))
    found = np.zeros(len(points), dtype=np.uint8)
    if len(ends) > 1:  # compaction's work: sorting a label's keys is cheap beside rewriting it
        ranked = _in_key_order(points, row_keys(points, sample_key(label, None)), np.arange(len(points)))
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
            of_row = levels(points[start:end], int(point_labels[start]))
            order[start:end] = start + np.argsort(of_row, kind="stable")  # stable: a level keeps its block order
    return order


def order_marker() -> dict[bytes, bytes]:
    """The footer metadata that says a file's labels are in the stored order."""
    return {ORDER_KEY: json.dumps(ORDER, sort_keys=True).encode()}


def read_marker(metadata: dict[bytes, bytes] | None) -> dict[str, Any] | None:
    """``ORDER`` when a file's footer metadata declares it, else None: the rows are in no order a sample can use.

    >>> version_2 = b'{"first_level": 1024, "growth": 4, "order": "sample-levels", "version": 2}'
    >>> read_marker(order_marker()) == ORDER, read_marker({ORDER_KEY: version_2}), read_marker(None)
    (True, None, None)
    """
    raw = (metadata or {}).get(ORDER_KEY)
    return ORDER if raw is not None and json.loads(raw) == ORDER else None
