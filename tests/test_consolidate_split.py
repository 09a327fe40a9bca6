"""Consolidation by label ranges on the executor: the same index and directory as one sorted merge, and as safe.

Both merges read the same worker selection, so agreeing with each other proves nothing about a worker that went
missing before either: every test also checks that each label serves exactly the points that were written.
"""

from __future__ import annotations

import importlib
import os
from unittest import mock

import duckdb
import numpy as np
import pytest
from _support import as_row_set
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocaduck import ConsolidationError, Ingestor, Query, consolidate, open_store
from pocaduck.gc import collect_garbage
from pocaduck.label_directory import open_in_force
from pocaduck.layout import BUILDING_PREFIX, UNIFIED_INDEX

range_merge = importlib.import_module("pocaduck.range_merge")
HIGH = 2**63  # labels above it are where signed 64-bit handling breaks

Written = dict[int, list[tuple]]  # label -> its points as a sorted list of rows


def write_blocks(store, workers: dict[int, list[tuple[int, np.ndarray]]], points_per_file: int = 7) -> Written:
    """Each worker writes its blocks, one point per label given (the shape of field-scale indexes), in small files.

    Returns what was written, each label's points, to check the consolidated store against.
    """
    written: dict[int, list[tuple]] = {}
    for worker_id, blocks in workers.items():
        with Ingestor(store, worker_id, max_points_per_file=points_per_file) as ingestor:
            for block_id, labels in blocks:
                points = np.arange(len(labels) * 3, dtype=np.int32).reshape(-1, 3) + block_id
                ingestor.write_block(block_id, labels, points)
                for label, point in zip(labels.tolist(), points.tolist(), strict=True):
                    written.setdefault(label, []).append(tuple(point))
    return {label: sorted(points) for label, points in written.items()}


def assert_serves_what_was_written(store, written: Written) -> None:
    """The store holds exactly the labels written, each with exactly its points: no worker or label went missing."""
    with Query(store) as query:
        assert query.get_labels().tolist() == sorted(written)
        served = query.get_points(sorted(written))
    assert {label: as_row_set(points) for label, points in served.items()} == written


def unified_index(store) -> dict[str, list]:
    """Every table of the unified index in its stored order (point_index and labels are stored sorted)."""
    with duckdb.connect(open_store(store).storage.local_copy(UNIFIED_INDEX), read_only=True) as con:
        tables = {t: con.execute(f"SELECT * FROM {t}").fetchall() for t in ("files", "point_index", "labels")}
        tables["workers"] = con.execute("SELECT * FROM workers ORDER BY ALL").fetchall()
        tables["view"] = con.execute("SELECT * FROM point_cloud_index ORDER BY ALL").fetchall()
    return tables


def directory(store) -> tuple[list, dict]:
    """The label directory in force: all its entries, in order, and its file table."""
    found = open_in_force(open_store(store).storage)
    assert found is not None, "the consolidation published no label directory"
    return np.concatenate(list(found.entries())).tolist(), found.files


def consolidated_both_ways(store, **split) -> tuple[tuple, tuple]:
    consolidate(store)
    serial = unified_index(store), directory(store)
    consolidate(store, **split)
    return serial, (unified_index(store), directory(store))


