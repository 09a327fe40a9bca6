"""Merge the finalized worker indexes into one unified index, set-based and atomic.

The unified index is rebuilt from scratch from every finalized worker session,
so running consolidation twice gives the same index, and running it again after
more workers finish simply includes them. It is built under a temporary name
and published with one atomic replace: readers see the old index or the new.

A compacted store stays compacted: the sessions a compaction generation covers
are served from its files, and only newer sessions are added beside them. If a
covered worker has been re-run since, the generation no longer matches the
workers and the index is rebuilt from the sessions alone (compact again).
"""

from __future__ import annotations

import json
import logging
import os
import uuid

import duckdb

from . import layout
from .config import StorageConfig, as_config
from .errors import EmptyStoreError, StoreNotFoundError, WorkerNotFinalizedError
from .index import attach_read_only, create_summary_tables, create_worker_tables
from .storage import Storage, open_storage

logger = logging.getLogger("pocaduck")


def worker_states(storage: Storage) -> tuple[dict[str, str], dict[str, str]]:
    """Split the store's workers into finalized ones (worker → session) and unfinished ones (worker → reason)."""
    finalized: dict[str, str] = {}
    unfinished: dict[str, str] = {}
    for worker_id in storage.listdir(layout.WORKERS):
        with storage.lock(layout.worker_lock(worker_id)) as free:
            if not free:
                unfinished[worker_id] = "an Ingestor is still writing it"
                continue
        record_path = layout.worker_finalized(worker_id)
        record = json.loads(storage.read_bytes(record_path)) if storage.exists(record_path) else None
        known = {None if record is None else record.get("session"), *(record or {}).get("superseded", [])}
        stray = [s for s in storage.listdir(layout.sessions_dir(worker_id)) if s not in known]
        if record is None or stray:
            unfinished[worker_id] = "it started but never called finalize() (still running, or crashed)"
        elif record["session"] is not None:
            finalized[worker_id] = record["session"]
    return finalized, unfinished


def consolidate(
    storage_config: StorageConfig | str | os.PathLike,
    output_path: str | None = None,
    *,
    ignore_unfinalized: bool = False,
) -> str:
    """Build the unified index over every finalized worker and return its location.

    Workers that have not finalized make it fail, naming them, unless
    ``ignore_unfinalized`` is set: then their last finalized run (if any) is used.

    >>> import tempfile, numpy as np
    >>> from pocaduck import Ingestor
    >>> store = tempfile.mkdtemp()
    >>> with Ingestor(store, worker_id="a") as ingestor:
    ...     ingestor.write(7, "block-0", np.zeros((2, 3), np.int32))
    >>> consolidate(store) == consolidate(store)
    True
    """
    config = as_config(storage_config)
    storage = open_storage(config)
    if not storage.root_exists():
        raise StoreNotFoundError(f"no store at {config.base_path}")
    schema = layout.read_schema(storage)
    finalized, unfinished = worker_states(storage)
    if unfinished and not ignore_unfinalized:
        listing = "; ".join(f"worker {w!r}: {why}" for w, why in unfinished.items())
        raise WorkerNotFinalizedError(
            f"cannot consolidate {config.base_path}: {listing}. Finish or re-run those workers, or pass "
            f"ignore_unfinalized=True (CLI: --ignore-unfinalized) to consolidate the others"
        )
    if unfinished:
        logger.warning("consolidating without unfinished workers: %s", ", ".join(unfinished))
    if schema is None or not finalized:
        raise EmptyStoreError(f"{config.base_path} has no finalized worker data to consolidate")
    return publish_unified_index(storage, schema, finalized, compaction_in_force(storage), output_path)


def compaction_in_force(storage: Storage) -> str | None:
    """The compaction generation the current unified index is built on, if any.

    >>> import tempfile
    >>> compaction_in_force(open_storage(StorageConfig(tempfile.mkdtemp()))) is None
    True
    """
    if not storage.exists(layout.UNIFIED_INDEX):
        return None
    con = duckdb.connect(":memory:")
    try:
        attach_read_only(con, storage.local_copy(layout.UNIFIED_INDEX), "current")
        tables = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'current' AND table_name = 'compaction'"
        ).fetchone()[0]
        return con.execute("SELECT generation FROM current.compaction").fetchone()[0] if tables else None
    finally:
        con.close()


