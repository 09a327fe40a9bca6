"""Large point clouds cut into pieces of nearby points, so a pick in the browser tests few of them.

three.js raycasts a ``Points`` object by testing every one of its points against
the ray, after a test of the object's bounding sphere; with 2 M points in one
object a double-click cost 60 ms of JavaScript before the pick could leave the
browser. Cut into pieces of neighbours, the ray misses most pieces' spheres and
only the points of the few it passes near are tested.

Neighbours come from a Morton (Z-order) code of the positions on a 32³ grid:
15 bits, so numpy's stable argsort is a radix sort, and consecutive runs of that
order are compact boxes in space.
"""

from __future__ import annotations

import numpy as np

PIECE_POINTS = 32_768  # points per piece of a large cloud: 62 pieces for 2 M points
WHOLE_POINTS = 262_144  # clouds up to this size stay one object: raycasting them costs a few ms
_BITS = 5  # bits per axis of the Morton code: 3 * 5 = 15 bits fit a uint16
# Each 5-bit cell number with its bits spread three apart: bit b moves to bit 3 * b.
_SPREAD = np.array([sum(((v >> b) & 1) << (3 * b) for b in range(_BITS)) for v in range(1 << _BITS)], np.uint16)


def piece_count(points: int) -> int:
    """How many pieces a cloud of ``points`` points is cut into: 1 up to ``WHOLE_POINTS`` points.

    Example::

        >>> piece_count(200_000), piece_count(2_000_000)
        (1, 62)
    """
    return 1 if points <= WHOLE_POINTS else -(-points // PIECE_POINTS)


def spatial_order(positions: np.ndarray) -> np.ndarray:
    """The rows of ``positions`` (n × 3) ordered so that neighbours in space are neighbours in the order.

    Cut into consecutive runs (``np.array_split(order, piece_count(n))``) it gives compact pieces.

    Example::

        >>> positions = np.array([[0, 0, 0], [9, 9, 9], [1, 0, 0], [9, 8, 9]], np.float32)
        >>> spatial_order(positions).tolist()
        [0, 2, 3, 1]
    """
    columns = [np.ascontiguousarray(positions[:, axis]) for axis in range(3)]  # column by column: 5x faster
    code = np.zeros(len(positions), np.uint16)
    for axis, column in enumerate(columns):
        low, high = column.min(), column.max()
        scale = np.float32((1 << _BITS) / max(float(high - low), 1e-30))
        cell = np.minimum((column - low) * scale, (1 << _BITS) - 1).astype(np.uint8)
        code |= _SPREAD[cell] << np.uint16(axis)
    return np.argsort(code, kind="stable")  # 15-bit keys: numpy sorts them by radix
