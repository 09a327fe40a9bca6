"""Label queries on stores of this library: the index says which rows of which files hold a label.

A new Query finds points through the store's label directory
(``label_directory.py``: a few ranged reads, nothing downloaded whole) and
fetches the unified index only when something else needs it (SQL, labels,
blocks, summaries): the copy of it published with that directory, so the
Query reads one version of the store throughout, and the directory keeps
finding points (~10 µs a label, DuckDB ~0.3 ms) once the index is attached;
only ``blocks=`` and box queries ask the index. A store without a directory
to trust is read through its index from the start. Opening asks the
manifest, the directory's pointer and the index's version at once
(``_opening.py``); what that index version never changes (directory pages,
file footers, the manifest) the process keeps for the next Query
(``_immutables.py``); on a bucket, a new Query starts from the index the
process saw last without a request and checks it with its first verb, whose
first reads (``get_points``: the label's directory pages) go out in the same
round trip (``_confirm``; the gate holds every call until that check is done,
and a newer index in force makes it open the store anew). The index is attached
read-only to the process's shared database (``index.AttachedIndex``), which
makes that cheap too; only our own statements run there. Users' SQL
(``Query.sql``, ``db_connection``) runs on the process's locked-down
connection to that index file (``_sql.sandboxed``), opened on first use, with
every statement parsed so that only SELECTs over the index tables pass. Point
rows are read with pyarrow through ``pointfile.PointFiles``, never scanning
files or row groups that do not hold the label.

One Query serves many threads: its DuckDB cursor and its caches are one
thread's at a time (locks), while point files are read in parallel; ``close()``
waits for the calls in progress (``_gate``). If ``collect_garbage`` removes
what an open Query reads (after a newer consolidation or compaction), the Query
says so with ``StoreChangedError`` rather than calling the store damaged.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from . import layout
from ._gate import Gate, Reads, gated, gated_iterator, gated_reading
from ._opening import Opening, open_for_reading, remembered_opening
from ._sql import SandboxedIndex, sandboxed
from ._timing import Timing
from .arguments import OUTPUTS, one_of, positive_int, reader_settings, sample_and_seed
from .box import Box
from .config import StorageConfig
from .errors import (
    DamagedStoreError,
    DataFileError,
    InvalidArgumentError,
    InvalidBlockIdError,
    PocaduckError,
    StoreChangedError,
    StoreNotConsolidatedError,
    StoreNotFoundError,
)
from .index import AttachedIndex, compaction_record, file_locations
from .keys import check_block_id, check_label, check_labels_asked
from .label_directory import open_in_force
from .pointfile import PointFiles
from .reader import Output, Reader
from .replacement import replaced_blocks_summary
from .sampling import pool_size, sample_rows
from .store import Store, open_store

_STORED_RUNS_KEPT = 100_000  # labels whose place in the sample order a Query remembers (~150 bytes each)
_CATALOG = "store_index"  # the unified index's name in the users' SQL connection


def _opened(store: object) -> Store:
    if not isinstance(store, Store | StorageConfig | str | os.PathLike):
        raise InvalidArgumentError(
            f"Query expects a store path, a URL, a StorageConfig or a Store, got {type(store).__name__} {store!r}"
        )
    return open_store(store)


_RUN_TYPES = {"label": np.uint64, "file_id": np.int64, "row_offset": np.int64, "point_count": np.int64, "inside": bool}


def _sorted_runs(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``point_index`` rows as fetched, typed and sorted by label, file and offset: the order reads coalesce in.

    Sorting a label's few rows here costs microseconds; an ORDER BY costs DuckDB a quarter millisecond.
    """
    order = np.lexsort((rows["row_offset"], rows["file_id"], rows["label"]))
    return {name: np.asarray(column[order]).astype(_RUN_TYPES[name]) for name, column in rows.items()}


def _no_rows() -> dict[str, np.ndarray]:
    return {name: np.empty(0, kind) for name, kind in _RUN_TYPES.items() if name != "inside"}


def _extents(runs: dict[str, np.ndarray]) -> list[tuple[int, int, int, int, int, int]]:
    """Per label of label-sorted runs: label, first and last file, first row, end row and rows in all.

    >>> _extents({"label": np.array([5, 5, 6]), "file_id": np.array([0, 0, 1]), "row_offset": np.array([0, 4, 9]),
    ...           "point_count": np.array([4, 2, 1])})
    [(5, 0, 0, 0, 6, 6), (6, 1, 1, 9, 10, 1)]
    """
    labels = runs["label"]
    if not len(labels):
        return []
    starts = np.flatnonzero(np.concatenate([[True], labels[1:] != labels[:-1]]))
    columns = (
        labels[starts],
        np.minimum.reduceat(runs["file_id"], starts),
        np.maximum.reduceat(runs["file_id"], starts),
        np.minimum.reduceat(runs["row_offset"], starts),
        np.maximum.reduceat(runs["row_offset"] + runs["point_count"], starts),
        np.add.reduceat(runs["point_count"], starts),
    )
    return list(zip(*(column.tolist() for column in columns), strict=True))


