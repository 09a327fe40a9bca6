"""Loose ends of mappings: gc removes what a killed mapping write left behind, and a body's sample reads less."""

from __future__ import annotations

import os
import time
import uuid

import numpy as np

from pocaduck import Ingestor, Query, collect_garbage, consolidate, create_store, write_mapping


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
