"""What users ask of a segmentation's points: a box of space, a sample of a label, a label too big to hold, a dataset.

Box queries are compared with brute force on random stores, before and after
compaction; samples are checked for size, membership, stability (calls,
readers, processes, and pinned values that any machine must reproduce) and
uniformity, with fixed seeds so nothing can flake.
"""

from __future__ import annotations

import multiprocessing
import pickle
import subprocess
import sys
import tempfile
import tracemalloc
from collections import Counter, defaultdict

import numpy as np
import pytest
from _support import as_row_set
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pocaduck import (
    Ingestor,
    InvalidArgumentError,
    InvalidBoxError,
    PointCloudDataset,
    Query,
    compact,
    consolidate,
    sampling,
)
from pocaduck.box import Box
from pocaduck.cli import main as cli

LABELS = st.one_of(st.sampled_from([0, 2**63 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))
BLOCK = 8  # block edge in the random stores: boxes often start or end on a multiple of it


def small_levels(monkeypatch):
    """Make compaction split labels of more than 4 rows into levels (4, 8, 16, ...), so small stores use them."""
    monkeypatch.setitem(sampling.ORDER, "first_level", 4)
    monkeypatch.setitem(sampling.ORDER, "growth", 2)


def write_store(store, writes, row_group_size=4, max_points_per_file=40):
    """writes: (worker, label, points); each point goes to the block of its first coordinates."""
    for worker in sorted({w for w, _, _ in writes}):
        with Ingestor(store, worker, max_points_per_file=max_points_per_file, row_group_size=row_group_size) as ing:
            for w, label, points in writes:
                if w == worker and len(points):
                    blocks = np.floor_divide(points[:, : min(3, points.shape[1])], BLOCK).astype(np.int64)
                    for block in np.unique(blocks, axis=0):
                        here = (blocks == block).all(axis=1)
                        ing.write(label, "_".join(map(str, block.tolist())), points[here])
    consolidate(store)


def expected_in_box(writes, lower, upper):
    """Brute force: (label, point) rows with lower <= point[:k] < upper, compared in float64 (coordinates are small)."""
    rows = []
    for _, label, points in writes:
        spatial = points[:, : len(lower)].astype(np.float64)
        inside = ((spatial >= np.array(lower, float)) & (spatial < np.array(upper, float))).all(axis=1)
        rows += [(label, *map(float, p)) for p in points[inside].tolist()]
    return sorted(rows)


def table_rows(table):
    columns = [table.column(name).to_pylist() for name in table.column_names]
    return sorted((int(row[0]), *map(float, row[1:])) for row in zip(*columns, strict=True))


@st.composite
def spatial_workloads(draw):
    dtype = np.dtype(draw(st.sampled_from(["int32", "int64", "uint16", "float32", "float64"])))
    dimensions = draw(st.integers(2, 4))
    labels = draw(st.lists(LABELS, min_size=1, max_size=5, unique=True))
    low = 0 if dtype.kind == "u" else -20
    writes = []
    for _ in range(draw(st.integers(1, 12))):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        points = rng.integers(low, 24, (draw(st.integers(1, 30)), dimensions)).astype(dtype)
        if dtype.kind == "f" and draw(st.booleans()):
            points += np.array(0.5, dtype)
        writes.append((draw(st.integers(0, 2)), draw(st.sampled_from(labels)), points))
    boxes = []
    for _ in range(4):
        width = min(3, dimensions)
        ends = [sorted(draw(st.lists(_coordinate(dtype), min_size=2, max_size=2, unique=True))) for _ in range(width)]
        boxes.append(([lo for lo, _ in ends], [up for _, up in ends]))
    return writes, boxes


def _coordinate(dtype):
    on_borders = st.integers(-3, 3).map(lambda i: i * BLOCK)
    anywhere = st.integers(-22, 26)
    halves = st.integers(-44, 52).map(lambda i: i / 2)
    return st.one_of(on_borders, anywhere, halves)


def check_boxes(store, writes, boxes):
    with Query(store, cache_size=0) as query:
        for lower, upper in boxes:
            expected = expected_in_box(writes, lower, upper)
            found = query.get_labels_in_box(lower, upper)
            assert found.dtype == np.uint64
            assert found.tolist() == sorted({row[0] for row in expected})
            assert table_rows(query.get_points_in_box(lower, upper)) == expected
            some = sorted({label for _, label, _ in writes})[:2]
            by_label = query.get_points_in_box(lower, upper, labels=some, output="numpy")
            assert list(by_label) == some
            for label in some:
                assert as_row_set(by_label[label]) == [row[1:] for row in expected if row[0] == label]


def check_samples(store, writes):
    with Query(store, cache_size=0) as query:
        for label in sorted({label for _, label, _ in writes}):
            everything = query.get_points(label)
            assert np.array_equal(np.concatenate(list(query.iter_points(label, chunk_size=3))), everything)
            for sample in (1, 5, 64):
                chosen = query.get_points(label, sample=sample)
                assert len(chosen) == min(sample, len(everything))
                assert Counter(as_row_set(chosen)) <= Counter(as_row_set(everything))
                assert np.array_equal(chosen, query.get_points(label, sample=sample))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spatial_workloads())
