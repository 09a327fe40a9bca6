"""Blockwise extraction equals the whole-volume answer for any volume, block shape, worker count and tile shape."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_scan_helpers import expected_points, surface_mask

from pocaduck.scan import BlockGrid
from pocaduck.scan.extract import PointSelection, extract_block, read_padded
from pocaduck.scan.worker import ScanTask

LABELS = np.array([0, 0, 0, 1, 7, 2**63 + 5, 2**64 - 1], np.uint64)
sizes = st.tuples(*[st.integers(1, 11)] * 3)


def blockwise(volume: np.ndarray, block_shape, workers: int, tile_bytes: int, selection: PointSelection):
    """Every point the scan's workers would extract: each worker's reads with their halo, cut into blocks."""
    grid = BlockGrid(volume.shape, block_shape)
    tiles = grid.tiles(workers, volume.dtype.itemsize, tile_bytes)
    labels, xyz = [], []
    halo = selection.halo
    for run in grid.split(workers):
        task = ScanTask("", None, None, grid, run, tiles, selection, (0, 0, 0), "int32", 1, 1)
        done = []
        for read_start, read_stop, blocks in task.reads():
            padded = read_padded(volume, (0, 0, 0), volume.shape, read_start, read_stop, halo)
            for number in blocks:
                start, stop = grid.bounds(number)
                box = tuple(slice(a - r, b - r + 2 * halo) for a, b, r in zip(start, stop, read_start, strict=True))
                points = extract_block(np.ascontiguousarray(padded[box]), start, volume.shape, selection)
                labels.append(np.repeat(points.labels, points.counts))
                xyz.append(points.columns.T)
            done += blocks
        assert sorted(done) == list(run)  # every block of the run is read exactly once
    labels, xyz = np.concatenate(labels), np.concatenate(xyz).astype(np.int64)
    order = np.lexsort((xyz[:, 2], xyz[:, 1], xyz[:, 0], labels))
    return labels[order], xyz[order]


@settings(max_examples=60, deadline=None)
@given(
    shape=sizes,
    block_shape=sizes,
    workers=st.integers(1, 4),
    tile_bytes=st.sampled_from([1, 200, 10**6]),
    mode=st.sampled_from(["all", "surface"]),
    keep_background=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_blockwise_extraction_matches_the_whole_volume(
    shape, block_shape, workers, tile_bytes, mode, keep_background, seed
):
    volume = np.random.default_rng(seed).choice(LABELS, size=shape)
    selection = PointSelection(mode, ignore_label=None if keep_background else 0)
    chosen = surface_mask(volume) if mode == "surface" else np.ones(shape, bool)
    if not keep_background:
        chosen &= volume != 0
    want_labels, want_xyz = expected_points(volume, chosen)
    have_labels, have_xyz = blockwise(volume, block_shape, workers, tile_bytes, selection)
    assert np.array_equal(have_labels, want_labels)
    assert np.array_equal(have_xyz, want_xyz)
