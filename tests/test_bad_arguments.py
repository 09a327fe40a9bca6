"""Bad arguments and damaged store files get a specific PocaduckError at once, and lose nothing already written."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import pocaduck
import pocaduck.errors
from pocaduck import (
    DamagedStoreError,
    Ingestor,
    InvalidArgumentError,
    InvalidBlockIdError,
    InvalidWorkerIdError,
    PocaduckError,
    Query,
    SchemaMismatchError,
    WorkerNotFinalizedError,
    collect_garbage,
    consolidate,
    create_store,
    scan_volume,
)
from pocaduck.cli import main

GOOD = np.arange(6, dtype=np.int64).reshape(2, 3)


def write_one_worker(store, worker_id="0", labels=(1,)):
    with Ingestor(store, worker_id) as ingestor:
        for label in labels:
            ingestor.write(label, "b", GOOD + label)


def assert_queryable(store, labels):
    consolidate(store, ignore_unfinalized=True)
    with Query(store) as query:
        assert query.get_labels().tolist() == sorted(labels)
        for label in labels:
            assert query.get_points(label).tolist() == (GOOD + label).tolist()


def test_a_block_id_that_is_not_utf8_is_refused_at_write_and_the_session_goes_on(store):
    with Ingestor(store, 0) as ingestor:
        ingestor.write(1, "b", GOOD + 1)
        with pytest.raises(InvalidBlockIdError, match="UTF-8"):
            ingestor.write(2, "\ud800", GOOD)
        ingestor.write(3, "b", GOOD + 3)
    assert_queryable(store, [1, 3])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"compression": "bogus"}, "compression 'bogus'"),
        ({"compression": 5}, "compression 5"),
        ({"max_points_per_file": 0}, "max_points_per_file"),
        ({"max_points_per_file": 2.5}, "max_points_per_file"),
        ({"max_bytes_per_file": -1}, "max_bytes_per_file"),
        ({"row_group_size": True}, "row_group_size"),
    ],
)
def test_bad_ingestor_settings_are_refused_at_construction(store, settings, message):
    write_one_worker(store)
    with pytest.raises(InvalidArgumentError, match=message):
        Ingestor(store, 1, **settings)
    assert_queryable(store, [1])


def test_every_codec_of_the_parquet_writer_is_accepted(store):
    codecs = ("zstd", "snappy", "gzip", "none", "LZ4")
    for label, compression in enumerate(codecs):
        with Ingestor(store, compression, compression=compression) as ingestor:
            ingestor.write(label, "b", GOOD + label)
    assert_queryable(store, list(range(len(codecs))))


@pytest.mark.parametrize(
    ("worker_id", "message"),
    [
        ("w" * 300, "300 bytes"),
        (None, "NoneType"),
        (True, "bool"),
        (3.5, "float"),
        (np.bool_(True), "bool"),
        ("\udc80", "UTF-8"),
    ],
)
def test_worker_ids_must_be_short_text_or_integers(store, worker_id, message):
    write_one_worker(store)
    with pytest.raises(InvalidWorkerIdError, match=message):
        Ingestor(store, worker_id)
    assert sorted(os.listdir(os.path.join(store, "workers"))) == ["0"]
    assert_queryable(store, [1])


def test_numpy_integer_worker_ids_are_accepted(store):
    write_one_worker(store, np.int16(4))
    assert os.listdir(os.path.join(store, "workers")) == ["4"]


def test_columns_given_as_one_string_are_refused(store):
    write_one_worker(store)
    with pytest.raises(SchemaMismatchError, match="list of column names"):
        Ingestor(store, 1, columns="xyz")
    with pytest.raises(SchemaMismatchError, match="list of column names"):
        create_store(store, columns="xyz")
    assert_queryable(store, [1])


def test_an_unknown_dtype_is_a_schema_error(store):
    with pytest.raises(SchemaMismatchError, match="dtype 'nonsense' is not supported"):
        create_store(store, dtype="nonsense")


def test_a_store_path_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "not-a-folder"
    path.write_text("mine")
    with pytest.raises(PocaduckError, match="is a file, not a store folder"):
        Ingestor(str(path), 0)
    with pytest.raises(PocaduckError, match="is a file, not a store folder"):
        create_store(str(path))
    assert path.read_text() == "mine"


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"voxel_size": [float("nan"), 1, 1]}, "voxel_size"),
        ({"voxel_size": [8, 0, 8]}, "positive"),
        ({"voxel_size": [8, 8]}, "3 finite numbers"),
        ({"voxel_offset": [0, float("inf"), 0]}, "finite"),
        ({"voxel_offset": "000"}, "voxel_offset"),
        ({"note": float("nan")}, "JSON"),
    ],
)
def test_create_store_refuses_voxel_settings_that_are_not_finite(store, metadata, message):
    with pytest.raises(InvalidArgumentError, match=message):
        create_store(store, **metadata)
    assert not os.path.exists(os.path.join(store, "pocaduck.json"))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"voxel_size": (float("nan"), 1, 1)}, "finite"),
        ({"voxel_size": (1, float("inf"), 1)}, "finite"),
        ({"voxel_offset": (0, float("nan"), 0)}, "finite"),
        ({"voxel_offset": (0, 1.5, 0)}, "whole"),
    ],
)
def test_scan_refuses_voxel_settings_that_are_not_finite(store, settings, message):
    with pytest.raises(InvalidArgumentError, match=message):
        scan_volume(np.ones((4, 4, 4), np.uint8), store, block_shape=4, workers=1, **settings)
    assert not os.path.exists(store)


def test_cli_scan_with_a_nan_voxel_size_writes_nothing(tmp_path, capsys):
    volume = tmp_path / "labels.npy"
    np.save(volume, np.ones((4, 4, 4), np.uint8))
    store = tmp_path / "store"
    arguments = ["scan", str(volume), str(store), "--workers", "1", "--block-shape", "4", "--no-progress"]
    with pytest.raises(SystemExit) as usage_error:  # refused by the argument parser: a usage error
        main([*arguments, "--voxel-size", "nan,1,1"])
    assert usage_error.value.code == 2 and "--voxel-size" in capsys.readouterr().err
    assert not store.exists()
    assert main([*arguments, "--voxel-size", "1,1,1"]) == 0
    assert main([*arguments, "--voxel-size", "1,1,1"]) == 0  # the same scan again accepts its own store


def test_a_manifest_that_is_not_json_is_named_as_damaged(store):
    write_one_worker(store)
    with open(os.path.join(store, "pocaduck.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(DamagedStoreError, match=r"pocaduck\.json.*create_store"):
        Ingestor(store, 1)
    with pytest.raises(DamagedStoreError, match=r"pocaduck\.json"):
        consolidate(store)


def test_a_damaged_finalized_record_is_reported_and_a_rerun_repairs_it_deleting_nothing(store):
    write_one_worker(store, "a", labels=(1,))
    write_one_worker(store, "b", labels=(2,))
    consolidate(store)
    sessions = os.path.join(store, "workers", "a", "sessions")
    (old_session,) = os.listdir(sessions)
    with open(os.path.join(store, "workers", "a", "finalized.json"), "w") as f:
        f.write("")
    with pytest.raises(WorkerNotFinalizedError, match=r"worker 'a'.*finalized\.json.*re-run"):
        consolidate(store)
    with Query(store) as query:  # the unified index in force still serves worker a's old session
        assert query.get_points(1).tolist() == (GOOD + 1).tolist()
    assert collect_garbage(store).removed == []  # which sessions the record superseded is unknown: keep them
    assert old_session in os.listdir(sessions)

    write_one_worker(store, "a", labels=(3,))
    assert old_session in os.listdir(sessions), "the re-run deleted a session the unified index may refer to"
    with open(os.path.join(store, "workers", "a", "finalized.json")) as f:
        assert json.load(f)["superseded"] == [old_session]
    consolidate(store)
    assert_queryable(store, [2, 3])


def test_every_error_class_is_a_pocaduck_error_importable_from_the_package():
    classes = [value for value in vars(pocaduck.errors).values() if isinstance(value, type)]
    errors = [cls for cls in classes if issubclass(cls, Exception) and cls.__module__ == "pocaduck.errors"]
    assert len(errors) > 30
    assert all(issubclass(cls, pocaduck.PocaduckError) for cls in errors)
    assert [cls.__name__ for cls in errors if getattr(pocaduck, cls.__name__, None) is not cls] == []