def test_box_queries_and_samples_match_brute_force_before_and_after_compaction(workload):
    writes, boxes = workload
    with tempfile.TemporaryDirectory(prefix="pocaduck-box-") as store, pytest.MonkeyPatch.context() as patch:
        write_store(store, writes)
        check_boxes(store, writes, boxes)
        check_samples(store, writes)
        small_levels(patch)
        compact(store, workers=1, points_per_file=50)
        check_boxes(store, writes, boxes)
        check_samples(store, writes)


@st.composite
def sampled_workloads(draw):
    """Stores to sample: several workers and blocks, labels >= 2**63 too, and many repeated points."""
    dtype = np.dtype(draw(st.sampled_from(["int32", "uint16", "float32", "float64"])))
    labels = draw(st.lists(LABELS, min_size=1, max_size=3, unique=True))
    writes = []
    for _ in range(draw(st.integers(1, 8))):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        values = rng.integers(0 if dtype.kind == "u" else -8, 8, (draw(st.integers(1, 8)), 3))  # in <= 8 blocks
        points = values[rng.integers(0, len(values), draw(st.integers(1, 40)))].astype(dtype)
        if dtype.kind == "f":  # -0.0 beside 0.0: equal numbers, but not the same point
            points = np.copysign(points, rng.choice(np.array([-1, 1], dtype), points.shape))
        writes.append((draw(st.integers(0, 2)), draw(st.sampled_from(labels)), points))
    sizes = draw(st.lists(st.sampled_from([1, 3, 5, 9, 40]), min_size=1, max_size=3, unique=True))
    seeds = draw(st.lists(st.sampled_from([None, 0, 3, 2**64 - 1]), min_size=1, max_size=2, unique=True))
    return writes, [(size, seed) for size in sizes for seed in seeds], draw(st.booleans())


def colliding_keys(monkeypatch):
    """Make row keys 3 bits wide, so different rows often share a key: their ties must be broken by value."""
    full = sampling.row_keys
    monkeypatch.setattr(sampling, "row_keys", lambda points, key: full(points, key) >> np.uint64(61))


def rows_of(points):
    """A label's rows as a multiset of their exact bytes: -0.0 is not 0.0."""
    return Counter(row.tobytes() for row in points)


def samples_of(store, labels, asks):
    """``{(label, sample, seed): the sample's bytes}``, each checked: the right size, drawn from the label's rows,
    holding every smaller sample of the same seed (a view that refines only adds points)."""
    found, smaller = {}, defaultdict(Counter)
    with Query(store, cache_size=0) as query:
        for sample, seed in sorted(asks, key=lambda ask: ask[0]):
            together = query.get_points(labels, sample=sample, seed=seed)
            for label in labels:
                everything, chosen = query.get_points(label), query.get_points(label, sample=sample, seed=seed)
                assert len(chosen) == min(sample, len(everything))
                assert smaller[label, seed] <= rows_of(chosen) <= rows_of(everything)
                assert chosen.tobytes() == together[label].tobytes()
                found[label, sample, seed] = chosen.tobytes()
                smaller[label, seed] = rows_of(chosen)
    return found


# Each example writes two stores and compacts one three times (~2 s): 10 of them, and no shrinking, which would take
# minutes; a failure prints the example as found.
@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(sampled_workloads(), st.randoms(use_true_random=False))
def test_a_sample_depends_on_the_label_s_points_alone(workload, random):
    """Not on how they were written, nor on any compaction: a training set must not change under an admin."""
    writes, asks, colliding = workload
    labels = sorted({label for _, label, _ in writes})
    shuffled = [(0, label, points[random.sample(range(len(points)), len(points))]) for _, label, points in writes]
    random.shuffle(shuffled)
    with pytest.MonkeyPatch.context() as patch:
        small_levels(patch)
        if colliding:
            colliding_keys(patch)
        with tempfile.TemporaryDirectory(prefix="pocaduck-samples-") as store:
            write_store(store, writes)
            as_ingested = samples_of(store, labels, asks)
            for payload in ("parquet", "arrow", "parquet"):
                compact(store, workers=1, points_per_file=50, payload=payload)
                assert samples_of(store, labels, asks) == as_ingested, f"after compacting to {payload}"
        with tempfile.TemporaryDirectory(prefix="pocaduck-samples-") as store:
            write_store(store, shuffled)  # the same points, in another order, by one worker
            assert samples_of(store, labels, asks) == as_ingested


