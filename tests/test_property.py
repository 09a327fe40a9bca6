"""Property: for random labels, dimensions, dtypes, block splits, workers, rollover, directory page sizes and
payloads (Parquet or Arrow IPC files), every label returns exactly the multiset of points written, with the right blocks and counts, through the label
directory (a new Query) and through the index alike; and many labels asked in one call (repeated, unknown, some
blocks only) get exactly what one call each gets, in every output, before and after compaction, and streamed
in batches of whole labels (``iter_points(labels, batch_size=)``) too."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from unittest import mock

import numpy as np
import pandas as pd
from _support import as_row_set
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pocaduck import Ingestor, Query, compact, consolidate, label_directory

LABELS = st.one_of(st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))
DTYPES = st.sampled_from(["int8", "int32", "int64", "uint16", "uint64", "float32", "float64"])


@st.composite
def workloads(draw):
    dtype = np.dtype(draw(DTYPES))
    dimensions = draw(st.integers(1, 6))
    labels = draw(st.lists(LABELS, min_size=1, max_size=6, unique=True))
    writes = []
    for _ in range(draw(st.integers(1, 25))):
        count = draw(st.integers(0, 12))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        if dtype.kind == "f":
            points = (rng.standard_normal((count, dimensions)) * 1e6).astype(dtype)
        else:
            info = np.iinfo(dtype)
            points = rng.integers(info.min, info.max, (count, dimensions), dtype=dtype, endpoint=True)
        writes.append((draw(st.integers(0, 3)), draw(st.sampled_from(labels)), draw(st.integers(0, 4)), points))
    return writes, draw(st.integers(1, 30)), draw(st.integers(1, 8))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.sampled_from([64, 100, 256, label_directory.PAGE_BYTES]), st.sampled_from(["parquet", "arrow"]))
def test_every_label_returns_exactly_what_was_written(workload, page_bytes, payload):
    # Pages of 2 to 2,730 entries: small ones make trees of several levels out of a few labels.
    with (
        tempfile.TemporaryDirectory(prefix="pocaduck-property-") as store,
        mock.patch.object(label_directory, "PAGE_BYTES", page_bytes),
    ):
        check_round_trip(store, *workload, payload=payload)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.sampled_from(["parquet", "arrow"]), st.data())
def test_many_labels_in_one_call_get_what_one_call_each_gets(workload, payload, data):
    writes, max_points_per_file, row_group_size = workload
    with tempfile.TemporaryDirectory(prefix="pocaduck-property-") as store:
        expected, _ = ingest(store, writes, max_points_per_file, row_group_size, payload)
        if not expected:
            return
        consolidate(store)
        # Repeats and labels never written, in any order; blocks that may hold none of them
        asked = data.draw(st.lists(st.sampled_from([*expected, 12345, 2**64 - 2]), min_size=2, max_size=12))
        blocks = data.draw(st.none() | st.lists(st.integers(0, 4), min_size=1, max_size=3))
        batch_size = data.draw(st.integers(1, 40))
        check_one_call(store, asked, blocks)
        check_batches(store, asked, batch_size)
        # Compacted in small row groups: a label is one run, the runs of a file land one after another
        compact(store, workers=1, row_group_size=data.draw(st.integers(1, 20)), payload=payload)
        check_one_call(store, asked, blocks)
        check_batches(store, asked, batch_size)


def check_one_call(store, asked, blocks):
    with Query(store, cache_size=0) as query:
        alone = {label: query.get_points(label, blocks=blocks) for label in asked}
        together = query.get_points(asked, blocks=blocks)
        assert list(together) == list(alone)
        for label, points in alone.items():
            assert together[label].dtype == points.dtype and np.array_equal(together[label], points)
        table = query.get_points(asked, blocks=blocks, output="arrow")
        by_label = sorted(alone)  # a table's rows come label by label, each label's as one call gives them
        assert table.column("label").to_numpy().tolist() == [label for label in by_label for _ in alone[label]]
        values = np.column_stack([table.column(name).to_numpy() for name in query.schema.columns])
        assert np.array_equal(values, np.concatenate([alone[label] for label in by_label]))
        pd.testing.assert_frame_equal(query.get_points(asked, blocks=blocks, output="pandas"), table.to_pandas())


def check_batches(store, asked, batch_size):
    """Batches hold each label asked once, whole, at most batch_size points unless one label holds more."""
    with Query(store, cache_size=0) as query:
        batches = list(query.iter_points(asked, batch_size=batch_size))
        streamed = [label for batch in batches for label in batch]
        assert sorted(streamed) == sorted(set(asked))
        holding = [len(points) > 0 for batch in batches for points in batch.values()]
        assert holding == sorted(holding, reverse=True)  # labels without points come last
        for batch in batches:
            sizes = [len(points) for points in batch.values()]
            assert sum(sizes) <= batch_size or sum(1 for size in sizes if size) == 1
            for label, points in batch.items():
                alone = query.get_points(label)
                assert points.dtype == alone.dtype and np.array_equal(points, alone)
        tables = list(query.iter_points(asked, batch_size=batch_size, output="arrow"))
        assert len(tables) == len(batches)
        for table, batch in zip(tables, batches, strict=True):
            assert table.equals(query.get_points(list(batch), output="arrow"))


def ingest(store, writes, max_points_per_file, row_group_size, payload):
    """Write ``writes`` worker by worker; return each label's written points and its blocks."""
    expected = defaultdict(list)
    blocks = defaultdict(set)
    for worker in sorted({w for w, *_ in writes}):
        with Ingestor(
            store, worker, max_points_per_file=max_points_per_file, row_group_size=row_group_size, payload=payload
        ) as ing:
            for w, label, block, points in writes:
                if w == worker:
                    ing.write(label, block, points)
                    if len(points):
                        expected[label].append(points)
                        blocks[label].add(block)
    return expected, blocks


def check_round_trip(store, writes, max_points_per_file, row_group_size, payload="parquet"):
    expected, blocks = ingest(store, writes, max_points_per_file, row_group_size, payload)
    if not expected:
        return
    consolidate(store)
    with Query(store, cache_size=0) as query:  # nothing asked needs the index: the label directory answers
        assert query.schema.payload == payload
        for label, parts in expected.items():
            assert as_row_set(query.get_points(label)) == as_row_set(np.concatenate(parts))
            assert query.get_point_count(label) == sum(len(p) for p in parts)
        together = query.get_points([*expected, 12345])
        assert all(as_row_set(together[label]) == as_row_set(np.concatenate(expected[label])) for label in expected)
    with Query(store, cache_size=0) as query:
        assert query.get_labels().tolist() == sorted(expected)
        for label, parts in expected.items():
            points = query.get_points(label)
            assert points.dtype == parts[0].dtype
            assert as_row_set(points) == as_row_set(np.concatenate(parts))
            assert query.get_point_count(label) == sum(len(p) for p in parts)
            assert query.get_blocks_for_label(label) == sorted(blocks[label])
        together = query.get_points(list(expected))
        for label, parts in expected.items():
            assert as_row_set(together[label]) == as_row_set(np.concatenate(parts))
