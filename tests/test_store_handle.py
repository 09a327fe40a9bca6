"""A store opened once is passed to every verb; readers of it are cheap to open and never serve a replaced index."""

from __future__ import annotations

import multiprocessing
import os

import duckdb
import numpy as np
import pytest
from _support import as_row_set

from pocaduck import (
    Ingestor,
    InvalidLabelError,
    InvalidPointsError,
    Query,
    Reader,
    ReadOnlySQLError,
    Store,
    collect_garbage,
    compact,
    consolidate,
    make_demo_volume,
    open_store,
    scan_volume,
    verify,
)


def write_worker(store, worker, points_by_label, block="b0"):
    with Ingestor(store, worker) as ingestor:
        for label, points in points_by_label.items():
            ingestor.write(label, block, points)


def test_every_verb_takes_an_opened_store(tmp_path):
    store = open_store(str(tmp_path / "store"))
    assert isinstance(store, Store) and open_store(store) is store and store.kind is None
    write_worker(store, 0, {5: np.ones((3, 3), np.int32)})
    write_worker(store, 1, {5: np.full((2, 3), 2, np.int32), 6: np.zeros((1, 3), np.int32)}, block="b1")
    assert store.kind == "pocaduck"
    assert sorted(store.worker_states()[0]) == ["0", "1"] and store.worker_states()[1] == {}
    consolidate(store)
    assert compact(store, workers=1).points_written == 6
    assert store.compaction_in_force() is not None
    assert verify(store, deep=True).ok
    collect_garbage(store)
    with Query(store) as query:
        assert query.get_point_count(5) == 5 and query.get_blocks_for_label(5) == ["b0", "b1"]


def test_a_scan_into_an_opened_store(tmp_path):
    store = open_store(str(tmp_path / "scanned"))
    volume = make_demo_volume((32, 32, 32), seed=3)
    result = scan_volume(volume, store, block_shape=16, workers=1, mode="all")
    with Query(store) as query:
        assert query.info()["points"] == result.points > 0
        assert query.get_labels().tolist() == sorted(set(np.unique(volume).tolist()) - {0})


def test_a_new_reader_sees_a_replaced_index_and_an_open_one_keeps_its_own(store):
    write_worker(store, 0, {5: np.ones((3, 3))})
    consolidate(store)
    before = Query(store)
    assert before.get_point_count(5) == 3
    write_worker(store, 1, {5: np.full((4, 3), 2.0), 6: np.zeros((1, 3))})
    consolidate(store)  # replaces the index file on disk
    with Query(store) as after:
        assert after.get_point_count(5) == 7 and after.get_labels().tolist() == [5, 6]
    assert before.get_point_count(5) == 3 and before.get_labels().tolist() == [5]
    assert as_row_set(before.get_points(5, use_cache=False)) == as_row_set(np.ones((3, 3)))
    before.close()


def test_readers_opened_and_dropped_by_the_thousand_hold_no_files(store):
    write_worker(store, 0, {5: np.ones((3, 3))})
    consolidate(store)
    with Query(store) as warm:  # the process's database and first imports exist before counting
        warm.get_points(5)
    open_files = len(os.listdir("/proc/self/fd"))
    for number in range(1000):
        query = Query(store)
        assert query.get_point_count(5) == 3
        if number % 2:
            query.close()  # the other half are simply dropped
        del query
    assert len(os.listdir("/proc/self/fd")) <= open_files + 2


def test_users_sql_reaches_neither_files_nor_other_readers_indexes(tmp_path):
    stores = [str(tmp_path / name) for name in ("a", "b")]
    for number, path in enumerate(stores):
        write_worker(path, 0, {number: np.ones((1, 3))})
        consolidate(path)
    with Query(stores[0]) as first, Query(stores[1]) as second:
        assert first.get_labels().tolist() == [0] and second.get_labels().tolist() == [1]
        aliases = first._index.alias, second._index.alias
        for alias in aliases:
            with pytest.raises(ReadOnlySQLError):
                first.sql(f"SELECT * FROM {alias}.labels")
        with pytest.raises(duckdb.PermissionException, match="disabled by configuration"):
            first.db_connection.execute("SELECT * FROM read_csv('/etc/passwd')").fetchall()
        assert first.sql("SELECT label FROM labels")["label"].tolist() == [0]