# -- boxes ----------------------------------------------------------------------


@pytest.fixture
def cube(store):
    """Label 1 fills the cube [0, 16)^3 on integer points, 2**64 - 1 sits at (20, 20, 20); blocks of 8."""
    grid = np.stack(np.meshgrid(*[np.arange(16)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    write_store(store, [(0, 1, grid), (1, 2**64 - 1, np.array([[20, 20, 20]]))], 64, max_points_per_file=10**6)
    return store


def test_a_box_is_half_open_like_slicing(cube):
    with Query(cube) as query:
        assert query.get_points_in_box((0, 0, 0), (2, 1, 1)).column("x").to_pylist() == [0, 1]
        assert query.get_labels_in_box((16, 16, 16), (21, 21, 21)).tolist() == [2**64 - 1]
        assert query.get_labels_in_box((16, 16, 16), (20, 20, 20)).tolist() == []
        # between two integers there is no point of an integer store
        assert query.get_labels_in_box((1.2, 0, 0), (1.8, 5, 5)).tolist() == []
        assert len(query.get_points_in_box((0.5, 0, 0), (1.5, 1, 1))) == 1


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spatial_workloads(), st.sampled_from(["parquet", "arrow"]), st.randoms(use_true_random=False))
def test_runs_known_inside_are_kept_untested_and_the_others_filtered_in_the_runs_order(workload, payload, random):
    """What a box query relies on: runs marked whole come back entire without being tested, other runs' rows
    only where the test passes, every run's rows in the order asked, whatever files and row groups they span."""
    writes, boxes = workload
    with tempfile.TemporaryDirectory(prefix="pocaduck-runs-") as store, pytest.MonkeyPatch.context() as patch:
        write_store(store, writes, row_group_size=3, max_points_per_file=25)
        if payload == "arrow":
            small_levels(patch)
            compact(store, workers=1, points_per_file=40, payload="arrow", row_group_size=3)
        with Query(store, cache_size=0) as query:
            index = query.sql("SELECT file_id, row_offset, point_count FROM point_index", output="numpy")
            asked = random.sample(range(len(index["file_id"])), random.randint(0, len(index["file_id"])))
            in_file_order = sorted(asked, key=lambda run: (index["file_id"][run], index["row_offset"][run]))
            box = Box.of(*boxes[0], query.schema)
            for order in (asked, in_file_order):  # files interleaving in the result, and following each other
                file_ids, offsets, counts = (np.asarray(index[name])[order].astype(np.int64) for name in index)
                whole = np.array([random.random() < 0.5 for _ in order], dtype=bool)
                tested = []

                def keep(columns, tested=tested):
                    tested.append(len(columns[0]))
                    return box.holds(columns)

                columns, kept = query._points.read_runs_where(file_ids, offsets, counts, keep, whole=whole)
                expected = []
                for file_id, offset, count, entire in zip(file_ids, offsets, counts, whole, strict=True):
                    rows = query.read_rows(np.array([file_id]), np.array([offset]), np.array([count]))
                    expected.append(rows if entire else rows[box.holds(list(rows.T))])
                assert sum(tested) == int(counts[~whole].sum())  # no row of a run marked whole was tested
                assert kept.tolist() == [len(rows) for rows in expected]
                dimensions = len(writes[0][2][0])
                assert np.array_equal(columns.T, np.concatenate(expected) if expected else np.empty((0, dimensions)))


def test_a_bounding_box_that_meets_the_box_does_not_prove_a_point_inside(store):
    # one write whose bounding box is the whole cube, with points only in two far corners
    write_store(store, [(0, 7, np.array([[0, 0, 0], [7, 7, 7]]))])
    with Query(store) as query:
        assert query.get_labels_in_box((2, 2, 2), (5, 5, 5)).tolist() == []
        assert query.get_labels_in_box((6, 6, 6), (9, 9, 9)).tolist() == [7]


def test_points_in_box_reads_only_row_groups_whose_runs_meet_the_box(cube, monkeypatch):
    with Query(cube, cache_size=0) as query:
        read = []
        original = query._points._read_groups
        monkeypatch.setattr(query._points, "_read_groups", lambda *args: read.append(len(args[3])) or original(*args))
        inside = query.get_points_in_box((0, 0, 0), (8, 8, 8))
        assert len(inside) == 8**3
        # the block (0,0,0) holds 512 points in 8 row groups of 64; the other 7 blocks of label 1 are not read
        assert sum(read) == 8


def test_points_in_box_of_some_labels_leave_out_their_neighbours_in_the_same_row_group(store):
    # labels 3, 4 and 5 at the same voxels, side by side in one row group: asking 5 and 3 must not bring 4
    here = np.array([[1, 1, 1], [2, 2, 2]])
    write_store(store, [(0, label, here) for label in (3, 4, 5)], row_group_size=64)
    with Query(store) as query:
        table = query.get_points_in_box((0, 0, 0), (8, 8, 8), labels=[5, 3])
        assert table.column("label").to_pylist() == [3, 3, 5, 5]
        by_label = query.get_points_in_box((0, 0, 0), (8, 8, 8), labels=[5, 3], output="numpy")
        assert list(by_label) == [5, 3] and all(points.tolist() == here.tolist() for points in by_label.values())
        assert query.get_labels_in_box((2, 2, 2), (3, 3, 3)).tolist() == [3, 4, 5]


def test_points_in_box_as_numpy_and_pandas(cube):
    with Query(cube) as query:
        by_label = query.get_points_in_box((15, 15, 15), (30, 30, 30), output="numpy")
        assert list(by_label) == [1, 2**64 - 1]
        assert by_label[1].tolist() == [[15, 15, 15]] and by_label[2**64 - 1].tolist() == [[20, 20, 20]]
        frame = query.get_points_in_box((15, 15, 15), (30, 30, 30), output="pandas")
        assert list(frame.columns) == ["label", "x", "y", "z"] and len(frame) == 2


@pytest.mark.parametrize(
    ("lower", "upper", "message"),
    [
        ((0, 0, 5), (9, 9, 5), "below upper on every axis.*z"),
        ((0, 9, 0), (9, 1, 9), "below upper on every axis.*y"),
        ((0, 0), (9, 9), "lower has 2 values but this store's boxes have 3"),
        ((0, 0, 0), (9, 9, 9, 9), "upper has 4 values"),
        ((0, 0, float("nan")), (9, 9, 9), "finite numbers"),
        ((0, 0, 0), (9, 9, float("inf")), "finite numbers"),
        ("0,0,0", (9, 9, 9), "must be 3 numbers"),
        ((0, 0, True), (9, 9, 9), "finite numbers"),
    ],
)
def test_bad_boxes_are_refused_with_what_is_wrong(cube, lower, upper, message):
    with Query(cube) as query:
        for ask in (query.get_labels_in_box, query.get_points_in_box):
            with pytest.raises(InvalidBoxError, match=message):
                ask(lower, upper)


# -- samples ----------------------------------------------------------------------


def counted_points(label: int, count: int) -> np.ndarray:
    """``count`` points whose x is their index: a sample tells which rows it took."""
    return np.stack([np.arange(count), np.full(count, label % 1000), np.arange(count) % 7], axis=1)


@pytest.fixture
def big_label_store(store):
    """Label 2**63 + 5 with 20,000 points over 40 blocks and 3 files, and labels 3, 50 and 1500 of that many."""
    with Ingestor(store, 0, max_points_per_file=7000) as ingestor:
        for label in (2**63 + 5, 3, 50, 1500):
            points = counted_points(label, 20_000 if label > 2**63 else label)
            for block in range(40):
                ingestor.write(label, block, points[block::40])
    consolidate(store)
    return store


LABELS_HELD = [3, 50, 1500, 2**63 + 5]  # by big_label_store, in order


def sample_in_child(store: str, label: int, sample: int, seed: int | None) -> list:
    with Query(store) as query:
        return query.get_points(label, sample=sample, seed=seed).tolist()


def test_a_sample_is_a_uniform_subset_the_same_everywhere(big_label_store):
    label = 2**63 + 5
    compact(big_label_store, workers=1)
    with Query(big_label_store, cache_size=0) as first, Query(big_label_store) as second:
        everything = as_row_set(first.get_points(label))
        for sample, seed in [(1, None), (1024, None), (1500, None), (1500, 7), (30_000, None)]:
            chosen = first.get_points(label, sample=sample, seed=seed)
            assert chosen.shape == (min(sample, 20_000), 3)
            assert set(as_row_set(chosen)) <= set(everything) and len(set(as_row_set(chosen))) == len(chosen)
            assert np.array_equal(chosen, second.get_points(label, sample=sample, seed=seed))
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            in_child = pool.apply(sample_in_child, (big_label_store, label, 1500, None))
        assert in_child == first.get_points(label, sample=1500).tolist()
        assert first.get_points(label, sample=100, seed=1).tolist() != first.get_points(label, sample=100).tolist()


def in_key_order(points, keys):
    """The definition, by brute force: every row sorted by key, then by value (as numbers; -0.0 below 0.0)."""
    by_value = [sampling._value_columns(points[:, [column]])[0] for column in range(points.shape[1])]
    return points[np.lexsort([*by_value[::-1], keys])]


@pytest.mark.parametrize(
    "kind", ["distinct", "mostly one point", "colliding keys", "floats with -0.0", "larger than the label"]
)
def test_a_sample_is_the_rows_with_the_smallest_keys(kind, monkeypatch):
    """Whatever the rows' order: the sample takes its rows, and their order, from their values alone."""
    rng = np.random.default_rng(5)
    points = rng.integers(-50, 50, (3000, 3))
    if kind == "mostly one point":  # one key shared by 5,000 rows: the bound the keys predict finds too few
        points = np.concatenate([points[:100], np.repeat(points[100:101], 5000, axis=0)])
    if kind == "colliding keys":
        colliding_keys(monkeypatch)
    if kind == "floats with -0.0":
        points = np.copysign(points // 25, rng.choice([-1.0, 1.0], points.shape))
    sample = 5000 if kind == "larger than the label" else 300
    expected = in_key_order(points, sampling.row_keys(points, sampling.sample_key(77, 9)))[:sample]
    for shuffled in (points, points[rng.permutation(len(points))], points[::-1]):
        assert shuffled[sampling.sample_rows(shuffled, 77, sample, 9)].tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", ["int32", "int64", "float32"])
def test_distinct_points_get_distinct_keys(dtype):
    """On a grid of small coordinates, negative too: a hash that is linear in them collides by the thousand."""
    grid = np.stack(np.meshgrid(*[np.arange(-40, 40)] * 3, indexing="ij"), axis=-1).reshape(-1, 3).astype(dtype)
    for seed in (None, 0):
        assert len(np.unique(sampling.row_keys(grid, sampling.sample_key(2**64 - 1, seed)))) == len(grid)


def test_a_larger_sample_holds_every_smaller_one(big_label_store):
    """So a view refining from a first frame to its full budget only adds points, across levels too."""
    label = 2**63 + 5
    for compacted in (False, True):
        if compacted:
            compact(big_label_store, workers=1)
        with Query(big_label_store, cache_size=0) as query:
            for seed in (None, 7):
                smaller = set()
                for sample in (1, 500, 1024, 1025, 5000, 16_384, 20_000):
                    chosen = set(as_row_set(query.get_points(label, sample=sample, seed=seed)))
                    assert smaller <= chosen and len(chosen) == sample
                    smaller = chosen


def recorded_reads(query, monkeypatch):
    """The point counts of every row run the query reads, one list per read, from now on."""
    reads = []
    original = query._points.read_rows
    monkeypatch.setattr(query._points, "read_rows", lambda f, o, c: reads.append(c.tolist()) or original(f, o, c))
    return reads


def test_on_a_compacted_store_a_sample_reads_one_short_range(big_label_store, monkeypatch):
    label = 2**63 + 5
    compact(big_label_store, workers=1)
    with Query(big_label_store, cache_size=0) as query:
        reads = recorded_reads(query, monkeypatch)
        query.get_points(label, sample=1024)
        query.get_points(label, sample=1025)
        query.get_points(label, sample=1024, seed=3)  # an integer seed reads the whole label
        assert reads[:2] == [[1024], [4096]]
        assert sum(reads[2]) == 20_000


def test_a_file_in_another_sample_order_is_sampled_whole_with_the_same_result(big_label_store, monkeypatch):
    """A store compacted by another version of the levels (an older one) is read whole, never misread."""
    label = 2**63 + 5
    compact(big_label_store, workers=1)
    with Query(big_label_store, cache_size=0) as query:
        stored = query.get_points(label, sample=1024)
    monkeypatch.setitem(sampling.ORDER, "version", sampling.ORDER["version"] + 1)
    with Query(big_label_store, cache_size=0) as query:
        reads = recorded_reads(query, monkeypatch)
        assert query.get_points(label, sample=1024).tobytes() == stored.tobytes()
        assert sum(reads[0]) == 20_000


def test_many_labels_sample_each_as_alone(big_label_store):
    labels = [3, 50, 1500, 2**63 + 5, 999]
    for compacted in (False, True):
        if compacted:
            compact(big_label_store, workers=1)
        with Query(big_label_store) as query:
            together = query.get_points(labels, sample=40)
            assert list(together) == labels
            for label in labels:
                assert np.array_equal(together[label], query.get_points(label, sample=40))
                in_block = as_row_set(query.get_points(label, blocks=[0]))
                chosen = query.get_points(label, sample=2, blocks=[0], output="pandas")
                assert len(chosen) == min(2, len(in_block)) and set(map(tuple, chosen.to_numpy().tolist())) <= set(
                    in_block
                )
            table = query.get_points(labels, sample=40, output="arrow")
            assert table.column("label").to_pylist() == [lab for lab in sorted(labels) for _ in together[lab]]


def test_samples_are_pinned_across_machines_and_versions(big_label_store):
    """The hash, levels and picks are plain integer arithmetic: these values must never change."""
    with Query(big_label_store) as query:
        assert query.get_points(1500, sample=5)[:, 0].tolist() == PINNED_WHOLE
        assert query.get_points(1500, sample=5, seed=2**64 - 1)[:, 0].tolist() == PINNED_SEEDED
        assert query.get_points(2**63 + 5, sample=5)[:, 0].tolist() == PINNED_STORED
    compact(big_label_store, workers=1)
    with Query(big_label_store) as query:  # now read from the stored pool: the same sample
        assert query.get_points(2**63 + 5, sample=5)[:, 0].tolist() == PINNED_STORED


PINNED_WHOLE = [525, 1358, 856, 33, 164]
PINNED_SEEDED = [67, 760, 387, 832, 418]
PINNED_STORED = [15804, 4473, 5697, 14818, 8564]


def test_over_many_seeds_every_row_is_chosen_about_equally_often(store):
    write_store(store, [(0, 11, counted_points(11, 50))])
    with Query(store) as query:
        chosen = Counter(x for seed in range(2000) for x in query.get_points(11, sample=10, seed=seed)[:, 0].tolist())
    # each row's count is Binomial(2000, 0.2): mean 400, sd 18; the bounds are 6 sd away
    assert sorted(chosen) == list(range(50))
    assert min(chosen.values()) > 290 and max(chosen.values()) < 510


def test_the_stored_order_makes_every_row_equally_likely_across_labels(store, monkeypatch):
    small_levels(monkeypatch)  # levels of 4, 8, 16, 32, 64 rows: a sample of 6 reads the first 8 rows
    labels = list(range(1000, 2500))
    with Ingestor(store, 0) as ingestor:
        for label in labels:
            points = counted_points(label, 48)
            for block in range(3):  # three blocks, so each level is sorted by block, not by row
                ingestor.write(label, block, points[block::3])
    consolidate(store)
    compact(store, workers=1)
    with Query(store) as query:
        by_label = query.get_points(labels, sample=6)
    chosen = Counter(x for points in by_label.values() for x in points[:, 0].tolist())
    # each row's count is Binomial(1500, 1/8): mean 187.5, sd 12.8; the bounds are 6 sd away
    assert sorted(chosen) == list(range(48))
    assert min(chosen.values()) > 110 and max(chosen.values()) < 265


def test_compaction_keeps_blocks_counts_and_points_of_labels_split_into_levels(big_label_store):
    label = 2**63 + 5
    with Query(big_label_store, cache_size=0) as query:
        before = {
            "points": as_row_set(query.get_points(label)),
            "blocks": query.get_blocks_for_label(label),
            "block 7": as_row_set(query.get_points(label, blocks=[7])),
            "summary": {k: v for k, v in query.get_label_summary(label).items() if k != "file_count"},
        }
    compact(big_label_store, workers=1)
    with Query(big_label_store, cache_size=0) as query:
        assert as_row_set(query.get_points(label)) == before["points"]
        assert query.get_blocks_for_label(label) == before["blocks"]
        assert as_row_set(query.get_points(label, blocks=[7])) == before["block 7"]
        summary = query.get_label_summary(label)
        assert {k: v for k, v in summary.items() if k != "file_count"} == before["summary"]
        assert summary["file_count"] == 1
        runs = query.sql("SELECT count(*) AS n FROM point_index WHERE label = ?", [label])["n"][0]
        assert 40 < runs <= 40 * len(sampling.level_ends(20_000))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"sample": 0}, "sample must be a positive integer"),
        ({"sample": -3}, "sample must be a positive integer"),
        ({"sample": 2.5}, "sample must be a positive integer"),
        ({"sample": True}, "sample must be a positive integer"),
        ({"sample": "10"}, "sample must be a positive integer"),
        ({"sample": 10, "seed": -1}, "seed must be None or an integer"),
        ({"sample": 10, "seed": 1.0}, "seed must be None or an integer"),
        ({"seed": 3}, "give sample=N with it"),
    ],
)
def test_bad_samples_are_refused(big_label_store, arguments, message):
    with Query(big_label_store) as query, pytest.raises(InvalidArgumentError, match=message):
        query.get_points(3, **arguments)


