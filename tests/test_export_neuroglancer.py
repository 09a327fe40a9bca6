"""A store exported for neuroglancer reads back exactly with neuroglancer's own reader, resumes after a kill,
and refuses what it must not touch.

Every read goes through ``neuroglancer.read_precomputed_annotations.AnnotationReader``, which reads the sharded
indexes with tensorstore: nothing here decodes our files with our own code.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _children import read_until, start, wait_until_ended
from test_cli import pocaduck

from pocaduck import (
    ExportCancelledError,
    ExportError,
    ExportFolderError,
    ExportRangeError,
    Ingestor,
    InvalidArgumentError,
    Query,
    UnknownLabelError,
    consolidate,
    create_store,
    export_neuroglancer,
)
from pocaduck.cli import main
from pocaduck.neuroglancer import tasks as export_tasks
from pocaduck.neuroglancer.sharded import Sharding, dense_sharding, encode_shard

reading = pytest.importorskip("neuroglancer.read_precomputed_annotations")
ts = pytest.importorskip("tensorstore")

SMALL = {"shard_bytes": 4096, "points_per_cell": 200}  # even this small store gets many shards and levels
BIG_LABELS = [0, 1, 7, 2**63, 2**63 + 5, 2**64 - 1]


def write_store(path: Path, voxel_size: list | None = (8, 8, 40), seed: int = 0) -> str:
    """Labels of a few to a few hundred points in clusters (so most spatial cells are empty), a supervoxel column."""
    rng = np.random.default_rng(seed)
    metadata = {} if voxel_size is None else {"voxel_size": list(voxel_size)}
    create_store(path, columns=("x", "y", "z", "supervoxel"), dtype="int64", **metadata)
    with Ingestor(path, worker_id=0) as ingestor:
        for label in BIG_LABELS + list(range(100, 160)):
            center = rng.integers(0, 5000, 3)
            for block in range(int(rng.integers(1, 4))):
                points = center + rng.integers(-60, 60, (int(rng.integers(1, 120)), 3))
                supervoxel = rng.integers(-(2**31), 2**31, (len(points), 1))
                ingestor.write(label, f"b{block}", np.column_stack([points, supervoxel]))
    consolidate(path)
    return str(path)


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def as_rows(points: np.ndarray) -> Counter:
    """A multiset of (x, y, z as float32, supervoxel) rows."""
    return Counter(zip(*(points[:, :3].astype(np.float32).T.tolist()), points[:, 3].tolist(), strict=True))


def annotation_rows(annotations) -> Counter:
    return Counter((*a.point.tolist(), int(a.props[0])) for a in annotations)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return write_store(tmp_path_factory.mktemp("export") / "store")


@pytest.fixture(scope="module")
def exported(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "ng"
    export_neuroglancer(store, out, workers=1, **SMALL)
    return out


@pytest.fixture(scope="module")
def reader(exported):
    return reading.AnnotationReader(f"file://{exported}")


@pytest.fixture(scope="module")
def points(store) -> dict[int, np.ndarray]:
    with Query(store) as query:
        return query.get_points(query.get_labels().tolist())


def test_every_label_reads_back_with_its_points_and_properties_through_the_relationship(reader, points):
    assert list(reader.relationships) == ["label"]
    for label, expected in points.items():
        assert annotation_rows(reader.relationships["label"][label]) == as_rows(expected), label
    with pytest.raises(KeyError):
        reader.relationships["label"][12345]  # not a label of the store


def test_each_point_has_one_id_and_names_its_label(reader, points):
    total = sum(len(p) for p in points.values())
    found: dict[int, Counter] = {}
    for annotation_id in range(total):
        annotation = reader.by_id[annotation_id]
        (segments,) = annotation.segments
        found.setdefault(int(segments[0]), Counter()).update(annotation_rows([annotation]))
    assert found == {label: as_rows(p) for label, p in points.items()}
    with pytest.raises(KeyError):
        reader.by_id[total]


def test_random_boxes_return_what_brute_force_finds(reader, points):
    everything = np.concatenate(list(points.values()))
    xyz = everything[:, :3].astype(np.float32).astype(np.float64)
    rng = np.random.default_rng(3)
    for _ in range(25):
        corners = rng.uniform(reader.lower_bound, reader.upper_bound, (2, 3))
        lower, upper = corners.min(axis=0), corners.max(axis=0)
        inside = np.all((xyz >= lower) & (xyz <= upper), axis=1)
        found = annotation_rows(reader.get_within_spatial_bounds(lower_bound=lower, upper_bound=upper))
        assert found == as_rows(everything[inside])
    assert annotation_rows(reader.get_within_spatial_bounds()) == as_rows(everything)  # each point exactly once


def test_the_info_describes_a_sharded_multilevel_point_index(reader, exported):
    info = reader.metadata
    assert info["@type"] == "neuroglancer_annotations_v1" and info["annotation_type"] == "POINT"
    assert info["dimensions"] == {"x": [8.0, "nm"], "y": [8.0, "nm"], "z": [40.0, "nm"]}
    assert info["properties"] == [
        {"id": "supervoxel", "type": "int32", "description": "column supervoxel of the pocaduck store"}
    ]
    assert len(info["spatial"]) >= 3 and info["spatial"][0]["grid_shape"] == [1, 1, 1]
    for index in [info["by_id"], *info["relationships"], *info["spatial"]]:
        assert index["sharding"]["@type"] == "neuroglancer_uint64_sharded_v1"
    assert len(list((exported / "by_id").glob("*.shard"))) > 1
    assert len(list((exported / "label").glob("*.shard"))) > 1
    assert sorted(p.name for p in exported.iterdir()) == [
        "by_id", "info", "label", "pocaduck_export.json", *[f"spatial{i}" for i in range(len(info["spatial"]))]
    ]  # fmt: skip


def test_threads_processes_and_dask_write_the_same_bytes_as_one_worker(store, exported, tmp_path, monkeypatch):
    export_neuroglancer(store, tmp_path / "threads", workers=2, **SMALL)
    assert files_of(tmp_path / "threads") == files_of(exported)
    monkeypatch.setattr("pocaduck.neuroglancer.api._POOL", "processes")  # what the executor also offers
    export_neuroglancer(store, tmp_path / "processes", workers=2, **SMALL)
    assert files_of(tmp_path / "processes") == files_of(exported)
    monkeypatch.undo()
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        export_neuroglancer(store, tmp_path / "dask", client=client, **SMALL)
    assert files_of(tmp_path / "dask") == files_of(exported)


def test_an_export_killed_half_way_resumes_to_the_same_bytes(store, exported, tmp_path):
    out = tmp_path / "killed"
    child = start("export_then_hang", store, str(out), "5")
    done = read_until(child, lambda lines: len(lines) >= 5)  # stuck in its fifth task's report: half-way
    child.send_signal(signal.SIGKILL)
    assert wait_until_ended([child.pid]) == []
    assert not (out / "info").exists() and (out / ".pocaduck-export").exists()
    events = []
    report = export_neuroglancer(store, out, workers=1, progress=events.append, **SMALL)
    assert report.tasks_reused == len(done) == 5  # each had written its files and marker before it was reported
    assert {e.worker_id for e in events if e.state == "finished"}.isdisjoint(done)
    assert files_of(out) == files_of(exported)


def test_a_stopped_export_is_cancelled_between_tasks_and_resumes_to_the_same_bytes(store, exported, tmp_path):
    stop = threading.Event()
    events = []

    def stop_after_two(event) -> None:
        events.append(event)
        if sum(e.state == "finished" for e in events) == 2:
            stop.set()

    out = tmp_path / "stopped"
    with pytest.raises(ExportCancelledError, match="resumes from the tasks done"):
        export_neuroglancer(store, out, workers=1, progress=stop_after_two, stop=stop, **SMALL)
    assert [e.error for e in events if e.state == "failed"][:1] == ["cancelled"]
    assert not (out / "info").exists()
    report = export_neuroglancer(store, out, workers=1, **SMALL)
    assert report.tasks_reused == 2
    assert files_of(out) == files_of(exported)


def test_a_failing_task_runs_again_with_retries_and_otherwise_stops_the_export(store, exported, tmp_path, monkeypatch):
    write_shard = export_tasks._write_shard
    failures = []

    def fails_once(task, *args):
        if not failures:
            failures.append(task.name)
            raise OSError("disk hiccup")
        return write_shard(task, *args)

    monkeypatch.setattr(export_tasks, "_write_shard", fails_once)
    export_neuroglancer(store, tmp_path / "retried", workers=2, retries=1, **SMALL)
    assert files_of(tmp_path / "retried") == files_of(exported)
    failures.clear()
    with pytest.raises(ExportError, match=r"failed: OSError: disk hiccup\. Fix the cause") as raised:
        export_neuroglancer(store, tmp_path / "failed", workers=2, **SMALL)
    assert isinstance(raised.value.__cause__, OSError) and failures[0] in str(raised.value)
    export_neuroglancer(store, tmp_path / "failed", workers=2, **SMALL)
    assert files_of(tmp_path / "failed") == files_of(exported)


def test_running_a_finished_export_again_changes_nothing(store, exported, points):
    before = files_of(exported)
    report = export_neuroglancer(store, exported, workers=1, **SMALL)
    assert report.reused and report.points == sum(len(p) for p in points.values())
    assert files_of(exported) == before


def test_a_folder_holding_something_else_is_refused_and_left_alone(store, exported, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportFolderError, match=r"notes\.txt"):
        export_neuroglancer(store, tmp_path, workers=1)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    before = files_of(exported)
    with pytest.raises(ExportFolderError, match="export of other labels"):
        export_neuroglancer(store, exported, labels=[7], workers=1)
    assert files_of(exported) == before


@pytest.mark.parametrize("inside", ["", "compacted/ng", "workers/ng", "index_versions/ng", "new/deeper/ng"])
def test_a_folder_inside_the_store_is_refused_and_the_store_left_alone(store, inside):
    before = files_of(Path(store))
    with pytest.raises(ExportFolderError, match=r"inside the store.*outside the store"):
        export_neuroglancer(store, os.path.join(store, inside), workers=1)
    assert files_of(Path(store)) == before and os.path.exists(os.path.join(store, inside)) == (inside == "")


def test_coordinates_beyond_float32_are_refused_by_column_and_label_before_anything_is_written(tmp_path):
    store = str(tmp_path / "store")
    create_store(store, dtype="float64", voxel_size=[4, 4, 4])
    with Ingestor(store, worker_id=0) as ingestor:
        ingestor.write(5, "b", np.array([[1.0, 2.0, 3.0]]))
        ingestor.write(6, "b", np.array([[1.0, 2.0, 1e39], [1.0, 2.0, 3.0]]))
    consolidate(store)
    with pytest.raises(ExportRangeError, match=r"column z holds values from 3 to 1e\+39, beyond float32.*labels 6\."):
        export_neuroglancer(store, tmp_path / "ng", workers=1)
    assert not (tmp_path / "ng").exists()
    export_neuroglancer(store, tmp_path / "ng", labels=[5], workers=1)
    info = json.loads((tmp_path / "ng" / "info").read_text(), parse_constant=pytest.fail)  # strict: no Infinity
    assert info["upper_bound"] == [1.0, 2.0, 3.0]


def test_unknown_labels_are_named_and_nothing_is_written(store, tmp_path):
    with pytest.raises(UnknownLabelError, match=r"2 of the labels.*12345, 12346"):
        export_neuroglancer(store, tmp_path / "ng", labels=[7, 12345, 12346])
    assert not (tmp_path / "ng").exists()


def test_a_subset_of_labels_exports_only_them(store, points, tmp_path):
    chosen = [7, 2**64 - 1]
    export_neuroglancer(store, tmp_path / "ng", labels=chosen, properties=[], workers=1)
    reader = reading.AnnotationReader(f"file://{tmp_path / 'ng'}")
    assert reader.metadata["properties"] == []
    for label in chosen:
        found = Counter(tuple(a.point.tolist()) for a in reader.relationships["label"][label])
        assert found == Counter(map(tuple, points[label][:, :3].astype(np.float32).tolist()))
    assert sum(1 for _ in reader.get_within_spatial_bounds()) == sum(len(points[label]) for label in chosen)


def test_a_store_without_voxel_size_gets_1_nm_and_a_warning(tmp_path):
    store = write_store(tmp_path / "store", voxel_size=None)
    with pytest.warns(UserWarning, match="no voxel_size"):
        export_neuroglancer(store, tmp_path / "ng", labels=[7], workers=1)
    info = json.loads((tmp_path / "ng" / "info").read_text())
    assert info["dimensions"] == {"x": [1.0, "nm"], "y": [1.0, "nm"], "z": [1.0, "nm"]}


def test_the_command_prints_a_warning_as_one_line_and_a_failure_as_only_its_own(tmp_path):
    store = write_store(tmp_path / "store", voxel_size=None)
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "notes.txt").write_text("mine")
    failed = pocaduck("export-neuroglancer", store, str(tmp_path / "occupied"), "--no-progress", check=False)
    assert failed.returncode == 1
    (line,) = failed.stderr.splitlines()
    assert line.startswith("pocaduck export-neuroglancer: ") and "notes.txt" in line
    done = pocaduck("export-neuroglancer", store, str(tmp_path / "ng"), "--labels", "7", "--no-progress")
    advice, warning = done.stderr.splitlines()
    assert warning.startswith("pocaduck export-neuroglancer: warning: ") and "no voxel_size" in warning
    assert advice.startswith("open it in neuroglancer")


def test_a_64_bit_column_with_values_beyond_32_bits_is_refused_by_name(tmp_path):
    store = str(tmp_path / "store")
    create_store(store, columns=("x", "y", "z", "supervoxel"), voxel_size=[4, 4, 4])
    with Ingestor(store, worker_id=0) as ingestor:
        ingestor.write(5, "b", np.array([[1, 2, 3, 2**40]]))
    consolidate(store)
    with pytest.raises(ExportError, match=r"columns \['supervoxel'\] hold values outside int32") as refused:
        export_neuroglancer(store, tmp_path / "ng", workers=1)  # found by the task that reads the values
    assert isinstance(refused.value.__cause__, InvalidArgumentError)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_neuroglancer(store, tmp_path / "ng2", properties=[], workers=1)
    with pytest.raises(InvalidArgumentError, match="extra columns"):
        export_neuroglancer(store, tmp_path / "ng3", properties=["colour"], workers=1)


def test_the_command_exports_chosen_labels(store, points, tmp_path, capsys):
    assert main(["export-neuroglancer", store, str(tmp_path / "ng"), "--labels", "7", "1", "--workers", "1",
                 "--no-progress"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["labels"] == 2
    reader = reading.AnnotationReader(f"file://{tmp_path / 'ng'}")
    for label in (1, 7):
        assert annotation_rows(reader.relationships["label"][label]) == as_rows(points[label]), label
    for label in set(points) - {1, 7}:
        with pytest.raises(KeyError):
            reader.relationships["label"][label]  # not chosen, so not in the export
    everything = annotation_rows(reader.get_within_spatial_bounds())
    assert everything == as_rows(points[1]) + as_rows(points[7])


@pytest.mark.parametrize(
    "sharding", [Sharding(0, 3, 2), Sharding(0, 0, 0), dense_sharding(12, 2, 5)], ids=["labels", "one", "dense"]
)
def test_shard_files_read_back_through_tensorstore(tmp_path, sharding):
    rng = np.random.default_rng(5)
    if sharding.preshift_bits:
        keys = np.arange(4000, dtype=np.uint64)
    else:
        keys = np.unique(rng.integers(0, 2**64 - 1, 300, dtype=np.uint64, endpoint=True))
    values = {int(key): rng.bytes(int(rng.integers(0, 40))) for key in keys}
    shard_of = sharding.shard_of(keys)
    for shard in range(sharding.shards):
        mine = keys[shard_of == shard]
        mine = mine[sharding.chunk_order(mine)]
        sizes = np.array([len(values[int(key)]) for key in mine], np.uint64)
        data = b"".join(values[int(key)] for key in mine)
        (tmp_path / sharding.file_name(shard)).write_bytes(b"".join(encode_shard(sharding, mine, sizes, data)))
    kvstore = ts.KvStore.open(
        {"driver": "neuroglancer_uint64_sharded", "base": f"file://{tmp_path}/", "metadata": sharding.to_json()}
    ).result()
    for key, value in values.items():
        assert kvstore.read(key.to_bytes(8, "big")).result().value == value
    assert kvstore.read((12345).to_bytes(8, "big")).result().state == "missing"
    assert len(os.listdir(tmp_path)) == sharding.shards
