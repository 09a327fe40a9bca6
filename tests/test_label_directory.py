"""The label directory: every label found through it as through the index, in step with the index in force,
refused clearly when damaged, and absent from older stores without harm."""

from __future__ import annotations

import json
import os
import shutil

import duckdb
import numpy as np
import pytest
from _support import as_row_set

from pocaduck import Ingestor, Query, compact, consolidate, label_directory, open_store, verify
from pocaduck.cli import main as cli
from pocaduck.consolidate import UnifiedIndexBuild
from pocaduck.errors import DamagedStoreError, LabelDirectoryError, ReaderClosedError
from pocaduck.index import AttachedIndex
from pocaduck.label_directory import LabelDirectory, level_page_counts, open_in_force, write_label_directory
from pocaduck.layout import LABEL_DIRECTORY_POINTER, UNIFIED_INDEX, index_version_directory
from pocaduck.storage import LocalStorage

EXTREMES = [0, 1, 2**63, 2**64 - 1]


def write_labels(store: str, worker: int, labels: range | list[int], blocks: int = 3, **options) -> dict[int, list]:
    """Each label in ``blocks`` blocks, a few points each; what each label should read back."""
    expected: dict[int, list] = {}
    with Ingestor(store, worker_id=worker, **options) as ingestor:
        for block in range(blocks):
            for label in labels:
                points = np.full((1 + (label + block) % 4, 3), [worker, block, label % 1000])
                ingestor.write(label, f"{worker}/{block}", points)
                expected.setdefault(label, []).extend(as_row_set(points))
    return expected


def index_runs(store: str, index: str = UNIFIED_INDEX) -> dict[int, list[tuple[int, int, int]]]:
    """Each label's runs of rows as the index gives them: (file, first row, rows), adjacent rows joined.

    Computed in SQL, apart from the directory's own code, so the two check each other.
    """
    with duckdb.connect(os.path.join(store, index), read_only=True) as con:
        rows = con.execute(
            "SELECT label, file_id, min(row_offset), sum(point_count)::BIGINT FROM ("
            "  SELECT *, row_offset - (sum(point_count) OVER (PARTITION BY label, file_id ORDER BY row_offset) "
            "    - point_count) AS run FROM point_index WHERE point_count > 0) "
            "GROUP BY label, file_id, run ORDER BY label, file_id, 3"
        ).fetchall()
    runs: dict[int, list[tuple[int, int, int]]] = {}
    for label, file_id, offset, count in rows:
        runs.setdefault(label, []).append((file_id, offset, count))
    return runs


def directory_runs(directory: LabelDirectory, labels: list[int]) -> dict[int, list[tuple[int, int, int]]]:
    found = directory.lookup(labels)
    runs: dict[int, list[tuple[int, int, int]]] = {}
    for label, file_id, offset, count in zip(*(found[k].tolist() for k in found), strict=True):
        runs.setdefault(label, []).append((file_id, offset, count))
    return runs


def assert_in_step(store: str) -> LabelDirectory:
    """The directory readers use is the one the index in force names, and holds exactly the index's runs."""
    directory = open_in_force(open_store(store).storage)
    assert directory is not None, "readers would fall back to the whole index"
    index = AttachedIndex(os.path.join(store, UNIFIED_INDEX))
    try:
        (build,) = index.cursor.execute("SELECT build FROM label_directory").fetchone()
    finally:
        index.close()
    assert directory.path == index_version_directory(build)
    expected = index_runs(store)
    assert directory_runs(directory, list(expected)) == expected
    assert directory.entry_count == sum(len(runs) for runs in expected.values())
    return directory


@pytest.fixture
def small_pages(monkeypatch):
    """Pages of 4 entries or 12 keys: a few hundred labels make a tree of several levels."""
    monkeypatch.setattr(label_directory, "PAGE_BYTES", 100)


def test_every_label_is_found_through_a_tree_of_several_levels(store, small_pages):
    labels = [*EXTREMES, *range(10, 1500, 7)]
    expected = write_labels(store, 0, labels, max_points_per_file=150)
    consolidate(store)
    directory = assert_in_step(store)
    assert len(level_page_counts(directory.entry_count, 100)) == 3  # root, two fence levels, leaves
    with Query(store, cache_size=0) as query:
        for label in labels:
            assert as_row_set(query.get_points(label)) == sorted(expected[label])
            assert query.get_point_count(label) == len(expected[label])
        together = query.get_points([2**64 - 1, 5, 0, 17])
        assert as_row_set(together[0]) == sorted(expected[0]) and len(together[5]) == 0
        assert query.get_points(3).shape == (0, 3)  # a label between two others: empty, not an error
        assert query._index is None, "points and counts were found without the index"
        assert query.get_blocks_for_label(2**63) == ["0/0", "0/1", "0/2"]  # blocks need the index: fetched now


