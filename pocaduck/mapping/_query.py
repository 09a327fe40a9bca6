"""Reads through a mapping version: ``Query(store, mapping=name)`` speaks bodies, points stay per supervoxel.

A :class:`MappedQuery` holds the ordinary Query that ``Query(store, mapping=)``
opened (whose labels are the supervoxels) and the version's ``_resolved.Chain``:
one body's supervoxels, or a few supervoxels' bodies, are ranged reads of the
root's row groups with the children's changes laid over them. Only answers about
every body (``get_labels``, boxes, SQL) resolve the version whole
(``_resolved.Assignments``, on first need, then kept). A body's points are its
supervoxels' points, read in one multi-label ``get_points`` call; summaries
aggregate the supervoxels' index rows. Users' SQL reads bodies too (``_sql.body_tables``): ``labels``
lists them, ``mapping`` pairs each stored supervoxel with its body, and
``supervoxel_labels`` is the index's own ``labels``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from .._gate import Gate, gated, gated_iterator
from .._sql import SandboxedIndex
from .._timing import Timing
from ..arguments import OUTPUTS, one_of, positive_int, sample_and_seed
from ..errors import PocaduckError
from ..keys import check_label, check_labels, check_labels_asked
from ..reader import Output, Reader
from ..sampling import sample_of_union
from ..store import Store
from ._resolved import Assignments, chain, resolved, resolved_if_kept
from ._sql import body_tables
from ._versions import MappingVersion, open_version


class MappedQuery(Reader):
    """A reader whose labels are bodies of mapping version ``mapping``; made by ``Query(store, mapping=name)``.

    Every label asked for or returned is a body; ``get_supervoxels`` and
    ``get_body`` answer the mapping itself. Arrow and pandas output carry a
    ``supervoxel`` column (``stored_label`` if the store has a column of that
    name). Bodies' points are not cached (``use_cache`` is accepted and ignored).

    >>> import tempfile
    >>> from pocaduck import Ingestor, Query, consolidate, write_mapping
    >>> store = tempfile.mkdtemp()
    >>> with Ingestor(store, worker_id=0) as ingestor:
    ...     ingestor.write_block("b0", np.array([1, 2, 3]), np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]]))
    >>> _ = consolidate(store)
    >>> _ = write_mapping(store, "v1", [2], [1])  # merge supervoxel 2 into body 1
    >>> with Query(store, mapping="v1") as query:
    ...     query.get_points(1).tolist(), query.get_labels().tolist(), query.get_supervoxels(1).tolist()
    ([[0, 0, 0], [1, 1, 1]], [1, 3], [1, 2])
    """

    def __init__(self, store: Store, reader: Reader, mapping: str):
        """Read ``store``'s bodies of version ``mapping`` through ``reader``, a Reader of its supervoxels (closed
        with this one, and at once if the version cannot be read)."""
        self._query = reader
        try:
            opened = open_version(store.storage, mapping)
            self.mapping: MappingVersion = opened.version
            self._storage = store.storage
            self._chain = chain(store, opened)
        except BaseException:
            reader.close()
            raise
        self._whole: Assignments | None = resolved_if_kept(store.storage, self.mapping)
        self._whole_lock = threading.Lock()
        self._gate = Gate()
        self.storage_config = reader.storage_config
        self.schema = reader.schema
        self.using_optimized_data = reader.using_optimized_data
        self._body_sql: SandboxedIndex | None = None
        self._body_sql_lock = threading.Lock()
        self.supervoxel_column = "stored_label" if "supervoxel" in self.schema.columns else "supervoxel"

    @property
    def _assignments(self) -> Assignments:
        """The version resolved whole, on first need (answers about every body: labels, boxes, SQL), then kept."""
        if self._whole is None:
            with self._whole_lock:
                if self._whole is None:
                    self._whole = resolved(self._storage, self.mapping)
        return self._whole

    def _supervoxels_of(self, bodies: list[int]) -> list[np.ndarray]:
        """Each body's supervoxels: from the version resolved whole if at hand, else by ranged reads of the root."""
        whole = self._whole
        if whole is None:
            members = self._chain.supervoxels_of_each(bodies)
            if members is not None:
                return members
            whole = self._assignments  # a root written before it stored its rows by body: resolved whole
        return [whole.supervoxels_of(body) for body in bodies]

    def _bodies_of(self, supervoxels: np.ndarray) -> np.ndarray:
        """Supervoxels' bodies: from the version resolved whole if at hand, else by ranged reads of the root."""
        whole = self._whole
        return self._chain.bodies_of(supervoxels) if whole is None else whole.bodies_of(supervoxels)

    # -- the mapping itself ---------------------------------------------------

    @gated
    def get_supervoxels(self, body: int) -> np.ndarray:
        """The supervoxels of ``body`` in this version, sorted, as uint64 (an id no version names is its own body).

        Example: ``query.get_supervoxels(10)``.
        """
        return self._supervoxels_of([check_label(body, "body")])[0]

    @gated
    def get_body(self, supervoxels: int | Iterable[int]) -> int | np.ndarray:
        """The body of one supervoxel (an int), or of each of many (a uint64 array, one lookup for all).

        Example: ``query.get_body(np.array([1, 2, 3], np.uint64))``.
        """
        if isinstance(supervoxels, np.ndarray) and supervoxels.ndim == 1:
            return self._bodies_of(check_labels(supervoxels, len(supervoxels)))
        asked, single = check_labels_asked(supervoxels, "supervoxels")
        bodies = self._bodies_of(np.array(asked, dtype=np.uint64))
        return int(bodies[0]) if single else bodies

    def _members(self, bodies: list[int]) -> tuple[list[np.ndarray], np.ndarray]:
        """Each body's supervoxels, and all of them once, sorted (the labels to read, uint64)."""
        members = self._supervoxels_of(bodies)
        stored = np.unique(np.concatenate(members)) if members else np.empty(0, np.uint64)
        return members, stored

    # -- points ---------------------------------------------------------------

    @gated
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
        """All points of a body: its supervoxels' points, supervoxel after supervoxel; several bodies as ``Query``.

        ``sample=N`` draws ``min(N, count)`` of the body's points as ``Query``
        does from a label's, each point keyed by its supervoxel (see
        ``sampling.sample_of_union``): only each supervoxel's own sample of N is
        read, one short range each on a compacted store (``seed=None``).

        Example: ``query.get_points(body, output="pandas")`` has a ``supervoxel`` column.
        """
        one_of(output, "output", OUTPUTS)
        sample, seed = sample_and_seed(sample, seed)
        bodies, single = check_labels_asked(label)
        clock = Timing(label=bodies[0] if single else bodies, cache_hit=False, points_returned=0)
        with clock.phase("index_lookup_time"):
            members, stored = self._members(bodies)
        with clock.phase("data_read_time"):
            # With a sample, each supervoxel's own sample holds every row the body's sample can take from it.
            read = {"use_cache": False, "blocks": blocks, "sample": sample, "seed": seed}
            by_supervoxel = self._query.get_points(stored, **read) if len(stored) else {}
        empty = np.empty((0, len(self.schema.columns)), dtype=self.schema.dtype)
        results = []
        for body, supervoxels in zip(bodies, members, strict=True):
            parts = [by_supervoxel[supervoxel] for supervoxel in supervoxels.tolist()]
            points = _joined(parts) if parts else empty
            owners = (
                np.repeat(supervoxels, [len(part) for part in parts])
                if output != "numpy" or sample is not None
                else None
            )
            if sample is not None:
                kept = sample_of_union(parts, supervoxels.tolist(), sample, seed)
                points, owners = points[kept], owners[kept]
            results.append((body, points, owners))
        clock["supervoxels"] = len(stored)
        clock["points_returned"] = sum(len(points) for _, points, _ in results)
        return clock.finish(self._shaped(results, single, output), timing)

    def _shaped(self, results: list[tuple[int, np.ndarray, np.ndarray | None]], single: bool, output: Output) -> Any:
        if output == "numpy":
            return results[0][1] if single else {body: points for body, points, _ in results}
        points = np.concatenate([points for _, points, _ in results])
        table = pa.table(list(points.T), names=list(self.schema.columns))
        owners = np.concatenate([owners for _, _, owners in results])
        table = table.add_column(0, self.supervoxel_column, pa.array(owners, pa.uint64()))
        if not single:
            bodies = np.repeat(np.array([body for body, _, _ in results], np.uint64), [len(p) for _, p, _ in results])
            table = table.add_column(0, "label", pa.array(bodies, pa.uint64()))
        return table if output == "arrow" else table.to_pandas()

    @gated
    def iter_points(self, label: int, chunk_size: int = 1_000_000) -> Iterator[np.ndarray]:
        """A body's points as consecutive (chunk_size, D) arrays that concatenate to ``get_points(body)``."""
        chunk_size = positive_int(chunk_size, "chunk_size", "points per chunk")
        supervoxels = self._supervoxels_of([check_label(label)])[0].tolist()
        pieces = (piece for supervoxel in supervoxels for piece in self._query.iter_points(supervoxel, chunk_size))
        return gated_iterator(self._gate, _rechunked(pieces, chunk_size))

    # -- summaries --------------------------------------------------------------

    @gated
    def get_labels(self) -> np.ndarray:
        """The bodies of the stored supervoxels in this version, sorted, as uint64."""
        return np.unique(self._assignments.bodies_of(self._query.get_labels()))

    @gated
    def get_point_count(self, label: int, timing: bool = False) -> int | tuple[int, dict]:
        """Points stored for the body's supervoxels (0 when none is stored)."""
        clock = Timing(label=check_label(label))
        with clock.phase("index_lookup_time"):
            _, stored = self._members([clock["label"]])
            with self._cursor() as cursor:
                (count,) = cursor.execute(
                    "SELECT coalesce(sum(point_count), 0)::BIGINT FROM labels WHERE label = ANY(?::UBIGINT[])",
                    [stored.tolist()],
                ).fetchone()
        return clock.finish(int(count), timing)

    @gated
    def get_label_summary(self, label: int) -> dict[str, Any]:
        """The body's counts (points, blocks, files, stored supervoxels) and bounding box; zeros and None if none."""
        body = check_label(label)
        _, stored = self._members([body])
        spatial = self.schema.spatial_columns
        bounds = ", ".join(
            [*(f"min(min_{c}) AS min_{c}" for c in spatial), *(f"max(max_{c}) AS max_{c}" for c in spatial)]
        )
        with self._cursor() as cursor:
            result = cursor.execute(
                "SELECT coalesce(sum(point_count), 0)::BIGINT AS point_count, "
                "count(DISTINCT block_id)::BIGINT AS block_count, count(DISTINCT file_id)::BIGINT AS file_count, "
                f"count(DISTINCT label)::BIGINT AS supervoxel_count, {bounds} "
                "FROM point_index WHERE label = ANY(?::UBIGINT[])",
                [stored.tolist()],
            )
            names = [column[0] for column in result.description]
            row = result.fetchone()
        return {"label": body, **dict(zip(names, row, strict=True))}

    @gated
    def get_blocks_for_label(self, label: int, timing: bool = False) -> list | tuple[list, dict]:
        """Sorted ids of the blocks holding the body's points."""
        clock = Timing(label=check_label(label))
        with clock.phase("index_lookup_time"):
            _, stored = self._members([clock["label"]])
            with self._cursor() as cursor:
                rows = cursor.execute(
                    "SELECT DISTINCT block_id FROM point_index WHERE label = ANY(?::UBIGINT[]) ORDER BY block_id",
                    [stored.tolist()],
                ).fetchall()
        blocks = [block_id for (block_id,) in rows]
        clock["blocks_found"] = len(blocks)
        return clock.finish(blocks, timing)

    @gated
    def info(self) -> dict[str, Any]:
        """The store's totals (``labels`` counts supervoxels) and the mapping version read."""
        return {**self._query.info(), "mapping": self.mapping.to_dict()}

    # -- space ------------------------------------------------------------------

    @gated
    def get_labels_in_box(self, lower: Sequence[float], upper: Sequence[float]) -> np.ndarray:
        """The bodies with a point ``p`` in ``lower <= p[:3] < upper``, sorted, as uint64."""
        return np.unique(self._assignments.bodies_of(self._query.get_labels_in_box(lower, upper)))

    @gated
    def get_points_in_box(
        self, lower: Sequence[float], upper: Sequence[float], labels: Any = None, output: Output = "arrow"
    ) -> Any:
        """Every point in ``lower <= p[:3] < upper``: a table with ``label`` (the body) and ``supervoxel`` columns.

        ``labels`` keeps only those bodies; ``output="numpy"`` gives ``{body: points}``.
        """
        one_of(output, "output", OUTPUTS)
        bodies = None if labels is None else check_labels_asked(labels, "labels")[0]
        stored = None if bodies is None else self._members(bodies)[1]
        table = self._query.get_points_in_box(lower, upper, labels=stored, output="arrow")
        supervoxels = table.column("label").to_numpy().astype(np.uint64, copy=False)
        owners = self._assignments.bodies_of(supervoxels)
        order = np.argsort(owners, kind="stable")
        table = table.take(order).drop_columns(["label"])
        owners, supervoxels = owners[order], supervoxels[order]
        if output == "numpy":
            points = np.column_stack([table.column(name).to_numpy() for name in self.schema.columns])
            found = bodies if bodies is not None else np.unique(owners).tolist()
            starts = np.searchsorted(owners, np.array(found, np.uint64), "left")
            stops = np.searchsorted(owners, np.array(found, np.uint64), "right")
            return {body: points[s:e] for body, s, e in zip(found, starts.tolist(), stops.tolist(), strict=True)}
        table = table.add_column(0, self.supervoxel_column, pa.array(supervoxels, pa.uint64()))
        table = table.add_column(0, "label", pa.array(owners, pa.uint64()))
        return table if output == "arrow" else table.to_pandas()

    # -- what a Reader delegates --------------------------------------------------

    def close(self) -> None:
        """Release the store's Query once the calls in progress have ended."""
        if self._gate.shut():
            self._query.close()
            with self._body_sql_lock:
                self._body_sql = None  # the process's connection closes once no Query of this version holds it

    @property
    def db_connection(self) -> duckdb.DuckDBPyConnection:
        """A cursor where users' SQL runs: ``labels`` by body, ``mapping`` (supervoxel, body), ``supervoxel_labels``.

        Example: ``query.db_connection.sql("SELECT label, supervoxel_count FROM labels").fetchall()``.
        """
        with self._gate.passing():
            sandbox = self._bodies_in_sql()
            cursor = sandbox.cursor()
            cursor.execute(f"USE {sandbox.catalog}").fetchall()
            return cursor

    def _bodies_in_sql(self) -> SandboxedIndex:
        """The connection users' SQL runs on, made on first use (and shared by every Query of this version)."""
        with self._body_sql_lock:
            if self._body_sql is None:
                with self._query._index_read():
                    self._body_sql = body_tables(
                        self._query.index_path,
                        self._query.threads,
                        self.schema,
                        (self.mapping.name, self.mapping.created),
                        self._assignments.bodies_of,  # SQL over every body: the version resolved whole
                    )
            return self._body_sql

    _catalog = "memory"  # where the body tables live, beside the attached index

    @property
    def _tables(self) -> frozenset[str]:
        return self._bodies_in_sql().tables

    def _cursor(self) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        return self._query._cursor()

    def _sql_connection(self) -> duckdb.DuckDBPyConnection:
        return self._bodies_in_sql().cursor()

    def _index_read(self) -> contextlib.AbstractContextManager[None]:
        return self._query._index_read()

    def _explained(self, error: PocaduckError) -> PocaduckError:
        return self._query._explained(error)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """``np.concatenate(parts)``, without the copy when the parts are consecutive rows of one array.

    They are when Query read them: its result for several labels is one array, label after label, and a body's
    supervoxels, alone in the read, follow each other there (one range of one file when compacted by its mapping).

    >>> rows = np.empty((6, 2), np.int64)
    >>> rows[:] = np.arange(12).reshape(6, 2)
    >>> joined = _joined([rows[0:1], rows[1:4], rows[4:4]])
    >>> joined.tolist(), np.shares_memory(joined, rows), _joined([rows[0:1], rows[2:3]]).tolist()
    ([[0, 1], [2, 3], [4, 5], [6, 7]], True, [[0, 1], [4, 5]])
    """
    filled = [part for part in parts if len(part)]
    base = filled[0].base if filled else None
    if base is None or base.ndim != 2 or not base.flags.c_contiguous:
        return np.concatenate(parts)
    row_bytes = base.strides[0]
    origin = base.__array_interface__["data"][0]
    start = (filled[0].__array_interface__["data"][0] - origin) // row_bytes
    end = start
    for part in filled:  # an empty slice may point anywhere: it adds nothing
        if part.base is not base or part.__array_interface__["data"][0] != origin + end * row_bytes:
            return np.concatenate(parts)
        end += len(part)
    return base[start:end]


def _rechunked(pieces: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Arrays of ``size`` rows (the last shorter) holding ``pieces``' rows in order.

    >>> [len(chunk) for chunk in _rechunked(iter([np.zeros((3, 1)), np.zeros((4, 1))]), 2)]
    [2, 2, 2, 1]
    """
    held: list[np.ndarray] = []
    count = 0
    for piece in pieces:
        held.append(piece)
        count += len(piece)
        while count >= size:
            joined = np.concatenate(held)
            yield joined[:size]
            held, count = [joined[size:]], count - size
    if count:
        yield np.concatenate(held)
