"""Scanning a volume with local worker processes gives exactly what a direct numpy computation gives."""

from __future__ import annotations

import json
import os
import time

import _children
import numpy as np
import pytest
from test_scan_helpers import (
    BrokenVolume,
    DyingVolume,
    SlowVolume,
    assert_store_holds,
    expected_points,
    last_worker_blocks,
    surface_mask,
)

from pocaduck import Query, StoreNotFoundError, make_demo_volume, scan_volume
from pocaduck.cli import main
from pocaduck.scan import (
    InvalidVolumeError,
    ScanCancelledError,
    ScanConflictError,
    ScanWorkerError,
    block_id_of,
    block_position,
)

BLOCKS = (16, 20, 24)  # divides none of the volume's axes


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return make_demo_volume((40, 50, 61), seed=11)


def test_surface_mode_stores_exactly_the_surface_voxels_of_every_label_in_their_blocks(volume, store):
    result = scan_volume(volume, store, block_shape=BLOCKS, workers=3, voxel_size=(33, 8, 8), voxel_offset=(5, 0, 7))
    chosen = surface_mask(volume) & (volume != 0)
    assert_store_holds(store, volume, chosen, BLOCKS, offset=(5, 0, 7))
    assert (result.workers, result.blocks, result.voxels, result.points) == (3, 3 * 3 * 3, volume.size, chosen.sum())
    with Query(store) as query:
        assert query.schema.columns == ("x", "y", "z") and query.schema.dtype == np.int32
        assert query.schema.metadata["voxel_size"] == [8, 8, 33]
        assert query.schema.metadata["voxel_offset"] == [7, 0, 5]
        assert query.schema.metadata["volume_shape"] == [61, 50, 40]


def test_all_mode_stores_every_labelled_voxel(volume, store):
    scan_volume(volume, store, block_shape=BLOCKS, workers=2, mode="all")
    assert_store_holds(store, volume, volume != 0, BLOCKS)


def test_ignore_label_none_keeps_the_background_label(store):
    volume = make_demo_volume(24, seed=4)
    scan_volume(volume, store, block_shape=10, workers=2, mode="surface", ignore_label=None)
    assert_store_holds(store, volume, surface_mask(volume), (10, 10, 10))


def test_sample_mode_caps_each_label_per_block_and_draws_the_same_points_on_any_worker_count(volume, tmp_path):
    cap = 50
    scan_volume(volume, tmp_path / "one", block_shape=BLOCKS, workers=1, mode="sample", sample_cap=cap, seed=9)
    scan_volume(volume, tmp_path / "three", block_shape=BLOCKS, workers=3, mode="sample", sample_cap=cap, seed=9)
    with Query(tmp_path / "one") as one, Query(tmp_path / "three") as three:
        for label in one.get_labels().tolist():
            points = one.get_points(label)
            assert np.array_equal(np.unique(points, axis=0), np.unique(three.get_points(label), axis=0))
            inside = volume[points[:, 2], points[:, 1], points[:, 0]]
            assert (inside == label).all() and len(np.unique(points, axis=0)) == len(points)
            blocks = one.sql(
                "SELECT block_id, sum(point_count) AS n FROM point_index WHERE label = ? GROUP BY 1", [label]
            )
            for block_id, count in zip(blocks["block_id"], blocks["n"], strict=True):
                start = np.multiply(block_position(block_id), BLOCKS)
                box = tuple(slice(s, s + b) for s, b in zip(start, BLOCKS, strict=True))
                assert count == min(cap, int((volume[box] == label).sum()))


def test_a_zarr_volume_scans_like_the_numpy_array(volume, tmp_path):
    zarr = pytest.importorskip("zarr")
    array = zarr.create_array(
        store=str(tmp_path / "labels.zarr"), shape=volume.shape, chunks=(16, 16, 16), dtype="uint64"
    )
    array[:] = volume
    scan_volume(
        zarr.open_array(str(tmp_path / "labels.zarr"), mode="r"), tmp_path / "store", block_shape=BLOCKS, workers=2
    )
    assert_store_holds(str(tmp_path / "store"), volume, surface_mask(volume) & (volume != 0), BLOCKS)


def test_progress_events_are_cumulative_per_worker_and_add_up_to_the_store(volume, store):
    events = []
    result = scan_volume(volume, store, block_shape=8, workers=2, progress=events.append, report_interval=0)
    for worker_id in ("scan-0", "scan-1"):
        mine = [e for e in events if e.worker_id == worker_id]
        assert mine[0].state == "queued" and mine[-1].state == "finished"
        assert {e.state for e in mine[1:-1]} == {"running"}
        done = [e.blocks_done for e in mine]
        assert done == sorted(done) and done[-1] == mine[-1].blocks_total
        assert len(mine) > 10  # reported block by block, not only at the end
    finals = [e for e in events if e.state == "finished"]
    assert sum(e.points_written for e in finals) == result.points
    assert sum(e.files_written for e in finals) == result.files


def test_tqdm_display_draws_a_bar_per_worker_and_a_total(volume, store, capsys):
    scan_volume(volume, store, block_shape=BLOCKS, workers=2, progress="tqdm")
    drawn = capsys.readouterr().err
    assert "total" in drawn and "worker scan-0" in drawn and "worker scan-1" in drawn


@pytest.mark.parametrize("progress", [False, True, "auto"])
def test_every_progress_form_the_other_verbs_take_works_and_fails_nothing(volume, store, progress, capsys, caplog):
    scan_volume(volume, store, block_shape=BLOCKS, workers=2, progress=progress)
    assert "failed" not in caplog.text  # a display that cannot be called was logged once per event before
    assert ("worker scan-0" in capsys.readouterr().err) is (progress is True)  # "auto" draws bars in notebooks only


