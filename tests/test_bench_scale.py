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
    """An index of ``labels`` labels, each one run in one of ``files`` files: labels 7919 apart, each with its
    random part (a field's labels are random uint64: their pages compress as little as the model must reckon
    with), runs of 1-2,000 rows, label 7919 (labels - 1) 10 rows."""
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE files AS SELECT i AS file_id, 'compacted/g/part-' || i || '.parquet' AS path, "
        "8192 AS row_group_size, 4000000 AS byte_size FROM range(?) t(i)",
        [files],
    )
    rng = np.random.default_rng(labels)
    label_ids = np.arange(labels, dtype=np.uint64) * np.uint64(7919) + rng.integers(0, 7919, labels, np.uint64)
    label_ids[-1] = 7919 * (labels - 1)
    counts = rng.integers(1, 2_000, labels)
    counts[-1] = 10
    table = {
        "label": label_ids,
        "file_id": (np.arange(labels) % files).astype(np.int32),
        "row_offset": np.cumsum(counts) - counts,
        "point_count": counts,
    }
    con.register("rows", table)
    con.execute("CREATE TABLE point_index AS SELECT * FROM rows")
    return con


def _figures(directory: LabelDirectory, files: int) -> dict[str, int]:
    """What bench_scale's store_figures records of a directory."""
    parts = directory.byte_parts()
    return {
        "files": files,
        "directory_entries": directory.entry_count,
        "directory_leaf_bytes": parts["leaves"],
        "directory_fence_bytes": parts["fences"],
        "directory_fence_items": parts["fence_items"],
        "directory_table_bytes": parts["table"],
    }


def _written(folder: Path, labels: int, files: int, page_bytes: int) -> LabelDirectory:
    folder.mkdir()
    write_label_directory(_index(labels, files), str(folder / "label_directory.bin"), page_bytes=page_bytes)
    return LabelDirectory.open(open_storage(StorageConfig(str(folder))), "label_directory.bin")


@pytest.mark.parametrize(("labels", "page_bytes"), [(5_000, 64 * 1024), (3_000, 100), (20_000, 64)])
def test_the_model_gives_the_size_and_depth_of_a_directory_from_one_a_quarter_its_size(tmp_path, labels, page_bytes):
    files = 3
    small = _figures(_written(tmp_path / "small", labels // 4, files, page_bytes), files)
    large = _written(tmp_path / "large", labels, files, page_bytes)

    model = bench_scale.directory_geometry(
        large.entry_count,
        files,
        bench_scale._table_bytes(small),
        page_bytes=page_bytes,
        **bench_scale._item_bytes(small),
    )

    assert model["levels"] == len(level_page_counts(large.entry_count, page_bytes)) == len(large._levels)
    assert model["bytes"] == pytest.approx(large.size, rel=0.1)
    assert large.point_count(7919 * (labels - 1)) == 10  # the file is a directory that answers, not bytes


def test_the_model_of_a_measured_directory_adds_up_to_its_size(tmp_path):
    directory = _written(tmp_path / "d", 20_000, 3, 64)
    figures = _figures(directory, 3)
    model = bench_scale.directory_geometry(
        directory.entry_count, 3, bench_scale._table_bytes(figures), 64, **bench_scale._item_bytes(figures)
    )
    assert model["bytes"] == pytest.approx(directory.size, rel=1e-9)


def test_the_cold_read_formula_counts_what_a_reader_fetches(tmp_path):
    """Two others, the pointer, the top, one page per level (fence, then leaf), each range with its response's
    headers, then the data's requests."""
    geometry = bench_scale.directory_geometry(30_000_000, 1, 0.0, entry_bytes=8.0, key_bytes=6.0)
    assert geometry["levels"] == 2
    requests, transferred = bench_scale.cold_read(geometry, data_requests=3, data_bytes=1_000)
    assert requests == 2 + 1 + 1 + 2 + 3
    pages = 8_191 * 6.0 + 2_730 * 8.0  # a full fence page and a full leaf page, as stored
    assert transferred == pytest.approx(3 * 600 + geometry["top_bytes"] + pages + 3 * 500 + 1_000)
    assert geometry["top_bytes"] == pytest.approx(2 * 6.0 + 2 * 16 + 48)  # the root: the fence level's 2 pages


def test_disk_usage_counts_a_hard_linked_index_once(tmp_path):
    (tmp_path / "unified_index.duckdb").write_bytes(b"x" * 5000)
    (tmp_path / "index_versions" / "b").mkdir(parents=True)
    (tmp_path / "index_versions" / "b" / "unified_index.duckdb").hardlink_to(tmp_path / "unified_index.duckdb")
    (tmp_path / "index_versions" / "b" / "label_directory.bin").write_bytes(b"d" * 300)

    parts = bench_scale.disk_usage(str(tmp_path))

    assert parts["unified index"] == 5000
    assert parts["label directory"] == 300
    assert json.dumps(parts)  # plain figures, saved with the run
