"""How the pages of a label directory of format 2 are encoded: by column, as deltas, bytes shuffled, zstd.

A leaf page holds ``n`` entries as four columns one after the other: each
label as its difference from the one before (the first from 0), ``file_id``,
each ``row_offset`` as its difference from where the entry before ends
(``row_offset + point_count``: 0 when a compacted label follows the one
before in its file) and ``point_count``. A fence page holds ``n`` keys (the
first label of each page below, as deltas) and the ``n + 1`` byte offsets in
the directory file that bound those pages (as deltas), so a reader holding a
fence page knows the byte range of every page below it. Each column is stored
in the narrowest of 1, 2, 4 or 8 bytes that holds its values (one byte per
column in front of the page says which), its bytes shuffled (all first bytes,
then all second bytes, ...) so that the zeros of small numbers stand together,
and the columns are compressed together with zstd (level 3, through pyarrow: no
other dependency).

Measured on leaf pages (``bench/directory_pages.py``): as stored in format 1,
zstd alone shrinks random uint64 labels' pages 2.0× (compacted) and 2.9× (as
ingested); this encoding 3.0× and 3.8×, near what random labels leave to
squeeze; the benchmarks' stores of consecutive labels 150–1,400×.

The decoded items are numpy arrays: :data:`ENTRY` for leaves, :data:`FENCE`
(key and the byte range of the page it opens) for fence pages and the root.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

ENTRY = np.dtype([("label", "<u8"), ("file_id", "<u4"), ("row_offset", "<u8"), ("point_count", "<u4")])
FENCE = np.dtype([("label", "<u8"), ("start", "<u8"), ("stop", "<u8")])
_U64 = np.dtype("<u8")
_WIDTHS = {np.dtype(kind).itemsize: np.dtype(kind) for kind in ("<u1", "<u2", "<u4", "<u8")}
# Arrow's zstd codec compresses and decompresses through stateless one-shot calls: threads may share it.
_ZSTD = pa.Codec("zstd", compression_level=3)


class PageDecodeError(ValueError):
    """A page's bytes passed their checksum but do not decode to the items its level says it holds."""


def encode_leaf(entries: np.ndarray) -> bytes:
    """The stored bytes of a leaf page holding ``entries`` (before its CRC).

    >>> entries = np.array([(5, 0, 0, 3), (9, 0, 3, 2)], ENTRY)
    >>> decode_leaf(encode_leaf(entries), 2).tolist() == entries.tolist()
    True
    """
    offsets = entries["row_offset"].astype(_U64)
    counts = entries["point_count"].astype(_U64)
    gaps = offsets - np.concatenate([np.zeros(1, _U64), offsets[:-1] + counts[:-1]])[: len(offsets)]
    return _compress((_deltas(entries["label"]), entries["file_id"], gaps, counts))


def decode_leaf(payload: bytes, count: int) -> np.ndarray:
    """The ``count`` entries of a leaf page from its stored bytes; :class:`PageDecodeError` if they do not decode."""
    deltas, file_ids, gaps, counts = _decompress(payload, [count] * 4)
    entries = np.empty(count, ENTRY)
    entries["label"] = np.cumsum(deltas, dtype=_U64)
    entries["file_id"] = file_ids
    ends_before = np.concatenate([np.zeros(1, _U64), counts[:-1]])[:count]
    entries["row_offset"] = np.cumsum(gaps + ends_before, dtype=_U64)
    entries["point_count"] = counts
    return entries


def encode_fence(keys: np.ndarray, bounds: np.ndarray) -> bytes:
    """The stored bytes of a fence page: ``keys`` (first labels of pages below) and the ``len(keys) + 1`` byte
    offsets bounding those pages.

    >>> decode_fence(encode_fence(np.array([5, 9], np.uint64), np.array([0, 40, 75], np.uint64)), 2).tolist()
    [(5, 0, 40), (9, 40, 75)]
    """
    if len(bounds) != len(keys) + 1:
        raise ValueError(f"{len(keys)} keys need {len(keys) + 1} bounds, not {len(bounds)}")
    return _compress((_deltas(keys), _deltas(bounds)))


def decode_fence(payload: bytes, count: int) -> np.ndarray:
    """The ``count`` fence items (key, start, stop) of a fence page or root from its stored bytes."""
    key_deltas, bound_deltas = _decompress(payload, [count, count + 1])
    bounds = np.cumsum(bound_deltas, dtype=_U64)
    if (bounds[1:] <= bounds[:-1]).any():
        raise PageDecodeError("its page offsets do not increase")
    items = np.empty(count, FENCE)
    items["label"], items["start"], items["stop"] = np.cumsum(key_deltas, dtype=_U64), bounds[:-1], bounds[1:]
    return items


def _deltas(values: np.ndarray) -> np.ndarray:
    """Each value minus the one before (the first minus 0), modulo 2**64: ``np.cumsum`` undoes it."""
    values = values.astype(_U64, copy=False)
    return values - np.concatenate([np.zeros(1, _U64), values[:-1]])[: len(values)]


def _compress(columns: tuple[np.ndarray, ...]) -> bytes:
    """Each column's width (a byte each), then the columns narrowed, shuffled and compressed together."""
    narrowed = [_narrowed(column) for column in columns]
    shuffled = b"".join(column.view(np.uint8).reshape(-1, column.itemsize).T.tobytes() for column in narrowed)
    return bytes(column.itemsize for column in narrowed) + _ZSTD.compress(shuffled, asbytes=True)


def _narrowed(column: np.ndarray) -> np.ndarray:
    """``column`` in the narrowest unsigned type of 1, 2, 4 or 8 bytes that holds its values."""
    top = int(column.max()) if len(column) else 0
    kind = next(kind for kind in _WIDTHS.values() if top <= np.iinfo(kind).max)
    return np.ascontiguousarray(column, kind)


def _decompress(payload: bytes, counts: list[int]) -> list[np.ndarray]:
    """The columns of ``counts`` values each (as uint64) from a page's stored bytes."""
    widths = list(payload[: len(counts)])
    if len(widths) != len(counts) or any(width not in _WIDTHS for width in widths):
        raise PageDecodeError(f"its column widths {widths} are not {len(counts)} of 1, 2, 4 or 8 bytes")
    size = sum(width * count for width, count in zip(widths, counts, strict=True))
    try:
        raw = np.frombuffer(_ZSTD.decompress(payload[len(counts) :], size, asbytes=True), np.uint8)
    except OSError as error:  # Arrow reports corrupt or wrongly sized zstd data as an OSError
        raise PageDecodeError(f"it does not decompress ({error})") from error
    columns, at = [], 0
    for width, count in zip(widths, counts, strict=True):
        shuffled = raw[at : at + width * count].reshape(width, count)
        columns.append(np.ascontiguousarray(shuffled.T).view(_WIDTHS[width]).reshape(count).astype(_U64))
        at += width * count
    return columns
