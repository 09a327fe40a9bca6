"""The label directory: every label found through it as through the index, in step with the index in force,
refused clearly when damaged, and absent from older stores without harm."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pytest
from _support import as_row_set
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocaduck import Ingestor, Query, compact, consolidate, label_directory, open_store, verify
from pocaduck.cli import main as cli
from pocaduck.consolidate import UnifiedIndexBuild
from pocaduck.errors import DamagedStoreError, LabelDirectoryError, ReaderClosedError
from pocaduck.index import AttachedIndex
from pocaduck.label_directory import (
    ENTRY,
    PAGE_BYTES,
    LabelDirectory,
    level_page_counts,
    open_in_force,
    write_label_directory,
)
from pocaduck.layout import LABEL_DIRECTORY_POINTER, UNIFIED_INDEX, index_version_directory
from pocaduck.storage import LocalStorage
from pocaduck.verify import _disagreement

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
    # At opening, or for a damaged page at the first read.
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


# -- the format on disk: compressed pages (format 2), and format 1 still read ---------------------------------

LABELS = st.one_of(st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))
FORMAT1 = Path(__file__).parent / "data" / "label_directory_format1.bin"


def index_of(rows: list[tuple[int, int, int, int]], files: int = 3) -> duckdb.DuckDBPyConnection:
    """An index holding ``rows`` of (label, file_id, row_offset, point_count) over ``files`` files."""
    con = duckdb.connect()
    columns = list(zip(*rows, strict=True)) if rows else [[], [], [], []]
    kinds = [np.uint64, np.int32, np.int64, np.int64]
    con.register(
        "rows", {name: np.array(column, kind) for name, column, kind in zip(ENTRY.names, columns, kinds, strict=True)}
    )
    con.execute("CREATE TABLE point_index AS SELECT * FROM rows")
    con.execute(
        "CREATE TABLE files AS SELECT i::INTEGER AS file_id, 'workers/0/f' || i || '.parquet' AS path, "
        "8192 AS row_group_size, 1000 + i AS byte_size FROM range(?) t(i)",
        [files],
    )
    return con


def brute_force_entries(rows: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """The directory's entries, computed one row at a time: rows that continue each other in a file joined."""
    entries: list[list[int]] = []
    for label, file_id, offset, count in sorted(row for row in rows if row[3] > 0):
        last = entries[-1] if entries else None
        if last and last[:2] == [label, file_id] and last[2] + last[3] == offset:
            last[3] += count
        else:
            entries.append([label, file_id, offset, count])
    return [tuple(entry) for entry in entries]


def written(folder: str, con: duckdb.DuckDBPyConnection, page_bytes: int) -> LabelDirectory:
    write_label_directory(con, os.path.join(folder, "directory"), page_bytes=page_bytes)
    return LabelDirectory.open(LocalStorage(folder), "directory")


def as_tuples(found: dict[str, np.ndarray] | np.ndarray) -> list[tuple[int, int, int, int]]:
    return list(zip(*(found[name].tolist() for name in ENTRY.names), strict=True))


def assert_answers_like(directory: LabelDirectory, entries: list[tuple[int, int, int, int]], probes: list[int]):
    """Every label (and each probe) found alone and all together exactly as ``entries`` hold them."""
    labels = sorted({entry[0] for entry in entries} | set(probes))
    for label in labels:
        assert as_tuples(directory.lookup([label])) == [e for e in entries if e[0] == label]
    assert as_tuples(directory.lookup(labels)) == entries
    assert as_tuples(np.concatenate([np.empty(0, ENTRY), *directory.entries()])) == entries
    assert directory.entry_count == len(entries)


ROWS = st.lists(
    st.tuples(LABELS, st.integers(0, 2), st.integers(0, 60), st.integers(0, 30)),
    unique_by=lambda row: row[:3],
    max_size=120,
)
PAGE_SIZES = st.sampled_from([28, 64, 100, 256, PAGE_BYTES])  # 1 to 2,730 entries a page


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ROWS, PAGE_SIZES, st.lists(LABELS, max_size=4))
def test_compressed_pages_answer_every_label_as_brute_force_does(rows, page_bytes, probes):
    with tempfile.TemporaryDirectory(prefix="pocaduck-directory-") as folder:
        directory = written(folder, index_of(rows), page_bytes)
        assert directory.format == 2
        assert len(directory._levels) == len(level_page_counts(directory.entry_count, page_bytes))
        assert_answers_like(directory, brute_force_entries(rows), probes)


