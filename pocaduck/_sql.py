"""Users' SQL over an index, confined and stoppable: what ``Query.sql`` and the label browser run.

A connection without external access may still read DuckDB's temp directory
and report its own settings, so each statement is also parsed
(``json_serialize_sql``) and only SELECTs over the index's own tables and views
pass. Each runs on a cursor of its own, on a thread, so a time-out or Ctrl-C
interrupts it at once.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import duckdb

from .errors import QueryTimeoutError, ReadOnlySQLError, SQLError
from .index import attach_read_only

# FROM items that only combine what they contain; any other kind (table functions,
# SHOW/DESCRIBE/SUMMARIZE, PIVOT) is refused.
_ALLOWED_FROM = {"BASE_TABLE", "JOIN", "SUBQUERY", "EMPTY", "EXPRESSION_LIST"}
_FROM_NAMES = {"TABLE_FUNCTION": "a table function", "SHOW_REF": "SHOW, DESCRIBE or SUMMARIZE"}
# Scalar functions that report the session (its settings reveal the index path) rather than compute on values.
_SESSION_FUNCTIONS = {"current_setting", "getvariable", "getenv"}
_ALLOWED_SQL = (
    "only a single SELECT statement is allowed here, reading the index tables ({tables}) through joins, "
    "subqueries and WITH clauses, with ? parameters for values; no table functions, files or settings"
)


@functools.cache
def _value_functions() -> frozenset[str]:
    """Functions that compute on values: scalars, aggregates and macros without a query inside."""
    with duckdb.connect(":memory:") as con:
        names = con.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type IN ('scalar', 'aggregate') "
            "OR (function_type = 'macro' AND macro_definition NOT ILIKE '%select%')"
        ).fetchall()
    return frozenset(name for (name,) in names) - _SESSION_FUNCTIONS


def _refused_part(part: Any, tables: frozenset[str], catalog: str, ctes: frozenset[str]) -> str | None:
    """What in a parsed statement (``json_serialize_sql``) reaches beyond the index tables, or None.

    ``ctes`` are the WITH names visible at this point: a CTE named like a system view is
    only that CTE where it is in scope, so scopes are followed as DuckDB binds them.
    """
    if isinstance(part, list):
        return next((r for item in part if (r := _refused_part(item, tables, catalog, ctes)) is not None), None)
    if not isinstance(part, dict):
        return None
    kind = part.get("type")
    if "class" in part:  # an expression
        if part["class"] == "FUNCTION" and part["function_name"].lower() not in _value_functions():
            return f"the function {part['function_name']}()"
    elif "sample" in part and "modifiers" not in part:  # a FROM item (query nodes have modifiers)
        if kind not in _ALLOWED_FROM:
            return _FROM_NAMES.get(kind, f"a {kind} clause")
        if kind == "BASE_TABLE":
            name = part["table_name"].lower()
            scope = (part["catalog_name"].lower(), part["schema_name"].lower())
            index_scope = (scope[0] in ("", catalog) and scope[1] in ("", "main")) or scope == ("", catalog)
            if not (scope == ("", "") and name in ctes) and not (index_scope and name in tables):
                return f"the table {part['table_name']!r}"
    if kind == "RECURSIVE_CTE_NODE":
        ctes = ctes | {part["cte_name"].lower()}
    if "cte_map" in part:
        names = [entry["key"].lower() for entry in part["cte_map"]["map"]]
        for i, entry in enumerate(part["cte_map"]["map"]):  # each WITH item sees the ones before it
            if (refused := _refused_part(entry["value"], tables, catalog, ctes | set(names[:i]))) is not None:
                return refused
        ctes = ctes | set(names)
    rest = [value for key, value in part.items() if key != "cte_map"]
    return _refused_part(rest, tables, catalog, ctes)


def private_connection(threads: int) -> duckdb.DuckDBPyConnection:
    """An in-memory database of its own, whose temp directory (for spill files only) is its own too.

    Each reader needs its own: DuckDB shares connections to one file path within a process,
    which would keep serving an index that was since replaced. The default temp directory,
    ``<cwd>/.tmp``, stays readable to a connection without external access.
    """
    spill = os.path.join(tempfile.gettempdir(), f"pocaduck-query-{uuid.uuid4().hex}")
    return duckdb.connect(":memory:", config={"threads": threads, "temp_directory": spill})


def lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """No file access from now on, and no setting can change that (after the index is attached)."""
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


class SandboxedIndex:
    """An index file attached read-only to a locked-down connection: where users' SELECTs over it run.

    One serves every reader of that file in the process (:func:`sandboxed`): a
    connection is a database of its own (~5 MB and two file descriptors), and
    3,000 readers each holding one ran a process out of memory. Statements run on
    cursors of their own (:func:`run_select`), so readers and threads share it.

    With ``prepare``, users read the tables and views it makes in the in-memory
    catalog (``memory``) from the index attached as ``catalog``, before the
    connection is locked down: a reader that speaks other labels than the
    index's (bodies through a mapping) shows them under the index's table names.
    """

    def __init__(
        self, path: str, catalog: str, threads: int, prepare: Callable[[duckdb.DuckDBPyConnection], None] | None = None
    ):
        con = private_connection(threads)
        try:
            attach_read_only(con, path, catalog)
            if prepare is not None:
                prepare(con)
                catalog = "memory"
            con.execute(f"USE {catalog}")
            lock_down(con)
            self.tables = tables_of(con, catalog)
        except BaseException:
            con.close()
            raise
        self.connection, self.catalog = con, catalog
        self._lock = threading.Lock()
        weakref.finalize(self, con.close)  # once no reader holds it

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of its own for one caller: the connection takes one call at a time, its cursors one each."""
        with self._lock:
            return self.connection.cursor()