def _covered_sessions(storage: Storage, generation: str) -> dict[str, str]:
    """Worker → session for every session whose points a compaction generation holds."""
    with duckdb.connect(storage.local_copy(layout.compaction_index(generation)), read_only=True) as con:
        return dict(con.execute("SELECT worker_id, session_id FROM workers").fetchall())


def publish_unified_index(
    storage: Storage,
    schema: layout.Schema,
    finalized: dict[str, str],
    generation: str | None,
    output_path: str | None = None,
) -> str:
    """Build and publish the unified index over ``generation`` (if any) plus the finalized sessions it does not cover.

    ``consolidate`` passes the generation in force, compaction its new one.

    Example::

        publish_unified_index(storage, schema, {"worker-0": "20260101T000000-abc"}, None)
        # -> '/data/store/unified_index.duckdb'
    """
    covered = _covered_sessions(storage, generation) if generation else {}
    stale = sorted(w for w, s in covered.items() if _finalized_session(storage, w) != s)
    if stale:
        logger.warning(
            "compaction %s is out of date (workers %s were re-run since): rebuilding from the sessions; compact again",
            generation,
            ", ".join(stale),
        )
        generation, covered = None, {}
    sessions = {w: s for w, s in finalized.items() if covered.get(w) != s}

    # Build beside the destination so the final rename stays on one filesystem.
    build_dir = os.path.dirname(os.path.abspath(output_path)) if output_path else storage.staging_dir("")
    built = os.path.join(build_dir, f".{layout.UNIFIED_INDEX}.building-{uuid.uuid4().hex}")
    try:
        _build_unified_index(storage, schema, sessions, generation, built)
        if output_path is not None:
            os.replace(built, output_path)
            return output_path
        storage.publish(built, layout.UNIFIED_INDEX)
        return storage.describe(layout.UNIFIED_INDEX)
    finally:
        for leftover in (built, built + ".wal"):
            if os.path.exists(leftover):
                os.unlink(leftover)


def _finalized_session(storage: Storage, worker_id: str) -> str | None:
    record_path = layout.worker_finalized(worker_id)
    return json.loads(storage.read_bytes(record_path)).get("session") if storage.exists(record_path) else None


def _build_unified_index(
    storage: Storage, schema: layout.Schema, sessions: dict[str, str], generation: str | None, target: str
) -> None:
    """Fill ``target`` from every source index in a few set-based statements.

    The sources are ATTACHed to one connection (a read-only connection per file
    costs ~20× more) and read through UNION ALL, so every row is copied once,
    straight into the sorted ``point_index``.
    """
    con = duckdb.connect(target)
    try:
        create_worker_tables(con, schema)
        con.execute(
            "CREATE TABLE workers (worker_id VARCHAR, session_id VARCHAR, file_count BIGINT, point_count BIGINT)"
        )
        aliases = []
        if generation is not None:
            attach_read_only(con, storage.local_copy(layout.compaction_index(generation)), "generation")
            con.execute("INSERT INTO workers SELECT * FROM generation.workers")
            con.execute("CREATE TABLE compaction AS SELECT * FROM generation.compaction")
            aliases.append("generation")
        attached = [(f"session_{number}", w, s) for number, (w, s) in enumerate(sorted(sessions.items()))]
        for alias, worker_id, session_id in attached:
            attach_read_only(con, storage.local_copy(layout.session_index(worker_id, session_id)), alias)
        session_aliases = [alias for alias, _, _ in attached]
        aliases += session_aliases
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
        con.execute(
            "INSERT INTO point_index SELECT * FROM ("
            + _union(aliases, "SELECT * REPLACE (file_id + ? AS file_id) FROM {}.point_index")
            + ") ORDER BY label, file_id, row_offset",
            offsets,
        )
        if session_aliases:
            con.execute(
                "INSERT INTO workers "
                + _union(session_aliases, "SELECT ?, ?, count(*), coalesce(sum(row_count), 0) FROM {}.files"),
                [value for _, worker_id, session_id in attached for value in (worker_id, session_id)],
            )
        for alias in aliases:
            con.execute(f"DETACH {alias}")
        create_summary_tables(con, schema)
        con.execute("CHECKPOINT")
    finally:
        con.close()


def _union(aliases: list[str], select: str) -> str:
    """``select`` once per attached database alias (our own identifiers), joined by UNION ALL."""
    return " UNION ALL ".join(select.format(alias) for alias in aliases)
