"""The label directory: where each label's rows are, in one file a reader fetches by byte ranges.

The unified index (DuckDB) answers a label in ~0.3 ms, but only from local disk:
on a bucket every new reader would first download all of it, ~22 bytes per
(label, block) row. A directory holds only what a point read needs: one entry
per run of a label's rows in a file, ``(label, file_id, row_offset,
point_count)``, sorted by label, in pages under a static B+tree of
first labels. Block ids and bounding boxes stay in the index.

The file, written front to back in one pass (little-endian)::

    leaf pages    entries: label, file_id, row_offset, point_count (format 2: by column, zstd; see
                  ``_directory_pages.py``), each page followed by the CRC-32 of its stored bytes
    fence pages   for each level above the leaves, bottom up: the first label of every page below
                  and (format 2) the byte offsets bounding those pages
    top           the root (the first label of every page of the level below the root, format 2
                  with their byte offsets, compressed), the file table (zlib-compressed JSON:
                  file_id, path, row_group_size, byte_size), the page count of every level, top
                  down, (format 2) every level's bytes, and a 48-byte trailer (magic, format, page
                  size, entry count, sizes, level count, CRC-32 of the top)

A page holds as many items as fit ``page_bytes`` (64 KiB: 2,730 entries of 24
bytes or 8,191 keys of 8) before compression, the last page of a level fewer,
so the tree's shape depends only on the entry count. Format 1 stores pages as
they are: page ``i`` of a level starts ``i`` full pages after the level's
first. Format 2 compresses them (3× for random uint64 labels, far more for a
compacted store of consecutive ones), so pages vary in size, and each fence
item (in a fence page or the root) carries the byte range of the page it
opens. Either way the root holds at most one fence page of keys: leaves under
the root serve 22 M entries, and every fence level 8,191 times more. A reader
fetches the top once (one ranged read: ``label_directory.json`` gives its
size), then one range per level and label: two reads for a label in a store of
up to 22 M entries, three up to 183 billion.

Runs that continue each other in one file are one entry (a run longer than
``2**32 - 1`` rows is cut in pieces), so after compaction a label in one file is
one entry whatever its block count.

A directory is published with a copy of its index as an index version,
``index_versions/<build>/`` (see ``consolidate.py``). ``label_directory.json``
names the build in force with the version of ``unified_index.duckdb`` it was
published as; a reader uses the directory only when that version still
matches (:func:`open_in_force`), so it never reads a directory that disagrees
with the index. The unified index names its own build (table
``label_directory``) for ``verify`` and ``gc``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np

from . import layout
from ._directory_pages import ENTRY, FENCE, PageDecodeError, decode_fence, decode_leaf, encode_fence, encode_leaf
from ._immutables import IMMUTABLES, version_key
from .errors import LabelDirectoryError
from .storage import Storage

logger = logging.getLogger("pocaduck")

FORMAT = 2  # 1: pages as they are (read still); 2: pages compressed by column, fence items with byte ranges
PAGE_BYTES = 64 * 1024
_KEY = np.dtype("<u8")
_CRC_BYTES = 4
_MAGIC = b"PCDLBDIR"
_TRAILER = struct.Struct("<8sIIQQQII")  # magic, format, page_bytes, entries, top_bytes, files_bytes, levels, crc
_MAX_RUN = 2**32 - 1
_BATCH_ROWS = 1 << 20
_PAGES_KEPT = 64  # decoded pages per reader: ~4 MiB of leaves
# A top this small travels inside label_directory.json, so a reader has it with the pointer: one round trip less.
# At 64 KiB it serves directories of up to ~20 M entries (8 bytes of root key per 2,730 entries, and the file table).
_EMBEDDED_TOP_BYTES = 64 * 2**10


def _fix(store: str) -> str:
    return f"rebuild it with `pocaduck consolidate {store}`"


# -- the shape of the tree ------------------------------------------------------


def _per_page(item_bytes: int, page_bytes: int) -> int:
    return (page_bytes - _CRC_BYTES) // item_bytes


def _pages(items: int, per_page: int) -> int:
    return -(-items // per_page)


def level_page_counts(entries: int, page_bytes: int = PAGE_BYTES) -> list[int]:
    """Pages of every level below the root, top down (leaves last); none for an empty directory.

    >>> level_page_counts(5_000), level_page_counts(30_000_000)
    ([2], [2, 10990])
    """
    if entries == 0:
        return []
    counts = [_pages(entries, _per_page(ENTRY.itemsize, page_bytes))]
    keys_per_page = _per_page(_KEY.itemsize, page_bytes)
    while counts[0] > keys_per_page:
        counts.insert(0, _pages(counts[0], keys_per_page))
    return counts


@dataclass(frozen=True)
class _Level:
    """Where one level's pages lie in the file and how many items they hold."""

    start: int
    length: int
    items: int
    leaf: bool
    per_page: int

    @property
    def pages(self) -> int:
        return _pages(self.items, self.per_page)

    def page_items(self, page: int) -> int:
        return min(self.per_page, self.items - page * self.per_page)

    def fixed_bounds(self, first: int, count: int) -> np.ndarray:
        """Format 1: byte ranges (as fence items, labels left 0) of ``count`` pages from ``first``."""
        stride = self.per_page * (ENTRY if self.leaf else _KEY).itemsize + _CRC_BYTES
        items = np.zeros(count, FENCE)
        items["start"] = self.start + (first + np.arange(count, dtype=np.uint64)) * stride
        items["stop"] = np.minimum(items["start"] + stride, self.start + self.length)
        return items