# -- big labels ----------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 999, 4096, 10**6])
def test_iter_points_concatenates_to_get_points_in_bounded_reads(big_label_store, chunk_size, monkeypatch):
    label = 2**63 + 5
    for compacted in (False, True):
        if compacted:
            compact(big_label_store, workers=1)
        with Query(big_label_store, cache_size=0) as query:
            reads = recorded_reads(query, monkeypatch)
            chunks = list(query.iter_points(label, chunk_size=chunk_size))
            assert all(len(chunk) == chunk_size for chunk in chunks[:-1]) and 0 < len(chunks[-1]) <= chunk_size
            assert max(map(sum, reads)) <= max(chunk_size, layout_group_size(query))
            monkeypatch.undo()
            assert np.array_equal(np.concatenate(chunks), query.get_points(label))
            assert chunks[0].dtype == query.get_points(label).dtype
            assert list(query.iter_points(12345)) == []


def test_iter_points_holds_about_one_chunk_in_memory(store):
    """Measured by tracemalloc, which counts numpy's allocations: exact and the same on every run."""
    with Ingestor(store, 0, row_group_size=1000, max_points_per_file=150_000) as ingestor:
        for block in range(40):
            ingestor.write(9, block, np.zeros((10_000, 3)))
    consolidate(store)
    chunk_size, chunk_bytes = 100_000, 100_000 * 3 * 8
    with Query(store, cache_size=0) as query:
        list(query.iter_points(9, chunk_size=10))  # open the files first: only the iteration is measured
        tracemalloc.start()
        try:
            for chunk in query.iter_points(9, chunk_size=chunk_size):
                del chunk
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 2 * chunk_bytes


