"""The spatial index: levels of grid cells, coarse to fine, each point in exactly one cell of one level.

Level 0 is one cell over the whole bounding box; each next level halves the
cells along the axes where they are longest in physical units, so cells stay
about cubic in anisotropic data. Level ``l`` receives about
``points_per_cell`` times its cell count of points, drawn at random, and the
finest level the rest; neuroglancer draws the coarse levels first, so a whole
store shows at once as an even subsample, and zooming in adds the finer ones.

The draw is a pure function of a point's annotation id (a splitmix64 hash), so
every task assigns its points without seeing the others, and a re-run
assigns them identically. Inside a cell points are ordered by the same hash:
neuroglancer draws the first part of a cell when it wants fewer, which is
then a random subset. Cells are keyed as neuroglancer's sharded spatial index
keys them: the compressed Morton code of the cell's grid position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sharded import bits_for

POINTS_PER_CELL = 5_000
_MAX_LEVELS = 16


@dataclass(frozen=True)
class Level:
    """One level of the spatial index; points whose hash is below ``hash_below`` and above the coarser level's."""

    grid_shape: tuple[int, ...]
    chunk_size: tuple[float, ...]
    hash_below: int  # 2**64 for the finest level: every point left

    @property
    def key_bits(self) -> int:
        return sum(bits_for(size) for size in self.grid_shape)


def plan_levels(
    lower: np.ndarray, upper: np.ndarray, voxel_size: np.ndarray, point_count: int, points_per_cell: int
) -> list[Level]:
    """The levels for ``point_count`` points inside ``[lower, upper]`` (voxel units, ``voxel_size`` nm each).

    >>> levels = plan_levels(np.zeros(3), np.array([100.0, 100, 25]), np.array([8.0, 8, 32]), 100, 10)
    >>> [(level.grid_shape, level.chunk_size) for level in levels]
    [((1, 1, 1), (100.0, 100.0, 25.0)), ((2, 2, 2), (50.0, 50.0, 12.5)), ((4, 4, 4), (25.0, 25.0, 6.25))]
    """
    extent = np.maximum(upper - lower, 1e-6)  # a flat box still has cells of some size
    grid = np.ones(len(lower), np.int64)
    levels = []
    placed = 0
    while True:
        chunk = tuple(_float32_at_least(e / g) for e, g in zip(extent.tolist(), grid.tolist(), strict=True))
        placed += points_per_cell * int(np.prod(grid))
        physical = np.array(chunk) * voxel_size
        splittable = (physical >= physical.max() / 2) & (np.array(chunk) >= 2)
        last = placed >= point_count or not splittable.any() or len(levels) == _MAX_LEVELS - 1
        hash_below = 2**64 if last else int(placed / point_count * 2**64)
        levels.append(Level(tuple(grid.tolist()), chunk, hash_below))
        if last:
            return levels
        grid = np.where(splittable, grid * 2, grid)


def _float32_at_least(value: float) -> float:
    """The smallest float32 not below ``value``: neuroglancer keeps chunk sizes as float32."""
    single = np.float32(value)
    if float(single) < value:
        single = np.nextafter(single, np.float32(np.inf))
    return float(single)


def point_hash(ids: np.ndarray) -> np.ndarray:
    """splitmix64 of annotation ids: uniform uint64 draws that decide a point's level and place in its cell.

    >>> point_hash(np.array([0, 1], np.uint64)).tolist()
    [16294208416658607535, 10451216379200822465]
    """
    z = np.asarray(ids, np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def level_of(hashes: np.ndarray, levels: list[Level]) -> np.ndarray:
    """The level each point goes to, from its hash."""
    cuts = np.array([level.hash_below for level in levels[:-1]], np.uint64)
    return np.searchsorted(cuts, hashes, side="right")


def cell_keys(geometry: np.ndarray, lower: np.ndarray, level: Level) -> np.ndarray:
    """The sharded spatial key of each point's cell at ``level``: the compressed Morton code of its grid position.

    Cells are found as neuroglancer's reader finds them, ``(p - lower) // chunk_size`` in float64.

    >>> level = Level((4, 2, 1), (1.0, 1.0, 1.0), 2**64)
    >>> cell_keys(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 1, 0]], np.float32), np.zeros(3), level).tolist()
    [0, 1, 2, 7]
    """
    grid = np.array(level.grid_shape, np.int64)
    cells = np.floor_divide(geometry.astype(np.float64) - lower, np.array(level.chunk_size)).astype(np.int64)
    cells = np.clip(cells, 0, grid - 1).astype(np.uint64)
    keys = np.zeros(len(geometry), np.uint64)
    output_bit = 0
    for bit in range(max(bits_for(size) for size in level.grid_shape)):
        for axis, size in enumerate(level.grid_shape):
            if (size - 1) >> bit:
                keys |= ((cells[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(output_bit)
                output_bit += 1
    return keys