def _levels(entries: int, page_bytes: int, lengths: list[int] | None = None) -> list[_Level]:
    """Every level below the root, top down, placed as the writer lays them out: leaves first in the file.

    ``lengths`` gives each level's bytes (top down) in format 2; format 1's follow from the item counts.
    """
    counts = level_page_counts(entries, page_bytes)
    items = [*counts[1:], entries]  # a fence level holds one key per page of the level below
    levels: list[_Level] = []
    start = 0
    for depth in reversed(range(len(counts))):
        leaf = depth == len(counts) - 1
        item_bytes = (ENTRY if leaf else _KEY).itemsize
        per_page = _per_page(item_bytes, page_bytes)
        length = items[depth] * item_bytes + counts[depth] * _CRC_BYTES if lengths is None else lengths[depth]
        levels.insert(0, _Level(start, length, items[depth], leaf, per_page))
        start += length
    return levels


# -- writing -----------------------------------------------------------------


@dataclass(frozen=True)
class DirectoryFile:
    """What a reader needs to fetch a directory's top in one read, as ``label_directory.json`` records it."""

    entries: int
    size: int
    top_bytes: int


def write_label_directory(
    con: duckdb.DuckDBPyConnection, target: str, *, page_bytes: int | None = None, in_order: bool = False
) -> DirectoryFile:
    """Write the label directory (format 2) of the index open on ``con`` (its ``files`` and ``point_index``).

    Rows stream from DuckDB in batches, so memory stays flat whatever the index size.
    ``page_bytes`` defaults to ``PAGE_BYTES``. ``in_order=True`` says that
    ``point_index`` was inserted sorted by label, file and row (as consolidation
    inserts it): its rows are then read in insertion order, which DuckDB keeps
    (``preserve_insertion_order``), sparing a second sort of the whole index.

    >>> import os, tempfile
    >>> con = duckdb.connect()
    >>> _ = con.execute("CREATE TABLE files AS SELECT 0 AS file_id, 'a.parquet' AS path, 10 AS row_group_size, "
    ...                 "99 AS byte_size")
    >>> _ = con.execute("CREATE TABLE point_index AS SELECT * FROM (VALUES (5::UBIGINT, 0, 0::BIGINT, 2::BIGINT), "
    ...                 "(5, 0, 2, 3), (7, 0, 5, 1)) t(label, file_id, row_offset, point_count)")
    >>> path = os.path.join(tempfile.mkdtemp(), "d.labeldir")
    >>> write_label_directory(con, path).entries  # label 5's two rows continue each other: one entry
    2
    """
    page_bytes = page_bytes or PAGE_BYTES
    if page_bytes < 2 * _KEY.itemsize + _CRC_BYTES or page_bytes < ENTRY.itemsize + _CRC_BYTES:
        raise ValueError(f"page_bytes must hold an entry and two keys, not {page_bytes}")
    files = con.execute("SELECT file_id, path, row_group_size, byte_size FROM files ORDER BY file_id").fetchall()
    # A relation's reader streams (DuckDB 1.5 and 2.x); one from execute() would copy every row first.
    select = "SELECT label, file_id, row_offset, point_count FROM point_index WHERE point_count > 0"
    rows = con.sql(select if in_order else f"{select} ORDER BY label, file_id, row_offset").to_arrow_reader(_BATCH_ROWS)
    per_page = _per_page(ENTRY.itemsize, page_bytes)
    with rows, open(target, "wb") as out:
        first_labels: list[np.ndarray] = []
        page_ends: list[np.ndarray] = []
        open_run = [np.empty(0, dtype) for dtype in _COLUMN_TYPES]  # the last run seen: the next batch may continue it
        unwritten = np.empty(0, ENTRY)  # less than a page of finished entries
        entries = 0
        for batch in rows:
            columns = [
                np.concatenate([carried, column.to_numpy()])
                for carried, column in zip(open_run, batch.columns, strict=True)
            ]
            if in_order and (columns[0][1:] < columns[0][:-1]).any():
                raise ValueError(f"the point_index given with in_order=True is not sorted by label; {target} is void")
            runs = _merge_runs(*columns)
            unwritten = np.concatenate([unwritten, _entries(*(column[:-1] for column in runs))])
            open_run = [column[-1:] for column in runs]
            full = len(unwritten) // per_page * per_page
            _write_pages(out, unwritten[:full], per_page, first_labels, page_ends)
            entries += full
            unwritten = unwritten[full:]
        unwritten = np.concatenate([unwritten, _entries(*open_run)])
        _write_pages(out, unwritten, per_page, first_labels, page_ends)
        entries += len(unwritten)
        keys, bounds = np.concatenate(first_labels), np.concatenate([np.zeros(1, _KEY), *page_ends])
        lengths = [int(bounds[-1])]
        keys_per_page = _per_page(_KEY.itemsize, page_bytes)
        while len(keys) > keys_per_page:  # fence levels, bottom up, until the rest fits the root
            level_start, first_labels, page_ends = out.tell(), [], []
            _write_pages(out, (keys, bounds), keys_per_page, first_labels, page_ends)
            keys, bounds = np.concatenate(first_labels), np.concatenate([np.array([level_start], _KEY), *page_ends])
            lengths.insert(0, out.tell() - level_start)
        counts = level_page_counts(entries, page_bytes)
        columns = [list(column) for column in zip(*files, strict=True)] if files else [[], [], [], []]
        table = zlib.compress(json.dumps(columns).encode())
        levels = np.array([*counts, *(lengths if counts else [])], _KEY).tobytes()
        top = encode_fence(keys, bounds[: len(keys) + 1]) + table + levels
        top_bytes = len(top) + _TRAILER.size
        trailer = _TRAILER.pack(_MAGIC, FORMAT, page_bytes, entries, top_bytes, len(table), len(counts), 0)
        top += trailer[:-_CRC_BYTES]
        out.write(top + struct.pack("<I", zlib.crc32(top)))
        size = out.tell()
    return DirectoryFile(entries, size, top_bytes)