def test_iter_points_of_many_labels_holds_about_one_batch_in_memory(store):
    """300 labels of 1,000 points in batches of 20,000 points: the peak is about one batch, not all 300,000 points."""
    labels = [2**63 + label for label in range(300)]
    with Ingestor(store, 0, row_group_size=500, max_points_per_file=60_000) as ingestor:
        for block in range(4):
            ingestor.write_block(block, np.repeat(labels, 250), np.zeros((300 * 250, 3)))
    consolidate(store)
    batch_size, batch_bytes = 20_000, 20_000 * 3 * 8
    with Query(store, cache_size=0) as query:
        query.get_points(labels)  # open every file first: only the iteration is measured
        tracemalloc.start()
        try:
            seen = 0
            for batch in query.iter_points(labels, batch_size=batch_size):
                seen += sum(len(points) for points in batch.values())
                del batch
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert seen == 300_000
    assert peak < 2 * batch_bytes


def test_iter_points_refuses_mixed_chunk_and_batch_settings(big_label_store):
    with Query(big_label_store) as query:
        with pytest.raises(InvalidArgumentError, match="batch_size and output are for a list"):
            query.iter_points(3, batch_size=10)
        with pytest.raises(InvalidArgumentError, match="several labels come in batches"):
            query.iter_points([3, 50], chunk_size=10)


