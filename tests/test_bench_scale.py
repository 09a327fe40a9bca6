"""bench_scale.py's model sizes a label directory as label_directory.py really writes one, at every depth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_scale  # noqa: E402

from pocaduck import StorageConfig  # noqa: E402
from pocaduck.label_directory import LabelDirectory, level_page_counts, write_label_directory  # noqa: E402
from pocaduck.storage import open_storage  # noqa: E402


def _index(labels: int, files: int) -> duckdb.DuckDBPyConnection:
    """An index of ``labels`` labels, each one run of 10 rows in one of ``files`` files."""
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE files AS SELECT i AS file_id, 'compacted/g/part-' || i || '.parquet' AS path, "
        "8192 AS row_group_size, 4000000 AS byte_size FROM range(?) t(i)",
        [files],
    )
    label_ids = np.arange(labels, dtype=np.uint64) * 7919
    table = {
        "label": label_ids,
        "file_id": (np.arange(labels) % files).astype(np.int32),
        "row_offset": np.arange(labels, dtype=np.int64) * 10,
        "point_count": np.full(labels, 10, dtype=np.int64),
    }
    con.register("rows", table)
    con.execute("CREATE TABLE point_index AS SELECT * FROM rows")
    return con


@pytest.mark.parametrize(("labels", "page_bytes"), [(5_000, 64 * 1024), (3_000, 100), (20_000, 64)])
def test_the_model_gives_the_size_and_depth_of_a_written_directory(tmp_path, labels, page_bytes):
    files = 3
    target = tmp_path / "label_directory.bin"
    written = write_label_directory(_index(labels, files), str(target), page_bytes=page_bytes)
    real = {"directory_entries": written.entries, "directory_top_bytes": written.top_bytes, "files": files}

    model = bench_scale.directory_geometry(
        written.entries, files, bench_scale._table_bytes(real, page_bytes), page_bytes=page_bytes
    )

    assert model["bytes"] == written.size == target.stat().st_size
    assert model["levels"] == len(level_page_counts(written.entries, page_bytes))
    directory = LabelDirectory.open(open_storage(StorageConfig(str(tmp_path))), target.name)
    assert directory.point_count(7919 * (labels - 1)) == 10  # the file is a directory that answers, not bytes


def test_the_cold_read_formula_counts_what_a_reader_fetches(tmp_path):
    """Two others, the pointer, the top, one page per level, then the data's requests."""
    geometry = bench_scale.directory_geometry(30_000_000, 1, 0.0)
    assert geometry["levels"] == 2
    requests, transferred = bench_scale.cold_read(geometry, data_requests=3, data_bytes=1_000)
    assert requests == 2 + 1 + 1 + 2 + 3
    assert transferred > 2 * 64 * 1024 + geometry["top_bytes"] + 1_000


def test_disk_usage_counts_a_hard_linked_index_once(tmp_path):
    (tmp_path / "unified_index.duckdb").write_bytes(b"x" * 5000)
    (tmp_path / "index_versions" / "b").mkdir(parents=True)
    (tmp_path / "index_versions" / "b" / "unified_index.duckdb").hardlink_to(tmp_path / "unified_index.duckdb")
    (tmp_path / "index_versions" / "b" / "label_directory.bin").write_bytes(b"d" * 300)

    parts = bench_scale.disk_usage(str(tmp_path))

    assert parts["unified index"] == 5000
    assert parts["label directory"] == 300
    assert json.dumps(parts)  # plain figures, saved with the run
