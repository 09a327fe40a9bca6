"""Users' SQL through a mapping version: ``labels`` lists bodies, ``mapping`` says which body each stored supervoxel is in.

The index's other tables keep their names and rows (``point_index.label`` is
a stored supervoxel: join ``mapping`` on ``supervoxel`` for its body), and the
index's own ``labels`` is ``supervoxel_labels``. The tables are made once per
index file and version in the process, on a locked-down connection of their
own (``_sql.sandboxed`` with ``prepare``): the stored supervoxels' bodies are
copied in from Arrow (16 bytes a supervoxel) and the bodies' summaries computed
once, so the label browser's sorting and paging read a table, not a join.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import numpy as np
import pyarrow as pa

from .._sql import SandboxedIndex, sandboxed, tables_of
from ..layout import Schema

INDEX_CATALOG = "store_index"  # where the index file is attached, beside the in-memory catalog users read


def body_summary_sql(schema: Schema) -> str:
    """The SELECT of ``labels`` by body: the index's per-supervoxel rows summed, and blocks and files counted.

    Counts, the supervoxels and the bounds come from the index's ``labels`` (a row per
    supervoxel); only the distinct blocks and files need its ``point_index``, counted
    apart: counting three distinct columns over ``point_index`` at once took twice as long
    (10^6 supervoxels, 4·10^6 index rows: 1.5 s against 0.15 + 0.54 s).

    >>> from pocaduck.layout import Schema
    >>> body_summary_sql(Schema(("x",), np.dtype("int32"), "int64")).split("SELECT ")[-1]
    'label, point_count, supervoxel_count, block_count, file_count, min_x, max_x FROM sums JOIN spread USING (label) ORDER BY label'
    """
    spatial = schema.spatial_columns
    bounds = ", ".join([*(f"min(min_{c}) AS min_{c}" for c in spatial), *(f"max(max_{c}) AS max_{c}" for c in spatial)])
    columns = ", ".join([*(f"min_{c}" for c in spatial), *(f"max_{c}" for c in spatial)])
    return (
        "WITH sums AS (SELECT m.body AS label, sum(s.point_count)::BIGINT AS point_count, "
        f"count(*)::BIGINT AS supervoxel_count, {bounds} FROM {INDEX_CATALOG}.labels s "
        "JOIN mapping m ON m.supervoxel = s.label GROUP BY m.body), "
        "spread AS (SELECT m.body AS label, count(DISTINCT p.block_id)::BIGINT AS block_count, "
        f"count(DISTINCT p.file_id)::BIGINT AS file_count FROM {INDEX_CATALOG}.point_index p "
        "JOIN mapping m ON m.supervoxel = p.label GROUP BY m.body) "
        f"SELECT label, point_count, supervoxel_count, block_count, file_count, {columns} "
        "FROM sums JOIN spread USING (label) ORDER BY label"
    )


def body_tables(
    index_path: str,
    threads: int,
    schema: Schema,
    version: tuple[str, str],
    bodies_of: Callable[[np.ndarray], np.ndarray],
) -> SandboxedIndex:
    """The locked-down connection where users' SQL reads bodies of mapping ``version`` (its name and creation time).

    ``bodies_of`` gives the body of each of a sorted uint64 array of supervoxels;
    it is called once per index file and version in the process, when the tables are made.

    Example: ``body_tables(query.index_path, 1, query.schema, ("v1", created), assignments.bodies_of)``.
    """

    def prepare(con: duckdb.DuckDBPyConnection) -> None:
        index_tables = tables_of(con, INDEX_CATALOG)
        stored = con.execute(f"SELECT label FROM {INDEX_CATALOG}.labels ORDER BY label").fetchnumpy()["label"]
        stored = np.asarray(stored, dtype=np.uint64)
        pairs = pa.table({"supervoxel": pa.array(stored), "body": pa.array(bodies_of(stored), pa.uint64())})
        con.register("mapping_pairs", pairs)
        con.execute("CREATE TABLE mapping AS SELECT supervoxel, body FROM mapping_pairs ORDER BY supervoxel")
        con.unregister("mapping_pairs")
        con.execute(f"CREATE TABLE labels AS {body_summary_sql(schema)}")
        con.execute(f"CREATE VIEW supervoxel_labels AS SELECT * FROM {INDEX_CATALOG}.labels")
        for name in sorted(index_tables - {"labels"}):  # our own identifiers, read from the index's catalog
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM {INDEX_CATALOG}.{name}")

    return sandboxed(index_path, INDEX_CATALOG, threads, prepare, ("mapping", *version))
