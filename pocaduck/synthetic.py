"""A seeded synthetic segmentation that looks like neurons, for demos, tests and benchmarks.

Each neuron is a soma with a tree of tubes that wander, branch and taper;
neurons are drawn one after the other, so later ones cut into earlier ones and
many touch without any background between them, as in a real segmentation.
Label ids are random uint64 values (about half of them above 2**63); 0 is
background. The same arguments always give the same volume, on any machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_REFERENCE_SIZE = 512
_REFERENCE_LABELS = 300


@dataclass(frozen=True)
class _Tube:
    """A capsule from ``start`` to ``end`` whose radius goes linearly from ``start_radius`` to ``end_radius``."""

    start: np.ndarray
    end: np.ndarray
    start_radius: float
    end_radius: float


def make_demo_volume(
    shape: int | Sequence[int] = (128, 128, 128),
    *,
    n_labels: int | None = None,
    seed: int = 0,
    dtype: str | np.dtype = np.uint64,
) -> np.ndarray:
    """A (Z, Y, X) label volume of branching, touching neurites over background 0.

    ``n_labels`` defaults to about 300 for 512³ and scales with the edge length
    (about 40 for 64³). Tube radii scale with the volume too, so the fraction
    of labelled voxels (about a third) stays similar from test to benchmark size.

    >>> volume = make_demo_volume(32, seed=1)
    >>> volume.shape, volume.dtype.name, bool((volume == 0).any()), bool((volume > 2**63).any())
    ((32, 32, 32), 'uint64', True, True)
    >>> bool((make_demo_volume(32, seed=1) == volume).all())
    True
    """
    shape = (int(shape),) * 3 if np.isscalar(shape) else tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive sizes, got {shape}")
    rng = np.random.default_rng(seed)
    size = float(np.cbrt(np.prod(shape, dtype=np.float64)))
    if n_labels is None:
        n_labels = max(4, round(_REFERENCE_LABELS * size / _REFERENCE_SIZE))
    ids = _label_ids(rng, n_labels)
    volume = np.zeros(shape, dtype=dtype)
    extent = np.array(shape, dtype=np.float64)
    radius_scale = max(1.0, (size / 64) ** 0.5)
    for label in ids:
        for tube in _grow_neuron(rng, extent, radius_scale):
            _draw_tube(volume, tube, label)
    return volume


def _label_ids(rng: np.random.Generator, count: int) -> np.ndarray:
    """Distinct random non-zero uint64 ids, drawn over the whole range so many exceed 2**63."""
    ids = np.unique(rng.integers(1, 2**64 - 1, size=count * 2, dtype=np.uint64, endpoint=True))
    return rng.permutation(ids)[:count]


def _grow_neuron(rng: np.random.Generator, extent: np.ndarray, radius_scale: float) -> list[_Tube]:
    """A soma and a random tree of tapering, branching tubes that ends when branches leave the volume or thin out."""
    soma = rng.uniform(0.1, 0.9, 3) * extent
    soma_radius = rng.uniform(3.0, 5.0) * radius_scale
    tubes = [_Tube(soma, soma, soma_radius, soma_radius)]
    step = 4.0 * radius_scale
    min_radius = 1.0 * radius_scale
    branches = [(soma, _unit(rng.normal(size=3)), soma_radius * 0.6)] + [
        (soma, _unit(rng.normal(size=3)), soma_radius * 0.45) for _ in range(rng.integers(1, 4))
    ]
    budget = int(30 * extent.max() / step)  # segments per neuron: keeps the tree's length proportional to the volume
    while branches and budget > 0:
        position, direction, radius = branches.pop()
        while budget > 0 and radius >= min_radius and np.all((position > -step) & (position < extent + step)):
            direction = _unit(direction + rng.normal(scale=0.35, size=3))
            end = position + direction * step * rng.uniform(0.7, 1.3)
            end_radius = radius * rng.uniform(0.975, 1.0)
            tubes.append(_Tube(position, end, radius, end_radius))
            budget -= 1
            if rng.random() < 0.08:
                branches.append((end, _unit(direction + rng.normal(scale=1.0, size=3)), end_radius * 0.75))
            position, radius = end, end_radius
    return tubes


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-9)


def _draw_tube(volume: np.ndarray, tube: _Tube, label: np.uint64) -> None:
    """Set every voxel whose centre lies inside the tapered capsule, within the tube's bounding box only."""
    reach = max(tube.start_radius, tube.end_radius)
    low = np.maximum(np.floor(np.minimum(tube.start, tube.end) - reach), 0).astype(int)
    high = np.minimum(np.ceil(np.maximum(tube.start, tube.end) + reach) + 1, volume.shape).astype(int)
    if np.any(high <= low):
        return
    z, y, x = (np.arange(lo, hi, dtype=np.float32) for lo, hi in zip(low, high, strict=True))
    dz, dy, dx = z[:, None, None] - tube.start[0], y[None, :, None] - tube.start[1], x[None, None, :] - tube.start[2]
    axis = (tube.end - tube.start).astype(np.float32)
    length2 = float(axis @ axis)
    along = (dz * axis[0] + dy * axis[1] + dx * axis[2]) / length2 if length2 > 0 else np.zeros((1, 1, 1), np.float32)
    along = np.clip(along, 0.0, 1.0)
    distance2 = (dz - along * axis[0]) ** 2 + (dy - along * axis[1]) ** 2 + (dx - along * axis[2]) ** 2
    radius = tube.start_radius + along * (tube.end_radius - tube.start_radius)
    region = volume[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
    region[distance2 <= radius * radius] = label