def _child_reads(store: str, answers: multiprocessing.Queue) -> None:
    with Query(store) as query:
        answers.put(query.get_points(5).tolist())


def test_a_forked_child_opens_readers_of_its_own(store):
    write_worker(store, 0, {5: np.array([[1, 2, 3]])})
    consolidate(store)
    with Query(store) as query:  # the parent's database exists before the fork
        assert query.get_point_count(5) == 1
        context = multiprocessing.get_context("fork")
        answers = context.Queue()
        child = context.Process(target=_child_reads, args=(store, answers))
        child.start()
        assert answers.get(timeout=120) == [[1, 2, 3]]
        child.join(timeout=120)
        assert child.exitcode == 0
        assert query.get_points(5).tolist() == [[1, 2, 3]]


def test_both_layouts_answer_through_one_reader_interface(store):
    write_worker(store, 0, {5: np.ones((2, 3))})
    consolidate(store)
    with Query(store) as query:
        assert isinstance(query, Reader)
        assert query.get_label_summary(5)["point_count"] == 2
        assert query.sql("SELECT count(*) AS n FROM labels")["n"].tolist() == [1]


def test_write_block_stores_what_one_write_per_label_stores(tmp_path):
    rng = np.random.default_rng(7)
    labels = rng.choice(np.array([3, 2**64 - 1, 9, 2**63], dtype=np.uint64), size=500)
    points = rng.integers(-100, 100, size=(500, 3))
    by_block, by_label = str(tmp_path / "by_block"), str(tmp_path / "by_label")
    with Ingestor(by_block, 0, max_points_per_file=97) as ingestor:
        ingestor.write_block("b0", labels, points)
        ingestor.write_block("b1", labels[::-1].copy(), points[::-1])
        assert ingestor.stats.writes == 8
    with Ingestor(by_label, 0, max_points_per_file=97) as ingestor:
        for block, (block_labels, block_points) in {"b0": (labels, points), "b1": (labels[::-1], points[::-1])}.items():
            for label in np.unique(block_labels):
                ingestor.write(int(label), block, block_points[block_labels == label])
    consolidate(by_block)
    consolidate(by_label)
    with Query(by_block) as blockwise, Query(by_label) as labelwise:
        assert blockwise.get_labels().tolist() == labelwise.get_labels().tolist()
        for label in labelwise.get_labels():
            assert blockwise.get_points(label).tolist() == labelwise.get_points(label).tolist()
            assert blockwise.get_blocks_for_label(label) == ["b0", "b1"]


@pytest.mark.parametrize(
    ("labels", "points", "error", "message"),
    [
        (np.array([1, 2]), np.ones((3, 3)), InvalidLabelError, "2 entries for 3 points"),
        (np.array([1, -4, 2]), np.ones((3, 3)), InvalidLabelError, r"labels\[1\] is -4"),
        (np.array([1.0, 2.0, 3.0]), np.ones((3, 3)), InvalidLabelError, "1-D integer numpy array"),
        ([1, 2, 3], np.ones((3, 3)), InvalidLabelError, "got list"),
        (np.array([1, 2, 3]), np.ones(3), InvalidPointsError, r"shape \(N, D\)"),
    ],
)
def test_a_bad_block_is_refused_whole_and_earlier_writes_stay(store, labels, points, error, message):
    with Ingestor(store, 0) as ingestor:
        ingestor.write_block("b0", np.array([4, 4]), np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
        with pytest.raises(error, match=message):
            ingestor.write_block("b1", labels, points)
    consolidate(store)
    with Query(store) as query:
        assert query.get_labels().tolist() == [4]
        assert query.get_points(4).tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
