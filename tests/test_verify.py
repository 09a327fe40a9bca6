"""`pocaduck verify` finds damage, names what to re-run, and changes nothing."""

from __future__ import annotations

import hashlib
import json
import os

import duckdb
import numpy as np
import pytest
from test_cli import pocaduck

from pocaduck import DamagedStoreError, Ingestor, Query, compact, consolidate, verify
from pocaduck.layout import MANIFEST, UNIFIED_INDEX


@pytest.fixture
def two_workers(store):
    """Workers 'w0' and 'w1', two files each, 20 labels."""
    for worker in ("w0", "w1"):
        with Ingestor(store, worker_id=worker, max_points_per_file=400) as ingestor:
            for block in range(4):
                for label in range(20):
                    ingestor.write(label, f"{worker}/{block}", np.full((10, 3), label + block, np.int64))
    consolidate(store)
    return store


def worker_file(store: str, worker: str) -> str:
    folder = os.path.join(store, "workers", worker, "sessions")
    (session,) = os.listdir(folder)
    return os.path.join(folder, session, "part-000000.parquet")


def snapshot(store: str) -> dict[str, str]:
    """Every file's content hash, to show verify changes nothing."""
    hashes = {}
    for folder, _, names in os.walk(store):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                hashes[os.path.relpath(os.path.join(folder, name), store)] = hashlib.sha256(f.read()).hexdigest()
    return hashes


def test_a_healthy_store_verifies_clean_deep_and_unchanged(two_workers):
    before = snapshot(two_workers)
    report = verify(two_workers, deep=True)
    assert report.ok and report.problems == ()
    assert (report.files, report.labels, report.points) == (4, 20, 1600)
    result = pocaduck("verify", two_workers, "--deep")
    assert "4 files, 20 labels, 1,600 points; 0 problems" in result.stdout
    assert snapshot(two_workers) == before


def test_a_missing_file_names_its_worker_and_exits_1(two_workers):
    os.unlink(worker_file(two_workers, "w1"))
    before = snapshot(two_workers)
    (problem,) = verify(two_workers).problems
    assert "missing" in problem.what and "re-run worker 'w1'" in problem.repair
    result = pocaduck("verify", two_workers, check=False)
    assert result.returncode == 1 and "1 problem" in result.stdout
    assert result.stderr.startswith("pocaduck verify: 1 problem found; to repair: re-run worker 'w1', then consolidate")
    assert len(result.stderr.splitlines()) == 1
    assert snapshot(two_workers) == before


def test_a_truncated_file_is_found_by_its_size(two_workers):
    path = worker_file(two_workers, "w0")
    os.truncate(path, os.path.getsize(path) // 2)
    (problem,) = verify(two_workers).problems
    assert "the index records" in problem.what and "truncated" in problem.what
    assert "re-run worker 'w0'" in problem.repair


def test_a_flipped_byte_is_found_only_by_the_deep_check(two_workers):
    path = worker_file(two_workers, "w1")
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x01]))
    assert verify(two_workers).ok
    (problem,) = verify(two_workers, deep=True).problems
    assert "checksum" in problem.what and "re-run worker 'w1'" in problem.repair
    assert pocaduck("verify", two_workers, "--deep", check=False).returncode == 1


def test_a_flipped_byte_in_a_compacted_file_says_to_compact_again(two_workers):
    compact(two_workers, workers=1)
    (folder,) = [name for name in os.listdir(os.path.join(two_workers, "compacted")) if not name.startswith(".")]
    path = os.path.join(two_workers, "compacted", folder, "part-000000.parquet")
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x01]))
    (problem,) = verify(two_workers, deep=True).problems
    assert "consolidate --from-sessions" in problem.repair and "compact again" in problem.repair


def test_an_index_row_past_the_end_of_its_file_is_found(two_workers):
    with duckdb.connect(os.path.join(two_workers, UNIFIED_INDEX)) as index:
        index.execute("UPDATE point_index SET row_offset = row_offset + 1000 WHERE label = 3 AND file_id = 0")
    problem, changed_index = verify(two_workers).problems
    assert "lie outside its" in problem.what and "label 3" in problem.what
    assert "re-run worker 'w0'" in problem.repair
    # Changed in place, the index is no longer the version the label directory was published with.
    assert changed_index.path == "label_directory.json" and "consolidate" in changed_index.repair


def test_a_damaged_manifest_is_reported_and_the_files_still_checked(two_workers):
    with open(os.path.join(two_workers, MANIFEST), "wb") as f:
        f.write(b'{"format": "pocaduck-sto')
    os.unlink(worker_file(two_workers, "w0"))
    manifest, data_file = verify(two_workers).problems
    assert manifest.path == MANIFEST and "unreadable" in manifest.what
    assert "missing" in data_file.what
    result = pocaduck("verify", two_workers, check=False)
    assert result.returncode == 1 and "create_store" in result.stderr


def test_a_manifest_whose_format_version_is_no_number_is_reported_and_refused_by_readers(two_workers):
    path = os.path.join(two_workers, MANIFEST)
    with open(path) as f:
        manifest = json.load(f)
    with open(path, "w") as f:
        json.dump({**manifest, "format_version": "1"}, f)
    (problem,) = verify(two_workers).problems
    assert problem.path == MANIFEST and "format_version '1', not a number" in problem.what
    with pytest.raises(DamagedStoreError, match=r"format_version '1'.*create_store"), Query(two_workers) as query:
        query.get_points(3)


def test_a_damaged_unified_index_says_to_consolidate(two_workers):
    with open(os.path.join(two_workers, UNIFIED_INDEX), "r+b") as f:
        f.write(b"\0" * 4096)
    (problem,) = verify(two_workers).problems
    assert problem.path == UNIFIED_INDEX and "consolidate" in problem.repair