@pytest.mark.parametrize("page_bytes", [100, 64])
@pytest.mark.parametrize("pages_of", ["none", "one entry", "a full leaf", "a full root", "one more", "two levels full"])
def test_directories_of_exactly_full_pages_and_one_past_them(tmp_path, page_bytes, pages_of):
    entries_per_leaf, keys_per_fence = (page_bytes - 4) // 24, (page_bytes - 4) // 8
    count = {
        "none": 0,
        "one entry": 1,
        "a full leaf": entries_per_leaf,
        "a full root": entries_per_leaf * keys_per_fence,  # leaves only, the root one full fence page
        "one more": entries_per_leaf * keys_per_fence + 1,  # a fence level appears
        "two levels full": entries_per_leaf * keys_per_fence**2,
    }[pages_of]
    step = (2**64 - 1) // max(count - 1, 1)
    labels = [2**64 - 1 - (count - 1 - i) * step for i in range(count)]  # spread up to 2**64 - 1
    rows = [(label, i % 3, i * 10, 1 + i % 7) for i, label in enumerate(labels)]
    directory = written(str(tmp_path), index_of(rows), page_bytes)
    expected_levels = {"none": 0, "one more": 2, "two levels full": 2}.get(pages_of, 1)
    assert len(directory._levels) == expected_levels
    assert_answers_like(directory, brute_force_entries(rows), [5, 2**64 - 1])
    assert directory.point_count(2**64 - 1) == (1 + (count - 1) % 7 if count else 0)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_flipped_bit_is_refused_naming_the_fix_never_answered_wrong(data):
    rows = [(label, label % 3, label % 1000 * 4, 1 + label % 5) for label in [*range(0, 300, 3), 2**63, 2**64 - 1]]
    expected = brute_force_entries(rows)
    with tempfile.TemporaryDirectory(prefix="pocaduck-directory-") as folder:
        path = written(folder, index_of(rows), 64).path  # 2 entries a leaf page: root, two fence levels, leaves
        with open(os.path.join(folder, path), "r+b") as f:
            data_bytes = bytearray(f.read())
            bit = data.draw(st.integers(0, len(data_bytes) * 8 - 1), label="bit")
            data_bytes[bit // 8] ^= 1 << bit % 8
            f.seek(0)
            f.write(data_bytes)
        with pytest.raises(LabelDirectoryError, match="pocaduck consolidate") as refused:
            directory = LabelDirectory.open(LocalStorage(folder), path)
            label = data.draw(st.sampled_from([row[0] for row in rows]), label="label")
            found = as_tuples(directory.lookup([label]))
            assert found == [e for e in expected if e[0] == label]  # a page off the label's path may be damaged
            list(directory.entries())  # verify's walk reads every page: it must stop
        assert "damaged" in str(refused.value)


def format1_index() -> duckdb.DuckDBPyConnection:
    """The index tests/data/label_directory_format1.bin was written from, by pocaduck ae80772's writer
    (format 1, ``page_bytes=100``: three levels below the root): labels at the extremes, runs that continue
    each other (one entry), labels in two files."""
    labels = np.array([*EXTREMES, *range(10, 5000, 7)], np.uint64)
    i = np.arange(len(labels))
    first = (labels, i % 3, 10 * i, 1 + i % 4)
    continued = (labels, i % 3, 10 * i + 1 + i % 4, np.full(len(i), 2))
    other_file = (labels, (i + 1) % 3, 5 * i, np.full(len(i), 3))
    parts = [first, tuple(c[i % 2 == 1] for c in continued), tuple(c[i % 5 == 0] for c in other_file)]
    con = duckdb.connect()
    con.register(
        "rows",
        {
            name: np.concatenate([part[k] for part in parts]).astype(kind)
            for k, (name, kind) in enumerate(
                [("label", np.uint64), ("file_id", np.int32), ("row_offset", np.int64), ("point_count", np.int64)]
            )
        },
    )
    con.execute("CREATE TABLE point_index AS SELECT * FROM rows")
    con.execute(
        "CREATE TABLE files AS SELECT i::INTEGER AS file_id, 'workers/0/f' || i || '.parquet' AS path, "
        "8192 AS row_group_size, 1000 + i AS byte_size FROM range(3) t(i)"
    )
    return con


def test_a_directory_of_format_1_written_by_an_older_pocaduck_is_still_read_and_verified(tmp_path):
    old = LabelDirectory.open(LocalStorage(str(FORMAT1.parent)), FORMAT1.name)
    assert (old.format, old.page_bytes, len(old._levels)) == (1, 100, 3)
    con = format1_index()
    rows = con.execute("SELECT * FROM point_index").fetchall()
    expected = brute_force_entries(rows)
    assert_answers_like(old, expected, [2, 2**63 + 1, 6000])
    new = written(str(tmp_path), con, 100)
    assert new.format == 2 and new.files == old.files
    assert [as_tuples(page) for page in new.entries()] == [as_tuples(page) for page in old.entries()]

    # verify compares the directory in force with one written now from the index: across formats
    con.execute("ATTACH ':memory:' AS store_index")
    con.execute("CREATE TABLE store_index.files AS SELECT * FROM memory.files")
    con.execute("CREATE TABLE store_index.point_index AS SELECT * FROM memory.point_index")
    assert _disagreement(old, con) is None
    con.execute("UPDATE store_index.point_index SET point_count = point_count + 1 WHERE label = 2**63")
    assert _disagreement(old, con) == f"disagrees with the index, from label {2**63} on"


def test_a_damaged_page_of_format_1_is_still_refused(tmp_path):
    damaged = tmp_path / FORMAT1.name
    data = bytearray(FORMAT1.read_bytes())
    data[140] ^= 0x20  # in the second leaf page: 4 entries of 24 bytes and a CRC a page
    damaged.write_bytes(bytes(data))
    directory = LabelDirectory.open(LocalStorage(str(tmp_path)), damaged.name)
    entries = brute_force_entries(format1_index().execute("SELECT * FROM point_index").fetchall())
    assert directory.point_count(0) > 0  # the first page is intact
    with pytest.raises(LabelDirectoryError, match="fails the checksum of page 1 of level 3"):
        directory.lookup([entries[5][0]])


def test_compressed_pages_of_random_labels_take_under_half_the_bytes_of_format_1(tmp_path):
    """A compacted store of random uint64 labels, the hardest case: each label one run in one of 40 files, rows in
    label order, point counts uniform in 200-2,000. What is left to store is each label's distance to the one before
    (~6 random bytes) and its count (~11 random bits): 7.5 of 24 bytes, so 3.2× at best; zstd gets 2.9×."""
    rng = np.random.default_rng(7)
    labels = np.unique(rng.integers(0, 2**64 - 1, 100_000, dtype=np.uint64, endpoint=True))
    counts = rng.integers(200, 2_000, len(labels))
    file_ids = np.arange(len(labels)) * 40 // len(labels)
    offsets = np.cumsum(counts) - counts
    offsets -= offsets[np.searchsorted(file_ids, file_ids)]  # each file's rows from 0
    rows = list(zip(labels.tolist(), file_ids.tolist(), offsets.tolist(), counts.tolist(), strict=True))
    directory = written(str(tmp_path), index_of(rows, files=40), PAGE_BYTES)
    format_1_bytes = sum(level.items * (24 if level.leaf else 8) + level.pages * 4 for level in directory._levels)
    assert directory.size * 2.5 <= format_1_bytes
    assert directory.point_count(int(labels[12_345])) == counts[12_345]


def test_a_page_that_passes_its_checksum_but_does_not_decode_is_refused(tmp_path):
    """As a writer with a bug would leave it: the bytes and their CRC agree, the page is not a page."""
    rows = [(label, 0, label * 10, 10) for label in range(100)]
    directory = written(str(tmp_path), index_of(rows), PAGE_BYTES)
    leaf_bytes = int(directory._root["stop"][0])  # one leaf page, from byte 0
    path = tmp_path / directory.path
    data = path.read_bytes()
    garbage = bytes([1, 1, 1, 1]) + bytes(range(256)) * ((leaf_bytes - 8) // 256 + 1)
    garbage = garbage[: leaf_bytes - 4]
    path.write_bytes(garbage + zlib.crc32(garbage).to_bytes(4, "little") + data[leaf_bytes:])
    reopened = LabelDirectory.open(LocalStorage(str(tmp_path)), directory.path)
    with pytest.raises(LabelDirectoryError, match=r"page 0 of level 1 that does not decode .*pocaduck consolidate"):
        reopened.lookup([5])


def test_threads_decoding_pages_of_one_directory_at_once_all_get_right_answers(tmp_path):
    rows = [(label * 2**50, label % 3, label * 10, 1 + label % 9) for label in range(5_000)]
    expected = brute_force_entries(rows)
    directory = written(str(tmp_path), index_of(rows), 256)  # 10 entries a page: hundreds of pages to decode
    labels = [row[0] for row in rows]

    def look_up(start: int) -> bool:
        mine = labels[start::8]
        singles = all(as_tuples(directory.lookup([label])) == [expected[labels.index(label)]] for label in mine[:50])
        return singles and as_tuples(directory.lookup(mine)) == expected[start::8]

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(look_up, range(8)))


def test_a_newer_format_asks_for_an_upgrade_and_a_flipped_format_bit_is_damage(tmp_path):
    directory = written(str(tmp_path), index_of([(5, 0, 0, 3)]), PAGE_BYTES)
    path = tmp_path / directory.path
    original = path.read_bytes()
    top_bytes = int.from_bytes(original[-48 + 24 : -48 + 32], "little")  # trailer: magic, format, page, entries, top
    format_at = len(original) - 48 + 8

    flipped = bytearray(original)
    flipped[format_at] ^= 4  # format 6, by accident
    path.write_bytes(bytes(flipped))
    with pytest.raises(LabelDirectoryError, match="fails the checksum of its top level"):
        LabelDirectory.open(LocalStorage(str(tmp_path)), directory.path)

    newer = bytearray(original)
    newer[format_at] = 3  # a format from a later pocaduck, the top's checksum as that writer computes it
    newer[-4:] = zlib.crc32(bytes(newer[-top_bytes:-4])).to_bytes(4, "little")
    path.write_bytes(bytes(newer))
    with pytest.raises(LabelDirectoryError, match="format 3; this pocaduck reads up to 2: upgrade pocaduck"):
        LabelDirectory.open(LocalStorage(str(tmp_path)), directory.path)
