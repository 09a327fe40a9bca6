"""Bad input gets a specific error that says what is wrong, and loses nothing already written."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from pocaduck import (
    DamagedStoreError,
    DataFileError,
    Ingestor,
    IngestorClosedError,
    InvalidArgumentError,
    InvalidBlockIdError,
    InvalidLabelError,
    InvalidPointsError,
    InvalidWorkerIdError,
    PocaduckError,
    Query,
    SchemaMismatchError,
    StoreNotConsolidatedError,
    StoreNotFoundError,
    WorkerBusyError,
    WorkerNotFinalizedError,
    WorkerWriteError,
    consolidate,
)

GOOD = np.arange(6, dtype=np.int64).reshape(2, 3)


@pytest.mark.parametrize(
    ("label", "error", "message"),
    [
        (-1, InvalidLabelError, "outside the uint64 range"),
        (2**64, InvalidLabelError, "outside the uint64 range"),
        (1.0, InvalidLabelError, "must be an integer"),
        ("7", InvalidLabelError, "must be an integer"),
        (True, InvalidLabelError, "must be an integer"),
        (None, InvalidLabelError, "must be an integer"),
    ],
)
def test_bad_labels(store, label, error, message):
    with Ingestor(store, 0) as ingestor, pytest.raises(error, match=message):
        ingestor.write(label, "b", GOOD)


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([[1, 2, 3]], "must be a numpy array"),
        (np.arange(3), r"shape \(N, D\)"),
        (np.ones((1, 2, 3)), r"shape \(N, D\)"),
        (np.array([[1.0, np.nan, 2.0]]), "NaN or infinity"),
        (np.array([[1.0, 2.0, 3.0], [np.inf, 0.0, 0.0]]), r"first at row 1"),
        (np.array([["a", "b", "c"]]), "dtype"),
    ],
)
def test_bad_points(store, points, message):
    with Ingestor(store, 0) as ingestor, pytest.raises(InvalidPointsError, match=message):
        ingestor.write(1, "b", points)


@pytest.mark.parametrize("block_id", [1.5, ("z", 1), None, b"bytes", 2**63])
def test_bad_block_ids(store, block_id):
    with Ingestor(store, 0) as ingestor, pytest.raises(InvalidBlockIdError, match="block id"):
        ingestor.write(1, block_id, GOOD)


@pytest.mark.parametrize(
    ("points", "block_id", "message"),
    [
        (np.ones((1, 4), np.int64), "b", "4 columns but the store has 3"),
        (np.ones((1, 3), np.float64), "b", "do not fit the store's dtype int64"),
        (np.ones((1, 3), np.uint64), "b", "do not fit the store's dtype int64"),
        (GOOD, 5, "string block ids, got a int64 one"),
    ],
)
def test_writes_that_do_not_fit_the_schema_lose_nothing(store, points, block_id, message):
    with Ingestor(store, 0) as ingestor:
        ingestor.write(1, "b", GOOD)
        with pytest.raises(SchemaMismatchError, match=message):
            ingestor.write(2, block_id, points)
        ingestor.write(3, "b", GOOD)
    Ingestor.consolidate_indexes(store)
    with Query(store) as query:
        assert query.get_labels().tolist() == [1, 3]
        assert query.get_points(1).tolist() == GOOD.tolist()


def test_a_later_worker_with_another_schema_is_refused(store):
    with Ingestor(store, 0) as ingestor:
        ingestor.write(1, "b", GOOD)
    with Ingestor(store, 1) as other, pytest.raises(SchemaMismatchError, match="4 columns"):
        other.write(1, "b", np.ones((1, 4), np.int64))
    with pytest.raises(SchemaMismatchError, match="differ from the store's"):
        Ingestor(store, 2, columns=["a", "b", "c"])


def test_bad_column_names(store):
    with pytest.raises(SchemaMismatchError, match="not allowed"):
        Ingestor(store, 0, columns=["x", "y", "label"]).write(1, "b", GOOD)


def test_write_after_finalize(store):
    ingestor = Ingestor(store, 0)
    ingestor.finalize()
    with pytest.raises(IngestorClosedError, match="finalized or closed"):
        ingestor.write(1, "b", GOOD)
    with pytest.raises(IngestorClosedError):
        ingestor.finalize()


def test_two_live_ingestors_with_one_worker_id_are_detected(store):
    first = Ingestor(store, "w")
    with pytest.raises(WorkerBusyError, match="'w' is already being written"):
        Ingestor(store, "w")
    first.write(1, "b", GOOD)
    first.finalize()
    Ingestor(store, "w").close()  # free again once the first is done


@pytest.mark.parametrize("worker_id", ["a/b", "..", "", ".hidden", "nul\0"])
def test_worker_ids_that_cannot_name_a_folder(store, worker_id):
    with pytest.raises(InvalidWorkerIdError, match="cannot name a folder"):
        Ingestor(store, worker_id)


def test_query_on_a_missing_path(tmp_path):
    with pytest.raises(StoreNotFoundError, match="does not exist"):
        Query(str(tmp_path / "nowhere"))
    with pytest.raises(StoreNotFoundError, match="holds no pocaduck store"):
        Query(str(tmp_path))


def test_query_before_consolidation_says_to_consolidate(store):
    with Ingestor(store, 0) as ingestor:
        ingestor.write(1, "b", GOOD)
    with pytest.raises(StoreNotConsolidatedError, match="pocaduck consolidate"):
        Query(store)


def _store_with_one_file(store):
    with Ingestor(store, 0) as ingestor:
        ingestor.write(1, "b", GOOD)
    Ingestor.consolidate_indexes(store)
    with Query(store) as query:
        (path,) = query.sql("SELECT path FROM files")["path"]
    return os.path.join(store, *path.split("/"))


def test_missing_data_file_is_named(store):
    data_file = _store_with_one_file(store)
    os.unlink(data_file)
    with Query(store) as query, pytest.raises(DataFileError, match=os.path.basename(data_file)):
        query.get_points(1)


def test_corrupt_data_file_is_named(store):
    data_file = _store_with_one_file(store)
    with open(data_file, "r+b") as f:
        f.seek(-12, os.SEEK_END)
        f.write(b"\0" * 12)
    with Query(store) as query, pytest.raises(DataFileError, match=os.path.basename(data_file)):
        query.get_points(1)


def test_every_error_is_a_pocaduck_error_and_a_familiar_builtin():
    assert issubclass(InvalidPointsError, ValueError) and issubclass(InvalidPointsError, PocaduckError)
    assert issubclass(StoreNotFoundError, FileNotFoundError)


def test_copying_a_store_elsewhere_keeps_it_readable(store, tmp_path):
    _store_with_one_file(store)
    moved = str(tmp_path / "moved")
    shutil.copytree(store, moved)
    with Query(moved) as query:
        assert query.get_points(1).tolist() == GOOD.tolist()


def test_a_failed_file_write_surfaces_and_leaves_the_worker_unfinished(store):
    ingestor = Ingestor(store, 0, max_points_per_file=2)
    ingestor.write(1, "b", GOOD)  # the first file goes to the writer thread
    sessions = Path(store, "workers", "0", "sessions")
    while not list(sessions.glob("*/part-*.parquet")):
        time.sleep(0.01)
    shutil.rmtree(os.path.join(store, "workers", "0", "sessions"))  # the disk loses the session folder
    with pytest.raises(WorkerWriteError, match=r"call finalize\(\) again"):
        ingestor.write(2, "b", GOOD)
        ingestor.finalize()
    with pytest.raises(WorkerNotFinalizedError, match="worker '0'"):
        consolidate(store)
    ingestor.close()


def test_query_of_nothing_says_what_it_expects():
    with pytest.raises(InvalidArgumentError, match="store path, a URL, a StorageConfig or a Store"):
        Query(None)


def test_a_zero_dimensional_label_array_is_one_label(store):
    _store_with_one_file(store)
    with Query(store) as query:
        assert query.get_points(np.array(1)).tolist() == GOOD.tolist()
        assert query.get_point_count(np.array(1, np.uint64)) == 2
        with pytest.raises(InvalidLabelError, match="must be an integer"):
            query.get_points(np.array(1.0))


@pytest.mark.parametrize(
    ("blocks", "message"),
    [([0], "block ids are strings, but blocks holds 0"), (1.5, "must be a block id or a list"), ([None], "block id")],
)
def test_blocks_that_cannot_match_are_refused(store, blocks, message):
    _store_with_one_file(store)
    with Query(store) as query:
        with pytest.raises(InvalidBlockIdError, match=message):
            query.get_points(1, blocks=blocks)
        assert query.get_points(1, blocks="b").tolist() == GOOD.tolist()  # one id is one block, not its letters
        assert query.get_points(1, blocks=["b"]).tolist() == GOOD.tolist()


def test_string_blocks_on_integer_block_ids_are_refused(store):
    with Ingestor(store, 0) as ingestor:
        ingestor.write(1, 7, GOOD)
    consolidate(store)
    with Query(store) as query:
        with pytest.raises(InvalidBlockIdError, match="int64 integers, but blocks holds 'a'"):
            query.get_points(1, blocks=["a"])
        assert query.get_points(1, blocks=7).tolist() == GOOD.tolist()


@pytest.mark.parametrize("kept", [0.1, 0.5])
def test_a_truncated_index_says_to_consolidate_again(store, kept):
    with Ingestor(store, 0) as ingestor:
        for label in range(3000):
            ingestor.write(label, f"b{label % 7}", GOOD)
    consolidate(store)
    index = os.path.join(store, "unified_index.duckdb")
    os.truncate(index, int(os.path.getsize(index) * kept))
    damaged = r"unified_index.duckdb is damaged or truncated .*pocaduck consolidate"
    with pytest.raises(DamagedStoreError, match=damaged), Query(store) as query:
        query.get_points(5)
    consolidate(store)  # the advice: nothing was lost, the workers' files rebuild it
    with Query(store) as query:
        assert query.get_points(5).tolist() == GOOD.tolist()