def layout_group_size(query):
    return max(group for _, group, _ in query._points.files.values())


def test_iter_points_refuses_a_chunk_size_below_one(big_label_store):
    with Query(big_label_store) as query:
        for bad in (0, -1, 1.5):
            with pytest.raises(InvalidArgumentError, match="chunk_size must be a positive integer"):
                query.iter_points(3, chunk_size=bad)


# -- the dataset --------------------------------------------------------------------


def items_in_this_process(dataset: PointCloudDataset, indices: list[int]) -> list:
    return [(label, points.tolist()) for label, points in (dataset[i] for i in indices)]


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_the_dataset_gives_the_same_items_in_a_pool_of_processes(big_label_store, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"{method} is not available here")
    compact(big_label_store, workers=1)
    dataset = PointCloudDataset(big_label_store, sample=100, columns=["z", "x"])
    expected = items_in_this_process(dataset, list(range(len(dataset))))  # the parent holds a Query when it forks
    with multiprocessing.get_context(method).Pool(2) as pool:
        parts = pool.starmap(items_in_this_process, [(dataset, [i]) for i in range(len(dataset))])
    assert [item for part in parts for item in part] == expected
    assert [label for label, _ in expected] == [3, 50, 1500, 2**63 + 5]
    assert [len(points) for _, points in expected] == [3, 50, 100, 100]
    assert all(len(point) == 2 for _, points in expected for point in points)


