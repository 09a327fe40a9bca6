"""Per-block point extraction: which voxels of a block become points, grouped by label, in global coordinates.

Modes:

``all``
    every voxel of every label.
``surface``
    voxels with at least one of their 6 face neighbours holding a different
    label, where a neighbour outside the volume counts as different. The
    neighbours are read from the volume (a one-voxel halo around the block), so
    the answer is the same as over the whole volume at once: block borders
    never create or hide surface voxels.
``sample``
    at most ``sample_cap`` voxels per label per block, drawn without
    replacement from all its voxels, seeded by ``(seed, block_id)`` so a re-run
    (on any number of workers) draws the same points.

Points are ``x, y, z`` = (axis 2, axis 1, axis 0) of the volume plus the
scan's voxel offset. Grouping is vectorised: the selected voxels are cut into
runs of equal labels in raster order, the runs are sorted by label and expanded
back; this beats ``fastremap.point_cloud`` here (see ``bench/bench_scan.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import InvalidVolumeError

Mode = Literal["all", "surface", "sample"]
MODES: tuple[str, ...] = ("all", "surface", "sample")


@dataclass(frozen=True)
class PointSelection:
    """Which voxels become points; fixed for a whole scan."""

    mode: Mode = "surface"
    ignore_label: int | None = 0
    sample_cap: int = 1000
    seed: int = 0

    @property
    def halo(self) -> int:
        return 1 if self.mode == "surface" else 0


@dataclass
class BlockPoints:
    """One block's points grouped by label: ``columns[:, starts[i]:starts[i] + counts[i]]`` belong to ``labels[i]``.

    ``columns`` is (3, N) with rows x, y, z, and labels come sorted, so
    ``Ingestor.write_block`` takes the block as it is, without reordering.
    """

    labels: np.ndarray
    counts: np.ndarray
    columns: np.ndarray

    @property
    def starts(self) -> np.ndarray:
        return np.cumsum(self.counts) - self.counts

    @property
    def point_count(self) -> int:
        return int(self.columns.shape[1])


def read_padded(
    volume: Any,
    origin: tuple[int, ...],
    volume_shape: tuple[int, ...],
    start: tuple,
    stop: tuple,
    halo: int,
    buffer: np.ndarray | None = None,
) -> np.ndarray:
    """Voxels ``[start - halo, stop + halo)`` as a C-contiguous array; outside the volume is filled with 0.

    ``volume`` may be a cutout of the whole volume that begins at ``origin``.
    The result lives in ``buffer`` (a flat array) when it is big enough and of
    the volume's dtype: reusing memory is much cheaper than touching fresh
    pages for every read.
    """
    wanted_start = [s - halo for s in start]
    wanted_stop = [s + halo for s in stop]
    inside_start = [max(s, 0) for s in wanted_start]
    inside_stop = [min(s, v) for s, v in zip(wanted_stop, volume_shape, strict=True)]
    cut = tuple(slice(a - o, b - o) for a, b, o in zip(inside_start, inside_stop, origin, strict=True))
    data = np.asarray(volume[cut])
    shape = [b - a for a, b in zip(wanted_start, wanted_stop, strict=True)]
    size = int(np.prod(shape))
    if buffer is not None and buffer.size >= size and buffer.dtype == data.dtype:
        padded = buffer[:size].reshape(shape)
    else:
        padded = np.empty(shape, dtype=data.dtype)
    if inside_start != wanted_start or inside_stop != wanted_stop:
        padded.fill(0)
    place = tuple(slice(a - w, b - w) for a, b, w in zip(inside_start, inside_stop, wanted_start, strict=True))
    padded[place] = data
    return padded


def extract_block(
    padded: np.ndarray,
    start: tuple[int, ...],
    volume_shape: tuple[int, ...],
    selection: PointSelection,
    offset: tuple[int, ...] = (0, 0, 0),
    *,
    block_id: int = 0,
    dtype: str | np.dtype = "int32",
) -> BlockPoints:
    """The points of one block read by :func:`read_padded` (with ``selection.halo``), grouped by label.

    >>> volume = np.zeros((4, 4, 4), np.uint64)
    >>> volume[1:3, 1:3, 1:3] = 7
    >>> points = extract_block(read_padded(volume, (0, 0, 0), volume.shape, (0, 0, 0), (4, 4, 4), 0), (0, 0, 0),
    ...                        volume.shape, PointSelection("all"))
    >>> points.labels.tolist(), points.counts.tolist(), points.columns[:, 0].tolist()
    ([7], [8], [1, 1, 1])
    """
    flat = padded.ravel()
    chosen = _chosen_voxels(padded, start, volume_shape, selection)
    index = np.flatnonzero(chosen)
    labels, counts, order = group_by_label(flat[index])
    index = index[order]
    if selection.mode == "sample":
        keep, counts = _sample(counts, selection.sample_cap, np.random.default_rng([selection.seed, block_id]))
        index = index[keep]
    if labels.dtype.kind == "i" and len(labels) and labels[0] < 0:
        raise InvalidVolumeError(f"the volume holds negative label {labels[0]}; labels must be in [0, 2**64)")
    origin = [s - selection.halo + o for s, o in zip(start, offset, strict=True)]
    return BlockPoints(labels.astype(np.uint64), counts, _coordinates(index, padded.shape, origin, dtype))


def _chosen_voxels(
    padded: np.ndarray, start: tuple[int, ...], volume_shape: tuple[int, ...], selection: PointSelection
) -> np.ndarray:
    """A flat boolean mask over ``padded``: the block's voxels that become points (halo excluded)."""
    flat = padded.ravel()
    if selection.mode != "surface":
        chosen = np.ones(flat.size, bool) if selection.ignore_label is None else flat != selection.ignore_label
        return chosen
    # Compare each voxel with its neighbour one step along each axis in flat
    # (C-order) space: contiguous 1D comparisons, much faster than 3D slices.
    # Steps that wrap around a row or plane only touch halo voxels, dropped below.
    surface = np.zeros(flat.size, bool)
    for step in (1, padded.shape[2], padded.shape[1] * padded.shape[2]):
        differs = flat[step:] != flat[:-step]
        surface[step:] |= differs
        surface[:-step] |= differs
    cube = surface.reshape(padded.shape)
    for axis in range(3):  # a face on the volume's border has an outside neighbour
        if start[axis] == 0:
            cube[(slice(None),) * axis + (1,)] = True
        if start[axis] + padded.shape[axis] - 2 == volume_shape[axis]:
            cube[(slice(None),) * axis + (-2,)] = True
    surface &= _interior(padded.shape)
    if selection.ignore_label is not None:
        surface &= flat != selection.ignore_label
    return surface


