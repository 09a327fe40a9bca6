"""The same scan on a real dask.distributed cluster of processes on loopback: exact, live, and safe to retry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_scan_helpers import (
    BrokenVolume,
    FlakyVolume,
    SlowVolume,
    assert_store_holds,
    last_worker_blocks,
    surface_mask,
)

from pocaduck import make_demo_volume, scan_volume
from pocaduck.cli import main
from pocaduck.scan import ScanCancelledError, ScanWorkerError

distributed = pytest.importorskip("distributed")

BLOCKS = (16, 20, 24)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return make_demo_volume((40, 50, 61), seed=12)


def test_dask_scan_stores_exactly_the_surface_voxels(client, volume, store):
    result = scan_volume(volume, store, block_shape=BLOCKS, workers=3, client=client)
    assert_store_holds(store, volume, surface_mask(volume) & (volume != 0), BLOCKS)
    assert result.workers == 3 and result.voxels == volume.size


def test_a_task_that_fails_once_is_retried_and_the_result_stays_exact(client, volume, tmp_path):
    marker = tmp_path / "failed-once"
    flaky = FlakyVolume(volume, str(marker), fail_on=2)  # the second tile: after some files were written
    store = str(tmp_path / "store")
    scan_volume(flaky, store, block_shape=8, workers=2, mode="all", client=client, retries=1, max_points_per_file=500)
    assert marker.exists()
    assert_store_holds(store, volume, volume != 0, (8, 8, 8))


def test_events_arrive_from_dask_workers_while_they_run(client, volume, store):
    events = []
    slow = SlowVolume(volume, delay=0.02)
    scan_volume(
        slow, store, block_shape=10, workers=2, client=client, progress=events.append, report_interval=0, tile_bytes=1
    )
    for worker_id in ("scan-0", "scan-1"):
        mine = [e for e in events if e.worker_id == worker_id]
        assert mine[-1].state == "finished" and mine[-1].blocks_done == mine[-1].blocks_total
        assert any(e.state == "running" and 0 < e.blocks_done < e.blocks_total for e in mine)


def test_a_failing_dask_task_is_reported_and_the_others_stay_queryable(client, volume, store):
    with pytest.raises(ScanWorkerError) as raised:
        scan_volume(BrokenVolume(volume), store, block_shape=BLOCKS, workers=3, mode="all", client=client)
    failing_block, lost = last_worker_blocks(volume, BLOCKS, workers=3)
    assert raised.value.worker_id == "scan-2" and raised.value.block_position == failing_block
    assert_store_holds(store, volume, (volume != 0) & ~lost, BLOCKS)


def test_cancelling_a_background_dask_scan_stops_its_tasks_and_a_rerun_is_exact(client, volume, store):
    slow = SlowVolume(volume, 0.05)  # tile_bytes=1: one read, so one delay, per block
    handle = scan_volume(slow, store, block_shape=8, workers=2, client=client, background=True, tile_bytes=1)
    for event in handle.events:
        if event.state == "running" and event.blocks_done >= 2:
            handle.cancel()
            break
    with pytest.raises(ScanCancelledError):
        handle.wait(timeout=60)
    scan_volume(volume, store, block_shape=8, workers=2, client=client, tile_bytes=1)
    assert_store_holds(store, volume, surface_mask(volume) & (volume != 0), (8, 8, 8))


def test_cli_scans_a_zarr_volume_on_a_dask_scheduler(client, volume, tmp_path, capsys):
    zarr = pytest.importorskip("zarr")
    array = zarr.create_array(store=str(tmp_path / "labels.zarr"), shape=volume.shape, chunks=BLOCKS, dtype="uint64")
    array[:] = volume
    store = str(tmp_path / "store")
    address = client.scheduler.address
    arguments = ["scan", str(tmp_path / "labels.zarr"), store, "--workers", "3", "--block-shape", "16,20,24"]
    assert main([*arguments, "--scheduler", address, "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["workers"] == 3
    assert_store_holds(store, volume, surface_mask(volume) & (volume != 0), BLOCKS)
