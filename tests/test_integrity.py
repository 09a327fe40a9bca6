"""A damaged data file never yields wrong points: every read is exact or raises DataFileError."""

from __future__ import annotations

import os

import duckdb
import numpy as np
import pytest
from _support import as_row_set

from pocaduck import DataFileError, Ingestor, Query, compact, consolidate, verify
from pocaduck.layout import session_index

LABELS = range(300)


def points_of(label: int, block: int) -> np.ndarray:
    rng = np.random.default_rng([label, block])
    return rng.integers(-(2**20), 2**20, size=(int(rng.integers(5, 60)), 3))


def build_store(store: str) -> dict[int, np.ndarray]:
    """300 labels over 3 blocks, written by worker 'w1' into one file of many small row groups."""
    written: dict[int, list[np.ndarray]] = {}
    with Ingestor(store, worker_id="w1", row_group_size=512) as ingestor:
        for block in range(3):
            for label in LABELS:
                ingestor.write(label, f"b{block}", points_of(label, block))
                written.setdefault(label, []).append(points_of(label, block))
    consolidate(store)
    return {label: np.concatenate(parts) for label, parts in written.items()}


def data_files(store: str) -> list[str]:
    with Query(store) as query:
        return query.sql("SELECT path FROM files ORDER BY file_id", output="numpy")["path"].tolist()


def flip_byte(path: str, position: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ 0x10]))


def reads_are_exact_or_refused(store: str, expected: dict[int, np.ndarray], redo: str) -> int:
    """Read every label; return how many were refused. A refusal names the file and what rewrites it."""
    refused = 0
    with Query(store, cache_size=0) as query:
        for label in LABELS:
            try:
                points = query.get_points(label)
            except DataFileError as error:
                refused += 1
                assert "part-000000.parquet" in str(error) and redo in str(error)
                continue
            assert as_row_set(points) == as_row_set(expected[label]), f"label {label} came back wrong"
    return refused


@pytest.mark.parametrize("fraction", [0.3, 0.37, 0.45, 0.5, 0.55, 0.62, 0.7])
def test_a_flipped_byte_in_a_worker_file_is_refused_never_returned(store, fraction):
    expected = build_store(store)
    (path,) = data_files(store)
    absolute = os.path.join(store, path)
    flip_byte(absolute, int(os.path.getsize(absolute) * fraction))
    assert reads_are_exact_or_refused(store, expected, "re-run worker 'w1'") > 0


@pytest.mark.parametrize("fraction", [0.35, 0.5, 0.65])
def test_a_flipped_byte_in_a_compacted_file_is_refused_never_returned(store, fraction):
    expected = build_store(store)
    compact(store, workers=1)
    (path,) = data_files(store)
    assert path.startswith("compacted/")
    absolute = os.path.join(store, path)
    flip_byte(absolute, int(os.path.getsize(absolute) * fraction))
    assert reads_are_exact_or_refused(store, expected, "consolidate --from-sessions") > 0


def test_the_advice_for_a_damaged_compacted_file_repairs_the_store(store):
    expected = build_store(store)
    compact(store, workers=1)
    (path,) = data_files(store)
    flip_byte(os.path.join(store, path), os.path.getsize(os.path.join(store, path)) // 2)
    assert reads_are_exact_or_refused(store, expected, "consolidate --from-sessions") > 0
    consolidate(store, from_sessions=True)  # the advice, step one: the workers' own files serve again
    assert reads_are_exact_or_refused(store, expected, "") == 0
    compact(store, workers=1)  # step two: the compaction is written anew
    assert data_files(store)[0].startswith("compacted/")
    assert reads_are_exact_or_refused(store, expected, "") == 0
    assert verify(store, deep=True).ok


def checksums(store: str) -> list[str | None]:
    with Query(store) as query:
        return query.sql("SELECT checksum FROM files ORDER BY file_id", output="numpy")["checksum"].tolist()


def test_every_published_file_has_its_checksum_in_the_index_through_compaction(store):
    build_store(store)
    (before,) = checksums(store)
    assert before.startswith("crc32:") and len(before) == len("crc32:") + 8
    compact(store, workers=1)
    (after,) = checksums(store)
    assert after.startswith("crc32:") and after != before  # the compacted file is a new file


def test_an_index_written_before_checksums_still_opens_and_consolidates(store):
    expected = build_store(store)
    with Query(store) as query:
        (session,) = query.sql("SELECT session_id FROM workers", output="numpy")["session_id"].tolist()
    with duckdb.connect(os.path.join(store, session_index("w1", session))) as old_index:
        old_index.execute("ALTER TABLE files DROP COLUMN checksum")
    consolidate(store)
    assert checksums(store) == [None]
    with Query(store) as query:
        assert as_row_set(query.get_points(7)) == as_row_set(expected[7])
