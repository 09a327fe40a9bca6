"""A scan on a Dask cluster started as separate programs, as a cluster runs: one worker process is killed mid-scan.

The scheduler and two workers are the ``dask scheduler`` and ``dask worker``
executables on 127.0.0.1 (no dashboard), and the store is on S3 (moto on
loopback). The scan must survive the loss of a worker process that had
already written part of its blocks, and store exactly what the volume holds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _faults import StallingVolume, executing_keys, require
from test_scan_helpers import assert_store_holds, surface_mask

from pocaduck import make_demo_volume, scan_volume

distributed = require("distributed", "to run a scan on a Dask cluster")
require("moto", "for S3 on loopback")
psutil = require("psutil", "to check which addresses the cluster uses")

from _dask_cluster import SAFETY_SECONDS, Cluster, dask_cluster, wait_until  # noqa: E402  (imports distributed)
from _object_servers import s3_without_auth  # noqa: E402  (imports moto: only after the check that it is there)

BLOCK = 8
STALL_ON = 3  # tile_bytes=1 makes one read per block: the victim stalls in its third block, two blocks written


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    with dask_cluster(tmp_path / "dask") as started:
        yield started


@pytest.fixture(scope="module")
def s3():
    with s3_without_auth("pocaduck-dask-cluster") as server:
        yield server


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POCADUCK_CACHE_DIR", str(tmp_path / "cache"))


def connections_of(processes: list[subprocess.Popen]) -> list:
    """Every inet socket of the cluster's processes and their children: listening and connected."""
    found = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(process.pid)
            for member in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    found.extend(member.net_connections(kind="inet"))
    return found


def victim_of(cluster: Cluster, pid: int) -> str:
    """The scan worker id whose task the Dask worker process ``pid`` is running."""
    address = next(address for address, found in cluster.client.run(os.getpid).items() if found == pid)
    (key,) = cluster.client.run(executing_keys, workers=[address])[address]
    return "scan-" + key.rsplit("-", 1)[-1]  # task keys end with the scan worker id, "...-scan-<i>"


def test_a_dask_worker_process_killed_mid_scan_is_replaced_and_the_store_on_s3_is_exact(cluster, s3, tmp_path):
    volume = make_demo_volume((32, 32, 40), seed=12)
    np.save(tmp_path / "labels.npy", volume)
    (tmp_path / "gate").mkdir()
    stalling = StallingVolume(str(tmp_path / "labels.npy"), str(tmp_path / "gate"), stall_on=STALL_ON)
    store = s3.config("killed-dask-worker")
    handle = scan_volume(
        stalling,
        store,
        block_shape=BLOCK,
        workers=3,
        client=cluster.client,
        retries=1,
        background=True,
        tile_bytes=1,
        report_interval=0,
        max_points_per_file=100,
    )
    try:
        claim = Path(stalling.claim)
        wait_until(claim.exists, "a Dask worker process to stall mid-scan")
        pid = int(claim.read_text())
        victim = victim_of(cluster, pid)
        wait_until(
            lambda: handle.events.latest()[victim].blocks_done == STALL_ON - 1,
            f"{victim}'s progress events to show it is in block {STALL_ON}",
        )
        sessions = f"killed-dask-worker/workers/{victim}/sessions"
        wait_until(lambda: any(key.endswith(".parquet") for key in s3.object_keys(sessions)), "its first files")

        used = connections_of(cluster.processes)
        assert any(c.status == psutil.CONN_LISTEN for c in used)
        assert {c.laddr.ip for c in used} | {c.raddr.ip for c in used if c.raddr} == {"127.0.0.1"}

        os.kill(pid, signal.SIGKILL)
        events_before_kill = len(handle.events)
    finally:
        Path(stalling.release).touch()  # if the test failed before the kill, let the stalled task go
    result = handle.wait(timeout=SAFETY_SECONDS)

    assert result.workers == 3
    after_kill = list(handle.events)[events_before_kill:]
    assert any(e.worker_id == victim and e.state == "running" and e.blocks_done == 0 for e in after_kill), (
        "the killed worker's blocks were not scanned again from the start"
    )
    assert_store_holds(store, volume, surface_mask(volume) & (volume != 0), (BLOCK,) * 3)
    kept = {key.split("/")[4] for key in s3.object_keys(sessions.rsplit("/", 1)[0]) if "/sessions/" in key}
    assert len(kept) == 1, "the killed attempt's files were not discarded by the re-run"
