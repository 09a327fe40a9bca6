"""What every reader of a store answers, whichever layout wrote it.

``Query`` reads stores of this library; ``LegacyQuery`` reads stores of the
original pocaduck 0.1.x. Both implement :class:`Reader`, so the CLI, users' SQL
and every widget work on either without asking which (``Query(path)`` opens the
one the store needs). The shared parts live here: the context manager, SQL
over the index, label summaries and the timing printout.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Literal

import duckdb
import numpy as np

from ._gate import Gate, gated
from ._sql import run_select
from ._timing import print_timing_info
from .arguments import sql_request
from .config import StorageConfig
from .errors import PocaduckError, SQLError
from .index import label_summary
from .keys import check_label
from .layout import Schema

Output = Literal["numpy", "arrow", "pandas"]


class Reader(ABC):
    """A store opened for reading: labels, their points and summaries, and read-only SQL over its index.

    Implementations set ``storage_config``, ``schema`` (columns, dtype, block id
    type), ``using_optimized_data`` and ``_gate`` (every public call passes it, so
    ``close()`` waits for other threads' calls), and provide ``_cursor()`` (the
    connection their own statements run on, one thread's at a time),
    ``_sql_connection()`` (the locked-down one for users' SQL, whose catalog
    ``_catalog`` holds the tables ``_tables``, among them ``labels``) and
    ``db_connection`` (a cursor of that one). Every public method is safe to call
    from many threads at once.

    >>> import tempfile, numpy as np
    >>> from pocaduck import Ingestor, Query, consolidate
    >>> store = tempfile.mkdtemp()
    >>> with Ingestor(store, worker_id=0) as ingestor:
    ...     ingestor.write(5, "b0", np.array([[1, 2, 3]]))
    >>> _ = consolidate(store)
    >>> with Query(store) as reader:
    ...     isinstance(reader, Reader), reader.get_label_summary(5)["point_count"]
    (True, 1)
    """

    storage_config: StorageConfig
    schema: Schema
    using_optimized_data: bool
    db_connection: duckdb.DuckDBPyConnection
    _gate: Gate
    _catalog: str
    _tables: frozenset[str]

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @abstractmethod
    def close(self) -> None:
        """Release the index connection, open files and caches."""

    @abstractmethod
    def get_labels(self) -> np.ndarray:
        """All labels in the store, sorted, as uint64."""

    @abstractmethod
    def get_point_count(self, label: int, timing: bool = False) -> int | tuple[int, dict]:
        """Number of points stored for ``label`` (0 when unknown)."""

    @abstractmethod
    def get_blocks_for_label(self, label: int, timing: bool = False) -> list | tuple[list, dict]:
        """Sorted ids of the blocks holding ``label``'s points."""

    @abstractmethod
    def get_points(
        self,
        label: int | Iterable[int],
        use_cache: bool = True,
        timing: bool = False,
        *,
        sample: int | None = None,
        seed: int | None = None,
    ) -> Any:
        """All points of a label, assembled across every block; several labels give one result per label.

        ``sample=N`` gives ``min(N, count)`` of them, uniformly without replacement,
        the same for the same points and ``seed`` however they are stored.
        """

    @abstractmethod
    def iter_points(
        self,
        label: int | Iterable[int],
        chunk_size: int | None = None,
        *,
        batch_size: int | None = None,
        output: Output = "numpy",
    ) -> Iterator[Any]:
        """One label's points in chunks of ``chunk_size`` rows, or several labels' in batches of whole labels."""

    @abstractmethod
    def get_labels_in_box(self, lower: Sequence[float], upper: Sequence[float]) -> np.ndarray:
        """The labels with a point ``p`` in ``lower <= p[:3] < upper``, sorted, as uint64."""

    @abstractmethod
    def get_points_in_box(
        self, lower: Sequence[float], upper: Sequence[float], labels: Any = None, output: Output = "arrow"
    ) -> Any:
        """Every point in ``lower <= p[:3] < upper``, with its label."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """Store-wide totals, as ``pocaduck info`` prints them."""

    @abstractmethod
    def _cursor(self) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        """The connection the reader's own statements run on, this thread's alone while the block runs."""

    @abstractmethod
    def _sql_connection(self) -> duckdb.DuckDBPyConnection:
        """The locked-down connection users' statements run on, each on a cursor of its own."""

    @gated
    def get_label_summary(self, label: int) -> dict[str, Any]:
        """``label``'s row of the ``labels`` table: counts and, where the layout records it, its bounding box.

        An unknown label has zero counts and ``None`` elsewhere.
        """
        label = check_label(label)
        with self._cursor() as cursor:
            return label_summary(cursor, label)

    @gated
    def sql(
        self,
        statement: str,
        params: Sequence[Any] | None = None,
        output: Output = "pandas",
        timeout: float | None = None,
    ) -> Any:
        """Run one read-only ``SELECT`` over the index tables (``labels`` and the layout's own tables).

        Joins, subqueries, WITH clauses and ``?`` parameters are fine; table functions,
        file paths and settings are refused (``ReadOnlySQLError``), DuckDB's own
        complaints raise ``SQLError``. With ``timeout`` (seconds) a statement still
        running then is stopped with ``QueryTimeoutError``; Ctrl-C or Jupyter's
        interrupt stops it at once with ``KeyboardInterrupt``.

        Example: ``query.sql("SELECT label, point_count FROM labels ORDER BY point_count DESC LIMIT 5", timeout=10)``.
        """
        statement, params, output, timeout = sql_request(statement, params, output, timeout)
        try:
            with self._index_read():
                connection = self._sql_connection()
                return run_select(connection, self._catalog, self._tables, statement, params, output, timeout)
        except duckdb.Error as error:
            raise SQLError(str(error)) from error

    def _index_read(self) -> contextlib.AbstractContextManager[None]:
        """Where an implementation turns DuckDB's read errors on its index into an error that says what to do."""
        return contextlib.nullcontext()

    def _explained(self, error: PocaduckError) -> PocaduckError:
        """``error`` as a public call raises it: an implementation may know better what it means."""
        return error

    print_timing_info = staticmethod(print_timing_info)
