"""The index tables, shared by every worker index and by the unified index.

``files`` lists each Parquet file once, with its size and checksum (NULL in
indexes written before checksums were recorded); ``point_index`` has one row per write
(per file piece of a write): where its rows sit in which file, and its bounding
box. The unified index adds ``labels`` (one summary row per label) and
``workers``. Column identifiers come only from the validated schema.

Readers attach an index read-only to one in-memory database per process
(:class:`AttachedIndex`): opening a DuckDB database costs ~7 ms, a cursor and an
ATTACH well under one. Each reader attaches the file anew under an alias of its
own, so an index replaced on disk is read afresh by the next reader while
earlier ones keep the version they opened.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from typing import Any

import duckdb
import numpy as np

from .layout import Schema

_DUCKDB_TYPES = {
    "int8": "TINYINT",
    "int16": "SMALLINT",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "uint8": "UTINYINT",
    "uint16": "USMALLINT",
    "uint32": "UINTEGER",
    "uint64": "UBIGINT",
    "float32": "FLOAT",
    "float64": "DOUBLE",
}
BLOCK_ID_SQL_TYPES = {"string": "VARCHAR", "int64": "BIGINT"}


def duckdb_type(dtype: np.dtype) -> str:
    return _DUCKDB_TYPES[np.dtype(dtype).name]


def bbox_columns(schema: Schema) -> list[str]:
    """``min_x, min_y, min_z, max_x, max_y, max_z`` (for the spatial columns the schema has)."""
    return [f"min_{c}" for c in schema.spatial_columns] + [f"max_{c}" for c in schema.spatial_columns]


def create_worker_tables(con: duckdb.DuckDBPyConnection, schema: Schema) -> None:
    value_type = duckdb_type(schema.dtype)
    bbox = ", ".join(f"{name} {value_type}" for name in bbox_columns(schema))
    con.execute(
        "CREATE TABLE files (file_id INTEGER, path VARCHAR, row_count BIGINT, row_group_size INTEGER, byte_size BIGINT, "
        "checksum VARCHAR)"
    )
    con.execute(
        f"CREATE TABLE point_index (label UBIGINT, block_id {BLOCK_ID_SQL_TYPES[schema.block_id_type]}, "
        f"file_id INTEGER, row_offset BIGINT, point_count BIGINT, {bbox})"
    )


def label_summary_sql(schema: Schema, source: str) -> str:
    """The SELECT of the ``labels`` table over the point_index rows of ``source`` (a table name of our own).

    The consolidation that merges by label ranges runs it on each range's rows:
    a label's rows all lie in one range, so the parts put end to end are the table.

    >>> from pocaduck.layout import Schema
    >>> label_summary_sql(Schema(("x",), np.dtype("int32"), "int64"), "point_index").split(" FROM ")[1]
    'point_index GROUP BY label ORDER BY label'
    """
    mins = ", ".join(f"min(min_{c}) AS min_{c}" for c in schema.spatial_columns)
    maxs = ", ".join(f"max(max_{c}) AS max_{c}" for c in schema.spatial_columns)
    return (
        "SELECT label, sum(point_count)::BIGINT AS point_count, "
        "count(DISTINCT block_id)::BIGINT AS block_count, count(DISTINCT file_id)::BIGINT AS file_count, "
        f"{mins}, {maxs} FROM {source} GROUP BY label ORDER BY label"
    )


def create_summary_tables(con: duckdb.DuckDBPyConnection, schema: Schema) -> None:
    """Per-label summary, per-worker summary and the original library's table name as a view."""
    con.execute(f"CREATE TABLE labels AS {label_summary_sql(schema, 'point_index')}")
    create_point_cloud_view(con)


def create_point_cloud_view(con: duckdb.DuckDBPyConnection) -> None:
    """The original library's ``point_cloud_index`` table, as a view over ours."""
    con.execute(
        "CREATE VIEW point_cloud_index AS SELECT p.label, p.block_id::VARCHAR AS block_id, f.path AS file_path, "
        "p.point_count::UBIGINT AS point_count FROM point_index p JOIN files f USING (file_id)"
    )


def attach_read_only(con: duckdb.DuckDBPyConnection, path: str, alias: str) -> None:
    """ATTACH a database file read-only.

    ATTACH takes no prepared parameters, so the path is written as a SQL string
    literal with quotes doubled: the one place a value enters SQL as text.
    """
    literal = "'" + path.replace("'", "''") + "'"
    con.execute(f"ATTACH {literal} AS {alias} (READ_ONLY)")


