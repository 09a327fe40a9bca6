"""Compaction by body: ``compact(store, mapping=name)`` lays each body of that version out as one contiguous range of
one file, while every body and supervoxel still reads exactly, at that version, at older ones and at later ones."""

from __future__ import annotations

import importlib
import json
import os
import uuid

import numpy as np
import pytest
from _support import as_row_set

from pocaduck import (
    Ingestor,
    MappingNotFoundError,
    Query,
    compact,
    consolidate,
    write_mapping,
)
from pocaduck.cli import main
from pocaduck.errors import CompactionError, InvalidArgumentError

# Supervoxels on both sides of 2**63, so the order by body and the index are exact past int64.
SUPERVOXELS = np.array([*range(1, 41), *range(2**63 - 20, 2**63 + 20), *range(2**64 - 41, 2**64 - 1)], dtype=np.uint64)
POINTS_PER_FILE = 6_000  # several shards; every body below holds fewer points, so it fits one


def points_of(seed: int) -> np.ndarray:
    """Each supervoxel's points: 20 to 1,500 rows (some of several sample levels), over three blocks."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 1000, (int(rng.integers(20, 1500)), 3))


def full_mapping() -> dict[int, int]:
    """Bodies of 1 to 6 supervoxels drawn across the id range, body ids ≥ 2**63 and below (some a member's own)."""
    rng = np.random.default_rng(7)
    shuffled = rng.permutation(SUPERVOXELS).tolist()
    assignments, body = {}, 2**64 - 100
    while shuffled:
        members, shuffled = shuffled[: int(rng.integers(1, 7))], shuffled[int(rng.integers(1, 7)) :]
        owner = members[0] if body % 3 == 0 else body
        assignments.update(dict.fromkeys(members, owner))
        body -= 7
    return {supervoxel: assignments.get(supervoxel, supervoxel) for supervoxel in SUPERVOXELS.tolist()}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A consolidated store of two workers, with a root mapping "v1" and its child "v2" (a merge and a cleave)."""
    store = str(tmp_path_factory.mktemp("by-body") / "store")
    points = {supervoxel: points_of(index) for index, supervoxel in enumerate(SUPERVOXELS.tolist())}
    for worker in range(2):
        with Ingestor(store, worker_id=worker, max_points_per_file=4_000) as ingestor:
            for supervoxel, rows in points.items():
                for block in range(worker, 3, 2):
                    ingestor.write(supervoxel, f"b{block}", rows[block::3])
    consolidate(store)
    v1 = full_mapping()
    write_mapping(store, "v1", list(v1), list(v1.values()))
    merged = SUPERVOXELS[::9][:5]  # into the body of the first supervoxel
    cleaved = SUPERVOXELS[5:8]
    v2 = {**v1, **dict.fromkeys(merged.tolist(), v1[1]), **dict.fromkeys(cleaved.tolist(), 2**64 - 3)}
    write_mapping(store, "v2", np.concatenate([merged, cleaved]), [v2[s] for s in [*merged, *cleaved]], parent="v1")
    return store, points, {"v1": v1, "v2": v2}


def bodies_of(assignments: dict[int, int]) -> dict[int, list[int]]:
    members: dict[int, list[int]] = {}
    for supervoxel, body in assignments.items():
        members.setdefault(body, []).append(supervoxel)
    return members


def reads_exactly(store: str, points: dict[int, np.ndarray], versions: dict[str, dict[int, int]]) -> None:
    """Every body of every version, and every supervoxel without a mapping, read as brute force says."""
    for name, assignments in versions.items():
        with Query(store, mapping=name) as query:
            for body, members in bodies_of(assignments).items():
                expected = np.concatenate([points[supervoxel] for supervoxel in members])
                assert as_row_set(query.get_points(body, use_cache=False)) == as_row_set(expected), (name, body)
                itself = [] if body in assignments else [body]  # an id no version names is its own body
                assert query.get_supervoxels(body).tolist() == sorted(members + itself)
            several = query.get_points(list(bodies_of(assignments)), use_cache=False)
            for body, members in bodies_of(assignments).items():
                assert len(several[body]) == sum(len(points[supervoxel]) for supervoxel in members)
    with Query(store) as query:
        for supervoxel, rows in points.items():
            assert as_row_set(query.get_points(supervoxel, use_cache=False)) == as_row_set(rows)
        bulk = query.get_points(list(points), use_cache=False)
        assert all(as_row_set(bulk[supervoxel]) == as_row_set(rows) for supervoxel, rows in points.items())


def runs_by_label(store: str) -> dict[int, list[tuple[int, int, int]]]:
    """Each supervoxel's index rows as (file_id, row_offset, point_count)."""
    with Query(store) as query:
        rows = query.sql("SELECT label, file_id, row_offset, point_count FROM point_index", output="numpy")
    runs: dict[int, list[tuple[int, int, int]]] = {}
    for label, file_id, offset, count in zip(*(rows[c].tolist() for c in rows), strict=True):
        runs.setdefault(int(label), []).append((file_id, offset, count))
    return runs


def assert_each_body_is_one_range(store: str, assignments: dict[int, int]) -> None:
    """Every body's rows are in one file and tile one range of it, which no other supervoxel's rows enter."""
    runs = runs_by_label(store)
    for members in bodies_of(assignments).values():
        mine = [run for supervoxel in members for run in runs[supervoxel]]
        assert len({file_id for file_id, _, _ in mine}) == 1, members
        start = min(offset for _, offset, _ in mine)
        end = max(offset + count for _, offset, count in mine)
        assert sum(count for _, _, count in mine) == end - start, members
        # and a supervoxel is never cut: its own rows are one range too
        for supervoxel in members:
            own = runs[supervoxel]
            assert sum(c for _, _, c in own) == max(o + c for _, o, c in own) - min(o for _, o, c in own)


def test_compaction_by_body_lays_each_body_out_as_one_range_and_every_version_reads_exactly(written, tmp_path):
    store, points, versions = written
    report = compact(store, mapping="v2", points_per_file=POINTS_PER_FILE, workers=2, progress=False)
    assert (
        report.mapping == "v2" and report.files_written > 1 and report.points_written == sum(map(len, points.values()))
    )
    assert_each_body_is_one_range(store, versions["v2"])
    with Query(store) as query:
        assert query.info()["compaction"] == {"generation": report.generation, "deduplicated": False, "mapping": "v2"}

    # A later version, written after the compaction: a merge of two bodies and a supervoxel moved out.
    v2 = versions["v2"]
    moved = [int(SUPERVOXELS[-1]), int(SUPERVOXELS[40])]
    merged_body = [s for s, b in v2.items() if b == v2[int(SUPERVOXELS[30])]]
    v3 = {**v2, **dict.fromkeys(merged_body, v2[1]), **dict.fromkeys(moved, 2**63 + 11)}
    changed = sorted(s for s in v3 if v3[s] != v2[s])
    write_mapping(store, "v3", changed, [v3[s] for s in changed], parent="v2")
    reads_exactly(store, points, {**versions, "v3": v3})

    # Idempotent: the same mapping again changes nothing; and every read is the same.
    runs = runs_by_label(store)
    again = compact(store, mapping="v2", points_per_file=POINTS_PER_FILE, progress=False)
    assert again.generation is None and runs_by_label(store) == runs

    # Another version, or none, lays the store out again in its order, and reads stay exact.
    by_v1 = compact(store, mapping="v1", points_per_file=POINTS_PER_FILE, progress=False)
    assert by_v1.generation not in (None, report.generation)
    assert_each_body_is_one_range(store, versions["v1"])
    by_label = compact(store, points_per_file=POINTS_PER_FILE, progress=False)
    assert by_label.generation is not None and by_label.mapping is None
    with Query(store) as query:
        assert query.info()["compaction"]["mapping"] is None
    with pytest.raises(AssertionError):  # by label, bodies drawn across the id range are scattered again
        assert_each_body_is_one_range(store, versions["v1"])
    reads_exactly(store, points, {"v1": versions["v1"], "v3": v3})


def test_deduplicated_compaction_by_body_keeps_one_copy_per_supervoxel(tmp_path):
    store = str(tmp_path / "store")
    rows = np.array([[1, 1, 1], [1, 1, 1], [2, 2, 2]])
    with Ingestor(store, worker_id=0) as ingestor:
        for supervoxel in (2**63 + 1, 5, 9):
            ingestor.write(supervoxel, "a", rows)
            ingestor.write(supervoxel, "b", rows[:1])
    consolidate(store)
    write_mapping(store, "v1", [5, 9], [2**63 + 1, 2**63 + 1])
    compact(store, mapping="v1", deduplicate=True, progress=False)
    with Query(store, mapping="v1") as query:
        assert as_row_set(query.get_points(2**63 + 1)) == as_row_set(np.tile([[1, 1, 1], [2, 2, 2]], (3, 1)))
    assert_each_body_is_one_range(store, {2**63 + 1: 2**63 + 1, 5: 2**63 + 1, 9: 2**63 + 1})


def test_a_body_larger_than_a_file_is_cut_between_supervoxels_and_others_are_not(tmp_path):
    store = str(tmp_path / "store")
    with Ingestor(store, worker_id=0) as ingestor:
        for supervoxel in range(1, 13):
            ingestor.write(supervoxel, "a", np.full((100, 3), supervoxel))
    consolidate(store)
    write_mapping(store, "v1", list(range(1, 11)), [2**64 - 1] * 8 + [7] * 2)  # 800 points; 200; 11 and 12 alone
    report = compact(store, mapping="v1", points_per_file=300, progress=False)
    runs = runs_by_label(store)
    assert len({runs[s][0][0] for s in range(1, 9)}) == 3  # 800 points in pieces of at most 300
    assert report.files_written == 4 and len({runs[s][0][0] for s in (9, 10)}) == 1  # 200 points: one file
    assert_each_body_is_one_range(store, {9: 7, 10: 7, 11: 11, 12: 12})
    with Query(store, mapping="v1") as query:
        assert as_row_set(query.get_points(2**64 - 1)) == as_row_set(
            np.repeat(np.arange(1, 9), 100)[:, None] * [1, 1, 1]
        )


def store_files(store: str) -> dict[str, int]:
    found = {}
    for folder, _, files in os.walk(store):
        for name in files:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, store)] = os.stat(path).st_mtime_ns
    return found


