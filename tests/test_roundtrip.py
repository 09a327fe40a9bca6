"""What users rely on first: every point written comes back exactly, per label, across blocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _support import as_row_set

from pocaduck import Ingestor, Query, StorageConfig, create_store

BIG_LABELS = [0, 1, 2**63 - 1, 2**63, 2**64 - 1]


def build(store, writes, **ingestor_options):
    with Ingestor(StorageConfig(store), worker_id=0, **ingestor_options) as ingestor:
        for label, block_id, points in writes:
            ingestor.write(label, block_id, points)
    Ingestor.consolidate_indexes(StorageConfig(store))
    return Query(StorageConfig(store))


def test_labels_over_the_whole_uint64_range_round_trip(store):
    writes = [
        (label, f"b{b}", np.full((3, 3), b + i, np.int64)) for i, label in enumerate(BIG_LABELS) for b in range(4)
    ]
    query = build(store, writes)
    assert query.get_labels().dtype == np.uint64
    assert query.get_labels().tolist() == BIG_LABELS
    for i, label in enumerate(BIG_LABELS):
        expected = np.concatenate([np.full((3, 3), b + i) for b in range(4)])
        assert as_row_set(query.get_points(label)) == as_row_set(expected)
        assert query.get_point_count(np.uint64(label)) == 12
        assert query.get_blocks_for_label(label) == ["b0", "b1", "b2", "b3"]


def test_floats_come_back_bit_exact(store):
    points = np.array([[0.1, 1e-300, -2.5e10], [np.pi, 1 / 3, 7.000000000000001]])
    query = build(store, [(5, "b", points)])
    returned = query.get_points(5)
    assert returned.dtype == np.float64
    assert np.array_equal(returned, points)


def test_float32_and_small_int_dtypes_are_kept(store):
    query = build(store, [(1, "b", np.array([[1.5, 2.25]], np.float32))])
    assert query.get_points(1).dtype == np.float32
    assert query.schema.columns == ("x", "y")


def test_extra_columns_are_named_and_returned(store):
    points = np.array([[1, 2, 3, 2**40], [4, 5, 6, 2**40 + 1]], dtype=np.int64)
    query = build(store, [(9, "b", points)], columns=["x", "y", "z", "supervoxel"])
    assert query.schema.columns == ("x", "y", "z", "supervoxel")
    frame = query.get_points(9, output="pandas")
    assert list(frame.columns) == ["x", "y", "z", "supervoxel"]
    assert frame["supervoxel"].tolist() == [2**40, 2**40 + 1]


def test_unknown_label_gives_an_empty_array_of_the_store_width(store):
    query = build(store, [(1, "b", np.ones((2, 4), np.int32))])
    empty = query.get_points(12345)
    assert empty.shape == (0, 4) and empty.dtype == np.int32
    assert query.get_point_count(12345) == 0
    assert query.get_blocks_for_label(12345) == []


def test_empty_writes_are_skipped(store):
    query = build(store, [(1, "b", np.empty((0, 3), np.int64)), (2, "b", np.ones((1, 3), np.int64))])
    assert query.get_labels().tolist() == [2]


def test_rollover_into_many_files_keeps_every_point(store):
    rng = np.random.default_rng(1)
    writes = [
        (label, f"b{b}", rng.integers(0, 99, (int(rng.integers(1, 20)), 3))) for b in range(10) for label in (3, 4)
    ]
    query = build(store, writes, max_points_per_file=7, row_group_size=3)
    assert query.info()["files"] > 10
    for label in (3, 4):
        expected = np.concatenate([p for lab, _, p in writes if lab == label])
        assert as_row_set(query.get_points(label)) == as_row_set(expected)


def test_read_rows_gathers_index_rows_across_files_in_the_order_given(store):
    rng = np.random.default_rng(2)
    writes = [(label, f"b{b}", rng.integers(0, 99, (5, 3))) for b in range(6) for label in (7, 8)]
    query = build(store, writes, max_points_per_file=8, row_group_size=3)
    rows = query.sql(
        "SELECT file_id, row_offset, point_count FROM point_index WHERE block_id = 'b4' ORDER BY label DESC, file_id, row_offset",
        output="numpy",
    )
    assert len(np.unique(rows["file_id"])) > 1  # the block's two writes sit in different files
    points = query.read_rows(rows["file_id"], rows["row_offset"], rows["point_count"])
    expected = [p for lab in (8, 7) for lab2, block, p in writes if lab2 == lab and block == "b4"]
    assert points.tolist() == np.concatenate(expected).tolist()


def test_many_labels_in_one_call_as_dict_and_as_table(store):
    writes = [(label, "b", np.full((label + 1, 3), label)) for label in range(5)]
    query = build(store, writes)
    by_label = query.get_points([4, 2, 99])
    assert list(by_label) == [4, 2, 99]
    assert by_label[4].shape == (5, 3) and by_label[2].shape == (3, 3) and by_label[99].shape == (0, 3)
    table = query.get_points([1, 3], output="arrow")
    assert isinstance(table, pa.Table) and table.column_names == ["label", "x", "y", "z"]
    assert sorted(table.column("label").to_pylist()) == [1, 1, 3, 3, 3, 3]
    assert isinstance(query.get_points([1, 3], output="pandas"), pd.DataFrame)


def test_blocks_subset(store):
    writes = [(1, f"b{b}", np.full((2, 3), b)) for b in range(5)]
    query = build(store, writes)
    subset = query.get_points(1, blocks=["b1", "b3"])
    assert as_row_set(subset) == as_row_set(np.concatenate([np.full((2, 3), 1), np.full((2, 3), 3)]))


def test_integer_block_ids(store):
    query = build(store, [(1, 2**40, np.ones((1, 3))), (1, -3, np.ones((1, 3)))])
    assert query.get_blocks_for_label(1) == [-3, 2**40]
    assert query.get_points(1, blocks=[-3]).shape == (1, 3)


def test_mutating_a_returned_array_does_not_change_later_answers(store):
    query = build(store, [(1, "b", np.ones((2, 3), np.int64))])
    first = query.get_points(1)
    first[:] = 99
    assert query.get_points(1).tolist() == [[1, 1, 1], [1, 1, 1]]
    cached, timing = query.get_points(1, timing=True)
    assert timing["cache_hit"] is True and cached.tolist() == [[1, 1, 1], [1, 1, 1]]


def test_timing_variants_return_result_and_phases(store):
    query = build(store, [(1, "b", np.ones((2, 3)))])
    points, timing = query.get_points(1, use_cache=False, timing=True)
    assert points.shape == (2, 3)
    assert timing["points_returned"] == 2 and timing["files_queried"] == 1 and timing["total_time"] > 0
    assert query.get_point_count(1, timing=True)[0] == 2
    assert query.get_blocks_for_label(1, timing=True)[0] == ["b"]


def test_label_summary_has_counts_and_bounding_box(store):
    query = build(store, [(1, "a", np.array([[0, 5, -2]])), (1, "b", np.array([[3, 1, 4], [2, 2, 2]]))])
    summary = query.get_label_summary(1)
    assert summary["point_count"] == 3 and summary["block_count"] == 2
    assert (summary["min_x"], summary["min_y"], summary["min_z"]) == (0, 1, -2)
    assert (summary["max_x"], summary["max_y"], summary["max_z"]) == (3, 5, 4)
    assert query.get_label_summary(2)["point_count"] == 0


def test_declared_schema_with_voxel_size_is_kept(store):
    create_store(store, columns=("z", "y", "x"), dtype="int32", block_id_type="int64", voxel_size=[33, 8, 8])
    query = build(store, [(1, 0, np.ones((2, 3), np.int16))])  # int16 widens to int32 without loss
    assert query.schema.metadata["voxel_size"] == [33, 8, 8]
    assert query.get_points(1).dtype == np.int32


def test_query_and_ingestor_accept_plain_paths(store):
    with Ingestor(store, "w") as ingestor:
        ingestor.write(1, "b", np.ones((1, 3)))
    Ingestor.consolidate_indexes(store)
    with Query(store) as query:
        assert query.get_point_count(1) == 1


@pytest.mark.parametrize("name", ['it\'s a "store"', "ünïcode store ✓"])
def test_quotes_spaces_and_unicode_in_paths_ids_and_blocks(tmp_path, name):
    store = str(tmp_path / name)
    worker_id = "worker 'one' ✓"
    with Ingestor(store, worker_id) as ingestor:
        ingestor.write(1, "block 'x'; DROP TABLE files; --", np.ones((2, 3)))
    Ingestor.consolidate_indexes(store)
    with Query(store) as query:
        assert query.get_blocks_for_label(1) == ["block 'x'; DROP TABLE files; --"]
        assert query.get_points(1, blocks=["block 'x'; DROP TABLE files; --"]).shape == (2, 3)
        assert query.sql("SELECT worker_id FROM workers")["worker_id"].tolist() == [worker_id]


@pytest.mark.parametrize(("output", "kind"), [("pandas", pd.DataFrame), ("arrow", pa.Table), ("numpy", dict)])
def test_sql_results_in_the_format_asked_for(store, output, kind):
    query = build(store, [(1, "b", np.ones((2, 3))), (2, "b", np.ones((5, 3)))])
    result = query.sql("SELECT label, point_count FROM labels WHERE point_count > ? ORDER BY label", [3], output=output)
    assert isinstance(result, kind)
    columns = result.to_pydict() if output == "arrow" else result
    assert list(columns["label"]) == [2] and list(columns["point_count"]) == [5]