def test_the_directory_keeps_finding_points_once_the_index_is_attached(store, monkeypatch):
    expected = write_labels(store, 0, [5, 2**63])
    consolidate(store)
    compact(store, workers=1)
    with Query(store, cache_size=0) as query:
        assert query.get_labels().tolist() == [5, 2**63]  # attaches the index, as a dataset does first
        assert query._index is not None
        found = []
        lookup = query._directory.lookup
        monkeypatch.setattr(query._directory, "lookup", lambda labels: found.append(list(labels)) or lookup(labels))
        assert as_row_set(query.get_points(5)) == sorted(expected[5])
        assert len(query.get_points(2**63, sample=2)) == 2
        assert query.get_point_count(5) == len(expected[5])
        assert found == [[5], [2**63], [5]]  # none of them asked DuckDB
        assert len(query.get_points(5, blocks="0/1")) == 1 + (5 + 1) % 4  # blocks do: the index has them


def test_a_closed_query_refuses_even_what_the_directory_could_answer(store):
    write_labels(store, 0, [5])
    consolidate(store)
    query = Query(store)
    assert query.get_point_count(5) == 9
    query.close()
    for ask in (query.get_points, query.get_point_count):
        with pytest.raises(ReaderClosedError, match="closed"):
            ask(5)


def test_compaction_leaves_one_entry_per_label_and_file(store):
    for worker in range(3):
        write_labels(store, worker, range(200), blocks=4, max_points_per_file=300)
    consolidate(store)
    scattered = assert_in_step(store).entry_count
    compact(store, workers=1, points_per_file=1_000)
    compacted = assert_in_step(store)
    assert compacted.entry_count < scattered
    # 12 writes per label, one entry per (label, file): a label split between two shard files has two.
    assert 200 <= compacted.entry_count <= 200 + len(compacted.files)
    with Query(store) as fresh, Query(store) as indexed:
        indexed.get_labels()  # its index is attached now: its lookups go through DuckDB
        for label in (7, 150):  # a sample of a compacted label: one range read, found through the directory
            assert fresh.get_points(label, sample=5).tolist() == indexed.get_points(label, sample=5).tolist()
        assert fresh._index is None
    with Query(store) as query:
        assert query.get_blocks_for_label(7) == [f"{w}/{b}" for w in range(3) for b in range(4)]
        assert query.get_points(7, blocks=["1/2"]).tolist() == [[1, 2, 7]] * (1 + (7 + 2) % 4)


def test_directory_and_index_stay_in_step_through_reconsolidation_and_compaction(store, small_pages):
    write_labels(store, 0, range(60))
    consolidate(store)
    first = assert_in_step(store)
    write_labels(store, 1, range(30, 90))
    consolidate(store)
    second = assert_in_step(store)
    assert second.path != first.path
    compact(store, workers=1)
    assert_in_step(store)
    write_labels(store, 2, [5, 2**64 - 1])
    consolidate(store)  # the compaction is kept, the new session added beside it
    assert_in_step(store)
    assert verify(store, deep=True).ok


def test_a_reader_keeps_the_index_version_it_opened(store):
    write_labels(store, 0, [5])
    consolidate(store)
    with Query(store) as before:
        assert before.get_point_count(5) == 9
        write_labels(store, 1, [5, 6])
        consolidate(store)
        # Fetched after the index was replaced, the index this reader reads is still the one it opened.
        assert before.get_labels().tolist() == [5] and before.info()["workers"] == 1
        assert before.sql("SELECT sum(point_count) AS n FROM labels")["n"][0] == 9
    with Query(store) as after:
        assert after.get_labels().tolist() == [5, 6]


def test_overlapping_consolidations_leave_the_last_index_named(store):
    write_labels(store, 0, range(10))
    consolidate(store)
    write_labels(store, 1, range(10, 20))
    opened = open_store(store)
    finalized = opened.worker_states()[0]
    with UnifiedIndexBuild(opened) as older, UnifiedIndexBuild(opened) as newer:
        older.fill(opened.schema, {"0": finalized["0"]}, None)
        newer.fill(opened.schema, finalized, None)
        assert newer.publish()
        assert older.publish()  # its swap is refused; the newer index serves all it holds
    assert not os.path.exists(os.path.join(store, "index_versions", older.build_id))  # nothing of it published
    assert_in_step(store)
    with Query(store) as query:
        assert query.get_labels().tolist() == list(range(20))


