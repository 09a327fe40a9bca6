"""Neuroglancer's ``neuroglancer_uint64_sharded_v1`` format: many uint64-keyed chunks in a few shard files.

A shard file is a shard index (16 bytes per minishard: where its minishard
index lies, relative to the end of the shard index), then the chunks, then the
minishard indexes: each a gzip-compressed (3, n) uint64 array of keys
(delta-encoded), chunk starts (the first relative to the end of the shard
index, the rest relative to the end of the previous chunk) and chunk sizes.
With the identity hash a key's minishard is ``(key >> preshift_bits) &
(2**minishard_bits - 1)`` and its shard the next ``shard_bits`` bits.

We write the bytes ourselves instead of through tensorstore's
``neuroglancer_uint64_sharded`` kvstore driver because that driver takes one
Python call and about 0.7 kB of memory per key held in a transaction: 180,000
keys/s, and the 4 million points of one ``by_id`` shard would need 3 GB. Here
a shard is a few numpy operations whatever its key count. Tensorstore (and
through it neuroglancer's ``AnnotationReader``) reads every shard back in the
tests. Only the identity hash is written: every index we export keys dense
ranges (annotation ids, spatial cells) or labels, whose low bits spread well.
"""

from __future__ import annotations

import gzip
import itertools
from dataclasses import dataclass

import numpy as np

_SHARD_INDEX_ENTRY = 16  # two uint64: start and end of a minishard index


@dataclass(frozen=True)
class Sharding:
    """The sharding of one index: which shard and minishard each key goes to.

    >>> spec = Sharding(preshift_bits=2, minishard_bits=1, shard_bits=1)
    >>> spec.shard_of(np.array([0, 3, 4, 8, 15], np.uint64)).tolist(), spec.file_name(1)
    ([0, 0, 0, 1, 1], '1.shard')
    """

    preshift_bits: int
    minishard_bits: int
    shard_bits: int

    @property
    def shards(self) -> int:
        return 1 << self.shard_bits

    def minishard_of(self, keys: np.ndarray) -> np.ndarray:
        return (keys >> np.uint64(self.preshift_bits)) & np.uint64((1 << self.minishard_bits) - 1)

    def shard_of(self, keys: np.ndarray) -> np.ndarray:
        shifted = keys >> np.uint64(self.preshift_bits + self.minishard_bits)
        return (shifted & np.uint64(self.shards - 1)).astype(np.int64)

    def file_name(self, shard: int) -> str:
        """Neuroglancer's name for a shard file: hex, zero-padded to whole digits of ``shard_bits``."""
        return f"{shard:0{(self.shard_bits + 3) // 4}x}.shard"

    def chunk_order(self, keys: np.ndarray) -> np.ndarray:
        """The order in which the chunks of ``keys`` are written in their shard: by minishard, then key."""
        return np.lexsort((keys, self.minishard_of(keys)))

    def to_json(self) -> dict:
        return {
            "@type": "neuroglancer_uint64_sharded_v1",
            "preshift_bits": self.preshift_bits,
            "hash": "identity",
            "minishard_bits": self.minishard_bits,
            "shard_bits": self.shard_bits,
            "minishard_index_encoding": "gzip",
            "data_encoding": "raw",
        }


def dense_sharding(key_bits: int, shard_bits: int, keys_per_minishard_bits: int) -> Sharding:
    """Sharding for keys that fill ``[0, 2**key_bits)`` densely (ids, spatial cells): each shard one key range.

    Neuroglancer looks a key up by scanning its minishard index, so minishards stay
    small (``2**keys_per_minishard_bits`` keys); the shards take the top bits.

    >>> dense_sharding(key_bits=20, shard_bits=3, keys_per_minishard_bits=10)
    Sharding(preshift_bits=10, minishard_bits=7, shard_bits=3)
    """
    shard_bits = min(shard_bits, key_bits)
    preshift_bits = min(keys_per_minishard_bits, key_bits - shard_bits)
    return Sharding(preshift_bits, key_bits - shard_bits - preshift_bits, shard_bits)


def bits_for(count: int) -> int:
    """The bits that number ``count`` things: ``ceil(log2(count))``, 0 for one or none.

    >>> [bits_for(n) for n in (0, 1, 2, 3, 1024, 1025)]
    [0, 0, 1, 2, 10, 11]
    """
    return max(int(count) - 1, 0).bit_length()


def encode_shard(sharding: Sharding, keys: np.ndarray, sizes: np.ndarray, data: bytes | memoryview) -> list[bytes]:
    """The bytes of one shard file, as pieces to write in order.

    ``keys`` (uint64, all of this shard, in :meth:`Sharding.chunk_order`) name
    the chunks that ``data`` holds back to back, ``sizes`` bytes each.
    """
    keys = np.asarray(keys, np.uint64)
    sizes = np.asarray(sizes, np.uint64)
    minishards = sharding.minishard_of(keys).astype(np.int64)
    ends = np.cumsum(sizes, dtype=np.uint64)
    starts = ends - sizes
    boundaries = np.searchsorted(minishards, np.arange((1 << sharding.minishard_bits) + 1))
    indexes = []
    for first, last in itertools.pairwise(boundaries.tolist()):
        if first == last:
            indexes.append(b"")
            continue
        key_deltas = np.diff(keys[first:last], prepend=np.uint64(0))
        start_deltas = starts[first:last].copy()
        start_deltas[1:] -= ends[first : last - 1]
        table = np.stack([key_deltas, start_deltas, sizes[first:last]]).astype("<u8")
        indexes.append(gzip.compress(table.tobytes(), compresslevel=6, mtime=0))
    index_ends = len(data) + np.cumsum([len(index) for index in indexes], dtype=np.uint64)
    index_starts = index_ends - np.array([len(index) for index in indexes], np.uint64)
    shard_index = np.stack([index_starts, index_ends], axis=1).astype("<u8")
    return [shard_index.tobytes(), bytes(data), *indexes]


def decode_shard(sharding: Sharding, shard: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The keys of a shard file written by :func:`encode_shard`, in the order written, and where each one's chunk
    starts in ``shard`` and its size: numpy arrays, one step per minishard, none per key.

    >>> spec = Sharding(preshift_bits=0, minishard_bits=1, shard_bits=0)
    >>> shard = b"".join(encode_shard(spec, np.array([2, 1], np.uint64), [1, 2], b"abc"))
    >>> keys, starts, sizes = decode_shard(spec, shard)
    >>> keys.tolist(), [shard[s : s + n] for s, n in zip(starts.tolist(), sizes.tolist())]
    ([2, 1], [b'a', b'bc'])
    """
    minishards = 1 << sharding.minishard_bits
    index = np.frombuffer(shard[: minishards * _SHARD_INDEX_ENTRY], "<u8").reshape(minishards, 2)
    base = minishards * _SHARD_INDEX_ENTRY
    keys, ends, sizes = [], [], []
    for start, end in index.tolist():
        if start == end:
            continue
        table = np.frombuffer(gzip.decompress(shard[base + start : base + end]), "<u8").reshape(3, -1)
        keys.append(np.cumsum(table[0], dtype=np.uint64))
        ends.append(np.cumsum(table[1] + table[2], dtype=np.uint64))
        sizes.append(table[2])
    if not keys:
        return np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64)
    size = np.concatenate(sizes).astype(np.int64)
    return np.concatenate(keys), base + np.concatenate(ends).astype(np.int64) - size, size