@pytest.mark.parametrize(
    ("seed", "columns"), [(None, None), (None, ["y", "z", "x"]), (0, ["z", "x"]), (4, None), (4, ["y", "x"])]
)
def test_the_dataset_item_is_the_labels_sample_with_its_seed_in_the_columns_asked(big_label_store, seed, columns):
    dataset = PointCloudDataset(big_label_store, sample=100, seed=seed, columns=columns)
    positions = [["x", "y", "z"].index(name) for name in columns or ["x", "y", "z"]]
    with Query(big_label_store) as query:
        expected = [(label, query.get_points(label, sample=100, seed=seed)[:, positions]) for label in LABELS_HELD]
    assert dataset.columns == tuple(columns or ["x", "y", "z"])
    for items in ([dataset[i] for i in range(len(dataset))], dataset.__getitems__(list(range(len(dataset))))):
        assert [label for label, _ in items] == [label for label, _ in expected]
        for (_, points), (_, wanted) in zip(items, expected, strict=True):
            assert points.shape == wanted.shape and np.array_equal(points, wanted)


def test_each_seed_gives_the_dataset_other_items(big_label_store):
    label = 2**63 + 5  # 20,000 points: a sample of 100 drawn twice alike would be no sample
    items = {
        seed: PointCloudDataset(big_label_store, labels=[label], sample=100, seed=seed)[0][1] for seed in (None, 1, 2)
    }
    assert len({points.tobytes() for points in items.values()}) == 3
    assert np.array_equal(items[1], PointCloudDataset(big_label_store, labels=[label], sample=100, seed=1)[0][1])


