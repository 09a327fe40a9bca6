"""An export through a mapping shows bodies, and a later version updates it to exactly a fresh export of that version.

Reads go through neuroglancer's own ``AnnotationReader``; files are compared by their bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from test_export_neuroglancer import files_of

from pocaduck import (
    ExportError,
    ExportFolderError,
    Ingestor,
    Query,
    UnknownLabelError,
    consolidate,
    create_store,
    export_neuroglancer,
    write_mapping,
)
from pocaduck.cli import main
from pocaduck.neuroglancer import update as export_update

reading = pytest.importorskip("neuroglancer.read_precomputed_annotations")

SMALL = {"shard_bytes": 2048, "points_per_cell": 100, "workers": 1, "progress": False}
SUPERVOXELS = list(range(1, 31))


def write_store(path: Path, supervoxels: list[int]) -> str:
    """Supervoxels of 5 to 60 points each, with one extra column."""
    rng = np.random.default_rng(5)
    create_store(path, columns=("x", "y", "z", "t"), dtype="int32", voxel_size=[8, 8, 40])
    with Ingestor(path, worker_id=0) as ingestor:
        for supervoxel in supervoxels:
            center = rng.integers(0, 3000, 3)
            points = center + rng.integers(-50, 50, (int(rng.integers(5, 60)), 3))
            ingestor.write(
                supervoxel, "b0", np.column_stack([points, rng.integers(0, 9, (len(points), 1))]).astype(np.int32)
            )
    consolidate(path)
    return str(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """Versions: v1 groups supervoxels in threes (bodies 1001..1010); v2 merges 1002 into 1001 and cleaves
    supervoxel 7 off 1003 into new body 2000; v3 (from v2) moves 10 and 11 to 1001; w1 is another history."""
    path = write_store(tmp_path_factory.mktemp("mapped") / "store", SUPERVOXELS)
    write_mapping(path, "v1", SUPERVOXELS, [1001 + (s - 1) // 3 for s in SUPERVOXELS])
    write_mapping(path, "v2", [4, 5, 6, 7], [1001, 1001, 1001, 2000], parent="v1", note="merge and cleave")
    write_mapping(path, "v3", [10, 11], [1001, 1001], parent="v2")
    write_mapping(path, "w1", SUPERVOXELS, [5000] * len(SUPERVOXELS))
    return path


def fresh(store: str, folder: Path, version: str) -> dict[str, bytes]:
    export_neuroglancer(store, folder, mapping=version, **SMALL)
    return files_of(folder)


def rows(annotations) -> Counter:
    return Counter((*a.point.tolist(), *(int(p) for p in a.props)) for a in annotations)


def expected_rows(store: str, version: str, body: int) -> Counter:
    """(x, y, z, supervoxel, t) rows of the body's points, by brute force over its supervoxels."""
    with Query(store, mapping=version) as mapped, Query(store) as query:
        found = Counter()
        for supervoxel in mapped.get_supervoxels(body).tolist():
            for x, y, z, t in query.get_points(supervoxel).tolist():
                found[(float(x), float(y), float(z), supervoxel, t)] += 1
        return found


def test_segments_are_bodies_with_their_supervoxels_points_and_a_supervoxel_property(store, tmp_path):
    export_neuroglancer(store, tmp_path / "ng", mapping="v2", **SMALL)
    reader = reading.AnnotationReader(f"file://{tmp_path / 'ng'}")
    assert [p.id for p in reader.properties] == ["supervoxel", "t"]
    with Query(store, mapping="v2") as mapped:
        bodies = mapped.get_labels().tolist()
    assert 1002 not in bodies and 2000 in bodies
    for body in bodies:
        assert rows(reader.relationships["label"][body]) == expected_rows(store, "v2", body), body
    with pytest.raises(KeyError):
        reader.relationships["label"][1002]  # merged away
    annotation = reader.by_id[0]  # the first point of supervoxel 1, in body 1001
    assert [int(s) for s in annotation.segments[0]] == [1001] and int(annotation.props[0]) == 1
    record = json.loads((tmp_path / "ng" / "pocaduck_export.json").read_text())
    assert record["mapping"] == "v2" and record["labels"] == len(bodies)


def test_a_newer_version_rewrites_only_changed_shards_and_ends_as_a_fresh_export(store, tmp_path):
    out = tmp_path / "ng"
    export_neuroglancer(store, out, mapping="v1", **SMALL)
    before = files_of(out)
    report = export_neuroglancer(store, out, mapping="v2", **SMALL)
    after = files_of(out)
    assert after == fresh(store, tmp_path / "fresh", "v2")
    changed = {name for name in after if before.get(name) != after[name]} | (before.keys() - after.keys())
    assert changed and all(name.startswith(("by_id/", "label/")) for name in changed - {"pocaduck_export.json"})
    assert len(changed) < len(after) / 4 and report.tasks < 10
    assert json.loads(after["pocaduck_export.json"])["mapping"] == "v2"
    assert export_neuroglancer(store, out, mapping="v2", **SMALL).reused  # done: nothing to write
    export_neuroglancer(store, out, mapping="v1", **SMALL)  # back to the parent: an update too
    assert files_of(out) == before