_sandboxes: weakref.WeakValueDictionary[tuple, SandboxedIndex] = weakref.WeakValueDictionary()
_sandboxes_lock = threading.Lock()


def sandboxed(
    path: str,
    catalog: str,
    threads: int,
    prepare: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    prepared: Hashable = None,
) -> SandboxedIndex:
    """The process's :class:`SandboxedIndex` of the index file at ``path`` as it is now, made on first use.

    Keyed by the file's identity, so an index replaced at the same path gets a
    connection of its own while readers of the old one keep theirs; and by the
    process, since a forked child may not use its parent's connections. With
    ``prepare`` (see :class:`SandboxedIndex`), ``prepared`` names what it makes:
    readers asking the same name share one connection.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "index.duckdb")
    >>> with duckdb.connect(path) as con:
    ...     _ = con.execute("CREATE TABLE labels AS SELECT 5::UBIGINT AS label")
    >>> first = sandboxed(path, "store_index", 1)
    >>> first is sandboxed(path, "store_index", 1), sorted(first.tables)
    (True, ['labels'])
    """
    found = os.stat(path)
    key = (os.getpid(), os.path.realpath(path), found.st_ino, found.st_mtime_ns, found.st_size, catalog, prepared)
    with _sandboxes_lock:
        index = _sandboxes.get(key)
        if index is None:
            index = _sandboxes[key] = SandboxedIndex(path, catalog, threads, prepare)
        return index


def tables_of(con: duckdb.DuckDBPyConnection, catalog: str) -> frozenset[str]:
    """The tables and views of ``catalog``: what users' SELECTs may read."""
    rows = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
        "UNION ALL SELECT view_name FROM duckdb_views() WHERE database_name = ? AND NOT internal",
        [catalog, catalog],
    ).fetchall()
    return frozenset(name.lower() for (name,) in rows)


def run_select(
    con: duckdb.DuckDBPyConnection,
    catalog: str,
    tables: frozenset[str],
    statement: str,
    params: Sequence[Any] | None,
    output: str,
    timeout: float | None,
) -> Any:
    """Run one read-only SELECT over ``catalog``'s ``tables`` on a cursor of ``con``; DuckDB's errors pass through.

    ``output`` and ``timeout`` come checked (``arguments.sql_request``).

    Example::

        run_select(con, "store_index", tables_of(con, "store_index"), "SELECT count(*) FROM labels", None, "numpy", 10)
    """
    outcome: dict[str, Any] = {}
    cursor = con.cursor()

    def run() -> None:
        try:
            cursor.execute(f"USE {catalog}").fetchall()  # our own identifier; DuckDB 2 wants results finished
            _check_read_only(cursor, statement, catalog, tables)
            result = cursor.sql(statement, params=params or None)
            if output == "numpy":
                outcome["result"] = result.fetchnumpy()
            else:
                outcome["result"] = result.to_arrow_table() if output == "arrow" else result.df()
        except BaseException as error:  # handed to the waiting thread, which raises it
            outcome["error"] = error

    def stop() -> None:
        # An interrupt that lands before the statement starts is lost: repeat it until the worker ends.
        while worker.is_alive():
            cursor.interrupt()
            worker.join(0.01)

    # DuckDB looks at signals only now and then (a long cross join never), and DuckDB 2 turns a
    # SIGINT during one of its calls into RuntimeError; a waiting thread takes SIGINT (Ctrl-C,
    # Jupyter's interrupt) at once. So every DuckDB call runs on the worker, and the cursor is the
    # statement's alone: an interrupt reaches nothing else and is closed with it.
    worker = threading.Thread(target=run, name="pocaduck-sql", daemon=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        worker.start()
        # Short waits: a signal the OS hands to one of DuckDB's threads wakes no waiting
        # thread, and Python runs its handler only once this one wakes.
        while worker.is_alive() and (deadline is None or time.monotonic() < deadline):
            worker.join(0.1 if deadline is None else min(0.1, deadline - time.monotonic()))
        timed_out = worker.is_alive()
    finally:  # a timeout, or KeyboardInterrupt on its way out
        stop()
        cursor.close()
    if timed_out:
        raise QueryTimeoutError(
            f"the statement was stopped after {timeout:g} s (timeout={timeout:g}): narrow it with WHERE "
            "or LIMIT, or give a longer timeout"
        ) from outcome.get("error")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _check_read_only(cursor: duckdb.DuckDBPyConnection, statement: str, catalog: str, tables: frozenset[str]) -> None:
    """Refuse anything but a SELECT reading the index tables: parsed, not matched as text."""
    allowed = _ALLOWED_SQL.format(tables=", ".join(sorted(tables)))
    try:
        statements = duckdb.extract_statements(statement)
    except duckdb.Error as error:
        raise SQLError(str(error)) from error
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        kinds = ", ".join(s.type.name for s in statements) or "nothing"
        raise ReadOnlySQLError(f"{allowed}; got: {kinds}")
    ((parsed,),) = cursor.execute("SELECT json_serialize_sql(?)", [statement]).fetchall()
    parsed = json.loads(parsed)
    if parsed["error"]:  # a statement that is a SELECT only in name, such as PRAGMA
        error = SQLError if parsed["error_type"] == "parser" else ReadOnlySQLError
        raise error(f"{parsed['error_message']} ({allowed})")
    refused = _refused_part(parsed["statements"], tables, catalog, frozenset())
    if refused is not None:
        raise ReadOnlySQLError(f"{refused} is not allowed: {allowed}")