def _picked(rows: dict[str, np.ndarray], points: np.ndarray, sample: int, seed: int | None) -> np.ndarray:
    """Positions, in the ``points`` read for ``rows`` (label-sorted), of each label's sample.

    A stored pool holds the label's rows with the smallest keys, so it gives the same sample as the whole label.
    """
    bounds = np.concatenate([[0], np.cumsum(rows["point_count"])])
    labels = np.unique(rows["label"])
    starts = bounds[np.searchsorted(rows["label"], labels, "left")]
    stops = bounds[np.searchsorted(rows["label"], labels, "right")]
    picks = [
        start + sample_rows(points[start:stop], label, sample, seed)
        for label, start, stop in zip(labels.tolist(), starts.tolist(), stops.tolist(), strict=True)
    ]
    return np.concatenate(picks) if picks else np.empty(0, np.int64)


def _by_label(
    labels: list[int], run_labels: np.ndarray, run_counts: np.ndarray, points: np.ndarray
) -> dict[int, np.ndarray]:
    """``{label: its points}`` for every label asked, given the points as label-sorted runs of ``run_counts`` each.

    Each label's points are a slice of ``points`` found from its runs: no per-point labels, no sort.

    >>> _by_label([7, 3, 9], np.array([3, 7], np.uint64), np.array([2, 1]), np.arange(3)[:, None])
    {7: array([[2]]), 3: array([[0],
           [1]]), 9: array([], shape=(0, 1), dtype=int64)}
    """
    ends = np.zeros(len(run_counts) + 1, dtype=np.int64)
    np.cumsum(run_counts, out=ends[1:])
    asked = np.array(labels, dtype=np.uint64)
    starts, stops = ends[np.searchsorted(run_labels, asked, "left")], ends[np.searchsorted(run_labels, asked, "right")]
    return {label: points[s:e] for label, s, e in zip(labels, starts.tolist(), stops.tolist(), strict=True)}


def _greedy_batches(counts: np.ndarray, batch_size: int) -> np.ndarray:
    """The batch of each label, in order: a batch takes labels while their points fit ``batch_size``.

    A label larger than ``batch_size`` makes a batch of its own; a label without points joins the batch before.

    >>> _greedy_batches(np.array([3, 1, 5, 9, 0, 2]), 6).tolist()
    [0, 0, 1, 2, 2, 3]
    """
    batches = np.empty(len(counts), dtype=np.int64)
    batch, held = 0, 0
    for position, count in enumerate(counts.tolist()):
        if count and held and held + count > batch_size:
            batch, held = batch + 1, 0
        batches[position] = batch
        held += count
    return batches