def test_the_dataset_pickles_without_its_reader_and_batches_like_items(big_label_store):
    dataset = PointCloudDataset(big_label_store, labels=[2**63 + 5, 3], sample=7, seed=4)
    first = dataset[0]
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy._query is None and len(copy) == 2
    assert copy[0][0] == first[0] and np.array_equal(copy[0][1], first[1])
    batch = dataset.__getitems__([1, 0, 1])
    assert [label for label, _ in batch] == [3, 2**63 + 5, 3]
    assert all(np.array_equal(points, dataset[i][1]) for (_, points), i in zip(batch, [1, 0, 1], strict=True))
    with pytest.raises(IndexError):
        dataset[2]
    with pytest.raises(InvalidArgumentError, match="columns must be"):
        PointCloudDataset(big_label_store, columns=["w"])
    with pytest.raises(InvalidArgumentError, match="sample must be"):
        PointCloudDataset(big_label_store, sample=0)


def test_torch_data_loader_batches_the_dataset_in_spawned_workers(big_label_store):
    torch_data = pytest.importorskip("torch.utils.data")  # in the test extra: CI runs this
    compact(big_label_store, workers=1)
    dataset = PointCloudDataset(big_label_store, sample=3)
    loader = torch_data.DataLoader(
        dataset, batch_size=3, num_workers=2, multiprocessing_context="spawn", collate_fn=PointCloudDataset.collate
    )
    batches = list(loader)
    assert [len(labels) for labels, _ in batches] == [3, 1]
    labels = np.concatenate([labels for labels, _ in batches])
    points = np.concatenate([points for _, points in batches])
    assert labels.dtype == np.uint64 and labels.tolist() == [3, 50, 1500, 2**63 + 5]
    assert all(np.array_equal(points[i], dataset[i][1]) for i in range(len(dataset)))
    tensors = torch_data.default_collate([dataset[0], dataset[1]])  # labels below 2**63 take torch's own
    assert tensors[0].tolist() == [3, 50] and tensors[1].shape == (2, 3, 3)


def test_a_batch_of_items_of_unequal_sizes_is_refused_naming_the_short_labels(big_label_store):
    dataset = PointCloudDataset(big_label_store, sample=10)
    with pytest.raises(InvalidArgumentError, match=r"labels \[3\] hold fewer"):
        PointCloudDataset.collate(dataset.__getitems__([0, 1]))


def test_pocaduck_never_imports_torch():
    code = "import sys, pocaduck, pocaduck.dataset; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


# -- command line ---------------------------------------------------------------------


def test_the_command_line_samples_and_answers_boxes(cube, tmp_path, capsys):
    assert cli(["labels-in-box", cube, "15,15,15", "21,21,21"]) == 0
    assert capsys.readouterr().out.split() == ["1", str(2**64 - 1)]
    target = str(tmp_path / "box.parquet")
    assert cli(["points-in-box", cube, "0,0,0", "2,2,2", "-o", target]) == 0
    import pyarrow.parquet as pq

    assert pq.read_table(target).column_names == ["label", "x", "y", "z"] and pq.read_table(target).num_rows == 8
    assert cli(["points", cube, "1", "--sample", "5"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6
    assert cli(["labels-in-box", cube, "5,0,0", "4,9,9"]) == 1
    assert "lower must be below upper" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_status:
        cli(["points", cube, "1", "--sample", "0"])
    assert exit_status.value.code == 2


def test_box_results_are_grouped_by_label(cube):
    with Query(cube) as query:
        labels = query.get_points_in_box((0, 0, 0), (30, 30, 30)).column("label").to_pylist()
    assert labels == sorted(labels) and defaultdict(int, Counter(labels))[1] == 16**3
