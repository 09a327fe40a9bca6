"""Versioned supervoxel→body mappings: points stay stored per supervoxel, a mapping version says which body each
supervoxel is in, and a Query opened with ``mapping=`` reads bodies exactly, at every version, however the points
were written, consolidated or compacted, and whatever versions came after."""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _support import as_row_set
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pocaduck import (
    Ingestor,
    InvalidMappingError,
    MappingExistsError,
    MappingNotFoundError,
    Query,
    StorageConfig,
    changed_bodies,
    collect_garbage,
    compact,
    consolidate,
    create_store,
    list_mappings,
    write_mapping,
)
from pocaduck.cli import main
from pocaduck.errors import InvalidArgumentError, StoreWriteError
from pocaduck.mapping import _resolved
from pocaduck.storage import LocalStorage

SUPERVOXELS = [1, 2, 3, 40, 2**63 - 1, 2**63, 2**63 + 5, 2**64 - 1]
BODIES = [*SUPERVOXELS, 77, 2**64 - 2]


def written_store(folder: str, points: dict[int, np.ndarray]) -> str:
    """A consolidated store holding ``points`` per supervoxel, each supervoxel's rows over two blocks."""
    store = os.path.join(folder, "store")
    with Ingestor(store, worker_id=0) as ingestor:
        for supervoxel, rows in points.items():
            half = len(rows) // 2
            ingestor.write(supervoxel, "a", rows[:half])
            ingestor.write(supervoxel, "b", rows[half:])
    consolidate(store)
    return store


def some_points(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, (count, 3))


@pytest.fixture
def store(tmp_path):
    points = {supervoxel: some_points(i, 4 + i) for i, supervoxel in enumerate(SUPERVOXELS)}
    return written_store(str(tmp_path), points), points


# -- the state machine ---------------------------------------------------------------------------