def test_rescanning_replaces_instead_of_duplicating_and_other_settings_are_refused(volume, store):
    scan_volume(volume, store, block_shape=BLOCKS, workers=2)
    scan_volume(volume, store, block_shape=BLOCKS, workers=2)
    assert_store_holds(store, volume, surface_mask(volume) & (volume != 0), BLOCKS)
    with pytest.raises(ScanConflictError, match=r"block_shape \[16, 20, 24\] \(this scan: \[32, 32, 32\]\)"):
        scan_volume(volume, store, block_shape=32, workers=2)


def test_a_failing_worker_is_named_with_its_block_and_the_others_stay_queryable(volume, store):
    with pytest.raises(ScanWorkerError) as raised:
        scan_volume(BrokenVolume(volume), store, block_shape=BLOCKS, workers=3, mode="all")
    error = raised.value
    failing_block, lost = last_worker_blocks(volume, BLOCKS, workers=3)
    assert error.worker_id == "scan-2" and "unreadable" in str(error)
    assert error.block_position == failing_block and error.block_id == block_id_of(failing_block)
    assert [f.worker_id for f in error.failures] == ["scan-2"]
    assert_store_holds(store, volume, (volume != 0) & ~lost, BLOCKS)

    scan_volume(volume, store, block_shape=BLOCKS, workers=3, mode="all", resume=True)
    assert_store_holds(store, volume, volume != 0, BLOCKS)


def test_a_worker_process_that_dies_is_reported_and_the_others_stay_queryable(volume, store):
    with pytest.raises(ScanWorkerError, match="process died") as raised:
        scan_volume(DyingVolume(volume), store, block_shape=BLOCKS, workers=3, mode="all")
    assert raised.value.worker_id == "scan-2"
    _, lost = last_worker_blocks(volume, BLOCKS, workers=3)
    assert_store_holds(store, volume, (volume != 0) & ~lost, BLOCKS)


def test_a_background_scan_can_be_followed_cancelled_and_run_again(volume, store):
    slow = SlowVolume(volume, delay=0.05)
    handle = scan_volume(slow, store, block_shape=8, workers=2, background=True, report_interval=0, tile_bytes=1)
    for event in handle.events:
        if event.state == "running" and event.blocks_done >= 2:
            break
    handle.cancel()
    with pytest.raises(ScanCancelledError):
        handle.wait(timeout=60)
    assert handle.done
    finals = [e for e in handle.events if e.state == "failed"]
    assert {e.worker_id for e in finals} == {"scan-0", "scan-1"} and {e.error for e in finals} == {"cancelled"}
    assert not os.path.exists(os.path.join(store, "unified_index.duckdb"))

    scan_volume(volume, store, block_shape=8, workers=2, tile_bytes=1)
    assert_store_holds(store, volume, surface_mask(volume) & (volume != 0), (8, 8, 8))


def test_wait_with_a_timeout_returns_the_result_of_a_background_scan(volume, store):
    handle = scan_volume(volume, store, block_shape=BLOCKS, workers=2, mode="all", background=True)
    deadline = time.monotonic() + 120
    while not handle.done and time.monotonic() < deadline:
        time.sleep(0.05)
    assert handle.wait(timeout=0).points == int((volume != 0).sum())


def test_cli_scans_an_npy_file(volume, tmp_path, capsys):
    path = tmp_path / "labels.npy"
    np.save(path, volume)
    store = tmp_path / "store"
    code = main(
        [
            "scan",
            str(path),
            str(store),
            "--workers",
            "2",
            "--block-shape",
            "16,20,24",
            "--mode",
            "all",
            "--voxel-size",
            "33,8,8",
            "--no-progress",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["points"] == int((volume != 0).sum())
    assert_store_holds(str(store), volume, volume != 0, BLOCKS)
    labels, _ = expected_points(volume, volume != 0)
    with Query(store) as query:
        assert np.array_equal(query.get_labels(), np.unique(labels))
        assert query.schema.metadata["voxel_size"] == [8, 8, 33]


def test_bad_volumes_and_settings_are_refused_before_anything_is_written(store):
    with pytest.raises(InvalidVolumeError, match="integers"):
        scan_volume(np.zeros((4, 4, 4), np.float32), store)
    with pytest.raises(InvalidVolumeError, match="3 non-empty axes"):
        scan_volume(np.zeros((4, 4), np.uint64), store)
    with pytest.raises(ValueError, match="mode"):
        scan_volume(np.zeros((4, 4, 4), np.uint64), store, mode="edges")
    with pytest.raises(ValueError, match="voxel_size"):
        scan_volume(np.zeros((4, 4, 4), np.uint64), store, voxel_size=(1, 0, 1))
    assert not os.path.exists(store)


def test_a_scan_into_a_folder_of_other_files_is_refused_and_writes_nothing(volume, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(StoreNotFoundError, match=r"holds no pocaduck store .*it holds notes.txt"):
        scan_volume(volume, str(folder), block_shape=BLOCKS, workers=2)
    assert os.listdir(folder) == ["notes.txt"]


def test_a_killed_scan_leaves_no_worker_process_behind(store):
    child = _children.start("scan", store, "2")
    try:
        workers = {int(pid) for pid in _children.read_until(child, lambda lines: len(set(lines)) == 2)}
    finally:
        child.kill()
        child.wait()
    assert _children.wait_until_ended(sorted(workers)) == []