def test_a_run_that_publishes_its_index_late_does_not_take_the_pointer_back(store):
    write_labels(store, 0, range(10))
    consolidate(store)
    opened = open_store(store)
    with UnifiedIndexBuild(opened) as slow, UnifiedIndexBuild(opened) as fast:
        slow.fill(opened.schema, opened.worker_states()[0], None)
        fast.fill(opened.schema, opened.worker_states()[0], None)
        version = opened.storage.publish_if_unchanged(slow.path, UNIFIED_INDEX, slow.based_on)
        assert version is not None
        # fast builds on the index slow just put in force, publishes and names its own version...
        fast.based_on = opened.storage.version(UNIFIED_INDEX)
        assert fast.publish()
        slow._publish_index_version(version)  # ...then slow, late, must leave the pointer to fast
    with open(os.path.join(store, LABEL_DIRECTORY_POINTER)) as pointer:
        assert json.load(pointer)["build"] == fast.build_id
    assert_in_step(store)


@pytest.mark.parametrize("ending", ["killed", "upload failed"])
def test_a_run_that_publishes_its_index_but_not_its_directory_leaves_readers_on_the_index(
    store, monkeypatch, caplog, ending
):
    expected = write_labels(store, 0, range(10))
    consolidate(store)
    expected_more = write_labels(store, 1, [3, 11])

    def fail(self, version):
        raise KeyboardInterrupt if ending == "killed" else OSError(28, "No space left on device")

    monkeypatch.setattr(UnifiedIndexBuild, "_publish_index_version", fail)
    if ending == "killed":
        with pytest.raises(KeyboardInterrupt):
            consolidate(store)
    else:  # the index is in force: the run succeeds, and says what readers lose and what brings it back
        consolidate(store)
        assert f"readers read the whole index until `pocaduck consolidate {store}` runs again" in caplog.text
    monkeypatch.undo()
    assert open_in_force(open_store(store).storage) is None  # the pointer names the index before
    with Query(store) as query:  # reads the index in force, whole
        assert as_row_set(query.get_points(3)) == sorted(expected[3] + expected_more[3])
        assert query.get_labels().tolist() == [*range(10), 11]
    problems = verify(store).problems  # and the version it never uploaded
    assert problems[0].path == LABEL_DIRECTORY_POINTER and all("consolidate" in p.repair for p in problems)
    consolidate(store)
    assert_in_step(store)


def damage(path: str, how: str) -> None:
    size = os.path.getsize(path)
    if how == "deleted":
        os.unlink(path)
    elif how == "truncated":
        os.truncate(path, size - 100)
    elif how == "top flipped":
        with open(path, "r+b") as f:
            f.seek(size - 60)
            byte = f.read(1)
            f.seek(size - 60)
            f.write(bytes([byte[0] ^ 0x20]))
    else:  # a leaf page
        with open(path, "r+b") as f:
            f.seek(40)
            byte = f.read(1)
            f.seek(40)
            f.write(bytes([byte[0] ^ 0x20]))


@pytest.mark.parametrize("how", ["deleted", "truncated", "top flipped", "page flipped"])
def test_a_damaged_directory_is_refused_naming_the_file_and_the_fix(store, how):
    expected = write_labels(store, 0, range(50))
    consolidate(store)
    directory = os.path.join(store, assert_in_step(store).path)
    damage(directory, how)
    if how in ("truncated", "top flipped"):
        # The pointer carries a copy of the top, so readers never read the damaged one: only verify sees it.
        with Query(store) as query:
            assert as_row_set(query.get_points(0)) == sorted(expected[0])
    else:  # at opening, or for a damaged page at the first read
        with pytest.raises(LabelDirectoryError) as refused, Query(store) as query:
            query.get_points(0)
        message = str(refused.value)
        assert directory in message and f"pocaduck consolidate {store}" in message
        assert isinstance(refused.value, DamagedStoreError)
    problems = verify(store, deep=True).problems
    assert [p.path for p in problems] == [os.path.relpath(directory, store)]
    assert cli(["consolidate", store]) == 0  # the fix the message gives
    with Query(store) as query:
        assert as_row_set(query.get_points(7)) == sorted(expected[7])
    assert verify(store, deep=True).ok