class Proofreading(RuleBasedStateMachine):
    """Writes of supervoxel points, blocks re-scanned in place (finished or killed), consolidations, compactions
    by label and by body, full mappings, merges and cleaves in any order."""

    def __init__(self):
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="pocaduck-mappings-")
        self.store = self.new_store()
        create_store(self.store)
        self.blocks: dict[str, dict[int, np.ndarray]] = {}  # what the next consolidation serves, by block and label
        self.served: dict[int, np.ndarray] = {}  # what the unified index in force holds, by supervoxel
        self.versions: dict[str, dict[int, int]] = {}  # each version's explicit assignments, resolved
        self.writes = 0
        self.rescans = 0
        self.killed = False  # a re-scan worker died unfinished: consolidations must leave it aside

    def teardown(self):
        shutil.rmtree(self.folder, ignore_errors=True)

    def new_store(self) -> str | StorageConfig:
        return os.path.join(self.folder, "store")

    @staticmethod
    def body(assignments: dict[int, int], supervoxel: int) -> int:
        return assignments.get(supervoxel, supervoxel)

    @initialize(supervoxels=st.lists(st.sampled_from(SUPERVOXELS), min_size=1, max_size=4), seed=st.integers(0, 99))
    def first_points(self, supervoxels, seed):
        self.write(supervoxels, seed)
        self.consolidate()

    @rule(supervoxels=st.lists(st.sampled_from(SUPERVOXELS), min_size=1, max_size=4), seed=st.integers(0, 99))
    def write(self, supervoxels, seed):
        labels = np.array(supervoxels, dtype=np.uint64)
        points = some_points(seed, len(labels) * 3)
        labels = np.repeat(labels, 3)
        block = f"block-{self.writes}"
        with Ingestor(self.store, worker_id=self.writes) as ingestor:
            ingestor.write_block(block, labels, points)
        self.writes += 1
        self.blocks[block] = {label: points[labels == np.uint64(label)] for label in np.unique(labels).tolist()}

    @rule(
        data=st.data(),
        supervoxels=st.lists(st.sampled_from(SUPERVOXELS), max_size=3),
        seed=st.integers(0, 99),
        killed=st.booleans(),
    )
    def rescan(self, data, supervoxels, seed, killed):
        """A block re-segmented and written again with replace=True (maybe empty), or a re-scan killed unfinished."""
        block = data.draw(st.sampled_from(sorted(self.blocks)))
        labels = np.repeat(np.array(supervoxels, dtype=np.uint64), 2)
        points = some_points(1000 + seed, len(labels))
        ingestor = Ingestor(self.store, worker_id=f"rescan-{self.rescans:04d}")  # ids sort as the re-scans ran
        self.rescans += 1
        ingestor.write_block(block, labels, points, replace=True)
        if killed:  # closed without finalizing, as a worker that died mid-way leaves its session
            ingestor.close()
            self.killed = True
            return
        ingestor.finalize()
        self.blocks[block] = {label: points[labels == np.uint64(label)] for label in np.unique(labels).tolist()}

    @rule()
    def consolidate(self):
        consolidate(self.store, ignore_unfinalized=self.killed)
        served: dict[int, list[np.ndarray]] = defaultdict(list)
        for contents in self.blocks.values():
            for label, points in contents.items():
                served[label].append(points)
        self.served = {label: np.concatenate(parts) for label, parts in served.items()}

    @rule()
    def compact_without_mapping(self):
        self.consolidate()
        compact(self.store, workers=1, progress=False)
        collect_garbage(self.store)  # removes what the compaction replaced, and nothing of the mappings

    @precondition(lambda self: self.versions)
    @rule(data=st.data(), points_per_file=st.sampled_from([5, 40, 10**6]))
    def compact_by_body(self, data, points_per_file):
        """Bodies of one version laid out contiguously: every version must still read exactly."""
        self.consolidate()
        version = data.draw(st.sampled_from(sorted(self.versions)))
        compact(self.store, mapping=version, points_per_file=points_per_file, workers=1, progress=False)
        collect_garbage(self.store)

    @precondition(lambda self: sum(name.startswith("full") for name in self.versions) < 2)  # most steps: edits
    @rule(
        pairs=st.lists(
            st.tuples(st.sampled_from(SUPERVOXELS), st.sampled_from(BODIES)), max_size=6, unique_by=lambda p: p[0]
        )
    )
    def full_mapping(self, pairs):
        name = f"full-{len(self.versions)}"
        write_mapping(self.store, name, [s for s, _ in pairs], [b for _, b in pairs])
        self.versions[name] = dict(pairs)

    @precondition(lambda self: self.versions)
    @rule(data=st.data(), into=st.sampled_from(BODIES))
    def merge(self, data, into):
        parent = data.draw(self.parents())
        merged = data.draw(st.lists(st.sampled_from(BODIES), min_size=1, max_size=3))
        assignments = self.versions[parent]
        moved = [s for s in SUPERVOXELS if self.body(assignments, s) in merged]
        self.child(parent, dict.fromkeys(moved, into), f"merge {merged} into {into}")

    @precondition(lambda self: self.versions)
    @rule(data=st.data(), new_body=st.sampled_from(BODIES))
    def cleave(self, data, new_body):
        parent = data.draw(self.parents())
        assignments = self.versions[parent]
        body = data.draw(st.sampled_from(sorted({self.body(assignments, s) for s in SUPERVOXELS})))
        members = [s for s in SUPERVOXELS if self.body(assignments, s) == body]
        moved = data.draw(st.lists(st.sampled_from(members), min_size=1, unique=True))
        self.child(parent, dict.fromkeys(moved, new_body), f"cleave {moved} off {body}")

    def parents(self) -> st.SearchStrategy[str]:
        """Any version, the newest most often: long chains of children reassign the same supervoxels again."""
        return st.one_of(st.just(list(self.versions)[-1]), st.sampled_from(sorted(self.versions)))

    def child(self, parent: str, changes: dict[int, int], note: str) -> None:
        name = f"child-{len(self.versions)}"
        write_mapping(self.store, name, list(changes), list(changes.values()), parent=parent, note=note)
        self.versions[name] = {**self.versions[parent], **changes}

    @invariant()
    def every_body_reads_its_supervoxels_points_at_every_version(self):
        for name, assignments in self.versions.items():
            expected: dict[int, list[np.ndarray]] = defaultdict(list)
            for supervoxel, points in self.served.items():
                expected[self.body(assignments, supervoxel)].append(points)
            _resolved._kept.clear()  # bodies read by ranges first, then the whole mapping resolved for the labels
            with Query(self.store, mapping=name) as query:
                for body, parts in expected.items():
                    points = np.concatenate(parts)
                    assert as_row_set(query.get_points(body)) == as_row_set(points)
                    assert query.get_point_count(body) == len(points)
                unknown = 12345  # never a supervoxel: its own body, with no points
                assert query.get_points(unknown).shape == (0, 3) and query.get_point_count(unknown) == 0
                assert query.get_labels().tolist() == sorted(expected)
                if expected:  # re-scans may have emptied every block
                    body = next(iter(expected))
                    assert as_row_set(query.get_points(body)) == as_row_set(np.concatenate(expected[body]))

    @precondition(lambda self: len(self.versions) >= 2)
    @rule(data=st.data())
    def changed_bodies_are_the_bodies_whose_supervoxels_differ(self, data):
        old, new = data.draw(st.lists(st.sampled_from(sorted(self.versions)), min_size=2, max_size=2))
        before, after = self.versions[old], self.versions[new]
        named = set(before) | set(after)
        expected = set()
        for supervoxel in named:
            if self.body(before, supervoxel) != self.body(after, supervoxel):
                expected |= {self.body(before, supervoxel), self.body(after, supervoxel)}
        assert changed_bodies(self.store, old, new).tolist() == sorted(expected)


