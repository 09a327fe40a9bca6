"""Consolidation: idempotent, atomic, re-runnable, and strict about unfinished workers."""

from __future__ import annotations

import json
import os

import _children
import duckdb
import numpy as np
import pytest
from _support import as_row_set

from pocaduck import EmptyStoreError, Ingestor, Query, WorkerNotFinalizedError, consolidate, open_store
from pocaduck.consolidate import UnifiedIndexBuild, publish_unified_index
from pocaduck.gc import collect_garbage
from pocaduck.layout import BUILDING_PREFIX


def write_worker(store, worker_id, label_points):
    with Ingestor(store, worker_id) as ingestor:
        for label, points in label_points.items():
            ingestor.write(label, f"{worker_id}", points)


def index_content(path):
    with duckdb.connect(path, read_only=True) as con:
        return {
            table: con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            for table in ("files", "point_index", "labels", "workers")
        }


def test_running_it_twice_gives_the_same_index(store):
    write_worker(store, 0, {1: np.ones((2, 3)), 2: np.zeros((1, 3))})
    write_worker(store, 1, {1: np.full((3, 3), 5.0)})
    first = index_content(consolidate(store))
    second = index_content(consolidate(store))
    assert first == second
    with Query(store) as query:
        assert query.get_point_count(1) == 5


def test_rerun_after_more_workers_finish_includes_them(store):
    write_worker(store, 0, {1: np.ones((2, 3))})
    consolidate(store)
    write_worker(store, 1, {1: np.full((1, 3), 7.0), 3: np.ones((4, 3))})
    consolidate(store)
    with Query(store) as query:
        assert query.get_labels().tolist() == [1, 3]
        assert as_row_set(query.get_points(1)) == as_row_set([[1, 1, 1], [1, 1, 1], [7, 7, 7]])


def test_unfinalized_worker_is_refused_by_name(store):
    write_worker(store, "done", {1: np.ones((2, 3))})
    running = Ingestor(store, "still-running")
    running.write(1, "b", np.ones((1, 3)))
    with pytest.raises(WorkerNotFinalizedError, match="'still-running'"):
        consolidate(store)
    running.close()  # gave up without finalize: now it is an abandoned session
    with pytest.raises(WorkerNotFinalizedError, match="never called finalize"):
        consolidate(store)
    consolidate(store, ignore_unfinalized=True)
    with Query(store) as query:
        assert query.get_point_count(1) == 2


def test_readers_keep_the_index_they_opened_until_they_reopen(store):
    write_worker(store, 0, {1: np.ones((2, 3))})
    consolidate(store)
    old_reader = Query(store)
    write_worker(store, 1, {1: np.ones((5, 3))})
    consolidate(store)
    assert old_reader.get_point_count(1) == 2  # the old index, whole
    assert old_reader.get_points(1, use_cache=False).shape == (2, 3)
    with Query(store) as new_reader:
        assert new_reader.get_point_count(1) == 7
    old_reader.close()


def test_consolidation_leaves_no_temporary_files(store):
    write_worker(store, 0, {1: np.ones((2, 3))})
    consolidate(store)
    consolidate(store)
    assert sorted(os.listdir(store)) == [
        "index_versions",
        "label_directory.json",
        "pocaduck.json",
        "unified_index.duckdb",
        "workers",
    ]
    versions = os.listdir(os.path.join(store, "index_versions"))
    assert len(versions) == 2  # one per consolidation; gc removes the older one
    for build in versions:
        assert sorted(os.listdir(os.path.join(store, "index_versions", build))) == [
            "label_directory.bin",
            "unified_index.duckdb",
        ]


def test_nothing_to_consolidate(store):
    Ingestor(store, 0).finalize()
    with pytest.raises(EmptyStoreError, match="no finalized worker data"):
        consolidate(store)


def test_output_path_like_the_original(store, tmp_path):
    write_worker(store, 0, {1: np.ones((2, 3))})
    target = str(tmp_path / "elsewhere.duckdb")
    assert Ingestor.consolidate_indexes(store, target) == target
    with Query(store, index_path=target) as query:
        assert query.get_point_count(1) == 2