@pytest.mark.parametrize(
    ("mapping", "error", "says"),
    [
        ("nope", MappingNotFoundError, "nope"),
        ("../v1", InvalidArgumentError, "not usable"),
        (5, InvalidArgumentError, "int"),
    ],
)
def test_a_bad_mapping_is_refused_before_anything_is_written(tmp_path, mapping, error, says):
    store = str(tmp_path / "store")
    with Ingestor(store, worker_id=0) as ingestor:
        ingestor.write(3, "a", np.zeros((4, 3)))
    consolidate(store)
    write_mapping(store, "v1", [3], [2**63])
    before = store_files(store)
    with pytest.raises(error, match=says):
        compact(store, mapping=mapping, progress=False)
    assert store_files(store) == before


def test_cli_compacts_by_mapping_and_info_shows_it(tmp_path, capsys):
    store = str(tmp_path / "store")
    with Ingestor(store, worker_id=0) as ingestor:
        for supervoxel in (4, 2**63 + 2, 2):
            ingestor.write(supervoxel, "a", np.full((3, 3), supervoxel % 1000))
    consolidate(store)
    write_mapping(store, "v1", [4], [2**63 + 2])
    assert main(["compact", store, "--mapping", "v1"]) == 0
    assert json.loads(capsys.readouterr().out)["mapping"] == "v1"
    assert main(["info", store]) == 0
    assert json.loads(capsys.readouterr().out)["compaction"]["mapping"] == "v1"
    assert_each_body_is_one_range(store, {4: 2**63 + 2, 2**63 + 2: 2**63 + 2, 2: 2})
    assert main(["compact", store, "--mapping", "missing"]) == 1
    assert "missing" in capsys.readouterr().err