POINTER_DAMAGE = {  # what is done to label_directory.json, and the words verify must report
    "size one more": (lambda p: {**p, "size": p["size"] + 1}, "gives size"),
    "size negative": (lambda p: {**p, "size": -5}, "its size is -5"),
    "size a string": (lambda p: {**p, "size": str(p["size"])}, "its size is '"),
    "top_bytes wrong": (lambda p: {**p, "top_bytes": p["top_bytes"] + 8}, "gives top_bytes"),
    "top_bytes past size": (lambda p: {**p, "top_bytes": p["size"] + 1}, "its top_bytes"),
    "entries wrong": (lambda p: {**p, "entries": p["entries"] + 1}, "gives entries"),
    "build a number": (lambda p: {**p, "build": 5}, "its build is 5"),
    "no size": (lambda p: {k: v for k, v in p.items() if k != "size"}, "it has no size"),
    "not JSON": (lambda p: "{not json", "not JSON"),
}


@pytest.mark.parametrize("how", list(POINTER_DAMAGE))
def test_a_damaged_pointer_is_found_by_verify_and_refused_by_readers_naming_the_fix(store, how, capsys):
    expected = write_labels(store, 0, range(50))
    consolidate(store)
    path = os.path.join(store, LABEL_DIRECTORY_POINTER)
    with open(path) as f:
        damaged = POINTER_DAMAGE[how][0](json.load(f))
    with open(path, "w") as f:
        f.write(damaged if isinstance(damaged, str) else json.dumps(damaged))

    (problem,) = verify(store).problems
    assert problem.path == LABEL_DIRECTORY_POINTER and POINTER_DAMAGE[how][1] in problem.what
    assert "pocaduck consolidate" in problem.repair
    if how == "entries wrong":  # readers do not need the count: they still read through the directory
        assert_in_step(store)
    else:
        with pytest.raises(LabelDirectoryError, match=f"pocaduck consolidate {store}"), Query(store) as query:
            query.get_points(7)
        capsys.readouterr()
        assert cli(["points", store, "7"]) == 1
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("pocaduck points: ") and f"pocaduck consolidate {store}" in line
    assert cli(["verify", store]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("pocaduck verify: ") and "pocaduck consolidate" in line

    assert cli(["consolidate", store]) == 0  # the fix the messages give
    with Query(store) as query:
        assert as_row_set(query.get_points(7)) == sorted(expected[7])
    assert verify(store, deep=True).ok


def test_a_store_consolidated_before_label_directories_opens_and_is_upgraded_by_consolidate(store, caplog):
    expected = write_labels(store, 0, range(20))
    consolidate(store)
    os.unlink(os.path.join(store, LABEL_DIRECTORY_POINTER))
    shutil.rmtree(os.path.join(store, "index_versions"))
    with duckdb.connect(os.path.join(store, UNIFIED_INDEX)) as index:
        index.execute("DROP TABLE label_directory")
    caplog.set_level("INFO", logger="pocaduck")
    with Query(store) as query:
        assert as_row_set(query.get_points(4)) == sorted(expected[4])
    assert f"`pocaduck consolidate {store}` writes one" in caplog.text
    (problem,) = verify(store).problems
    assert problem.path == UNIFIED_INDEX and "no label directory" in problem.what and "consolidate" in problem.repair
    consolidate(store)
    assert_in_step(store)
    assert verify(store, deep=True).ok


def test_runs_longer_than_32_bits_are_cut_into_entries_that_follow_each_other(tmp_path):
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE files AS SELECT 0 AS file_id, 'f.parquet' AS path, 8192 AS row_group_size, 1 AS byte_size"
    )
    con.execute(
        "CREATE TABLE point_index AS SELECT * FROM (VALUES (9::UBIGINT, 0, 0::BIGINT, 3000000000::BIGINT), "
        "(9, 0, 3000000000, 3000000000), (10, 0, 6000000000, 1)) t(label, file_id, row_offset, point_count)"
    )
    write_label_directory(con, str(tmp_path / "directory"))
    directory = LabelDirectory.open(LocalStorage(str(tmp_path)), "directory")
    found = directory.lookup([9])
    assert found["row_offset"].tolist() == [0, 2**32 - 1] and found["point_count"].sum() == 6_000_000_000
    assert directory.lookup([10])["row_offset"].tolist() == [6_000_000_000]