def update_killed_half_way(store: str, out: Path, version: str, monkeypatch) -> None:
    """Export v1 into ``out``, then update it to ``version`` with a task failing after the first label shard."""
    export_neuroglancer(store, out, mapping="v1", **SMALL)
    rebuild = export_update._rebuilt_relationship
    calls = []

    def dies_after_one(*args):
        calls.append(1)
        if len(calls) > 1:
            raise OSError("killed")
        return rebuild(*args)

    monkeypatch.setattr(export_update, "_rebuilt_relationship", dies_after_one)
    with pytest.raises(ExportError):
        export_neuroglancer(store, out, mapping=version, **SMALL)
    monkeypatch.undo()


def test_an_update_killed_half_way_resumes_from_the_tasks_done(store, tmp_path, monkeypatch):
    out = tmp_path / "ng"
    update_killed_half_way(store, out, "v2", monkeypatch)
    report = export_neuroglancer(store, out, mapping="v2", **SMALL)
    assert 0 < report.tasks_reused < report.tasks
    assert files_of(out) == fresh(store, tmp_path / "fresh", "v2")


def test_an_update_killed_half_way_ends_right_whatever_version_is_exported_next(store, tmp_path, monkeypatch):
    out = tmp_path / "ng"
    update_killed_half_way(store, out, "v2", monkeypatch)
    assert files_of(out) != fresh(store, tmp_path / "v1", "v1")  # half-way: some shards are v2's
    export_neuroglancer(store, out, mapping="v1", **SMALL)  # back to the recorded version
    assert files_of(out) == files_of(tmp_path / "v1")
    export_neuroglancer(store, out, mapping="v3", **SMALL)  # two versions on, through v2
    assert files_of(out) == fresh(store, tmp_path / "v3", "v3")


def test_another_history_or_another_store_is_refused_and_the_folder_left_alone(store, tmp_path):
    out = tmp_path / "ng"
    export_neuroglancer(store, out, mapping="v1", **SMALL)
    before = files_of(out)
    with pytest.raises(ExportFolderError, match="shares no history"):
        export_neuroglancer(store, out, mapping="w1", **SMALL)
    other = write_store(tmp_path / "other", SUPERVOXELS[:10])
    write_mapping(other, "v1", [1, 2], [1001, 1001])
    with pytest.raises(ExportFolderError, match="another version of the store"):
        export_neuroglancer(other, out, mapping="v1", **SMALL)
    with pytest.raises(ExportFolderError):
        export_neuroglancer(store, out, **SMALL)  # the stored labels, not bodies
    assert files_of(out) == before


def test_chosen_bodies_and_unknown_bodies(store, tmp_path):
    export_neuroglancer(store, tmp_path / "ng", labels=[2000, 1003], mapping="v2", **SMALL)
    reader = reading.AnnotationReader(f"file://{tmp_path / 'ng'}")
    assert rows(reader.get_within_spatial_bounds()) == expected_rows(store, "v2", 2000) + expected_rows(
        store, "v2", 1003
    )
    with pytest.raises(UnknownLabelError, match="1002"):
        export_neuroglancer(store, tmp_path / "none", labels=[1002], mapping="v2", **SMALL)
    assert not (tmp_path / "none").exists()


def test_supervoxels_beyond_32_bits_leave_the_property_out(tmp_path):
    big = [2**40 + s for s in range(4)]
    store = write_store(tmp_path / "store", big)
    write_mapping(store, "v1", big, [7, 7, 8, 8])
    export_neuroglancer(store, tmp_path / "ng", mapping="v1", **SMALL)
    reader = reading.AnnotationReader(f"file://{tmp_path / 'ng'}")
    assert [p.id for p in reader.properties] == ["t"]
    assert sum(rows(reader.relationships["label"][7]).values()) + sum(
        rows(reader.relationships["label"][8]).values()
    ) == sum(rows(reader.get_within_spatial_bounds()).values())


def test_the_command_exports_and_updates_through_a_mapping(store, tmp_path, capsys):
    out = tmp_path / "ng"
    for version in ("v1", "v3"):
        assert main(["export-neuroglancer", store, str(out), "--mapping", version, "--no-progress",
                     "--workers", "1"]) in (0, None)  # fmt: skip
    capsys.readouterr()
    assert json.loads((out / "pocaduck_export.json").read_text())["mapping"] == "v3"


def test_an_update_on_a_bucket_ends_as_a_fresh_export_there(store):
    from _object_servers import s3_without_auth  # moto's IAM users are the process's: test_object_storage makes one

    def objects(server, prefix: str) -> dict[str, bytes]:
        client = server.client()
        return {
            key.removeprefix(prefix): client.get_object(Bucket=server.bucket, Key=key)["Body"].read()
            for key in server.object_keys(prefix)
        }

    few_files = {**SMALL, "shard_bytes": 2**16, "points_per_cell": 5000}  # a request per file: keep it quick
    with s3_without_auth("pocaduck-mapped-export") as server:
        export_neuroglancer(store, server.config("updated"), mapping="v1", **few_files)
        before = objects(server, "updated")
        export_neuroglancer(store, server.config("updated"), mapping="v3", **few_files)
        export_neuroglancer(store, server.config("fresh"), mapping="v3", **few_files)
        after = objects(server, "updated")
        assert after == objects(server, "fresh") and after != before
        assert not [key for key in after if ".pocaduck-export" in key]


def test_exports_in_threads_of_one_process_write_what_each_writes_alone(store, tmp_path):
    alone = {version: fresh(store, tmp_path / f"alone-{version}", version) for version in ("v1", "v2")}
    settings = {**SMALL, "workers": 2}
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda v: export_neuroglancer(store, tmp_path / f"together-{v}", mapping=v, **settings), alone))
    assert {version: files_of(tmp_path / f"together-{version}") for version in alone} == alone
