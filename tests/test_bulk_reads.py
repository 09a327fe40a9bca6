"""Many labels in one call: each file's runs are copied as slices (``pointfile._pieces``), landing back to back
in the result when a compacted file's labels follow on, one by one otherwise; both give what one call each gives,
and a file holding fewer rows than the index says is named as damaged."""

from __future__ import annotations

import numpy as np
import pytest
from _support import as_row_set

from pocaduck import Ingestor, Query, compact, consolidate
from pocaduck.errors import DataFileError, InvalidLabelError

# Labels across the uint64 range, in no sorted order; each spans several blocks.
LABELS = [2**64 - 1, 3, 2**63, 41, 2**63 - 1, 0, 977, *range(10**6, 10**6 + 13), *range(2**63 + 5, 2**63 + 9)]


def points_of(label: int, block: int) -> np.ndarray:
    rng = np.random.default_rng([label % 2**32, label // 2**32, block])
    return rng.integers(-50, 50, size=(int(rng.integers(0, 9)), 3)).astype(np.int32)


@pytest.fixture(params=["parquet", "arrow"])
def store(tmp_path, request):
    """Ingested by two workers in tiny files, then compacted into several files of 5-row groups (or batches)."""
    store = tmp_path / "store"
    for worker in range(2):
        with Ingestor(store, worker, max_points_per_file=10, row_group_size=3, payload=request.param) as ingestor:
            for block in range(worker, 6, 2):
                for label in LABELS:
                    ingestor.write(label, block, points_of(label, block))
    consolidate(store)
    return store, request.param


def assert_one_call_equals_one_call_each(store, asked):
    with Query(store, cache_size=0) as query:
        together = query.get_points(asked)
        assert list(together) == list(dict.fromkeys(asked))
        for label in asked:
            alone = query.get_points(label)
            assert together[label].dtype == alone.dtype and np.array_equal(together[label], alone)


ASKED = [977, 2**63, 12345, 0, 2**64 - 1, 977, 3, 2**63 - 1, 41]  # repeated and unknown labels among them


def test_many_labels_as_ingested_come_as_one_call_each_gives_them(store):
    store, _ = store
    # A label's runs sit in several files, so a file's runs land apart in the result.
    assert_one_call_equals_one_call_each(store, ASKED)


def test_many_labels_compacted_into_several_files_come_as_one_call_each_gives_them(store):
    store, payload = store
    with Query(store, cache_size=0) as query:
        written = {label: as_row_set(query.get_points(label)) for label in LABELS}
    # Runs cross group borders, and each file's runs land back to back after the previous file's.
    compact(store, workers=1, points_per_file=150, row_group_size=5, payload=payload)
    with Query(store, cache_size=0) as query:  # one label over many batches lands a slice of each
        assert {label: as_row_set(query.get_points(label)) for label in LABELS} == written
    with Query(store) as query:
        assert len(query.sql("SELECT * FROM files")) > 1
    assert_one_call_equals_one_call_each(store, ASKED)
    # Every other label: a file's runs are apart in the file, back to back in the result.
    assert_one_call_equals_one_call_each(store, LABELS[::2])


def test_a_box_over_compacted_files_keeps_exactly_the_points_inside(store):
    store, payload = store
    compact(store, workers=1, points_per_file=150, row_group_size=5, payload=payload)
    lower, upper = np.array([-20, -30, -40]), np.array([30, 20, 10])
    with Query(store, cache_size=0) as query:
        boxed = query.get_points_in_box(lower, upper, output="numpy")
        for label in LABELS:
            points = query.get_points(label)
            inside = points[np.all((points >= lower) & (points < upper), axis=1)]
            assert np.array_equal(boxed.get(label, inside[:0]), inside)


def test_rows_past_a_files_end_in_a_read_of_many_runs_name_the_file_as_damaged(store):
    store, payload = store
    compact(store, workers=1, row_group_size=5, payload=payload)
    with Query(store) as query:
        ((file_id, path, rows),) = query.sql("SELECT file_id, path, row_count FROM files").itertuples(index=False)
        # Two runs of one file, the second reaching 3 rows past its end (as an index for a longer file would).
        with pytest.raises(DataFileError, match=f"(?s){path}.*The store is damaged"):
            query.read_rows(np.array([file_id] * 2), np.array([0, rows - 4]), np.array([2, 7]))
        with pytest.raises(DataFileError, match=f"(?s){path}.*The store is damaged"):  # one run over several batches
            query.read_rows(np.array([file_id]), np.array([rows - 7]), np.array([8]))


@pytest.mark.parametrize(
    "bad", [[*range(2_000), 2**64], [-1, *range(2_000)], [*range(2_000), True], np.array([3, -1] * 1_000)]
)
def test_one_bad_label_among_thousands_is_refused_by_name(store, bad):
    # Thousands of plain ints are checked by their extremes; one outside the range still names itself.
    with Query(store[0]) as query, pytest.raises(InvalidLabelError, match=r"each of label must be .*(-1|2\*\*64|True)"):
        query.get_points(bad)