@functools.lru_cache(maxsize=16)
def _interior(shape: tuple[int, ...]) -> np.ndarray:
    """Flat mask of the voxels of a halo-padded block that are not halo."""
    interior = np.zeros(shape, bool)
    interior[1:-1, 1:-1, 1:-1] = True
    interior.flags.writeable = False
    return interior.ravel()


def group_by_label(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted distinct labels, their counts, and the stable permutation that groups ``labels`` by label.

    Labels in a segmentation come in runs (a neurite crosses many voxels in a
    row), so sorting the runs instead of the voxels sorts far fewer items.

    >>> group_by_label(np.array([5, 5, 2, 5, 2], np.uint64))
    (array([2, 5], dtype=uint64), array([2, 3]), array([2, 4, 0, 1, 3]))
    """
    if len(labels) == 0:
        return labels, np.zeros(0, np.int64), np.zeros(0, np.int64)
    run_starts = np.flatnonzero(np.concatenate(([True], labels[1:] != labels[:-1])))
    run_lengths = np.diff(run_starts, append=len(labels))
    run_labels = labels[run_starts]
    order = np.argsort(run_labels, kind="stable")
    sorted_labels, run_starts, run_lengths = run_labels[order], run_starts[order], run_lengths[order]
    ends = np.cumsum(run_lengths)
    permutation = np.repeat(run_starts - (ends - run_lengths), run_lengths) + np.arange(ends[-1])
    firsts = np.flatnonzero(np.concatenate(([True], sorted_labels[1:] != sorted_labels[:-1])))
    return sorted_labels[firsts], np.add.reduceat(run_lengths, firsts), permutation


def _sample(counts: np.ndarray, cap: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in label-grouped order) of at most ``cap`` random points per label, and the new counts.

    Only labels with more than ``cap`` points are drawn from, one ``choice`` per
    such label: a loop over labels, each draw in C.
    """
    keep = np.ones(int(counts.sum()), bool)
    over = np.flatnonzero(counts > cap)
    starts = np.cumsum(counts) - counts
    for start, count in zip(starts[over].tolist(), counts[over].tolist(), strict=True):
        drawn = np.zeros(count, bool)
        drawn[rng.choice(count, cap, replace=False)] = True
        keep[start : start + count] = drawn
    return np.flatnonzero(keep), np.minimum(counts, cap)


def _coordinates(index: np.ndarray, shape: tuple[int, ...], origin: list[int], dtype: str | np.dtype) -> np.ndarray:
    """Flat indices into an array of ``shape`` at ``origin`` → (3, N) global x, y, z.

    Division by a scalar on int32 is the fastest way numpy has (a lookup table
    or ``unravel_index`` is slower).
    """
    plane, row = shape[1] * shape[2], shape[2]
    flat = index.astype(dtype)
    z = flat // plane
    rest = flat - z * plane
    y = rest // row
    columns = np.empty((3, len(flat)), dtype=dtype)
    np.add(rest - y * row, origin[2], out=columns[0])
    np.add(y, origin[1], out=columns[1])
    np.add(z, origin[0], out=columns[2])
    return columns