@pytest.mark.parametrize("payload", ["parquet", "arrow"])
def test_a_body_with_supervoxels_merged_in_after_compaction_reads_its_long_runs_exactly(tmp_path, payload):
    store = str(tmp_path / "store")
    points = {supervoxel: points_of(supervoxel % 1000) for supervoxel in (*range(1, 9), 2**63 + 4, 2**64 - 2)}
    with Ingestor(store, worker_id=0) as ingestor:
        for supervoxel, rows in points.items():
            ingestor.write(supervoxel, "a", rows)
    consolidate(store)
    write_mapping(store, "v1", [1, 2, 3, 4, 5, 6], [2**63 + 4] * 3 + [2**64 - 2] * 3)
    compact(store, mapping="v1", payload=payload, progress=False)
    # The body of 2**63 + 4 gains 7 and 5, which lie elsewhere in the file: its read is several long runs of it.
    write_mapping(store, "v2", [7, 5], [2**63 + 4] * 2, parent="v1")
    with Query(store, mapping="v2") as query:
        members = [1, 2, 3, 5, 7, 2**63 + 4]
        got = query.get_points(2**63 + 4, output="pandas")
        assert as_row_set(got[["x", "y", "z"]].to_numpy()) == as_row_set(np.concatenate([points[s] for s in members]))
        assert got["supervoxel"].value_counts().to_dict() == {s: len(points[s]) for s in members}
        both = query.get_points([2**63 + 4, 2**64 - 2])
        assert as_row_set(both[2**64 - 2]) == as_row_set(np.concatenate([points[s] for s in (4, 6, 2**64 - 2)]))
        assert as_row_set(both[2**63 + 4]) == as_row_set(np.concatenate([points[s] for s in members]))


