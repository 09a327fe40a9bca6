"""Loose ends of mappings: gc removes what a killed mapping write left behind, and a body's sample reads less."""

from __future__ import annotations

import os
import time
import uuid
from unittest import mock

import numpy as np

from pocaduck import Ingestor, Query, collect_garbage, compact, consolidate, create_store, write_mapping
from pocaduck.sampling import row_keys, sample_key


def make_store(path) -> str:
    create_store(path)
    with Ingestor(path, worker_id=0) as ingestor:
        ingestor.write_block("b0", np.array([1, 2, 3]), np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]]))
    consolidate(path)
    return str(path)


def test_gc_removes_staging_of_mapping_writes_killed_over_an_hour_ago_and_keeps_a_live_ones(tmp_path):
    store = make_store(tmp_path / "store")
    write_mapping(store, "v1", [2], [1])
    folder = tmp_path / "store" / "mappings"
    killed, live = (folder / f".v2.{uuid.uuid4().hex}.writing" for _ in range(2))
    for staged in (killed, live):
        staged.write_bytes(b"PAR1 half a version")
    two_hours_ago = time.time() - 7200
    os.utime(killed, (two_hours_ago, two_hours_ago))

    assert collect_garbage(store, dry_run=True).removed == [f"mappings/{killed.name}"]
    assert killed.exists()
    assert collect_garbage(store).removed == [f"mappings/{killed.name}"]
    assert not killed.exists() and live.exists()
    with Query(store, mapping="v1") as query:  # the published version is untouched
        assert query.get_supervoxels(1).tolist() == [1, 2]


def big_body_store(path) -> str:
    """Supervoxels 1, 2, 3 of 5,000 points each (several sample levels), compacted: each in the sample order."""
    create_store(path)
    rng = np.random.default_rng(11)
    with Ingestor(path, worker_id=0) as ingestor:
        for block in ("a", "b"):
            labels = np.repeat(np.array([1, 2, 3], np.uint64), 2500)
            ingestor.write_block(block, labels, rng.integers(0, 10**6, (len(labels), 3)))
    consolidate(path)
    compact(path)
    return str(path)


def brute_force_sample(points: dict[int, np.ndarray], sample: int, seed: int | None) -> np.ndarray:
    """The rows with the smallest keys, each keyed by its supervoxel's stream, in key order."""
    keys = np.concatenate([row_keys(rows, sample_key(label, seed)) for label, rows in points.items()])
    return np.concatenate(list(points.values()))[np.argsort(keys, kind="stable")[:sample]]


def test_a_body_sample_reads_only_its_supervoxels_samples_and_is_the_smallest_keys_of_all(tmp_path):
    store = big_body_store(tmp_path / "store")
    write_mapping(store, "v1", [1, 2, 3], [9, 9, 9])
    with Query(store) as query:
        everything = query.get_points([1, 2, 3])
    with Query(store, mapping="v1") as query:
        read = []
        inner = query._query._points
        original = inner.read_rows
        with mock.patch.object(inner, "read_rows", lambda f, o, c: read.append(int(np.sum(c))) or original(f, o, c)):
            sample = query.get_points(9, sample=100)
        assert sum(read) <= 3 * 1024 < 15_000  # each supervoxel's first level, not the body
        assert np.array_equal(sample, brute_force_sample(everything, 100, None))
        seeded = query.get_points(9, sample=100, seed=4)
        assert np.array_equal(seeded, brute_force_sample(everything, 100, 4))
        assert np.array_equal(query.get_points(9, sample=20_000), brute_force_sample(everything, 15_000, None))
