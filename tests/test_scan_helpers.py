"""Shared by the scan tests: what a store should hold, computed directly over the whole volume, and volumes that misbehave.

The volume wrappers live in an importable module because worker processes
(local or Dask) unpickle them by name.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from pocaduck import Query
from pocaduck.scan import BlockGrid, block_id_of
from pocaduck.scan.extract import PointSelection
from pocaduck.scan.worker import ScanTask


def surface_mask(volume: np.ndarray) -> np.ndarray:
    """Voxels with a 6-neighbour of another label, or on the volume's border: computed on the whole volume."""
    surface = np.zeros(volume.shape, bool)
    for axis in range(3):
        differs = np.diff(volume, axis=axis) != 0
        lower, upper, first, last = ([slice(None)] * 3 for _ in range(4))
        lower[axis], upper[axis], first[axis], last[axis] = slice(0, -1), slice(1, None), 0, -1
        surface[tuple(lower)] |= differs
        surface[tuple(upper)] |= differs
        surface[tuple(first)] = True
        surface[tuple(last)] = True
    return surface


def expected_points(volume: np.ndarray, chosen: np.ndarray, offset=(0, 0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """(labels, xyz) of the chosen voxels, sorted by label then x, y, z."""
    zyx = np.argwhere(chosen)
    labels = volume[chosen].astype(np.uint64)
    xyz = zyx[:, ::-1] + np.array(offset[::-1])
    return _sorted(labels, xyz)


def stored_points(store: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, xyz) of every point in the store, sorted like :func:`expected_points`."""
    with Query(store) as query:
        table = query.get_points(query.get_labels().tolist(), output="arrow")
    labels = table.column("label").to_numpy().astype(np.uint64)
    xyz = np.column_stack([table.column(c).to_numpy() for c in ("x", "y", "z")]).astype(np.int64)
    return _sorted(labels, xyz)


def _sorted(labels: np.ndarray, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((xyz[:, 2], xyz[:, 1], xyz[:, 0], labels))
    return labels[order], xyz[order].astype(np.int64)


def expected_label_blocks(volume: np.ndarray, chosen: np.ndarray, block_shape) -> set[tuple[int, int]]:
    """Every (label, block id) pair the chosen voxels fall in."""
    zyx = np.argwhere(chosen)
    positions = zyx // np.array(block_shape)
    pairs = np.unique(np.column_stack([volume[chosen].astype(np.uint64), positions.astype(np.uint64)]), axis=0)
    return {(int(label), block_id_of(position)) for label, *position in pairs.tolist()}


def stored_label_blocks(store: str) -> set[tuple[int, int]]:
    with Query(store) as query:
        rows = query.sql("SELECT DISTINCT label, block_id FROM point_index", output="numpy")
    return set(zip(rows["label"].astype(np.uint64).tolist(), rows["block_id"].tolist(), strict=True))


def assert_store_holds(store: str, volume: np.ndarray, chosen: np.ndarray, block_shape, offset=(0, 0, 0)) -> None:
    want_labels, want_xyz = expected_points(volume, chosen, offset)
    have_labels, have_xyz = stored_points(store)
    assert np.array_equal(have_labels, want_labels)
    assert np.array_equal(have_xyz, want_xyz)
    assert stored_label_blocks(store) == expected_label_blocks(volume, chosen, block_shape)


class SlowVolume:
    """A numpy volume whose every read takes ``delay`` seconds, so a scan lasts long enough to watch or cancel."""

    def __init__(self, data: np.ndarray, delay: float):
        self.data, self.delay = data, delay
        self.shape, self.dtype = data.shape, data.dtype

    def __getitem__(self, key):
        time.sleep(self.delay)
        return self.data[key]


class BrokenVolume:
    """A numpy volume that cannot read its far corner voxel, like a missing chunk there."""

    def __init__(self, data: np.ndarray):
        self.data = data
        self.shape, self.dtype = data.shape, data.dtype

    def __getitem__(self, key):
        if all(k.stop >= n for k, n in zip(key, self.shape, strict=True)):
            raise OSError("the chunk at the far corner is unreadable")
        return self.data[key]


def last_worker_blocks(volume: np.ndarray, block_shape, workers: int) -> tuple[tuple, np.ndarray]:
    """Where the last worker (the one reading the far corner) fails, and a mask of the voxels of all its blocks.

    Follows the documented plan: contiguous runs of blocks in raster order, read tile by tile.
    """
    grid = BlockGrid(volume.shape, block_shape)
    run = grid.split(workers)[-1]
    task = ScanTask(
        "",
        None,
        None,
        grid,
        run,
        grid.tiles(workers, volume.dtype.itemsize),
        PointSelection("all"),
        (0, 0, 0),
        "int32",
        1,
        1,
    )
    failing = next(blocks[0] for _, stop, blocks in task.reads() if stop == volume.shape)
    owned = np.zeros(volume.shape, bool)
    for number in run:
        start, stop = grid.bounds(number)
        owned[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = True
    return grid.position(failing), owned


class FlakyVolume:
    """A numpy volume whose ``fail_on``-th read fails the first time only (a marker file remembers it failed)."""

    def __init__(self, data: np.ndarray, marker: str, fail_on: int = 2):
        self.data, self.marker, self.fail_on = data, marker, fail_on
        self.shape, self.dtype = data.shape, data.dtype
        self.reads = 0

    def __getitem__(self, key):
        self.reads += 1
        if self.reads == self.fail_on:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                raise OSError("transient read error (injected once)")
        return self.data[key]


class DyingVolume(BrokenVolume):
    """A numpy volume whose reader process is killed (as by the OOM killer) when it reads the far corner."""

    def __getitem__(self, key):
        if all(k.stop >= n for k, n in zip(key, self.shape, strict=True)):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.data[key]
