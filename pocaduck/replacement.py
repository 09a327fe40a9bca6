"""Blocks re-scanned in place: which rows of a replaced block the unified index keeps.

A session that wrote a block with ``replace=True`` (``Ingestor.write_block``,
``scan_volume(..., blocks=[...])``) records the block in its worker index, in
``replaced_blocks (block_id, replaced_at)``; every session also records when
it finalized, in ``session_info (finalized_at)``. Times are UTC, taken at
``finalize()`` on the worker's clock.

The rule, applied by every consolidation (one statement or by label ranges,
which give the same index):

* a block's replacement *in force* is the one of the newest replacing session:
  the latest ``replaced_at``, ties broken by the larger worker id;
* of that block, the unified index keeps the rows of that session and of every
  session ordered after it by (finalized_at, worker_id) (a plain write made
  later is kept beside the replacement), and drops every other row, from any
  worker, as ingested or compacted. A session written before finalization
  times were recorded counts as older than any replacement;
* a compaction generation's rows of the block are kept only while the
  replacement in force is one the generation already holds (it was compacted
  from an index that had applied it), and dropped otherwise.

A replacement belongs to its session, like every write: re-running the
replacing worker without ``replace=True`` withdraws it (the older rows are
served again), and a worker that never finalized replaces nothing. Times
come from the workers' clocks: machines whose clocks disagree by more than
the time between two re-scans of one block may order them wrongly.

Labels that lose every row disappear with them, since the ``labels`` table,
the label directory and every count are derived from the kept rows. The
unified index lists the replacements in force in ``replaced_blocks
(block_id, worker_id, replaced_at)``. The ``workers`` and ``files`` tables still
say what each session wrote: a file whose rows were all dropped stays listed
(and on disk) until a compaction leaves it behind.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from .index import BLOCK_ID_SQL_TYPES
from .layout import Schema

SESSION_TABLE = "session_info"
REPLACED_TABLE = "replaced_blocks"


def utc_now() -> datetime.datetime:
    """The current UTC time without a zone, as DuckDB's TIMESTAMP holds it.

    >>> utc_now().tzinfo is None
    True
    """
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def record_session(
    con: duckdb.DuckDBPyConnection, schema: Schema, replaced: Iterable[object], finalized_at: datetime.datetime
) -> None:
    """Write a worker index's ``session_info`` and ``replaced_blocks`` tables at finalization.

    >>> import numpy as np
    >>> con = duckdb.connect()
    >>> record_session(con, Schema(("x",), np.dtype("int32"), "int64"), [7], datetime.datetime(2026, 1, 1))
    >>> con.execute("SELECT block_id, replaced_at FROM replaced_blocks").fetchall()
    [(7, datetime.datetime(2026, 1, 1, 0, 0))]
    """
    block_type = BLOCK_ID_SQL_TYPES[schema.block_id_type]
    con.execute(f"CREATE TABLE {SESSION_TABLE} (finalized_at TIMESTAMP)")
    con.execute(f"INSERT INTO {SESSION_TABLE} VALUES (?)", [finalized_at])
    blocks = sorted(replaced)
    if blocks:  # only a replacing session has the table: consolidation looks for it and nothing else
        con.execute(f"CREATE TABLE {REPLACED_TABLE} (block_id {block_type}, replaced_at TIMESTAMP)")
        arrow_type = pa.int64() if schema.block_id_type == "int64" else pa.string()
        rows = pa.table({"block_id": pa.array(blocks, arrow_type)})
        con.register("replaced_rows", rows)
        con.execute(f"INSERT INTO {REPLACED_TABLE} SELECT block_id, ? FROM replaced_rows", [finalized_at])
        con.unregister("replaced_rows")


@dataclass(frozen=True)
class Replacements:
    """The replacements in force over a consolidation's sources, and each source's place in time.

    ``in_force`` has one row per replaced block: ``block_id, worker_id,
    replaced_at`` and ``source``, the number of the source (its position in the
    consolidation's list) that holds the replacing rows. ``sources[n]`` is
    source n's ``(finalized_at, worker_id)``, ``(None, None)`` for a compaction
    generation or a session that recorded no time. Small and picklable: range
    tasks get it whole.
    """

    in_force: pa.Table
    sources: tuple[tuple[datetime.datetime | None, str | None], ...]

    def kept(self, number: int) -> tuple[str, list[object]]:
        """The condition (SQL, parameters) a row of source ``number``'s ``point_index`` meets to be kept.

        The table ``replacements`` (``in_force``) must be readable on the connection.
        """
        finalized_at, worker_id = self.sources[number]
        dropped = (
            "SELECT block_id FROM replacements WHERE source <> ? AND "
            "(?::TIMESTAMP IS NULL OR replaced_at > ? OR (replaced_at = ? AND worker_id > ?))"
        )
        return f"block_id NOT IN ({dropped})", [number, finalized_at, finalized_at, finalized_at, worker_id]


def source_rows_sql(
    aliases: list[str], offsets: list[int], replacements: Replacements | None, where: str = "", where_params=()
) -> tuple[str, list[object]]:
    """UNION ALL of each attached source's kept ``point_index`` rows, file ids shifted by its offset.

    ``where`` (with ``where_params``) is a condition every row must meet too.
    Both consolidations (one statement, label ranges) read the sources through it.

    >>> source_rows_sql(["a"], [3], None)
    ('SELECT * REPLACE (file_id + ? AS file_id) FROM a.point_index', [3])
    """
    selects, params = [], []
    for number, (alias, offset) in enumerate(zip(aliases, offsets, strict=True)):
        conditions, values = ([where], list(where_params)) if where else ([], [])
        if replacements is not None:
            condition, condition_params = replacements.kept(number)
            conditions.append(condition)
            values += condition_params
        clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        selects.append(f"SELECT * REPLACE (file_id + ? AS file_id) FROM {alias}.point_index{clause}")
        params += [offset, *values]
    return " UNION ALL ".join(selects), params


def find_replacements(
    con: duckdb.DuckDBPyConnection,
    schema: Schema,
    aliases: list[str],
    workers: list[str | None],
) -> Replacements | None:
    """The replacements in force over the attached sources ``aliases`` (``workers[n]`` None for a generation).

    None when no source replaced a block: consolidation then copies every row.
    A generation brings the replacements in force when it was compacted, each
    held by it.
    """
    present = set(
        con.execute(
            "SELECT database_name, table_name FROM duckdb_tables() WHERE table_name IN (?, ?)",
            [SESSION_TABLE, REPLACED_TABLE],
        ).fetchall()
    )
    selects, params = [], []
    for number, (alias, worker_id) in enumerate(zip(aliases, workers, strict=True)):
        if (alias, REPLACED_TABLE) not in present:
            continue
        if worker_id is None:
            selects.append(
                f"SELECT block_id, worker_id, replaced_at, ?::INTEGER AS source FROM {alias}.{REPLACED_TABLE}"
            )
            params.append(number)
        else:
            selects.append(
                f"SELECT block_id, ?::VARCHAR, replaced_at, ?::INTEGER AS source FROM {alias}.{REPLACED_TABLE}"
            )
            params += [worker_id, number]
    if not selects:
        return None
    block_type = BLOCK_ID_SQL_TYPES[schema.block_id_type]
    in_force = con.sql(
        f"SELECT DISTINCT ON (block_id) block_id::{block_type} AS block_id, worker_id, replaced_at, source FROM ("
        + " UNION ALL ".join(f"({select})" for select in selects)
        + ") t(block_id, worker_id, replaced_at, source) ORDER BY block_id, replaced_at DESC, worker_id DESC",
        params=params,
    ).to_arrow_table()
    if in_force.num_rows == 0:
        return None
    return Replacements(in_force, _source_times(con, aliases, workers, present))


def _source_times(
    con: duckdb.DuckDBPyConnection, aliases: list[str], workers: list[str | None], present: set[tuple[str, str]]
) -> tuple[tuple[datetime.datetime | None, str | None], ...]:
    """Each source's (finalized_at, worker_id), read in one statement: (None, None) for a generation."""
    timed = [
        number
        for number, (alias, worker_id) in enumerate(zip(aliases, workers, strict=True))
        if worker_id is not None and (alias, SESSION_TABLE) in present
    ]
    times: dict[int, datetime.datetime | None] = {}
    if timed:
        times = dict(
            con.execute(
                " UNION ALL ".join(
                    f"SELECT {number}, max(finalized_at) FROM {aliases[number]}.{SESSION_TABLE}" for number in timed
                )
            ).fetchall()
        )
    return tuple((times.get(number), worker_id) for number, worker_id in enumerate(workers))


def create_replaced_table(con: duckdb.DuckDBPyConnection, schema: Schema, replacements: Replacements | None) -> None:
    """The unified index's ``replaced_blocks``: one row per replaced block, the replacement in force."""
    block_type = BLOCK_ID_SQL_TYPES[schema.block_id_type]
    con.execute(f"CREATE TABLE {REPLACED_TABLE} (block_id {block_type}, worker_id VARCHAR, replaced_at TIMESTAMP)")
    if replacements is not None:
        con.register("in_force", replacements.in_force)
        con.execute(f"INSERT INTO {REPLACED_TABLE} SELECT block_id, worker_id, replaced_at FROM in_force")
        con.unregister("in_force")


def replaced_blocks_summary(con: duckdb.DuckDBPyConnection) -> tuple[int, str | None]:
    """How many blocks the index ``con`` reads has replaced, and when the latest was (ISO 8601 UTC), for ``info``.

    An index consolidated before replacements existed has no table: (0, None).

    >>> con = duckdb.connect()
    >>> replaced_blocks_summary(con)
    (0, None)
    """
    if not con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND table_name = ?",
        [REPLACED_TABLE],
    ).fetchone()[0]:
        return 0, None
    count, latest = con.execute(f"SELECT count(*), max(replaced_at) FROM {REPLACED_TABLE}").fetchone()
    return int(count), None if latest is None else latest.isoformat() + "Z"