_COLUMN_TYPES = (np.uint64, np.int32, np.int64, np.int64)  # label, file_id, row_offset, point_count


def _merge_runs(
    labels: np.ndarray, file_ids: np.ndarray, offsets: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, ...]:
    """One run per stretch of a label's rows that continue each other in one file, as the same four columns.

    >>> merged = _merge_runs(*map(np.array, ([5, 5, 5, 6], [0, 0, 1, 1], [0, 2, 0, 1], [2, 3, 1, 4])))
    >>> [column.tolist() for column in merged]
    [[5, 5, 6], [0, 1, 1], [0, 0, 1], [5, 1, 4]]
    """
    continues = (
        (labels[1:] == labels[:-1]) & (file_ids[1:] == file_ids[:-1]) & (offsets[1:] == offsets[:-1] + counts[:-1])
    )
    if not continues.any():
        return labels, file_ids, offsets, counts
    heads = np.flatnonzero(np.concatenate([[True], ~continues]))
    return labels[heads], file_ids[heads], offsets[heads], np.add.reduceat(counts, heads)


def _entries(labels: np.ndarray, file_ids: np.ndarray, offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Runs as directory entries, whose count fits 32 bits: a longer run becomes several that follow each other.

    >>> _entries(*map(np.array, ([5], [0], [10], [2**32 + 1])))[["row_offset", "point_count"]].tolist()
    [(10, 4294967295), (4294967305, 2)]
    """
    pieces = np.maximum(-(-counts // _MAX_RUN), 1)
    if (pieces > 1).any():
        source = np.repeat(np.arange(len(counts)), pieces)
        taken = (np.arange(len(source)) - np.repeat(np.cumsum(pieces) - pieces, pieces)) * _MAX_RUN
        labels, file_ids = labels[source], file_ids[source]
        offsets, counts = offsets[source] + taken, np.minimum(counts[source] - taken, _MAX_RUN)
    entries = np.empty(len(labels), ENTRY)
    entries["label"], entries["file_id"], entries["row_offset"], entries["point_count"] = (
        labels,
        file_ids,
        offsets,
        counts,
    )
    return entries


def _write_pages(
    out: Any,
    items: np.ndarray | tuple[np.ndarray, np.ndarray],
    per_page: int,
    first_labels: list[np.ndarray],
    page_ends: list[np.ndarray],
) -> None:
    """Write ``items`` as pages of ``per_page`` items, each followed by the CRC-32 of its stored bytes.

    ``items`` are leaf entries, or fence keys with the ``len(keys) + 1`` byte offsets bounding their
    pages. Each page's first label goes to ``first_labels`` and the offset where it ends to ``page_ends``.
    """
    fence = isinstance(items, tuple)
    labels = items[0] if fence else items["label"]
    ends = np.empty(_pages(len(labels), per_page), _KEY)
    for page, start in enumerate(range(0, len(labels), per_page)):  # one iteration per 64 KiB of items
        if fence:
            stored = encode_fence(labels[start : start + per_page], items[1][start : start + per_page + 1])
        else:
            stored = encode_leaf(items[start : start + per_page])
        out.write(stored + struct.pack("<I", zlib.crc32(stored)))
        ends[page] = out.tell()
    first_labels.append(np.ascontiguousarray(labels[::per_page], dtype=_KEY))
    page_ends.append(ends)


# -- reading -----------------------------------------------------------------


class LabelDirectory:
    """A label directory opened for lookups: its top read once, pages fetched by range and kept (up to 64).

    Reads formats 1 and 2 alike: pages decode to the same items whatever their encoding.

    >>> import os, tempfile
    >>> from pocaduck.storage import LocalStorage
    >>> con = duckdb.connect()
    >>> _ = con.execute("CREATE TABLE files AS SELECT 0 AS file_id, 'a.parquet' AS path, 10 AS row_group_size, "
    ...                 "99 AS byte_size")
    >>> _ = con.execute("CREATE TABLE point_index AS SELECT * FROM (VALUES (5::UBIGINT, 0, 0::BIGINT, 2::BIGINT), "
    ...                 "(7, 0, 2, 1)) t(label, file_id, row_offset, point_count)")
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_label_directory(con, os.path.join(folder, "d.labeldir"))
    >>> directory = LabelDirectory.open(LocalStorage(folder), "d.labeldir")
    >>> directory.lookup([7])["row_offset"].tolist(), directory.point_count(5), directory.files
    ([2], 2, {0: ('a.parquet', 10, 99)})
    """

    def __init__(
        self,
        storage: Storage,
        path: str,
        size: int,
        top: bytes,
        index: str | None = None,
        index_version: str | None = None,
    ):
        self.storage, self.path, self.size = storage, path, size
        self.index = index  # the unified index this directory was built from, when known
        self.index_version = index_version  # the storage version of unified_index.duckdb it was found in force with
        if len(top) < _TRAILER.size:
            raise self._damaged("is shorter than its own trailer")
        magic, fmt, page_bytes, entries, top_bytes, files_bytes, levels, crc = _TRAILER.unpack(top[-_TRAILER.size :])
        if magic != _MAGIC or fmt < 1:
            raise self._damaged("is not a label directory (its trailer lacks the magic bytes or a format)")
        # The trailer is the same in every format: its checksum first, so that a flipped bit is not a new format.
        if top_bytes != len(top) or zlib.crc32(top[:-_CRC_BYTES]) != crc:
            raise self._damaged("fails the checksum of its top level")
        if fmt > FORMAT:
            raise LabelDirectoryError(
                f"{storage.describe(path)} has label directory format {fmt}; this pocaduck reads up to {FORMAT}: "
                f"upgrade pocaduck, or {_fix(storage.describe(''))} with this version"
            )
        self.format, self.entry_count, self.page_bytes = fmt, entries, page_bytes
        shape = np.frombuffer(top[-_TRAILER.size - levels * _KEY.itemsize * fmt : len(top) - _TRAILER.size], _KEY)
        counts, lengths = shape[:levels].tolist(), shape[levels:].tolist() or None
        self._levels = _levels(entries, page_bytes, lengths)
        files_at = len(top) - _TRAILER.size - len(shape) * _KEY.itemsize - files_bytes
        root_count = counts[0] if counts else 0
        try:
            self._root = (
                decode_fence(top[:files_at], root_count)
                if fmt >= 2
                else self._with_bounds(np.frombuffer(top[:files_at], _KEY), 0)
            )
        except (PageDecodeError, ValueError) as error:
            raise self._damaged(f"has a root that does not decode ({error})") from error
        if (
            counts != [level.pages for level in self._levels]
            or len(self._root) != root_count
            or size != sum(level.length for level in self._levels) + top_bytes
            or (counts and (self._root["start"][0], self._root["stop"][-1]) != _span(self._levels[0]))
        ):
            raise self._damaged("has a top level that disagrees with its own size and entry count")
        file_ids, paths, group_sizes, byte_sizes = json.loads(zlib.decompress(top[files_at : files_at + files_bytes]))
        self.files = {
            file_id: (path, group_size, byte_size)
            for file_id, path, group_size, byte_size in zip(file_ids, paths, group_sizes, byte_sizes, strict=True)
        }
        self._table_bytes = files_bytes
        self._pages: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._pages_lock = threading.Lock()  # readers share a directory between threads; pages are read outside it

    @classmethod
    def open(
        cls,
        storage: Storage,
        path: str,
        *,
        size: int | None = None,
        top_bytes: int | None = None,
        index: str | None = None,
        index_version: str | None = None,
    ) -> LabelDirectory:
        """Read the directory's top: one read when ``size`` and ``top_bytes`` are known, else a size and two reads.

        ``index`` names the unified index it was built from, for readers that will need it, and
        ``index_version`` the version of the unified index in force it belongs to.
        """
        try:
            if size is None:
                size = storage.size(path)
            if top_bytes is None:
                trailer = storage.read_range(path, max(size - _TRAILER.size, 0), _TRAILER.size)
                top_bytes = _TRAILER.size  # a file too short for a trailer is reported as such
                if len(trailer) == _TRAILER.size:
                    _, _, _, _, top_bytes, *_ = _TRAILER.unpack(trailer)
            top = storage.read_range(path, size - top_bytes, top_bytes) if top_bytes <= size else b""
        except FileNotFoundError as error:
            raise LabelDirectoryError(
                f"the label directory {storage.describe(path)} is missing: {_fix(storage.describe(''))}"
            ) from error
        return cls(storage, path, size, top, index, index_version)

    def _damaged(self, what: str) -> LabelDirectoryError:
        return LabelDirectoryError(
            f"the label directory {self.storage.describe(self.path)} {what}: it is damaged or truncated; "
            f"{_fix(self.storage.describe(''))}"
        )

    def byte_parts(self) -> dict[str, int]:
        """Where the directory's bytes go, for models of its size: the leaf pages, the fence pages and root
        with the fence items they hold, the file table and the rest (page counts and sizes, trailer).

        >>> import os, tempfile
        >>> from pocaduck.storage import LocalStorage
        >>> con = duckdb.connect()
        >>> _ = con.execute("CREATE TABLE files AS SELECT 0 AS file_id, 'a.parquet' AS path, 1 AS row_group_size, "
        ...                 "9 AS byte_size")
        >>> _ = con.execute("CREATE TABLE point_index AS SELECT range::UBIGINT AS label, 0 AS file_id, "
        ...                 "range AS row_offset, 1 AS point_count FROM range(10)")
        >>> folder = tempfile.mkdtemp()
        >>> written = write_label_directory(con, os.path.join(folder, "d"), page_bytes=100)  # 4 entries a page
        >>> parts = LabelDirectory.open(LocalStorage(folder), "d").byte_parts()
        >>> parts["fence_items"], sum(v for k, v in parts.items() if k != "fence_items") == written.size
        (3, True)
        """
        shape = len(self._levels) * _KEY.itemsize * self.format + _TRAILER.size
        leaves = self._levels[-1].length if self._levels else 0
        return {
            "leaves": leaves,
            "fences": self.size - leaves - self._table_bytes - shape,
            "fence_items": sum(level.pages for level in self._levels),
            "table": self._table_bytes,
            "shape": shape,
        }

    def _with_bounds(self, keys: np.ndarray, depth: int, first: int = 0) -> np.ndarray:
        """Format 1's fence keys as fence items: the pages they open (``first`` on, at ``depth``) lie at fixed places."""
        items = self._levels[depth].fixed_bounds(first, len(keys)) if self._levels else np.zeros(0, FENCE)
        items["label"] = keys
        return items

    def lookup(self, labels: Iterable[int] | np.ndarray) -> dict[str, np.ndarray]:
        """The entries of ``labels``, sorted by label, file and row offset, as columns named like the index's."""
        wanted = np.asarray(labels, dtype=np.uint64).reshape(-1)
        if len(wanted) == 1:
            return _columns(self._lookup_one(wanted[0]))
        wanted = np.unique(wanted)
        fence, children = self._root, np.arange(len(self._root))
        found = np.empty(0, ENTRY)
        for depth, level in enumerate(self._levels):
            pages = _pages_holding(fence["label"], children, wanted)
            items = self._read(depth, pages, fence[np.searchsorted(children, pages)])
            if level.leaf:
                # ``wanted`` is sorted and unique: one binary search per entry, where np.isin sorts both again.
                at = np.minimum(np.searchsorted(wanted, items["label"]), len(wanted) - 1)
                found = items[wanted[at] == items["label"]] if len(wanted) else items[:0]
            else:  # the fence items of the next level's pages, numbered as that level numbers them
                fence = items
                children = np.concatenate(
                    [page * level.per_page + np.arange(level.page_items(page)) for page in pages.tolist()]
                    or [np.empty(0, np.int64)]
                )
        return _columns(found)

    def _lookup_one(self, label: np.uint64) -> np.ndarray:
        """:meth:`lookup` of one label, the hot path of ``get_points``: scalar searches, no set operations.

        One label's pages are consecutive on every level, so the fence items in hand number
        their pages from the first one's on (~10 µs against ~30 for the general path).
        """
        fence, first_child = self._root, 0
        for depth, level in enumerate(self._levels):
            keys = fence["label"]
            start, end = np.searchsorted(keys, label, "left"), np.searchsorted(keys, label, "right")
            if end == 0:  # below the first label of the store
                return np.empty(0, ENTRY)
            first_item, last_item = max(int(start) - 1, 0), int(end) - 1
            first, last = first_child + first_item, first_child + last_item
            items = self._page_run(depth, first, last, fence[first_item : last_item + 1])
            if level.leaf:
                return items[
                    np.searchsorted(items["label"], label, "left") : np.searchsorted(items["label"], label, "right")
                ]
            fence, first_child = items, first * level.per_page
        return np.empty(0, ENTRY)

    def _page_run(self, depth: int, first: int, last: int, spans: np.ndarray) -> np.ndarray:
        """The items of pages ``first`` to ``last`` of one level (``spans``: their fence items); a single kept page
        without a copy."""
        if first == last:
            with self._pages_lock:
                page = self._pages.get((depth, first))
                if page is not None:
                    self._pages.move_to_end((depth, first))
                    return page
        return self._read(depth, np.arange(first, last + 1), spans)

    def point_count(self, label: int) -> int:
        return int(self.lookup([label])["point_count"].sum())

    def _read(self, depth: int, pages: np.ndarray, spans: np.ndarray) -> np.ndarray:
        """The items of ``pages`` (sorted; ``spans`` their fence items) of one level, concatenated; pages not kept
        are fetched, a run per read."""
        with self._pages_lock:
            found = {page: self._pages.get((depth, page)) for page in pages.tolist()}
        missing = np.flatnonzero([items is None for items in found.values()])
        for run in np.split(missing, np.flatnonzero(np.diff(pages[missing]) != 1) + 1) if len(missing) else []:
            first, last = int(run[0]), int(run[-1])
            found.update(self._fetch(depth, int(pages[first]), int(pages[last]), spans[first : last + 1]))
        with self._pages_lock:
            for page, items in found.items():
                self._pages[depth, page] = items
                self._pages.move_to_end((depth, page))
            while len(self._pages) > max(_PAGES_KEPT, len(pages)):
                self._pages.popitem(last=False)
        parts = list(found.values())  # in the order of pages: dicts keep it
        return np.concatenate(parts) if parts else np.empty(0, ENTRY if self._levels[depth].leaf else FENCE)

    def _fetch(self, depth: int, first: int, last: int, spans: np.ndarray) -> dict[int, np.ndarray]:
        """Read pages ``first`` to ``last`` of a level (``spans``: their fence items) in one range, check each one's
        CRC and decode it: ``{page: items}``."""
        start, stop = int(spans["start"][0]), int(spans["stop"][-1])
        try:
            data = self.storage.read_range(self.path, start, stop - start)
        except FileNotFoundError as error:
            raise self._damaged("is missing") from error
        if len(data) != stop - start:
            raise self._damaged(f"ends at byte {start + len(data):,}, inside page {first} of level {depth + 1}")
        pages = {}
        for page, page_start, page_stop in zip(
            range(first, last + 1), spans["start"].tolist(), spans["stop"].tolist(), strict=True
        ):
            stored = data[page_start - start : page_stop - start - _CRC_BYTES]
            crc = (
                data[page_stop - start - _CRC_BYTES : page_stop - start]
                if page_stop - page_start >= _CRC_BYTES
                else b""
            )
            if crc != struct.pack("<I", zlib.crc32(stored)):
                raise self._damaged(f"fails the checksum of page {page} of level {depth + 1}")
            try:
                pages[page] = self._decode(depth, page, stored)
            except PageDecodeError as error:
                raise self._damaged(f"has a page {page} of level {depth + 1} that does not decode ({error})") from error
        return pages

    def _decode(self, depth: int, page: int, stored: bytes) -> np.ndarray:
        """The items of one page from its stored bytes (CRC checked), as fence items or entries."""
        level = self._levels[depth]
        count = level.page_items(page)
        if self.format >= 2:
            return decode_leaf(stored, count) if level.leaf else decode_fence(stored, count)
        items = np.frombuffer(stored, ENTRY if level.leaf else _KEY)
        if len(items) != count:
            raise PageDecodeError(f"it holds {len(items)} items, not {count}")
        return items if level.leaf else self._with_bounds(items, depth + 1, page * level.per_page)

    def entries(self, pages_per_read: int = 64) -> Iterator[np.ndarray]:
        """Every entry in order, a few pages per read, each page's CRC, fence key and place checked (for ``verify``)."""
        fence = self._root
        for depth, level in enumerate(self._levels):
            fences_read = []
            if len(fence) and (fence["start"][1:] != fence["stop"][:-1]).any():
                raise self._damaged(f"has fence items whose pages of level {depth + 1} do not follow each other")
            for first in range(0, level.pages, pages_per_read):
                last = min(first + pages_per_read, level.pages) - 1
                spans = fence[first : last + 1]
                pages = list(self._fetch(depth, first, last, spans).values())
                if not np.array_equal([page["label"][0] for page in pages], spans["label"]):
                    raise self._damaged(f"has fence keys that disagree with pages {first}-{last} of level {depth + 1}")
                if level.leaf:
                    yield np.concatenate(pages)
                else:
                    fences_read.extend(pages)
            fence = np.concatenate(fences_read) if fences_read else fence
            if not level.leaf and (fence["start"][0], fence["stop"][-1]) != _span(self._levels[depth + 1]):
                raise self._damaged(f"has fence items that do not cover level {depth + 2}")


def _span(level: _Level) -> tuple[int, int]:
    return level.start, level.start + level.length


def _columns(found: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "label": found["label"].astype(np.uint64),
        "file_id": found["file_id"].astype(np.int64),
        "row_offset": found["row_offset"].astype(np.int64),
        "point_count": found["point_count"].astype(np.int64),
    }


def _pages_holding(keys: np.ndarray, children: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """The pages (``children`` numbers them) that may hold ``wanted`` labels, given each page's first label.

    A label's entries start in the last page whose first label is below it and run
    through every page that starts with it.

    >>> _pages_holding(np.array([1, 5, 5, 9], np.uint64), np.arange(4), np.array([5, 20, 0], np.uint64)).tolist()
    [0, 1, 2, 3]
    """
    starts = np.searchsorted(keys, wanted, "left")
    ends = np.searchsorted(keys, wanted, "right")
    present = ends > 0
    first = children[np.maximum(starts[present] - 1, 0)]
    spans = children[ends[present] - 1] - first + 1
    pages = np.repeat(first - (np.cumsum(spans) - spans), spans) + np.arange(int(spans.sum()))
    return np.unique(pages)


# -- the pointer: which directory goes with the index in force ---------------


_POINTER_FIELDS = {"build": str, "index_version": str, "size": int, "top_bytes": int, "entries": int}


def read_pointer(storage: Storage) -> dict[str, Any] | None:
    """``label_directory.json``, every field checked, or None in a store written before label directories."""
    path = layout.LABEL_DIRECTORY_POINTER
    try:
        pointer = json.loads(storage.read_bytes(path))
    except FileNotFoundError:
        return None
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError alike
        pointer = error
    problem = _pointer_problem(pointer)
    if problem is not None:
        raise LabelDirectoryError(f"{storage.describe(path)} is damaged ({problem}): {_fix(storage.describe(''))}")
    return pointer


def _pointer_problem(pointer: object) -> str | None:
    """What makes ``pointer`` (as parsed from ``label_directory.json``) unusable, or None.

    >>> _pointer_problem({"build": "b1", "index_version": "v", "size": 48, "top_bytes": 48, "entries": "0"})
    "its entries is '0', not a count"
    """
    if isinstance(pointer, ValueError):
        return f"it is not JSON: {pointer}"
    if not isinstance(pointer, dict):
        return f"it holds a {type(pointer).__name__}, not an object"
    for name, kind in _POINTER_FIELDS.items():
        if name not in pointer:
            return f"it has no {name}"
        value = pointer[name]
        # bool is an int to Python, and a count below zero or an empty name points nowhere
        if not isinstance(value, kind) or isinstance(value, bool) or (value < 0 if kind is int else not value):
            return f"its {name} is {value!r}, not a {'count' if kind is int else 'name'}"
    if not _TRAILER.size <= pointer["top_bytes"] <= pointer["size"]:
        return (
            f"its top_bytes {pointer['top_bytes']:,} is not between the trailer's {_TRAILER.size} bytes and the "
            f"directory's size {pointer['size']:,}"
        )
    if "top" in pointer:
        try:
            top = base64.b64decode(pointer["top"], validate=True) if isinstance(pointer["top"], str) else None
        except (binascii.Error, ValueError):
            top = None
        if top is None:
            return "its top is not base64"
    return None


def pointer_bytes(build_id: str, written: DirectoryFile, index_version: str, directory: str | None = None) -> bytes:
    """What ``label_directory.json`` holds for the build in force, published as ``index_version`` of the index.

    Given the ``directory`` file written (local), a top of up to 64 KiB goes into the pointer too (base64):
    a reader then has it in the same request.
    """
    body: dict[str, Any] = {
        "build": build_id,
        "index_version": index_version,
        "size": written.size,
        "top_bytes": written.top_bytes,
        "entries": written.entries,
    }
    if directory is not None and written.top_bytes <= _EMBEDDED_TOP_BYTES:
        with open(directory, "rb") as file:
            file.seek(written.size - written.top_bytes)
            body["top"] = base64.b64encode(file.read(written.top_bytes)).decode()
    return json.dumps(body, indent=1).encode()


def in_force_reads(storage: Storage) -> list[Callable[[], Any]]:
    """The two reads that say which directory to trust: the pointer (:func:`read_pointer`) and the version of
    the unified index in force, for ``storage.fetch_together`` (with other reads of the same round trip)."""
    return [lambda: read_pointer(storage), lambda: storage.version(layout.UNIFIED_INDEX)]


def in_force(storage: Storage) -> tuple[dict[str, Any] | None, str | None]:
    """The pointer (:func:`read_pointer`) and the version of the unified index in force, asked together."""
    pointer, version = storage.fetch_together(in_force_reads(storage))
    return pointer, version


def open_in_force(
    storage: Storage,
    fetched: tuple[dict[str, Any] | None, str | None] | None = None,
    *,
    store_key: str | None = None,
) -> LabelDirectory | None:
    """The directory of the unified index in force, or None when there is none to trust (then read the index).

    The directory knows (``.index``) where the copy of its index lies in its index version.

    None when the store predates label directories, and when ``label_directory.json``
    names another index version than the one in force: a consolidation is between
    publishing its index and pointing to its directory, or died there, or the
    store was copied (which changes versions). ``fetched`` is what :func:`in_force`
    answered, when the caller asked it together with other reads. On an object
    store this costs one round trip (the pointer and the index's version at once),
    and one ranged read of the top unless the pointer holds it.

    Given ``store_key`` (``_immutables.store_key``), the directory opened is kept for
    the process: a later Query of the same build finds its top and pages read.
    """
    pointer, version = in_force(storage) if fetched is None else fetched
    if pointer is None:
        logger.info(
            "%s has no label directory (it was consolidated before pocaduck wrote them): queries read the whole "
            "unified index; `pocaduck consolidate %s` writes one",
            storage.describe(""),
            storage.describe(""),
        )
        return None
    if version != pointer["index_version"]:
        logger.info(
            "%s names the label directory of another unified index than the one in force: reading the index; "
            "`pocaduck consolidate %s` brings them together again if this lasts",
            storage.describe(layout.LABEL_DIRECTORY_POINTER),
            storage.describe(""),
        )
        return None
    build = pointer["build"]
    key = None if store_key is None else directory_key(store_key, pointer)
    directory = None if key is None else IMMUTABLES.get(key)
    if directory is not None:
        return directory
    where = layout.index_version_directory(build), layout.index_version_index(build)
    if "top" in pointer:
        top = base64.b64decode(pointer["top"])
        if len(top) != pointer["top_bytes"]:
            raise LabelDirectoryError(
                f"{storage.describe(layout.LABEL_DIRECTORY_POINTER)} is damaged (it gives top_bytes "
                f"{pointer['top_bytes']:,} but holds a top of {len(top):,}): {_fix(storage.describe(''))}"
            )
        directory = LabelDirectory(storage, where[0], pointer["size"], top, where[1], version)
    else:
        directory = LabelDirectory.open(
            storage,
            where[0],
            size=pointer["size"],
            top_bytes=pointer["top_bytes"],
            index=where[1],
            index_version=version,
        )
    if key is None:
        return directory
    IMMUTABLES.drop_other_versions(store_key, version)  # what older indexes needed will not be asked again
    return IMMUTABLES.keep(key, directory, pointer["top_bytes"] + _PAGES_KEPT * directory.page_bytes)


def directory_key(store_key: str, pointer: dict[str, Any]) -> tuple:
    """Where the process keeps the directory ``pointer`` names (``_immutables``), once opened.

    >>> directory_key("s1", {"index_version": "etag7", "build": "b1", "size": 99})
    ('index version', 's1', 'etag7', 'directory', 'b1', 99)
    """
    return version_key(store_key, pointer["index_version"], "directory", pointer["build"], pointer["size"])


def kept_directory(store_key: str, pointer: dict[str, Any]) -> LabelDirectory | None:
    """The directory ``pointer`` names if this process opened it and still keeps it, else None (nothing is read)."""
    return IMMUTABLES.get(directory_key(store_key, pointer))


def recorded_build(con: duckdb.DuckDBPyConnection, catalog: str) -> str | None:
    """The build the unified index attached as ``catalog`` names as its own, None in an older index."""
    (present,) = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = 'label_directory'", [catalog]
    ).fetchone()
    if not present:
        return None
    row = con.execute(f"SELECT build FROM {catalog}.label_directory").fetchone()
    return None if row is None else row[0]
