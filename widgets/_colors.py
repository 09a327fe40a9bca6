"""Colors that depend only on the value they stand for: the same label is the same color in every session.

A label (or any category such as a supervoxel id) is hashed with splitmix64;
the hash picks a hue, and saturation and lightness vary a little so that
neighbouring ids stay distinguishable.
"""

from __future__ import annotations

import colorsys

import numpy as np

# Viridis at five stops: enough for a depth ramp without a plotting library.
_RAMP = np.array(
    [[0.267, 0.005, 0.329], [0.231, 0.322, 0.545], [0.129, 0.569, 0.549], [0.369, 0.788, 0.384], [0.993, 0.906, 0.144]],
    dtype=np.float32,
)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def category_colors(values: np.ndarray) -> np.ndarray:
    """One RGB row (float32 in [0, 1]) per value, a pure function of the value.

    >>> category_colors(np.array([7, 7, 8])).shape
    (3, 3)
    >>> bool((category_colors(np.array([7]))[0] == category_colors(np.array([7, 8]))[0]).all())
    True
    """
    unique, inverse = np.unique(np.asarray(values).astype(np.uint64), return_inverse=True)
    hashed = _splitmix64(unique)
    hue = (hashed & np.uint64(0xFFFF)).astype(np.float64) / 65536.0
    saturation = 0.55 + 0.35 * ((hashed >> np.uint64(16)) & np.uint64(0xFF)).astype(np.float64) / 255.0
    lightness = 0.45 + 0.15 * ((hashed >> np.uint64(24)) & np.uint64(0xFF)).astype(np.float64) / 255.0
    palette = np.array(
        [colorsys.hls_to_rgb(h, li, s) for h, li, s in zip(hue, lightness, saturation, strict=True)], np.float32
    ).reshape(-1, 3)
    return palette[inverse.reshape(-1)]


def label_color(label: int) -> str:
    """The label's color as ``#rrggbb``.

    >>> label_color(42) == label_color(42), label_color(42) != label_color(43)
    (True, True)
    """
    red, green, blue = (round(float(c) * 255) for c in category_colors(np.array([label], np.uint64))[0])
    return f"#{red:02x}{green:02x}{blue:02x}"


def ramp_colors(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Values mapped from ``low`` to ``high`` onto the viridis ramp, one RGB row each.

    >>> ramp_colors(np.array([0.0, 1.0]), 0.0, 1.0)[:, 0].astype(float).round(3).tolist()
    [0.267, 0.993]
    """
    values = np.asarray(values, np.float64)
    span = high - low if high > low else 1.0
    position = np.clip((values - low) / span, 0.0, 1.0) * (len(_RAMP) - 1)
    below = np.clip(np.floor(position).astype(np.int64), 0, len(_RAMP) - 2)
    weight = (position - below)[:, None].astype(np.float32)
    return _RAMP[below] * (1 - weight) + _RAMP[below + 1] * weight


def ramp_gradient() -> str:
    """The ramp as a CSS gradient, left (low) to right (high), for a colour bar drawn in HTML.

    >>> ramp_gradient().startswith("linear-gradient(to right, #440154")
    True
    """
    stops = ", ".join("#" + "".join(f"{round(float(c) * 255):02x}" for c in row) for row in _RAMP)
    return f"linear-gradient(to right, {stops})"