def test_original_table_name_is_available_for_sql(store):
    write_worker(store, 0, {1: np.ones((2, 3))})
    consolidate(store)
    with Query(store) as query:
        frame = query.sql("SELECT label, block_id, file_path, point_count FROM point_cloud_index")
        assert frame["point_count"].tolist() == [2] and frame["file_path"][0].endswith(".parquet")


def test_an_older_view_published_last_keeps_the_worker_that_finished_in_between(store):
    write_worker(store, 0, {1: np.ones((2, 3))})
    consolidate(store)
    opened = open_store(store)
    with UnifiedIndexBuild(opened) as older:
        older.fill(opened.schema, opened.worker_states()[0], None)  # sees worker 0 only
        write_worker(store, 1, {2: np.ones((4, 3))})
        consolidate(store)  # a later run sees both and publishes first
        assert older.publish()  # the newer index already serves all the older view has: it stays
    with Query(store) as query:
        assert query.get_labels().tolist() == [1, 2]
        assert query.get_point_count(2) == 4


def test_a_view_missing_a_worker_never_replaces_one_that_has_it(store):
    write_worker(store, 0, {1: np.ones((2, 3))})
    write_worker(store, 1, {2: np.ones((4, 3))})
    opened = open_store(store)
    schema, finalized = opened.schema, opened.worker_states()[0]
    with UnifiedIndexBuild(opened) as full, UnifiedIndexBuild(opened) as partial:
        full.fill(schema, finalized, None)
        partial.fill(schema, {"0": finalized["0"]}, None)  # read before worker 1 finished
        assert partial.publish()
        assert not full.publish()  # the index moved on since this build started: build again
    with Query(store) as query:
        assert query.get_labels().tolist() == [1]  # the published index, intact


def test_a_consolidation_overtaken_by_one_that_misses_a_worker_rebuilds_and_keeps_it(store):
    write_worker(store, 0, {1: np.ones((2, 3))})
    opened = open_store(store)
    calls = []

    def sources():
        calls.append(len(calls))
        if len(calls) == 1:  # while this run builds: another publishes, then worker 1 finishes
            consolidate(store)
            write_worker(store, 1, {2: np.ones((4, 3))})
        return opened.schema, opened.worker_states()[0], None

    publish_unified_index(opened, sources)
    assert calls == [0, 1]
    with Query(store) as query:
        assert query.get_labels().tolist() == [1, 2]


def test_gc_removes_a_killed_consolidations_build_and_never_a_live_one(store):
    write_worker(store, 0, {1: np.ones((2, 3))})
    consolidate(store)
    child = _children.start("build_and_wait", store)
    try:
        (building,) = _children.read_until(child, bool)
        assert building.startswith(BUILDING_PREFIX) and building in os.listdir(store)
        assert collect_garbage(store).removed == []  # its process lives: hands off
        assert building in os.listdir(store)
    finally:
        child.kill()
        child.wait()
    removed = collect_garbage(store).removed
    assert building in removed
    assert not [name for name in os.listdir(store) if name.startswith(BUILDING_PREFIX)]
    with Query(store) as query:
        assert query.get_point_count(1) == 2


def test_a_full_disk_fails_clearly_and_the_published_index_stays(store):
    write_worker(store, 0, {1: np.ones((2, 3))})
    before = index_content(consolidate(store))
    write_worker(store, 1, {2: np.ones((4, 3))})
    child = _children.start("under_file_size_limit", "consolidate", store, str(16 * 1024))
    outcome = json.loads(_children.read_until(child, bool)[0])
    child.wait()
    assert outcome["type"] == "StoreWriteError"
    assert store in outcome["message"] and "Nothing published was changed" in outcome["message"]
    assert "Free space" in outcome["message"]
    assert index_content(os.path.join(store, "unified_index.duckdb")) == before
    assert not [name for name in os.listdir(store) if name.startswith(BUILDING_PREFIX)]
    with Query(store) as query:
        assert query.get_point_count(1) == 2
