"""Merge the finalized worker indexes into one unified index, set-based and atomic.

The unified index is rebuilt from scratch from every finalized worker session,
so running consolidation twice gives the same index, and running it again after
more workers finish simply includes them. It is built under a temporary name
and published with one atomic compare-and-swap: readers see the old index or
the new, and of overlapping consolidations the one that read the workers last
wins (see :class:`UnifiedIndexBuild`).

Each published index is also kept as an *index version* named after its
build, ``index_versions/<build>/``: the index itself (a hard link on disk, a
server-side copy on a bucket, so it is uploaded once) and its label directory
(``label_directory.py``). Both are stored once the index
is in force, then ``label_directory.json`` names the build with the version of
``unified_index.duckdb`` it was published as. Readers on a bucket find a label
with a few ranged reads of the directory, fetch the version's index only if
they need SQL, and trust either only while that version is the one in force.

A compacted store stays compacted: the sessions a compaction generation covers
are served from its files, and only newer sessions are added beside them. If a
covered worker has been re-run since, the generation no longer matches the
workers and the index is rebuilt from the sessions alone (compact again).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import duckdb

from . import layout
from ._timing import logged_phase
from .arguments import flag, non_negative_int, optional_positive_int
from .config import StorageConfig
from .errors import (
    DamagedStoreError,
    EmptyStoreError,
    IndexConflictError,
    PocaduckError,
    StoreNotFoundError,
    StoreWriteError,
    WorkerNotFinalizedError,
)
from .executor import worker_count
from .index import (
    attach_read_only,
    create_point_cloud_view,
    create_summary_tables,
    create_worker_tables,
    union_all,
)
from .label_directory import DirectoryFile, pointer_bytes, write_label_directory
from .progress import Progress, check_progress
from .range_merge import RangeMerge, assemble_ranges, merge_label_ranges, range_parts
from .replacement import create_replaced_table, find_replacements, source_rows_sql
from .storage import Storage, file_lock
from .store import Store, open_store

logger = logging.getLogger("pocaduck")


def consolidate(
    storage_config: Store | StorageConfig | str | os.PathLike,
    output_path: str | None = None,
    *,
    ignore_unfinalized: bool = False,
    from_sessions: bool = False,
    workers: int | None = None,
    client: Any = None,
    progress: Progress = "auto",
    retries: int = 0,
) -> str:
    """Build the unified index over every finalized worker and return its location.

    Workers that have not finalized make it fail, naming them, unless
    ``ignore_unfinalized`` is set: then their last finalized run (if any) is used,
    even when a later run of that worker crashed. Consolidations may overlap: an
    older view never replaces a newer one. ``from_sessions=True`` leaves the
    compaction in force aside and indexes the workers' own files again: the repair
    for a damaged compacted file (compact again afterwards).

    By default the worker indexes are merged in one DuckDB statement, which
    sorts on every core of this machine. Given ``workers`` or a
    ``dask.distributed.Client``, the label space is cut into ranges instead and
    each range of every worker index is merged as a task of its own, in
    ``workers`` threads here or on the cluster (a range that fails runs again
    up to ``retries`` times; ``progress`` receives an event per range, drawn as
    bars by default in a notebook, see :func:`~pocaduck.compact`); the
    index is then assembled from the sorted ranges without a global sort. Both
    give the same index. The ranges are written into the store and read back
    from it, so Dask workers need only reach the store, as the other verbs ask:
    a bucket, or a filesystem every node mounts. See
    ``bench/bench_consolidate.py`` for which is faster where.

    >>> import tempfile, numpy as np
    >>> from pocaduck import Ingestor
    >>> store = tempfile.mkdtemp()
    >>> with Ingestor(store, worker_id="a") as ingestor:
    ...     ingestor.write(7, "block-0", np.zeros((2, 3), np.int32))
    >>> consolidate(store) == consolidate(store, workers=2)
    True
    """
    workers = optional_positive_int(workers, "workers", "label ranges merged at once; None merges in one statement")
    retries = non_negative_int(retries, "retries")
    progress = check_progress(progress)
    ignore_unfinalized = flag(ignore_unfinalized, "ignore_unfinalized")
    from_sessions = flag(from_sessions, "from_sessions")
    store = open_store(storage_config)
    if not store.storage.root_exists():
        raise StoreNotFoundError(f"no store at {store.path}")

    def sources() -> tuple[layout.Schema, dict[str, str], str | None]:
        schema = store.schema
        finalized, unfinished = store.worker_states()
        if unfinished and not ignore_unfinalized:
            listing = "; ".join(f"worker {w!r}: {why}" for w, why in unfinished.items())
            raise WorkerNotFinalizedError(
                f"cannot consolidate {store.path}: {listing}. Finish or re-run those workers, or pass "
                f"ignore_unfinalized=True (CLI: --ignore-unfinalized) to consolidate the others"
            )
        if unfinished:
            logger.warning("consolidating without unfinished workers: %s", ", ".join(unfinished))
        if schema is None or not finalized:
            raise EmptyStoreError(f"{store.path} has no finalized worker data to consolidate")
        return schema, finalized, None if from_sessions else _generation_to_keep(store)

    split = None
    if workers is not None or client is not None:
        split = RangeMerge(worker_count(workers), client, progress, retries)
    return publish_unified_index(store, sources, output_path, split)


def _generation_to_keep(store: Store) -> str | None:
    """The compaction in force, which consolidation keeps serving; None when the index naming it is damaged."""
    try:
        return store.compaction_in_force()
    except DamagedStoreError as error:
        logger.warning("%s; rebuilding it from the workers' sessions (compact again afterwards)", error)
        return None


def _covered_sessions(storage: Storage, generation: str) -> dict[str, str]:
    """Worker → session for every session whose points a compaction generation holds."""
    with duckdb.connect(storage.local_copy(layout.compaction_index(generation)), read_only=True) as con:
        return dict(con.execute("SELECT worker_id, session_id FROM workers").fetchall())


Sources = Callable[[], tuple[layout.Schema, dict[str, str], str | None]]
_PUBLISH_ATTEMPTS = 5


def publish_unified_index(
    store: Store, sources: Sources, output_path: str | None = None, split: RangeMerge | None = None
) -> str:
    """Build the unified index from ``sources()`` and publish it unless a newer one appeared meanwhile.

    ``sources`` returns the schema, the finalized sessions and the compaction
    generation to serve (``consolidate`` passes the one in force, compaction its
    new one). It is called again when another consolidation published first
    with less than this one holds, so the retry sees the workers as they are now.

    Example::

        publish_unified_index(store, lambda: (schema, {"worker-0": "20260101T000000-abc"}, None))
        # -> '/data/store/unified_index.duckdb'
    """
    storage = store.storage
    with write_failures_reported(storage, "consolidation"):
        for _ in range(_PUBLISH_ATTEMPTS):
            with UnifiedIndexBuild(store, output_path, split) as build:
                build.fill(*sources())
                if build.publish():
                    return output_path or storage.describe(layout.UNIFIED_INDEX)
            logger.info("the unified index changed while it was rebuilt, without this run's workers: building again")
    raise IndexConflictError(
        f"the unified index of {storage.describe('')} was replaced {_PUBLISH_ATTEMPTS} times while this run "
        f"rebuilt it: other consolidations keep running. Run it again once they are done"
    )


class UnifiedIndexBuild:
    """One attempt at a new unified index: ``fill`` it, then ``publish`` it (a compare-and-swap).

    It remembers the version of the published index it started from, before
    reading any worker state, and publishing replaces only that version: an
    older view can never replace a newer one. It is built under a temporary
    name beside the destination, with a lock held while the build lives, so
    ``collect_garbage`` removes the file of a killed build and never a live one.

    Example::

        with UnifiedIndexBuild(store) as build:
            build.fill(schema, {"worker-0": "20260101T000000-abc"}, None)
            build.publish()  # False: another run published an index without worker-0's session meanwhile
    """

    def __init__(self, store: Store, output_path: str | None = None, split: RangeMerge | None = None):
        self.store, self.storage, self.output_path, self.split = store, store.storage, output_path, split
        # Beside the destination so the final rename stays on one filesystem.
        folder = os.path.dirname(os.path.abspath(output_path)) if output_path else self.storage.staging_dir("")
        self.build_id = uuid.uuid4().hex
        self.path = os.path.join(folder, f"{layout.BUILDING_PREFIX}{self.build_id}")
        self.directory: DirectoryFile | None = None
        self.sessions: set[tuple[str, str]] = set()
        self.generation: str | None = None
        self._lock = file_lock(self.path + ".lock")

    def __enter__(self) -> UnifiedIndexBuild:
        self._lock.__enter__()  # a fresh name: always free
        self.based_on = self.storage.version(layout.UNIFIED_INDEX)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for leftover in [self.path + suffix for suffix in ("", *layout.BUILDING_SUFFIXES)]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
        self._lock.__exit__(*exc_info)

    def fill(self, schema: layout.Schema, finalized: dict[str, str], generation: str | None) -> None:
        """Build over ``generation`` (if any) plus the finalized sessions it does not cover."""
        covered = _covered_sessions(self.storage, generation) if generation else {}
        stale = sorted(w for w, s in covered.items() if _finalized_session(self.storage, w) != s)
        if stale:
            logger.warning(
                "compaction %s is out of date (workers %s were re-run since): rebuilding from the sessions; "
                "compact again",
                generation,
                ", ".join(stale),
            )
            generation, covered = None, {}
        sessions = {w: s for w, s in finalized.items() if covered.get(w) != s}
        if generation is None and not sessions:  # e.g. every worker's last run finalized without a point
            raise EmptyStoreError(f"{self.storage.describe('')} has no finalized worker data to index")
        self.sessions = _build_unified_index(
            self.store, schema, sessions, generation, self.path, self.build_id, self.split
        )
        self.generation = generation
        if self.output_path is None:  # an index kept outside the store has no directory in it
            with logged_phase("consolidation", "label directory"):
                self.directory = _add_label_directory(self.path, self.build_id)

    def publish(self) -> bool:
        """Make this build the unified index unless it changed since; False means build again from fresh state.

        When it changed, the newer index is kept (True) if it already serves
        every session this build holds, on the same compaction generation.
        """
        if self.output_path is not None:
            os.replace(self.path, self.output_path)
            return True
        with logged_phase("consolidation", "publish"):
            version = self.storage.publish_if_unchanged(self.path, layout.UNIFIED_INDEX, self.based_on)
            if version is not None and self.directory is not None:
                self._publish_index_version_or_warn(version)
        if version is not None:
            return True
        sessions, generation = self.store.served_sessions()
        return self.sessions <= sessions and generation == self.generation

    def _publish_index_version_or_warn(self, index_version: str) -> None:
        """The index is in force whatever happens here: a failure leaves readers on the whole index, and says so."""
        try:
            self._publish_index_version(index_version)
        except (OSError, PocaduckError) as error:
            logger.warning(
                "the unified index of %s is in force, but its label directory could not be published (%s): "
                "readers read the whole index until `pocaduck consolidate %s` runs again",
                self.storage.describe(""),
                error,
                self.storage.describe(""),
            )

    def _publish_index_version(self, index_version: str) -> None:
        """Publish the index just put in force as ``index_versions/<build>/`` with its directory, then name it.

        Uploads come after the index, so ``gc`` (which keeps the version the index
        in force names) cannot remove them first. The index is not uploaded twice:
        its version is a copy the store makes itself (a server-side copy, a hard
        link on disk), kept only if the index is still this build's once the copy
        is made. ``label_directory.json`` is
        replaced by compare-and-swap, and only while this index is still in force:
        of overlapping consolidations the last to publish its index ends up named.
        A run that dies before the pointer leaves it naming an older index, which
        readers notice (the version differs) and then read the index instead.
        """
        assert self.directory is not None
        self.storage.copy(layout.UNIFIED_INDEX, layout.index_version_index(self.build_id))
        if self.storage.version(layout.UNIFIED_INDEX) != index_version:
            return  # replaced during the copy, which may hold the newer index: nothing names this version
        staged = self.path + ".pointer"
        with open(staged, "wb") as out:  # before publishing, which may move the directory away from here
            out.write(pointer_bytes(self.build_id, self.directory, index_version, self.path + ".labeldir"))
        self.storage.publish(self.path + ".labeldir", layout.index_version_directory(self.build_id))
        for _ in range(_PUBLISH_ATTEMPTS):
            pointer_version = self.storage.version(layout.LABEL_DIRECTORY_POINTER)
            if self.storage.version(layout.UNIFIED_INDEX) != index_version:
                return  # a newer index is in force: its own run points to its directory
            if self.storage.publish_if_unchanged(staged, layout.LABEL_DIRECTORY_POINTER, pointer_version):
                return
        logger.warning(
            "%s kept changing while this run pointed it to its label directory: readers read the unified index "
            "until the next consolidation",
            self.storage.describe(layout.LABEL_DIRECTORY_POINTER),
        )


def _add_label_directory(index_path: str, build_id: str) -> DirectoryFile:
    """Write the label directory of the index built at ``index_path`` beside it, and record the build in it."""
    con = duckdb.connect(index_path)
    try:
        written = write_label_directory(con, index_path + ".labeldir", in_order=True)
        con.execute(
            "CREATE TABLE label_directory AS SELECT ? AS build, ?::BIGINT AS entries, ?::BIGINT AS size, "
            "?::BIGINT AS top_bytes",
            [build_id, written.entries, written.size, written.top_bytes],
        )
        con.execute("CHECKPOINT")
        return written
    finally:
        con.close()


@contextlib.contextmanager
def write_failures_reported(storage: Storage, verb: str) -> Iterator[None]:
    """Turn a write that failed for lack of room (or a read-only store) into StoreWriteError saying what to do.

    Everything is built under temporary names and published last, so such a
    failure leaves what was published before untouched.
    """
    try:
        yield
    except Exception as error:
        if not _is_write_failure(error):
            raise
        raise StoreWriteError(
            f"the {verb} of {storage.describe('')} could not write its files ({error}). Nothing published was "
            f"changed: the unified index serves what it did before. Free space (or make the store writable) "
            f"and run the {verb} again"
        ) from error


_WRITE_FAILURES = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)


def _is_write_failure(error: BaseException | None) -> bool:
    """True for a full disk, a file size limit, a quota or a read-only filesystem, also when wrapped.

    DuckDB (an IOException, or a FatalException at a checkpoint) and pyarrow give the system's message, no errno.

    >>> _is_write_failure(duckdb.IOException("Could not write file: No space left on device"))
    True
    """
    while error is not None:
        if isinstance(error, OSError) and error.errno in _WRITE_FAILURES:
            return True
        if isinstance(error, (OSError, duckdb.Error)) and any(
            os.strerror(code) in str(error) for code in _WRITE_FAILURES
        ):
            return True
        error = error.__cause__
    return False


def _finalized_session(storage: Storage, worker_id: str) -> str | None:
    try:
        record = layout.read_finalized(storage, worker_id)
    except DamagedStoreError:
        return None  # its sessions cannot be told apart: the compaction is treated as out of date
    return None if record is None else record.get("session")


def _build_unified_index(
    store: Store,
    schema: layout.Schema,
    sessions: dict[str, str],
    generation: str | None,
    target: str,
    build_id: str,
    split: RangeMerge | None,
) -> set[tuple[str, str]]:
    """Fill ``target`` from every source index in a few set-based statements; return the sessions it serves.

    The sources are ATTACHed to one connection (a read-only connection per file
    costs ~20× more) and read through UNION ALL, so every row is copied once,
    straight into the sorted ``point_index`` (or, with ``split``, into sorted
    label ranges put end to end).
    """
    storage = store.storage
    con = duckdb.connect(target)
    try:
        create_worker_tables(con, schema)
        con.execute(
            "CREATE TABLE workers (worker_id VARCHAR, session_id VARCHAR, file_count BIGINT, point_count BIGINT)"
        )
        attached = [(f"session_{number}", w, s) for number, (w, s) in enumerate(sorted(sessions.items()))]
        session_aliases = [alias for alias, _, _ in attached]
        workers: list[str | None] = [worker_id for _, worker_id, _ in attached]
        aliases = ["generation"] * (generation is not None) + session_aliases
        keys = [layout.compaction_index(generation)] * (generation is not None)
        keys += [layout.session_index(worker_id, session_id) for _, worker_id, session_id in attached]
        with logged_phase("consolidation", "fetch worker indexes"):
            paths = [storage.local_copy(key) for key in keys]
        with logged_phase("consolidation", "attach"):
            for alias, path in zip(aliases, paths, strict=True):
                attach_read_only(con, path, alias)
        if generation is not None:
            con.execute("INSERT INTO workers SELECT * FROM generation.workers")
            con.execute("CREATE TABLE compaction AS SELECT * FROM generation.compaction")
        # Worker file ids run 0..n-1; shift each source's past the ones before it.
        offsets, total = [], 0
        for alias in aliases:
            offsets.append(total)
            total += con.execute(f"SELECT count(*) FROM {alias}.files").fetchone()[0]
        # By name: an index written before files had a checksum column gives NULL there.
        con.execute(
            "INSERT INTO files BY NAME ("
            + " UNION ALL BY NAME ".join(f"SELECT * REPLACE (file_id + ? AS file_id) FROM {a}.files" for a in aliases)
            + ")",
            offsets,
        )
        replacements = find_replacements(con, schema, aliases, [None] * (generation is not None) + workers)
        if replacements is not None:
            con.register("replacements", replacements.in_force)
        if split is None:
            with logged_phase("consolidation", "sorted insert"):
                rows, params = source_rows_sql(aliases, offsets, replacements)
                con.execute(
                    f"INSERT INTO point_index SELECT * FROM ({rows}) ORDER BY label, file_id, row_offset", params
                )
        else:
            with range_parts(storage, build_id) as folder:
                sources = list(zip(keys, offsets, strict=True))
                parts = merge_label_ranges(con, store, schema, aliases, sources, folder, split, replacements)
                with logged_phase("consolidation", "insert ranges"):
                    assemble_ranges(con, storage, parts)
        create_replaced_table(con, schema, replacements)
        if replacements is not None:
            con.unregister("replacements")
        if session_aliases:
            con.execute(
                "INSERT INTO workers "
                + union_all(session_aliases, "SELECT ?, ?, count(*), coalesce(sum(row_count), 0) FROM {}.files"),
                [value for _, worker_id, session_id in attached for value in (worker_id, session_id)],
            )
        for alias in aliases:
            con.execute(f"DETACH {alias}")
        with logged_phase("consolidation", "summaries"):
            if split is None:
                create_summary_tables(con, schema)
            else:  # labels came with the ranges
                create_point_cloud_view(con)
        with logged_phase("consolidation", "checkpoint"):
            con.execute("CHECKPOINT")
        return set(con.execute("SELECT worker_id, session_id FROM workers").fetchall())
    finally:
        con.close()