def file_locations(con: duckdb.DuckDBPyConnection) -> dict[int, tuple[str, int, int]]:
    """``file_id`` → ``(path, row_group_size, byte_size)`` of every file the index lists: what ``PointFiles`` reads."""
    rows = con.execute("SELECT file_id, path, row_group_size, byte_size FROM files").fetchall()
    return {file_id: (path, group_size, byte_size) for file_id, path, group_size, byte_size in rows}


def compaction_record(con: duckdb.DuckDBPyConnection, database: str) -> dict[str, Any] | None:
    """The compaction the index attached as ``database`` serves: generation, whether de-duplicated, the mapping it
    followed (None: by label, also for a generation written before compaction by mapping); None if not compacted.

    Only these columns are fetched: DuckDB 1.5 needs pytz to hand its ``compacted_at`` (TIMESTAMPTZ) to Python.

    >>> con = duckdb.connect()
    >>> compaction_record(con, "memory") is None
    True
    """
    (columns,) = con.execute(
        "SELECT list(column_name) FROM duckdb_columns() WHERE database_name = ? AND table_name = 'compaction'",
        [database],
    ).fetchone()
    if not columns:
        return None
    mapping = "mapping" if "mapping" in columns else "NULL::VARCHAR"
    generation, deduplicated, followed = con.execute(
        f"SELECT generation, deduplicated, {mapping} FROM {database}.compaction"
    ).fetchone()
    return {"generation": generation, "deduplicated": bool(deduplicated), "mapping": followed}


def label_summary(con: duckdb.DuckDBPyConnection, label: int) -> dict[str, Any]:
    """``label``'s row of the ``labels`` table as a dict; an unknown label has zero counts and None elsewhere.

    >>> con = duckdb.connect()
    >>> _ = con.execute("CREATE TABLE labels AS SELECT 5::UBIGINT AS label, 2 AS point_count, 1 AS min_x")
    >>> label_summary(con, 5), label_summary(con, 6)
    ({'label': 5, 'point_count': 2, 'min_x': 1}, {'label': 6, 'point_count': 0, 'min_x': None})
    """
    result = con.execute("SELECT * FROM labels WHERE label = ?::UBIGINT", [label])
    names = [d[0] for d in result.description]
    row = result.fetchall()
    if not row:
        return {name: (label if name == "label" else 0 if name.endswith("_count") else None) for name in names}
    return dict(zip(names, row[0], strict=True))


_process_database: tuple[int, duckdb.DuckDBPyConnection] | None = None
_process_database_lock = threading.Lock()
_aliases = itertools.count()


def _database() -> duckdb.DuckDBPyConnection:
    """This process's in-memory database, made on first use (and anew in a forked child, which may not share it)."""
    global _process_database
    with _process_database_lock:
        if _process_database is None or _process_database[0] != os.getpid():
            _process_database = (os.getpid(), duckdb.connect(":memory:"))
        return _process_database[1]


class AttachedIndex:
    """An index file attached read-only on a cursor of its own; unqualified table names read it.

    Only our own statements run here: the database is shared and keeps file access,
    so users' SQL goes to a locked-down connection of its own (see ``_sql.py``).

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "index.duckdb")
    >>> with duckdb.connect(path) as con:
    ...     _ = con.execute("CREATE TABLE labels AS SELECT 5::UBIGINT AS label")
    >>> index = AttachedIndex(path)
    >>> index.cursor.execute("SELECT label FROM labels").fetchall()
    [(5,)]
    >>> index.close()
    """

    def __init__(self, path: str):
        cursor = _database().cursor()
        alias = f"index_{next(_aliases)}"
        try:
            attach_read_only(cursor, path, alias)
            cursor.execute(f"USE {alias}")
        except BaseException:
            cursor.close()
            raise
        self.cursor = cursor
        self.alias = alias
        # A reader dropped without close() still lets go of the file.
        self.close = weakref.finalize(self, _detach, cursor, alias)


def _detach(cursor: duckdb.DuckDBPyConnection, alias: str) -> None:
    """DETACH the file (DuckDB closes it once no cursor reads it) and close the cursor."""
    try:
        cursor.execute("USE memory")  # DuckDB refuses to detach the database in use
        cursor.execute(f"DETACH {alias}")
    finally:
        cursor.close()


def union_all(aliases: list[str], select: str) -> str:
    """``select`` once per attached database alias (our own identifiers), joined by UNION ALL."""
    return " UNION ALL ".join(select.format(alias) for alias in aliases)