# derandomize: the same histories every run, so a failure is a change in the code. Hunt with more examples by hand.
HISTORIES = settings(
    max_examples=12,
    stateful_step_count=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_every_body_reads_exactly_its_supervoxels_points_at_every_version():
    run_state_machine_as_test(Proofreading, settings=HISTORIES)


def test_every_body_reads_exactly_at_every_version_on_a_bucket():
    """The same histories, fewer of them, on S3 on loopback: every write, re-scan, consolidation, compaction,
    gc and version goes through the bucket."""
    from _object_servers import s3_without_auth  # moto's IAM users are the process's: test_object_storage makes one

    with s3_without_auth("pocaduck-proofreading") as server:

        class ProofreadingOnABucket(Proofreading):
            def new_store(self) -> StorageConfig:
                return server.config(f"proofreading-{uuid.uuid4().hex}")

        run_state_machine_as_test(
            ProofreadingOnABucket, settings=settings(HISTORIES, max_examples=4, stateful_step_count=8)
        )


EDITS = st.lists(
    st.tuples(
        st.integers(-1, 6),  # the parent: -1 the newest version, else the n-th (mod how many there are)
        st.dictionaries(st.sampled_from(SUPERVOXELS), st.sampled_from(BODIES), min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=8,
)


@functools.cache
def _one_point_store() -> str:
    return written_store(tempfile.mkdtemp(prefix="pocaduck-mappings-"), {1: some_points(0, 2)})


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(root=st.dictionaries(st.sampled_from(SUPERVOXELS), st.sampled_from(BODIES), max_size=6), edits=EDITS)
def test_chains_of_edits_resolve_as_applying_them_in_order(root, edits):
    """Without points: every version's bodies, supervoxels and differences, against the edits applied by hand."""
    with tempfile.TemporaryDirectory() as folder:
        path = shutil.copytree(_one_point_store(), os.path.join(folder, "store"))
        write_mapping(path, "v0", list(root), list(root.values()))
        model = {"v0": root}
        for parent_at, changes in edits:
            names = list(model)
            parent = names[-1] if parent_at < 0 else names[parent_at % len(names)]
            name = f"v{len(model)}"
            write_mapping(path, name, list(changes), list(changes.values()), parent=parent)
            model[name] = {**model[parent], **changes}
        asked = np.array([*SUPERVOXELS, 77, 12345], np.uint64)
        for name, assignments in model.items():
            with Query(path, mapping=name) as query:
                bodies = query.get_body(asked).tolist()
                assert bodies == [assignments.get(s, s) for s in asked.tolist()]
                for body in {*bodies, *BODIES}:
                    assert query.get_supervoxels(body).tolist() == _expected_members(assignments, body)
        for old in model:
            new = list(model)[-1]
            before, after = model[old], model[new]
            expected = set()
            for s in set(before) | set(after):
                if before.get(s, s) != after.get(s, s):
                    expected |= {before.get(s, s), after.get(s, s)}
            assert changed_bodies(path, old, new).tolist() == sorted(expected)


# -- reads --------------------------------------------------------------------------------------


def test_a_body_is_its_supervoxels_with_a_supervoxel_column_in_arrow_and_pandas(store):
    path, points = store
    write_mapping(path, "v1", [2**63, 2**64 - 1], [3, 3])
    with Query(path, mapping="v1") as query:
        assert query.get_supervoxels(3).tolist() == [3, 2**63, 2**64 - 1]
        table = query.get_points(3, output="arrow")
        assert table.column_names == ["supervoxel", "x", "y", "z"]
        assert table.schema.field("supervoxel").type == pa.uint64()
        for supervoxel in (3, 2**63, 2**64 - 1):
            rows = table.filter(pa.compute.equal(table["supervoxel"], pa.scalar(supervoxel, pa.uint64())))
            own = np.column_stack([rows[c].to_numpy() for c in "xyz"])
            assert as_row_set(own) == as_row_set(points[supervoxel])
        frame = query.get_points([3, 40], output="pandas")
        assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["label", "supervoxel", "x", "y", "z"]
        assert sorted(set(frame["label"].tolist())) == [3, 40]
        several = query.get_points([3, 2**63])
        assert several[2**63].shape == (0, 3)  # merged away: no supervoxel is in body 2**63 any more
        assert as_row_set(several[3]) == as_row_set(np.concatenate([points[s] for s in (3, 2**63, 2**64 - 1)]))


def test_get_body_is_vectorised_and_exact_past_2_63(store):
    path, _ = store
    write_mapping(path, "v1", np.array([2**63 + 5, 1], np.uint64), np.array([2**64 - 2, 2**63], np.uint64))
    with Query(path, mapping="v1") as query:
        bodies = query.get_body(np.array([1, 2, 2**63 + 5, 2**64 - 1], np.uint64))
        assert bodies.dtype == np.uint64
        assert bodies.tolist() == [2**63, 2, 2**64 - 2, 2**64 - 1]
        assert query.get_body(2**63 + 5) == 2**64 - 2
        assert query.get_labels().tolist() == sorted({2**63, 2, 3, 40, 2**63 - 1, 2**64 - 2, 2**64 - 1})


def test_summaries_blocks_boxes_and_chunks_speak_bodies(store):
    path, points = store
    write_mapping(path, "v1", [1, 2], [40, 40])
    members = np.concatenate([points[s] for s in (1, 2, 40)])
    with Query(path, mapping="v1") as query:
        summary = query.get_label_summary(40)
        assert summary["point_count"] == len(members) and summary["supervoxel_count"] == 3
        assert summary["min_x"] == members[:, 0].min() and summary["max_z"] == members[:, 2].max()
        assert query.get_blocks_for_label(40) == ["a", "b"]
        assert as_row_set(np.concatenate(list(query.iter_points(40, chunk_size=4)))) == as_row_set(members)
        whole, rest = divmod(len(members), 3)
        assert [len(c) for c in query.iter_points(40, chunk_size=3)] == [3] * whole + ([rest] if rest else [])
        lower, upper = members.min(axis=0), members.min(axis=0) + 1  # holds the lowest corner of body 40 only
        inside = query.get_labels_in_box(lower, upper + 2000)
        assert 40 in inside.tolist() and 1 not in inside.tolist() and 2 not in inside.tolist()
        boxed = query.get_points_in_box((-2000, -2000, -2000), (2000, 2000, 2000), labels=[40], output="numpy")
        assert as_row_set(boxed[40]) == as_row_set(members)
        only_a, timing = query.get_points(40, blocks="a", timing=True)
        assert as_row_set(only_a) == as_row_set(np.concatenate([points[s][: len(points[s]) // 2] for s in (1, 2, 40)]))
        assert timing["points_returned"] == len(only_a) and timing["supervoxels"] == 3
        sample = query.get_points(40, sample=5)
        assert len(sample) == 5 and set(as_row_set(sample)) <= set(as_row_set(members))
        assert np.array_equal(sample, query.get_points(40, sample=5))


def test_changing_what_a_query_returned_changes_no_later_answer(store):
    """The process keeps a version resolved for its next Queries: what callers get must be theirs to change."""
    path, _ = store
    write_mapping(path, "v1", [1, 2], [40, 40])
    with Query(path, mapping="v1") as query:
        query.get_supervoxels(40)[:] = 0
        query.get_supervoxels(3)[:] = 0
        query.get_body(np.array([1, 2], np.uint64))[:] = 0
    with Query(path, mapping="v1") as query:
        assert query.get_supervoxels(40).tolist() == [1, 2, 40] and query.get_supervoxels(3).tolist() == [3]
        assert query.get_body(np.array([1, 2], np.uint64)).tolist() == [40, 40]


def test_a_query_without_mapping_reads_supervoxels_as_before(store):
    path, points = store
    write_mapping(path, "v1", [1, 2], [40, 40])
    with Query(path) as query:
        assert as_row_set(query.get_points(40)) == as_row_set(points[40])
        assert 1 in query.get_labels().tolist()


def test_old_versions_read_exactly_after_newer_ones(store):
    path, points = store
    write_mapping(path, "v1", [1], [2])
    write_mapping(path, "v2", [3], [2], parent="v1", note="merge 3 into 2")
    write_mapping(path, "v3", [1], [1], parent="v2", note="cleave 1 off 2")
    write_mapping(path, "v4", [1, 3], [2, 3], parent="v3", note="1 back into 2, 3 off it")
    expected = {"v1": (1, 2), "v2": (1, 2, 3), "v3": (2, 3), "v4": (1, 2)}
    for name, supervoxels in expected.items():
        with Query(path, mapping=name) as query:
            assert as_row_set(query.get_points(2)) == as_row_set(np.concatenate([points[s] for s in supervoxels]))
    history = {version.name: version for version in list_mappings(path)}
    assert history["v3"].parent == "v2" and history["v3"].ancestors == ("v2", "v1")
    assert history["v2"].note == "merge 3 into 2" and history["v2"].assignments == 1
    assert changed_bodies(path, "v1", "v3").tolist() == [1, 2, 3]
    assert changed_bodies(path, "v2", "v2").tolist() == []


# -- inputs ---------------------------------------------------------------------------------------


def test_files_csv_parquet_and_dvid_text_are_read_exactly(store, tmp_path):
    path, _ = store
    big = 2**64 - 1
    (tmp_path / "map.csv").write_text(f"supervoxel,body\n{2**63},{big}\n1, 3\n")
    (tmp_path / "dvid.txt").write_text(f"{2**63} {big}\n1\t3\n")
    pa.parquet.write_table(
        pa.table({"sv": pa.array([2**63, 1], pa.uint64()), "b": pa.array([big, 3], pa.uint64())}),
        tmp_path / "map.parquet",
    )
    for name in ("map.csv", "dvid.txt", "map.parquet"):
        write_mapping(path, name.replace(".", "-"), tmp_path / name)
        with Query(path, mapping=name.replace(".", "-")) as query:
            assert query.get_body(np.array([2**63, 1], np.uint64)).tolist() == [big, 3]


BAD_INPUTS = [
    (np.array([1.0, 2.0]), np.array([3, 4]), "floats"),
    (np.array([-1, 2]), np.array([3, 4]), "uint64 range"),
    ([1, 2, 3], [4, 5], "one body per supervoxel"),
    ([1, 1], [4, 5], "two bodies"),
    ([1, 2], [4, "5"], "integer ids"),
    ([True, 2], [4, 5], "integer ids"),
    (pa.array([1, None], pa.uint64()), pa.array([4, 5], pa.uint64()), "missing"),
    (pd.Series([1.5, 2.0]), pd.Series([3, 4]), "floats"),
    ([1, 2], None, "bodies is missing"),
]


@pytest.mark.parametrize("supervoxels, bodies, says", BAD_INPUTS)
def test_bad_mappings_are_refused_before_anything_is_written(store, supervoxels, bodies, says):
    path, _ = store
    with pytest.raises(InvalidMappingError, match=says):
        write_mapping(path, "bad", supervoxels, bodies)
    assert list_mappings(path) == []
    folder = os.path.join(path, "mappings")
    assert not os.path.isdir(folder) or os.listdir(folder) == []


def test_bad_files_are_refused(store, tmp_path):
    path, _ = store
    for name, text in (("floats.csv", "1,2.5\n"), ("negative.txt", "1 -2\n"), ("three.txt", "1 2 3\n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(InvalidMappingError):
            write_mapping(path, "bad", tmp_path / name)
    with pytest.raises(InvalidMappingError, match="no mapping file"):
        write_mapping(path, "bad", tmp_path / "absent.csv")
    assert list_mappings(path) == []


def test_versions_are_immutable_and_names_parents_checked(store):
    path, _ = store
    write_mapping(path, "v1", [1], [2])
    with pytest.raises(MappingExistsError, match="versions never change"):
        write_mapping(path, "v1", [1], [3])
    with pytest.raises(MappingNotFoundError, match="it holds v1"):
        write_mapping(path, "v2", [1], [3], parent="nope")
    with pytest.raises(InvalidArgumentError, match="not usable"):
        write_mapping(path, "../escape", [1], [3])
    with pytest.raises(MappingNotFoundError):
        Query(path, mapping="v9")
    with Query(path, mapping="v1") as query:
        assert query.get_body(1) == 2  # the first write stands
    assert [v.name for v in list_mappings(path)] == ["v1"]


def test_a_write_that_fails_while_publishing_leaves_no_version_and_can_be_run_again(store):
    path, _ = store
    with (
        mock.patch.object(LocalStorage, "publish_if_unchanged", side_effect=OSError(28, "No space left on device")),
        pytest.raises(StoreWriteError, match="No space left"),
    ):
        write_mapping(path, "v1", [1], [2])
    assert list_mappings(path) == [] and os.listdir(os.path.join(path, "mappings")) == []  # no staged file left
    write_mapping(path, "v1", [1], [2])
    with Query(path, mapping="v1") as query:
        assert query.get_body(1) == 2


def test_two_writers_of_one_name_one_wins(store):
    path, _ = store

    def write(body):
        try:
            write_mapping(path, "same", [1], [body])
            return body
        except MappingExistsError:
            return None

    with ThreadPoolExecutor(4) as pool:
        winners = [body for body in pool.map(write, range(100, 108)) if body is not None]
    assert len(winners) == 1
    with Query(path, mapping="same") as query:
        assert query.get_body(1) == winners[0]


def test_a_child_stores_only_its_changes():
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "store")
        create_store(path)
        rng = np.random.default_rng(0)
        supervoxels = rng.choice(2**40, 100_000, replace=False).astype(np.uint64)
        write_mapping(path, "base", supervoxels, rng.integers(0, 2**40, 100_000, dtype=np.uint64))
        write_mapping(path, "edit", [5, 6], [0, 0], parent="base")
        base = os.path.getsize(os.path.join(path, "mappings", "base.parquet"))
        edit = os.path.getsize(os.path.join(path, "mappings", "edit.parquet"))
        assert edit < base / 50


# -- threads, buckets, CLI --------------------------------------------------------------------------


def test_threads_opening_queries_of_one_version_at_once_get_right_answers(store):
    path, points = store
    write_mapping(path, "v1", [1, 2], [40, 40])
    write_mapping(path, "v2", [3], [40], parent="v1")

    def read(i):
        version = ("v1", "v2")[i % 2]
        with Query(path, mapping=version) as query:
            members = (1, 2, 40) if version == "v1" else (1, 2, 3, 40)
            return as_row_set(query.get_points(40)) == as_row_set(np.concatenate([points[s] for s in members]))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(read, range(40)))


def test_threads_sharing_one_mapped_query_get_right_answers(store):
    path, points = store
    write_mapping(path, "v1", [1, 2, 2**63], [40, 40, 2**64 - 1])
    expected = {40: (1, 2, 40), 2**64 - 1: (2**63, 2**64 - 1), 3: (3,)}
    with Query(path, mapping="v1") as query:

        def check(i):
            body = list(expected)[i % 3]
            got = query.get_points(body) if i % 2 else query.get_points([body])[body]
            return as_row_set(got) == as_row_set(np.concatenate([points[s] for s in expected[body]]))

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(check, range(200)))


def test_mappings_on_a_bucket(tmp_path):
    from _object_servers import s3_without_auth  # moto's IAM users are the process's: test_object_storage makes one

    with s3_without_auth("pocaduck-mappings") as server:
        config = server.config(f"mappings-{uuid.uuid4().hex}")
        points = {s: some_points(i, 5) for i, s in enumerate(SUPERVOXELS)}
        with Ingestor(config, worker_id=0) as ingestor:
            for supervoxel, rows in points.items():
                ingestor.write(supervoxel, "a", rows)
        consolidate(config)
        write_mapping(config, "v1", [2**63, 1], [2**64 - 1, 2**64 - 1])
        write_mapping(config, "v2", [1], [1], parent="v1", note="cleave")
        with pytest.raises(MappingExistsError):
            write_mapping(config, "v2", [2], [1], parent="v1")
        before = len(server.requests)
        with Query(config) as query:
            query.get_points(2**63)
        plain = len(server.requests) - before
        before = len(server.requests)
        with Query(config, mapping="v2") as query:
            assert as_row_set(query.get_points(2**64 - 1)) == as_row_set(
                np.concatenate([points[2**63], points[2**64 - 1]])
            )
        # The version's footer (size and tail) and each file of its chain in one GET: 4 more requests, cold.
        assert len(server.requests) - before <= plain + 4
        with pytest.raises(MappingNotFoundError, match="it holds v1, v2"):
            Query(config, mapping="v3")
        assert changed_bodies(config, "v1", "v2").tolist() == [1, 2**64 - 1]
        assert [v.name for v in list_mappings(config)] == ["v1", "v2"]


def test_cli_writes_lists_and_diffs_mappings(store, tmp_path, capsys):
    path, points = store
    (tmp_path / "full.txt").write_text("1 40\n2 40\n")
    (tmp_path / "merge.csv").write_text("3,40\n")
    assert main(["mapping", "write", path, "v1", str(tmp_path / "full.txt")]) == 0
    assert main(["mapping", "write", path, "v2", str(tmp_path / "merge.csv"), "--parent", "v1", "--note", "3→40"]) == 0
    assert main(["mapping", "write", path, "v2", str(tmp_path / "merge.csv")]) == 1
    assert "versions never change" in capsys.readouterr().err
    assert main(["mapping", "list", path]) == 0
    listed = capsys.readouterr().out
    assert "v1" in listed and "v2" in listed and "3→40" in listed
    assert main(["mapping", "diff", path, "v1", "v2"]) == 0
    assert capsys.readouterr().out.split() == ["3", "40"]
    assert main(["info", path, "--mapping", "v2"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mapping"]["name"] == "v2" and info["mapping"]["parent"] == "v1" and info["labels"] == len(points)
    assert main(["points", path, "40", "--mapping", "v9"]) == 1
    assert "no mapping 'v9'" in capsys.readouterr().err
    out = tmp_path / "body.csv"
    assert main(["points", path, "40", "--mapping", "v2", "-o", str(out)]) == 0
    table = pd.read_csv(out)
    assert sorted(set(table["supervoxel"])) == [1, 2, 3, 40]
    assert len(table) == sum(len(points[s]) for s in (1, 2, 3, 40))


# -- field scale: a version read by ranges -----------------------------------------------------------

LARGE = 300_000  # supervoxels of a full mapping spanning several row groups in each of its two sections


def _large_mapping(path: str) -> tuple[np.ndarray, np.ndarray]:
    """A full mapping whose bodies have 1 to 40,000 supervoxels (one spans row groups), some ≥ 2**63."""
    rng = np.random.default_rng(7)
    supervoxels = np.unique(rng.integers(1, 2**64 - 1, LARGE + 100, dtype=np.uint64))[:LARGE]
    bodies = supervoxels[rng.integers(0, LARGE // 5, LARGE)]
    bodies[:40_000] = supervoxels[-1]  # a body of 40,000 supervoxels, across row-group boundaries
    bodies[40_000:40_010] = 2**64 - 2  # a body that is no supervoxel of the mapping: its own supervoxel too
    shuffled = rng.permutation(LARGE)  # given in any order
    write_mapping(path, "root", supervoxels[shuffled], bodies[shuffled])
    return supervoxels, bodies


def _expected_members(named: dict[int, int], body: int) -> list[int]:
    return sorted({s for s in [*named, body] if named.get(s, s) == body})


class _RootReads:
    """Records the row groups each read of a version file asks for; fails on any whole resolution of a version."""

    def __init__(self):
        self.groups: dict[str, list[int]] = defaultdict(list)  # by version, how many groups each read asked

    def __enter__(self):
        from pocaduck.mapping import _resolved, _versions

        original = _versions.VersionFile.rows
        reads = self

        def counted(opened, groups=None):
            reads.groups[opened.version.name].append(-1 if groups is None else len(groups))
            return original(opened, groups)

        self._patches = [
            mock.patch.object(_versions.VersionFile, "rows", counted),
            mock.patch.object(_resolved, "resolve", side_effect=AssertionError("resolved whole")),
        ]
        for patch in self._patches:
            patch.start()
        return self

    def __exit__(self, *exc):
        for patch in self._patches:
            patch.stop()


def test_a_body_and_a_supervoxels_body_are_read_by_ranges_at_every_version(store):
    path, _ = store
    supervoxels, bodies = _large_mapping(path)
    named = dict(zip(supervoxels.tolist(), bodies.tolist(), strict=True))
    big, lone = int(supervoxels[-1]), 2**64 - 2
    moved = supervoxels[[3, 50_000, 99_998]]
    write_mapping(path, "cleave", moved, [lone, big, 5], parent="root")
    write_mapping(path, "merge", [lone, 5], [big, big], parent="cleave")
    versions = {"root": named}
    versions["cleave"] = {**named, **dict(zip(moved.tolist(), [lone, big, 5], strict=True))}
    versions["merge"] = {**versions["cleave"], lone: big, 5: big}
    _resolved._kept.clear()
    for name, assignments in versions.items():
        with _RootReads() as reads, Query(path, mapping=name) as query:
            for body in (big, lone, 5, int(bodies[60_000]), int(supervoxels[1]), 12345):
                assert query.get_supervoxels(body).tolist() == _expected_members(assignments, body), (name, body)
            asked = np.array([*supervoxels[[0, 3, 39_999, 50_000, 99_999]].tolist(), lone, 5, 12345], np.uint64)
            assert query.get_body(asked).tolist() == [assignments.get(s, s) for s in asked.tolist()]
            assert query.get_points(big).shape == (0, 3) and query.get_point_count(5) == 0
            reads_before = len(reads.groups["root"])
            several = [big, lone, 5, int(bodies[60_000]), 12345]
            assert all(len(points) == 0 for points in query.get_points(several).values())
            # Several bodies at once: one read of the body section for all, one of the supervoxel section for
            # those no row has as its body (is it named as another's?).
            assert len(reads.groups["root"]) - reads_before <= 2
        # Each lookup reads the few row groups (of ~10 a section) holding what it asks: the body of 40,000
        # supervoxels two, the 8 supervoxels asked at once four; never the whole root (-1).
        assert reads.groups["root"] and max(reads.groups["root"]) <= 4 and min(reads.groups["root"]) >= 0


def test_a_whole_mapping_answer_resolves_once_and_agrees_with_the_ranged_one(store):
    path, _ = store
    write_mapping(path, "v1", [1, 2, 2**63], [40, 40, 2**64 - 1])
    write_mapping(path, "v2", [2**64 - 1], [40], parent="v1")
    with Query(path, mapping="v2") as ranged, Query(path, mapping="v2") as whole:
        assert whole.get_labels().tolist() == [3, 40, 2**63 - 1, 2**63 + 5, 2**64 - 1]  # resolved: answers from it
        for body in [*BODIES, 12345]:
            assert ranged.get_supervoxels(body).tolist() == whole.get_supervoxels(body).tolist()
            assert as_row_set(ranged.get_points(body)) == as_row_set(whole.get_points(body))
        assert ranged.get_body(np.array(BODIES, np.uint64)).tolist() == whole.get_body(BODIES).tolist()


def test_threads_sharing_one_query_read_a_large_version_by_ranges_exactly(store):
    path, _ = store
    supervoxels, bodies = _large_mapping(path)
    write_mapping(path, "edit", supervoxels[:100], np.full(100, 7, np.uint64), parent="root")
    named = {
        **dict(zip(supervoxels.tolist(), bodies.tolist(), strict=True)),
        **dict.fromkeys(supervoxels[:100].tolist(), 7),
    }
    asked_bodies = [int(bodies[i]) for i in range(0, LARGE, LARGE // 40)] + [7, int(supervoxels[-1])]
    expected = {body: _expected_members(named, body) for body in asked_bodies}
    _resolved._kept.clear()
    with _RootReads(), Query(path, mapping="edit") as query:

        def check(i):
            body = asked_bodies[i % len(asked_bodies)]
            asked = supervoxels[i * 997 % LARGE : i * 997 % LARGE + 3]
            return query.get_supervoxels(body).tolist() == expected[body] and query.get_body(asked).tolist() == [
                named[s] for s in asked.tolist()
            ]

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(check, range(120)))


def _old_format_version(path: str, name: str, supervoxels: list[int], bodies: list[int]) -> None:
    """A full mapping as versions were written before the body section: sorted by supervoxel, record only."""
    from pocaduck.mapping._versions import MappingVersion

    order = np.argsort(np.array(supervoxels, np.uint64))
    record = MappingVersion(name, None, (), "2026-12-01T00:00:00.000000+00:00", None, len(order), len(set(bodies)))
    table = pa.table(
        {"supervoxel": np.array(supervoxels, np.uint64)[order], "body": np.array(bodies, np.uint64)[order]}
    ).replace_schema_metadata({b"pocaduck.mapping": json.dumps(record.to_dict()).encode()})
    import pyarrow.parquet as pq

    pq.write_table(table, os.path.join(path, "mappings", f"{name}.parquet"), row_group_size=2)


def test_a_version_written_before_the_body_section_still_reads_by_resolving_it(store):
    path, points = store
    write_mapping(path, "probe", [1], [1])  # makes the mappings folder
    _old_format_version(path, "old", [1, 2, 3, 2**63], [40, 40, 2**64 - 1, 2**64 - 1])
    write_mapping(path, "old-edit", [3], [40], parent="old")
    expected = {"old": {40: [1, 2, 40], 2**64 - 1: [3, 2**63, 2**64 - 1]}, "old-edit": {40: [1, 2, 3, 40]}}
    for name, members in expected.items():
        with Query(path, mapping=name) as query:
            for body, supervoxels in members.items():
                assert query.get_supervoxels(body).tolist() == supervoxels
                assert as_row_set(query.get_points(body)) == as_row_set(
                    np.concatenate([points[s] for s in supervoxels])
                )
            assert query.get_body([3, 2**63, 7]).tolist() == [40 if name == "old-edit" else 2**64 - 1, 2**64 - 1, 7]
    assert changed_bodies(path, "old", "old-edit").tolist() == [40, 2**64 - 1]


def test_the_footer_fences_are_the_row_groups_key_ranges(store):
    """Readers pick row groups from the fences the footer keeps: they must be what the Parquet statistics say."""
    import pyarrow.parquet as pq

    from pocaduck.mapping._versions import open_version

    path, _ = store
    _large_mapping(path)
    opened = open_version(LocalStorage(path), "root")
    metadata = pq.ParquetFile(os.path.join(path, "mappings", "root.parquet")).metadata
    for fences, column in ((opened.by_supervoxel, 0), (opened.by_body, 1)):
        statistics = [
            metadata.row_group(fences.offset + group).column(column).statistics for group in range(len(fences.first))
        ]
        assert fences.first.tolist() == [s.min for s in statistics] and fences.last.tolist() == [
            s.max for s in statistics
        ]
    assert opened.by_body.offset + len(opened.by_body.first) == metadata.num_row_groups


def test_a_large_version_on_a_bucket_is_read_by_ranges(tmp_path):
    from _object_servers import s3_without_auth

    with s3_without_auth("pocaduck-mappings") as server:
        config = server.config(f"mappings-{uuid.uuid4().hex}")
        create_store(config)
        supervoxels, bodies = _large_mapping(config)
        body = int(bodies[60_000])
        members = supervoxels[bodies == np.uint64(body)]
        with Ingestor(config, worker_id=0) as ingestor:
            ingestor.write(int(members[0]), "a", some_points(0, 5))
        consolidate(config)
        big = int(supervoxels[-1])
        write_mapping(config, "edit", [supervoxels[0]], [1], parent="root")
        before = len(server.requests)
        with Query(config) as query:
            query.get_points(int(members[0]))
        plain = len(server.requests) - before
        before = len(server.requests)
        with Query(config, mapping="edit") as query:
            assert as_row_set(query.get_points(body)) == as_row_set(some_points(0, 5))
        asked = server.requests[before:]
        # The child's footer (size, then the small file whole) and the root's footer, found at once from what the
        # child keeps of it, and the body's row group: 4 more than the plain Query, however large the root.
        assert len(asked) <= plain + 4
        assert len([request for request in asked if request.path.endswith("/mappings/root.parquet")]) == 2
        before = len(server.requests)
        with Query(config, mapping="edit") as query:
            assert query.get_supervoxels(big).tolist() == supervoxels[1:40_000].tolist()  # big itself is elsewhere
        root = [request for request in server.requests[before:] if request.path.endswith("/mappings/root.parquet")]
        size = _object_size(config, "mappings/root.parquet")
        # The body of 40,000 supervoxels: its two row groups in one coalesced ranged GET, a fraction of the root.
        assert len(root) == 1 and root[0].byte_range and root[0].bytes_sent < size / 3


def _object_size(config, path: str) -> int:
    from pocaduck.storage import open_storage

    return open_storage(config).size(path)


def test_a_mapping_large_enough_for_duckdbs_sort_is_stored_as_numpys_would(store):
    """Past ``_DUCKDB_FROM`` rows both sorts (by supervoxel, then by body) are DuckDB's: repeats with one body
    count once, a clash is refused with nothing written, and every body and supervoxel reads as given."""
    from pocaduck.mapping._sorting import _DUCKDB_FROM

    path, _ = store
    rng = np.random.default_rng(11)
    count = _DUCKDB_FROM + 50_000
    supervoxels = np.unique(rng.integers(0, 2**64 - 1, count + 1_000, dtype=np.uint64))[:count]
    bodies = supervoxels[rng.integers(0, count // 10, count)]
    repeated = rng.choice(count, 1_000, replace=False)  # given twice, with the same body
    given_supervoxels = np.concatenate([supervoxels, supervoxels[repeated]])
    given_bodies = np.concatenate([bodies, bodies[repeated]])
    shuffled = rng.permutation(len(given_supervoxels))
    clashing = given_bodies.copy()
    clashing[count + 5] ^= np.uint64(1)  # one repeat now names another body
    with pytest.raises(InvalidMappingError, match=f"supervoxel {supervoxels[repeated[5]]} is given two bodies"):
        write_mapping(path, "clash", given_supervoxels[shuffled], clashing[shuffled])
    assert list_mappings(path) == []
    version = write_mapping(path, "big", given_supervoxels[shuffled], given_bodies[shuffled])
    assert version.assignments == count and version.bodies == len(np.unique(bodies))
    probe = rng.choice(count, 2_000, replace=False)
    with Query(path, mapping="big") as query:
        assert query.get_body(supervoxels[probe]).tolist() == bodies[probe].tolist()
        for body in np.unique(bodies[probe[:50]]).tolist():
            expected = supervoxels[bodies == np.uint64(body)]  # every body is one of its own supervoxels here
            assert query.get_supervoxels(body).tolist() == expected.tolist()