def test_a_failed_compaction_by_body_keeps_the_old_layout_and_a_rerun_resumes_it(tmp_path, monkeypatch):
    compact_module = importlib.import_module("pocaduck.compact")  # the module: ``pocaduck.compact`` is the function
    store = str(tmp_path / "store")
    points = {int(supervoxel): points_of(i) for i, supervoxel in enumerate(SUPERVOXELS[::6])}
    with Ingestor(store, worker_id=0) as ingestor:
        for supervoxel, rows in points.items():
            ingestor.write(supervoxel, "a", rows)
    consolidate(store)
    assignments = {s: b for s, b in full_mapping().items() if s in points}
    write_mapping(store, "v1", list(assignments), list(assignments.values()))
    runs = runs_by_label(store)
    real_shard = compact_module.compact_shard

    def failing_last(config, generation, shard):
        if shard == 3:
            raise OSError("disk gone")
        return real_shard(config, generation, shard)

    monkeypatch.setattr(compact_module, "compact_shard", failing_last)
    with pytest.raises(CompactionError, match="disk gone"):
        compact(store, mapping="v1", points_per_file=3_000, workers=1, progress=False)
    assert runs_by_label(store) == runs  # nothing published: the old layout is served
    monkeypatch.setattr(compact_module, "compact_shard", real_shard)
    report = compact(store, mapping="v1", points_per_file=3_000, workers=1, progress=False)
    assert report.shards > 3 and report.shards_reused == report.shards - 1  # only the failed one is written again
    assert_each_body_is_one_range(store, assignments)
    reads_exactly(store, points, {"v1": assignments})


def test_compaction_by_body_on_a_bucket(tmp_path):
    from _object_servers import s3_without_auth  # moto's IAM users are the process's: test_object_storage makes one

    with s3_without_auth("pocaduck-by-body") as server:
        config = server.config(f"by-body-{uuid.uuid4().hex}")
        points = {int(supervoxel): points_of(i) for i, supervoxel in enumerate(SUPERVOXELS[::20])}
        with Ingestor(config, worker_id=0) as ingestor:
            for supervoxel, rows in points.items():
                ingestor.write(supervoxel, "a", rows)
        consolidate(config)
        assignments = {s: b for s, b in full_mapping().items() if s in points}
        write_mapping(config, "v1", list(assignments), list(assignments.values()))
        report = compact(config, mapping="v1", points_per_file=1_500, progress=False)
        assert report.files_written > 1
        assert_each_body_is_one_range(config, assignments)
        reads_exactly(config, points, {"v1": assignments})
