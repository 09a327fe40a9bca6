"""Consolidation by ranges on Dask workers that share nothing with the consolidating process but the bucket.

The scheduler and two workers are separate ``dask scheduler`` / ``dask worker``
programs on loopback, each worker with its own scratch folder, temp folder and
index cache; the store is on S3 (moto on loopback). Where the system allows it
(unprivileged user and mount namespaces), each worker also sees an empty folder
where the consolidating process keeps its scratch, as a worker on another
machine would: a range part written to or read from a local path cannot pass.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from _faults import require
from test_consolidate_split import assert_serves_what_was_written, directory, unified_index, write_blocks

from pocaduck import consolidate
from pocaduck.gc import collect_garbage
from pocaduck.layout import BUILDING_PREFIX, building_parts, building_parts_lock
from pocaduck.store import open_store

require("distributed", "to consolidate on a Dask cluster")
require("moto", "for S3 on loopback")

from _dask_cluster import Cluster, dask_cluster  # noqa: E402  (imports distributed)
from _object_servers import s3_without_auth  # noqa: E402  (imports moto: only after the check that it is there)

range_merge = pytest.importorskip("pocaduck.range_merge")
HIGH = 2**63


@pytest.fixture(scope="module")
def s3():
    with s3_without_auth("pocaduck-consolidate-cluster") as server:
        yield server


@pytest.fixture
def coordinator_scratch(tmp_path, monkeypatch) -> Path:
    """The consolidating process's own temp folder and index cache, which no worker may rely on."""
    scratch = tmp_path / "coordinator"
    (scratch / "tmp").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch / "tmp"))
    monkeypatch.setenv("POCADUCK_CACHE_DIR", str(scratch / "cache"))
    return scratch


def _private_mounts_work() -> bool:
    probe = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs probe /mnt"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture
def cluster(tmp_path, coordinator_scratch) -> Iterator[Cluster]:
    """Two workers, each with its own temp folder and cache, blind to the coordinator's scratch where possible."""
    folder = tmp_path / "dask"

    def own_folders(number: int) -> dict[str, str]:
        (folder / f"worker-{number}" / "tmp").mkdir(parents=True)
        return {
            "TMPDIR": str(folder / f"worker-{number}" / "tmp"),
            "POCADUCK_CACHE_DIR": str(folder / f"cache-{number}"),
        }

    hide = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", 'mount -t tmpfs hidden "$0" && exec "$@"']
    wrapper = [*hide, str(coordinator_scratch)] if _private_mounts_work() else []
    folder.mkdir()
    with dask_cluster(folder, 2, own_folders, lambda number: wrapper) as started:
        yield started


@pytest.fixture
def written(s3, request):
    """A store on S3 that two ingest workers wrote, labels on both sides of 2**63, with what each label holds."""
    store = s3.config(request.node.name)
    rng = np.random.default_rng(11)
    labels = np.r_[np.arange(300, dtype=np.uint64), np.arange(HIGH - 30, HIGH + 30, dtype=np.uint64)]
    blocks = {worker: [(block, rng.choice(labels, 200)) for block in range(2)] for worker in range(2)}
    return store, write_blocks(store, blocks, points_per_file=200)


def parts_in_bucket(s3, store) -> list[str]:
    return [key for key in s3.object_keys(store.base_path.split("/", 3)[3]) if BUILDING_PREFIX in key]


def test_ranges_merged_on_workers_sharing_only_the_bucket_give_the_serial_index(s3, written, cluster, tmp_path):
    store, points = written
    consolidate(store)
    serial = unified_index(store), directory(store)
    with mock.patch.object(range_merge, "_RANGE_ROWS", 150):  # several ranges, so both workers get some
        consolidate(store, client=cluster.client)
    assert (unified_index(store), directory(store)) == serial
    assert_serves_what_was_written(store, points)
    for number in range(2):  # each worker fetched the worker indexes into its own cache: it ran ranges
        assert os.listdir(tmp_path / "dask" / f"cache-{number}"), f"dask worker {number} ran no range"
    assert parts_in_bucket(s3, store) == [], "range parts were left in the bucket"


def test_gc_removes_the_range_parts_a_dead_build_left_in_the_bucket_and_keeps_a_live_ones(s3, written):
    store, points = written
    consolidate(store)
    storage = open_store(store).storage
    for build in ("dead", "live"):
        storage.write_bytes(f"{building_parts(build)}/000000.rows.parquet", b"a part")
    with storage.lock(building_parts_lock("live")):
        assert collect_garbage(store, dry_run=True).removed == [building_parts("dead")]
        assert collect_garbage(store).removed == [building_parts("dead")]
        assert parts_in_bucket(s3, store) == [
            f"{store.base_path.split('/', 3)[3]}/{building_parts('live')}/000000.rows.parquet"
        ]
    assert collect_garbage(store).removed == [building_parts("live")]
    assert parts_in_bucket(s3, store) == []
    assert_serves_what_was_written(store, points)