class Query(Reader):
    """Read points and summaries of labels from a consolidated store.

    ``Query(path)`` on a store written by the original pocaduck 0.1.x gives a
    ``LegacyQuery``, the :class:`~pocaduck.reader.Reader` for that layout;
    ``Query(path, mapping=name)`` gives a ``MappedQuery`` whose labels are the
    bodies of that mapping version (``pocaduck.write_mapping``).

    >>> import tempfile
    >>> from pocaduck import Ingestor
    >>> store = tempfile.mkdtemp()
    >>> with Ingestor(store, worker_id=0) as ingestor:
    ...     ingestor.write(5, "b0", np.array([[1.5, 2.0, 3.0]]))
    ...     ingestor.write(5, "b1", np.array([[4.0, 5.0, 6.25]]))
    >>> _ = Ingestor.consolidate_indexes(store)
    >>> with Query(store) as query:
    ...     query.get_points(5).tolist(), query.get_blocks_for_label(5), query.get_point_count(5)
    ([[1.5, 2.0, 3.0], [4.0, 5.0, 6.25]], ['b0', 'b1'], 2)
    """

    def __new__(cls, storage_config: Store | StorageConfig | str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        store = _opened(storage_config)
        if cls is Query and kwargs.get("mapping") is not None:
            from .mapping import MappedQuery  # a room below this one: it reads bodies through the Query made here

            mapping = kwargs.pop("mapping")
            return MappedQuery(store, Query(store, *args, **kwargs), mapping)
        # On a bucket, a process that opened this store before starts from what it found then, and the first
        # verb checks it in the round trip of its own first reads (``_confirm``); else one round trip now:
        # manifest, pointer and index version at once.
        remembered = remembered_opening(store) if store.storage.concurrent else None
        store, opening = remembered or (store, open_for_reading(store))
        if cls is Query and store.kind == "original":
            from .legacy import LegacyQuery

            return LegacyQuery(store, *args, **kwargs)
        query = super().__new__(cls)
        query._store, query._opening = store, opening  # opened once: __init__ takes them from here
        query._remembered = None if remembered is None else opening  # what the first verb checks is still so
        return query

    def __init__(
        self,
        storage_config: Store | StorageConfig | str | os.PathLike,
        index_path: str | None = None,
        threads: int | None = None,
        cache_size: int = 10,
        *,
        verify_checksums: bool = True,
        mapping: None = None,
    ):
        # With mapping=name, __new__ returned a MappedQuery, which reads bodies: this Query reads stored labels.
        self.threads, self.cache_size = reader_settings(threads, cache_size)
        self.storage_config = self._store.config
        self._storage = self._store.storage
        self._index: AttachedIndex | None = None
        self._sandbox: SandboxedIndex | None = None
        self._gate = Gate(None if self._remembered is None else self._confirm)
        self._index_lock = threading.RLock()  # the index cursor runs one statement at a time; opening it is once
        self._cache_lock = threading.Lock()
        self._opened_version: str | None = None  # the unified index's version as this Query opened it
        self._points_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        # Off only to measure what verifying Parquet page checksums costs: a damaged page then reads as wrong points.
        self._verify_checksums = verify_checksums
        self._stored_runs: dict[int, tuple[int, int, int] | None] = {}
        self.using_optimized_data = False
        self._given_index_path = index_path
        self._open(self._opening)

    def _open(self, opening: Opening) -> None:
        """Read the store as ``opening`` found it: its schema, then its directory and files, or its index."""
        store, index_path = self._store, self._given_index_path
        self._opening, self._opened_version = opening, None
        self.schema = store.schema
        if self.schema is None and not self._storage.root_exists():
            raise StoreNotFoundError(f"no store at {store.path}: the path does not exist")
        # Points are found through the label directory, a few ranged reads, while nothing else needs the index:
        # on a bucket that spares downloading it whole. Without a directory to trust, the index serves from the start.
        self._directory = (
            open_in_force(self._storage, opening.fetched, store_key=opening.store_key)
            if index_path is None and self.schema is not None
            else None
        )
        if self._directory is not None:
            self._opened_version = self._directory.index_version
        elif index_path is None:
            self._opened_version = opening.index_version
        self._index_path = index_path
        if index_path is None and self._directory is None:
            self._index_path = self._fetch_index()  # refuses a store never consolidated, saying what to do
        if self.schema is None:
            raise StoreNotFoundError(f"{store.path} has no manifest ({layout.MANIFEST})")
        if self._directory is None:
            self._attach_index()
        else:
            self._points = self._point_files(self._directory.files)

    def _confirm(self, first_reads: Reads | None) -> None:
        """The gate's opening step of a Query started from what the process remembered: ask which index is in
        force, with ``first_reads`` (the first verb's) in the same round trip; if it is no longer the one this
        Query started from, drop all of that and open the store as it is now, as a cold Query would."""
        store = Store(self.storage_config, self._storage)  # knows the schema only if that index is still in force
        opening = open_for_reading(store, () if first_reads is None else (first_reads,))
        if opening.fetched == self._remembered.fetched:
            return
        with self._index_lock, self._cache_lock:  # nobody reads yet (the gate holds them), but close() may come
            if hasattr(self, "_points"):
                self._points.close()
            self._points_cache.clear()
            self._stored_runs.clear()
            self._directory = None
        self._store = store
        self._open(opening)  # if this fails, the next call tries again from the start

    def _first_reads(self, label: int | Iterable[int], *args: Any, **kwargs: Any) -> None:
        """What ``get_points``, ``get_point_count`` and ``iter_points`` read first: the directory pages holding
        ``label`` (kept for the lookup to come)."""
        if self._directory is not None and kwargs.get("blocks") is None:
            self._directory.lookup(check_labels_asked(label)[0])

    @property
    def index_path(self) -> str:
        """The unified index on local disk; on a bucket it is downloaded when first needed (SQL, labels, blocks, info)."""
        if self._gate.opening:  # started from the process's memory: which index is in force is checked first
            with self._gate.passing():
                pass
        return self._index_file()

    def _index_file(self) -> str:
        with self._index_lock:
            if self._index_path is None:
                self._index_path = self._fetch_index()
            return self._index_path

    def _fetch_index(self) -> str:
        directory = self._directory
        if directory is not None and directory.index is not None:
            try:  # the index the directory was built from, as it was published: what this Query opened
                return self._storage.local_copy(directory.index)
            except FileNotFoundError as error:
                raise self._changed(f"the index it opened, {self._storage.describe(directory.index)}, was") from error
        if self._opened_version is None:
            self._opened_version = self._storage.version(layout.UNIFIED_INDEX)
        if not self._storage.exists(layout.UNIFIED_INDEX):
            path = self.storage_config.base_path
            if self.schema is None and not self._storage.listdir(layout.WORKERS):
                raise StoreNotFoundError(f"{path} holds no pocaduck store")
            raise StoreNotConsolidatedError(
                f"{path} has not been consolidated yet: run "
                f"Ingestor.consolidate_indexes(config) or `pocaduck consolidate STORE` after the workers finish"
            )
        return self._storage.local_copy(layout.UNIFIED_INDEX)

    def _changed(self, what: str) -> StoreChangedError:
        return StoreChangedError(
            f"the store changed since this Query opened it: {what} removed by collect_garbage after a newer "
            f"consolidation or compaction; open a new Query to read {self.storage_config.base_path} as it is now"
        )

    def _explained(self, error: PocaduckError) -> PocaduckError:
        """A file gone from under this Query is no damage when the store has moved on to a newer index since."""
        if not isinstance(error, DamagedStoreError | DataFileError) or self._opened_version is None:
            return error
        try:
            moved_on = self._storage.version(layout.UNIFIED_INDEX) != self._opened_version
        except (PocaduckError, OSError):
            return error  # the store cannot be asked now: the error as it was says more
        return self._changed("files it reads were") if moved_on else error

    def _attach_index(self) -> None:
        with self._index_lock, self._index_read():
            self._index = AttachedIndex(self._index_file())
            if self._directory is None:
                self._points = self._point_files(file_locations(self._index.cursor))

    def _point_files(self, files: dict[int, tuple[str, int, int]]) -> PointFiles:
        """The files of the index version this Query opened; their opened footers are shared with later Queries."""
        version = self._opened_version
        shared = None if version is None else (self._opening.store_key, version)
        return PointFiles(self._storage, self.schema, files, verify_checksums=self._verify_checksums, shared=shared)

    @property
    def db_connection(self) -> duckdb.DuckDBPyConnection:
        """A cursor on the index without file access, where users' SQL runs (the connection opens on first use).

        Each access gives a new cursor; every Query of the same index in the process shares its connection.
        """
        with self._gate.passing():
            cursor = self._sandboxed().cursor()
            cursor.execute(f"USE {_CATALOG}").fetchall()
            return cursor

    def _sql_connection(self) -> duckdb.DuckDBPyConnection:
        return self._sandboxed().cursor()

    def _sandboxed(self) -> SandboxedIndex:
        with self._index_lock:
            if self._sandbox is None:
                with self._index_read():
                    try:
                        self._sandbox = sandboxed(self._index_file(), _CATALOG, self.threads)
                    except FileNotFoundError as error:
                        raise DamagedStoreError(
                            f"the index {self._index_file()} is missing; rebuild it with "
                            f"`pocaduck consolidate {self.storage_config.base_path}`"
                        ) from error
            return self._sandbox

    _catalog = _CATALOG

    @property
    def _tables(self) -> frozenset[str]:
        return self._sandboxed().tables

    @contextmanager
    def _index_read(self) -> Iterator[None]:
        """Turn DuckDB's read errors on the index file into one that says how to rebuild it."""
        try:
            yield
        except (duckdb.IOException, duckdb.SerializationException) as error:
            raise DamagedStoreError(
                f"the index {self._index_path or self._storage.describe(layout.UNIFIED_INDEX)} is damaged or "
                f"truncated ({error}); rebuild it with "
                f"`pocaduck consolidate {self.storage_config.base_path}`"
            ) from error

    def close(self) -> None:
        """Release the index, open files and the cache, once the calls in progress (other threads') have ended."""
        if not self._gate.shut():
            return
        with self._index_lock, self._cache_lock:
            self._directory = None
            self._points_cache.clear()
            self._stored_runs.clear()
            if hasattr(self, "_points"):
                self._points.close()
            if self._index is not None:
                self._index.close()
                self._index = None
            self._sandbox = None  # the process's connection to the index closes once no Query holds it

    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The index's cursor, this thread's alone until the block ends (attached on first use)."""
        with self._index_lock, self._index_read():
            if self._index is None:
                self._attach_index()
            yield self._index.cursor

    # -- label lookups ---------------------------------------------------

    @gated
    def get_labels(self) -> np.ndarray:
        """All labels in the store, sorted, as uint64."""
        with self._cursor() as cursor:
            labels = cursor.execute("SELECT label FROM labels ORDER BY label").fetchnumpy()["label"]
        return labels.astype(np.uint64)

    @gated_reading(_first_reads)
    def get_point_count(self, label: int, timing: bool = False) -> int | tuple[int, dict]:
        """Number of points stored for ``label`` (0 when unknown)."""
        clock = Timing(label=check_label(label))
        with clock.phase("index_lookup_time"):
            if self._directory is not None:
                return clock.finish(self._directory.point_count(clock["label"]), timing)
            with self._cursor() as cursor:
                row = cursor.execute(
                    "SELECT point_count FROM labels WHERE label = ?::UBIGINT", [clock["label"]]
                ).fetchone()
        return clock.finish(int(row[0]) if row else 0, timing)

    @gated
    def get_blocks_for_label(self, label: int, timing: bool = False) -> list | tuple[list, dict]:
        """Sorted ids of the blocks holding ``label``'s points."""
        clock = Timing(label=check_label(label))
        with clock.phase("index_lookup_time"), self._cursor() as cursor:
            rows = cursor.execute(
                "SELECT DISTINCT block_id FROM point_index WHERE label = ?::UBIGINT ORDER BY block_id",
                [clock["label"]],
            ).fetchall()
        blocks = [block_id for (block_id,) in rows]
        clock["blocks_found"] = len(blocks)
        return clock.finish(blocks, timing)

    # -- points ----------------------------------------------------------

    @gated_reading(_first_reads)
    def get_points(
        self,
        label: int | Iterable[int],
        use_cache: bool = True,
        timing: bool = False,
        *,
        blocks: Sequence[str | int] | str | int | None = None,
        output: Output = "numpy",
        sample: int | None = None,
        seed: int | None = None,
    ) -> Any:
        """All points of a label, assembled across every block, as an (N, D) array.

        Give several labels to get them in one call: a dict ``{label: array}``
        for numpy output, or one table with a ``label`` column for ``"arrow"``
        and ``"pandas"``; a 0-d integer array is one label. Thousands of labels
        in one call read each file once, several times faster than one call
        each (see ``docs/benchmarks.md``). ``blocks`` restricts
        the result to those blocks (a single id is one block) and must match the
        store's block id type. An unknown label gives an empty (0, D) array.

        ``sample=N`` returns ``min(N, count)`` of the label's points instead, drawn
        uniformly without replacement: the rows with the smallest keys of a hash
        of their values, in key order, so a function of the label's points and
        ``seed`` alone, the same on every call, process and machine, before and
        after any compaction (see ``sampling``). ``seed=None`` gives the label's
        own sample: on a compacted store one range read of at most 4N rows. An
        integer ``seed`` gives an independent sample per seed, drawn from the
        whole label, which is read.

        Example: ``query.get_points([5, 6], output="pandas")``, ``query.get_points(5, sample=1024)``.
        """
        one_of(output, "output", OUTPUTS)
        sample, seed = sample_and_seed(sample, seed)
        labels, single = check_labels_asked(label)
        blocks = None if blocks is None else self._block_ids(blocks)
        clock = Timing(label=labels[0] if single else labels, cache_hit=False, files_queried=0, points_returned=0)
        clock["using_optimized_data"] = self.using_optimized_data
        cacheable = (
            single and use_cache and self.cache_size > 0 and blocks is None and output == "numpy" and sample is None
        )
        cached = self._cached(labels[0]) if cacheable else None
        if cached is not None:
            clock.update(cache_hit=True, points_returned=len(cached))
            return clock.finish(cached, timing)

        with clock.phase("index_lookup_time"):
            rows = self._lookup(labels, blocks) if sample is None else self._sample_runs(labels, blocks, sample, seed)
        with clock.phase("data_read_time"):
            points = self._points.read_rows(rows["file_id"], rows["row_offset"], rows["point_count"])
        files = rows["file_id"]
        clock.update(files_queried=len(np.unique(files)) if len(files) > 1 else len(files), points_returned=len(points))
        returned = rows["point_count"]  # the points returned of each run, as the runs give them: sorted by label
        if sample is not None:  # only the points kept: a whole-label read may hold millions
            kept = _picked(rows, points, sample, seed)  # grouped by label, in label order
            points = points[kept]
            returned = np.bincount(
                np.searchsorted(np.cumsum(rows["point_count"]), kept, "right"), minlength=len(returned)
            )
            clock["points_returned"] = len(points)
        result = self._shape_result(labels, single, rows["label"], returned, points, output)
        if cacheable:
            self._remember(labels[0], result)
        return clock.finish(result, timing)

    def _block_ids(self, blocks: Sequence[str | int] | str | int) -> list[str | int]:
        """Block ids as a list, refused when they cannot match: a block of the wrong type would select nothing."""
        if isinstance(blocks, str | int | np.integer):
            blocks = [blocks]
        elif not isinstance(blocks, Iterable):
            raise InvalidBlockIdError(f"blocks must be a block id or a list of them, got {type(blocks).__name__}")
        wanted = self.schema.block_id_type
        checked = []
        for block in blocks:
            block, kind = check_block_id(block)
            if kind != wanted:
                raise InvalidBlockIdError(
                    f"this store's block ids are {'strings' if wanted == 'string' else 'int64 integers'}, "
                    f"but blocks holds {block!r}"
                )
            checked.append(block)
        return checked

    def _lookup(self, labels: list[int], blocks: list[str | int] | None) -> dict[str, np.ndarray]:
        if self._directory is not None and blocks is None:
            # The directory is published with the index this Query reads: the same rows, found in ~10 µs where
            # DuckDB takes ~0.3 ms, even once SQL, labels or blocks have attached the index. Blocks need the index.
            directory = self._directory
            return self._points.alongside(lambda: directory.lookup(labels))
        # The explicit UBIGINT casts let DuckDB prune by the label zone maps; an untyped
        # parameter is compared after a cast and scans the whole table (76 ms vs 0.4 ms on 10M rows).
        if len(labels) == 1:
            sql = "SELECT label, file_id, row_offset, point_count FROM point_index WHERE label = ?::UBIGINT"
            params: list[Any] = [labels[0]]
        else:
            sql = "SELECT label, file_id, row_offset, point_count FROM point_index WHERE label = ANY(?::UBIGINT[])"
            params = [labels]
        if blocks is not None:
            block_type = "VARCHAR" if self.schema.block_id_type == "string" else "BIGINT"
            sql += f" AND block_id = ANY(?::{block_type}[])"
            params.append(blocks)
        with self._cursor() as cursor:
            return _sorted_runs(cursor.execute(sql, params).fetchnumpy())

    def _sample_runs(
        self, labels: list[int], blocks: list[str | int] | None, sample: int, seed: int | None
    ) -> dict[str, np.ndarray]:
        """The row runs a sample reads, sorted by label.

        A label stored in the sample order (one contiguous run in a compacted
        file) reads only its shortest level prefix holding ``sample`` rows when
        no seed and no blocks are asked; any other reads its whole rows.
        """
        pools = {} if seed is not None or blocks is not None else self._stored_pools(labels, sample)
        rest = [label for label in labels if label not in pools]
        rows = self._lookup(rest, blocks) if rest else _no_rows()
        if pools:
            stored = np.array(list(pools.values()), dtype=np.int64).reshape(-1, 3)
            pooled = {
                "label": np.array(list(pools), dtype=np.uint64),
                "file_id": stored[:, 0],
                "row_offset": stored[:, 1],
                "point_count": stored[:, 2],
            }
            rows = _sorted_runs({name: np.concatenate([rows[name], pooled[name]]) for name in rows})
        return rows

    def _stored_pools(self, labels: list[int], sample: int) -> dict[int, tuple[int, int, int]]:
        """``label -> (file_id, first row, rows to read)`` for the labels stored in the sample order."""
        with self._cache_lock:
            known = {label: self._stored_runs[label] for label in labels if label in self._stored_runs}
        unknown = [label for label in labels if label not in known]
        if unknown:
            known.update(self._learn_stored_runs(unknown))
        pools = {}
        for label in labels:
            stored = known[label]
            if stored is not None:
                file_id, start, count = stored
                pools[label] = (file_id, start, pool_size(count, sample))
        return pools

    def _learn_stored_runs(self, labels: list[int]) -> dict[int, tuple[int, int, int] | None]:
        """Remember where each label's rows sit when they are one run of a file in the sample order, else None.

        The index of an open Query never changes, so a label is looked up once:
        a training loop's later epochs skip DuckDB (0.5 ms a label) altogether.
        """
        if self._directory is not None:  # as _lookup: the directory whenever there is one
            extents = _extents(self._directory.lookup(labels))
        else:
            # As in _lookup: one label compares with =, which DuckDB prunes by zone maps (0.5 ms against 1 ms).
            where, param = (
                ("label = ?::UBIGINT", labels[0]) if len(labels) == 1 else ("label = ANY(?::UBIGINT[])", labels)
            )
            with self._cursor() as cursor:
                extents = cursor.execute(
                    "SELECT label, min(file_id), max(file_id), min(row_offset), max(row_offset + point_count), "
                    f"sum(point_count)::BIGINT FROM point_index WHERE {where} GROUP BY label",
                    [param],
                ).fetchall()
        learned: dict[int, tuple[int, int, int] | None] = dict.fromkeys(labels)
        for label, file_id, last_file, start, end, count in extents:
            # Else scattered over files, interleaved with others, or in no order a sample can use: no stored pool.
            if file_id == last_file and end - start == count and self._points.row_order(file_id) is not None:
                learned[int(label)] = (int(file_id), int(start), int(count))
        with self._cache_lock:
            self._stored_runs.update(learned)
            while len(self._stored_runs) > _STORED_RUNS_KEPT:
                del self._stored_runs[next(iter(self._stored_runs))]
        return learned

    @gated_reading(_first_reads)
    def iter_points(
        self,
        label: int | Iterable[int],
        chunk_size: int | None = None,
        *,
        batch_size: int | None = None,
        output: Output = "numpy",
    ) -> Iterator[Any]:
        """Points read as they are needed, in bounded memory: one label in chunks, or many labels in batches.

        One label: consecutive (chunk_size, D) arrays (default 1,000,000 rows, the
        last one shorter) that concatenate to exactly ``get_points(label)``.

        Several labels: batches of whole labels, each what ``get_points`` returns
        for that batch's labels (``{label: array}``, or one table with a ``label``
        column for ``"arrow"`` and ``"pandas"``). Every label asked comes once, in
        the order the store holds them: files are read front to back, so each
        Parquet row group is decoded about once. A batch holds at most
        ``batch_size`` points (default 1,000,000) unless one label alone holds
        more, which then comes alone; unknown labels come last, as empty arrays.

        >>> import tempfile
        >>> from pocaduck import Ingestor, consolidate
        >>> store = tempfile.mkdtemp()
        >>> with Ingestor(store, worker_id=0) as ingestor:
        ...     ingestor.write(5, "b0", np.arange(15).reshape(5, 3))
        ...     ingestor.write(6, "b0", np.arange(6).reshape(2, 3))
        >>> _ = consolidate(store)
        >>> with Query(store) as query:
        ...     [chunk.shape for chunk in query.iter_points(5, chunk_size=2)]
        ...     [list(batch) for batch in query.iter_points([7, 6, 5], batch_size=4)]
        [(2, 3), (2, 3), (1, 3)]
        [[5], [6, 7]]
        """
        one_of(output, "output", OUTPUTS)
        labels, single = check_labels_asked(label)
        if chunk_size is not None:
            chunk_size = positive_int(chunk_size, "chunk_size", "rows per chunk")
        if batch_size is not None:
            batch_size = positive_int(batch_size, "batch_size", "points per batch")
        if single:
            if batch_size is not None or output != "numpy":
                raise InvalidArgumentError(
                    "one label streams as numpy chunks of chunk_size rows: batch_size and output are for a list "
                    "of labels (give [label] to get batches)"
                )
            rows = self._lookup(labels, None)
            chunks = self._points.iter_rows(
                rows["file_id"], rows["row_offset"], rows["point_count"], chunk_size or 1_000_000
            )
            return gated_iterator(self._gate, chunks)
        if chunk_size is not None:
            raise InvalidArgumentError(
                "chunk_size cuts one label into chunks; several labels come in batches of batch_size points"
            )
        asked = list(set(labels))  # a label asked twice comes once
        return gated_iterator(self._gate, self._batches(asked, batch_size or 1_000_000, output))

    def _batches(self, asked: list[int], batch_size: int, output: Output) -> Iterator[Any]:
        rows = self._lookup(asked, None)
        by_value = np.sort(np.array(asked, dtype=np.uint64))
        run_label = np.searchsorted(by_value, rows["label"])  # each run's label, as its rank among those asked
        # Labels in the order the store holds their first rows: each file is read front to back and a Parquet
        # row group decoded about once, where the order asked would decode every group once per batch.
        in_storage_order = np.lexsort((rows["row_offset"], rows["file_id"]))
        first_row = np.full(len(asked), len(rows["label"]), dtype=np.int64)  # unknown labels last
        np.minimum.at(first_row, run_label[in_storage_order], np.arange(len(in_storage_order)))
        label_order = np.argsort(first_row, kind="stable")
        labels = by_value[label_order].tolist()
        position = np.empty(len(asked), dtype=np.int64)
        position[label_order] = np.arange(len(asked))
        rank_of_run = position[run_label]
        counts = np.bincount(rank_of_run, weights=rows["point_count"], minlength=len(labels)).astype(np.int64)
        batch_of_label = _greedy_batches(counts, batch_size)
        batch_of_run = batch_of_label[rank_of_run]
        runs = np.argsort(batch_of_run, kind="stable")  # stays label-sorted within a batch
        run_bounds = np.searchsorted(batch_of_run[runs], np.arange(batch_of_label[-1] + 2 if labels else 1))
        label_bounds = np.searchsorted(batch_of_label, np.arange(len(run_bounds)))
        for batch in range(len(run_bounds) - 1):
            taken = runs[run_bounds[batch] : run_bounds[batch + 1]]
            # Read inside the yield: a name holding the batch would keep it alive while the next one is read.
            yield self._shape_result(
                labels[label_bounds[batch] : label_bounds[batch + 1]],
                False,
                rows["label"][taken],
                rows["point_count"][taken],
                self._points.read_rows(rows["file_id"][taken], rows["row_offset"][taken], rows["point_count"][taken]),
                output,
            )

    # -- space -------------------------------------------------------------

    @gated
    def get_labels_in_box(self, lower: Sequence[float], upper: Sequence[float]) -> np.ndarray:
        """The labels with a point ``p`` in the box ``lower <= p[:3] < upper``, sorted, as uint64.

        The box is half-open like slicing, on the first three columns (x, y, z).
        The index's bounding boxes find the candidate row runs; a run inside the
        box proves its label at no read, the others are read and checked point by
        point.

        >>> import tempfile
        >>> from pocaduck import Ingestor, consolidate
        >>> store = tempfile.mkdtemp()
        >>> with Ingestor(store, worker_id=0) as ingestor:
        ...     ingestor.write(5, "b0", np.array([[0, 0, 0], [9, 9, 9]]))
        ...     ingestor.write(6, "b0", np.array([[4, 4, 4]]))
        >>> _ = consolidate(store)
        >>> with Query(store) as query:
        ...     query.get_labels_in_box((3, 3, 3), (8, 8, 8)).tolist()
        [6]
        """
        box = Box.of(lower, upper, self.schema)
        if box.empty:
            return np.empty(0, dtype=np.uint64)
        runs = self._runs_in_box(box, None)
        proven = np.unique(runs["label"][runs["inside"]])
        unsure = {name: column[~np.isin(runs["label"], proven)] for name, column in runs.items()}
        kept = self._points.count_runs_where(unsure["file_id"], unsure["row_offset"], unsure["point_count"], box.holds)
        return np.union1d(proven, unsure["label"][kept > 0]).astype(np.uint64)

    @gated
    def get_points_in_box(
        self,
        lower: Sequence[float],
        upper: Sequence[float],
        labels: int | Iterable[int] | None = None,
        output: Output = "arrow",
    ) -> Any:
        """Every point ``p`` with ``lower <= p[:3] < upper``: a table with a ``label`` column and the store's columns.

        ``labels`` keeps only those labels. Only the row groups holding a row run
        whose recorded bounding box meets the box are read. ``output="numpy"``
        gives a dict ``{label: (N, D) array}`` (every label asked for, else every
        label found); ``"pandas"`` a DataFrame.

        Example: ``query.get_points_in_box((0, 0, 0), (512, 512, 64), output="pandas")``.
        """
        one_of(output, "output", OUTPUTS)
        box = Box.of(lower, upper, self.schema)
        wanted = None if labels is None else check_labels_asked(labels, "labels")[0]
        runs = self._runs_in_box(box, wanted) if not box.empty else {**_no_rows(), "inside": np.zeros(0, bool)}
        # A run whose bounding box lies inside the box is copied untested; only the others' rows are tested.
        columns, kept = self._points.read_runs_where(
            runs["file_id"], runs["row_offset"], runs["point_count"], box.holds, whole=runs["inside"]
        )
        if output == "numpy":
            found = wanted if wanted is not None else np.unique(runs["label"][kept > 0]).tolist()
            return _by_label(found, runs["label"], kept, np.ascontiguousarray(columns.T))
        table = pa.table(
            [pa.array(np.repeat(runs["label"], kept), pa.uint64()), *columns],  # sorted by label, as runs are
            names=["label", *self.schema.columns],
        )
        return table if output == "arrow" else table.to_pandas()

    def _runs_in_box(self, box: Box, labels: list[int] | None) -> dict[str, np.ndarray]:
        """The ``point_index`` rows whose bounding box meets ``box``, sorted, and whether it lies inside it."""
        meets, meets_params = box.meets_sql()
        inside, inside_params = box.inside_sql()
        sql = f"SELECT label, file_id, row_offset, point_count, {inside} AS inside FROM point_index WHERE {meets}"
        params = [*inside_params, *meets_params]
        if labels is not None:
            sql += " AND label = ANY(?::UBIGINT[])"
            params.append(labels)
        with self._cursor() as cursor:
            return _sorted_runs(cursor.execute(sql, params).fetchnumpy())

    @gated
    def read_rows(self, file_ids: np.ndarray, offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Gather row ranges of the store's files, as ``point_index`` rows name them, into one (N, D) array.

        Example::

            rows = query.sql("SELECT file_id, row_offset, point_count FROM point_index WHERE block_id = '3_1_4'",
                             output="numpy")
            points = query.read_rows(rows["file_id"], rows["row_offset"], rows["point_count"])
        """
        return self._points.read_rows(file_ids, offsets, counts)

    def _shape_result(
        self,
        labels: list[int],
        single: bool,
        run_labels: np.ndarray,
        run_counts: np.ndarray,
        points: np.ndarray,
        output: Output,
    ) -> Any:
        """The result as ``output`` asks, from the points of label-sorted runs of ``run_counts`` points each."""
        if output == "numpy":
            return points if single else _by_label(labels, run_labels, run_counts, points)
        table = pa.table(list(points.T), names=list(self.schema.columns))
        if not single:
            table = table.add_column(0, "label", pa.array(np.repeat(run_labels, run_counts), pa.uint64()))
        return table if output == "arrow" else table.to_pandas()

    def _cached(self, label: int) -> np.ndarray | None:
        """A copy of ``label``'s points if a recent call kept them: callers may change what they get."""
        with self._cache_lock:
            points = self._points_cache.get(label)
            if points is None:
                return None
            self._points_cache.move_to_end(label)
        return points.copy()

    def _remember(self, label: int, points: np.ndarray) -> None:
        kept = points.copy()
        with self._cache_lock:
            self._points_cache[label] = kept
            while len(self._points_cache) > self.cache_size:
                self._points_cache.popitem(last=False)

    # -- summaries ----------------------------------------------------------

    @gated
    def info(self) -> dict[str, Any]:
        """Store-wide totals: labels, points, index rows, files, bytes, workers, replaced blocks and the schema.

        ``replaced_blocks`` counts the blocks whose re-scan is in force, ``last_replaced_at``
        is the latest one's time (ISO 8601, UTC) or None.
        """
        with self._cursor() as cursor:
            (labels, points) = cursor.execute("SELECT count(*), coalesce(sum(point_count), 0) FROM labels").fetchone()
            (files, stored_bytes) = cursor.execute("SELECT count(*), coalesce(sum(byte_size), 0) FROM files").fetchone()
            (index_rows,) = cursor.execute("SELECT count(*) FROM point_index").fetchone()
            (workers,) = cursor.execute("SELECT count(*) FROM workers").fetchone()
            replaced, last_replaced = replaced_blocks_summary(cursor)
            (database,) = cursor.execute("SELECT current_database()").fetchone()
            compaction = compaction_record(cursor, database)
        return {
            "store": self.storage_config.base_path,
            "labels": labels,
            "points": int(points),
            "index_rows": index_rows,
            "files": files,
            "bytes": int(stored_bytes),
            "workers": workers,
            "replaced_blocks": replaced,
            "last_replaced_at": last_replaced,
            "columns": list(self.schema.columns),
            "dtype": self.schema.dtype.name,
            "block_id_type": self.schema.block_id_type,
            "compaction": compaction,
        }