labels_strategy = st.lists(
    st.one_of(st.integers(0, 40), st.integers(HIGH - 3, HIGH + 3), st.integers(2**64 - 4, 2**64 - 1)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    workers=st.dictionaries(
        st.integers(0, 2),
        st.lists(st.tuples(st.integers(0, 5), labels_strategy), min_size=1, max_size=3),
        min_size=1,
        max_size=2,
    ),
    range_rows=st.integers(1, 8),
)
def test_ranges_give_the_same_index_and_directory_as_one_sorted_merge(tmp_path_factory, workers, range_rows):
    store = str(tmp_path_factory.mktemp("store"))
    written = write_blocks(
        store, {w: [(b, np.array(labels, np.uint64)) for b, labels in blocks] for w, blocks in workers.items()}
    )
    with mock.patch.object(range_merge, "_RANGE_ROWS", range_rows):  # many ranges, some of them empty
        serial, split = consolidated_both_ways(store, workers=2)
    assert split == serial
    assert_serves_what_was_written(store, written)


@pytest.fixture
def written(store) -> Written:
    """What two workers wrote into ``store`` (not consolidated)."""
    rng = np.random.default_rng(5)
    return write_blocks(
        store,
        {
            worker: [
                (
                    block,
                    rng.choice(
                        np.r_[np.arange(500, dtype=np.uint64), np.arange(HIGH - 50, HIGH + 50, dtype=np.uint64)], 300
                    ),
                )
                for block in range(3)
            ]
            for worker in range(2)
        },
        points_per_file=250,
    )


@pytest.fixture
def two_workers(store, written):
    """The store two workers wrote, not consolidated."""
    return store


def test_labels_on_both_sides_of_2_63_split_exactly(two_workers, written):
    with mock.patch.object(range_merge, "_RANGE_ROWS", 100):
        serial, split = consolidated_both_ways(two_workers, workers=2)
    assert split == serial
    assert_serves_what_was_written(two_workers, written)
    with Query(two_workers) as query:
        assert query.get_point_count(HIGH + 1) == sum(
            count for label, count, *_ in serial[0]["labels"] if label == HIGH + 1
        )


def test_ranges_run_in_local_processes(two_workers, written, monkeypatch):
    monkeypatch.setattr(range_merge, "_POOL", "processes")
    serial, split = consolidated_both_ways(two_workers, workers=2)
    assert split == serial
    assert_serves_what_was_written(two_workers, written)


def test_ranges_run_on_a_dask_cluster(two_workers, written):
    distributed = pytest.importorskip("distributed")
    events = []
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        serial, split = consolidated_both_ways(two_workers, client=client, progress=events.append)
    assert split == serial
    assert_serves_what_was_written(two_workers, written)
    finished = sorted(e.worker_id for e in events if e.state == "finished")
    assert finished and finished == sorted(e.worker_id for e in events if e.state == "queued")


def test_consolidating_by_ranges_twice_gives_the_same_answers(two_workers, written):
    consolidate(two_workers, workers=2)
    first = unified_index(two_workers), directory(two_workers)
    consolidate(two_workers, workers=1)
    assert (unified_index(two_workers), directory(two_workers)) == first
    assert_serves_what_was_written(two_workers, written)


def failing_once(calls: list):
    merge = range_merge.merge_label_range

    def merge_or_fail(*args, **kwargs):
        calls.append(args[3])
        if len(calls) == 2:
            raise OSError("the disk went away")
        return merge(*args, **kwargs)

    return merge_or_fail


def test_a_failing_range_leaves_the_index_in_force_and_a_rerun_completes(two_workers, written, monkeypatch):
    consolidate(two_workers)
    before = unified_index(two_workers), directory(two_workers)
    added = write_blocks(two_workers, {7: [(9, np.array([3, HIGH + 7], np.uint64))]})
    calls: list[int] = []
    monkeypatch.setattr(range_merge, "merge_label_range", failing_once(calls))
    with pytest.raises(ConsolidationError, match=r"range-\d+ failed: OSError: the disk went away\. Fix the cause"):
        consolidate(two_workers, workers=2)
    assert (unified_index(two_workers), directory(two_workers)) == before
    assert not [name for name in os.listdir(two_workers) if name.startswith(BUILDING_PREFIX)]
    consolidate(two_workers, workers=2)
    with Query(two_workers) as query:
        assert (
            query.get_point_count(HIGH + 7) == sum(c for label, c, *_ in before[0]["labels"] if label == HIGH + 7) + 1
        )
    for label, points in added.items():
        written[label] = sorted(written.get(label, []) + points)
    assert_serves_what_was_written(two_workers, written)


def test_a_failing_range_runs_again_when_retries_allow(two_workers, written, monkeypatch):
    serial = consolidate(two_workers) and (unified_index(two_workers), directory(two_workers))
    calls: list[int] = []
    monkeypatch.setattr(range_merge, "merge_label_range", failing_once(calls))
    events = []
    consolidate(two_workers, workers=2, retries=1, progress=events.append)
    assert len(calls) > len({*calls}), "no range ran twice: the fault was not injected"
    assert not [event for event in events if event.state == "failed"]
    assert (unified_index(two_workers), directory(two_workers)) == serial
    assert_serves_what_was_written(two_workers, written)


def test_gc_removes_the_ranges_of_a_build_that_died(two_workers):
    consolidate(two_workers)
    dead = os.path.join(two_workers, f"{BUILDING_PREFIX}0123abcd")
    os.makedirs(dead + ".parts")
    open(os.path.join(dead + ".parts", "000000.rows.parquet"), "wb").close()
    open(dead, "wb").close()
    removed = collect_garbage(two_workers).removed
    assert {os.path.basename(dead), os.path.basename(dead) + ".parts"} <= set(removed)
    assert not os.path.exists(dead + ".parts")


def test_bad_split_arguments_are_refused(store):
    with pytest.raises(ValueError, match="workers must be a positive integer or None"):
        consolidate(store, workers=0)
    with pytest.raises(ValueError, match="retries must be an integer of at least 0"):
        consolidate(store, workers=1, retries=-1)
