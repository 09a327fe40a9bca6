"""The layout labs use without a library: one ``.npz`` per (label, block), read back with glob.

::

    ROOT/label_<label>/block_<block_id>.npz      np.savez(path, points=points)

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> writer = NpzWriter(root)
>>> writer.write(2**64 - 1, "0_0_0", np.ones((2, 3), np.int32))
>>> NpzReader(root).get_points(2**64 - 1).shape
(2, 3)
"""

from __future__ import annotations

import glob
import os

import numpy as np


class NpzWriter:
    """Saves each write as its own file, the way a script without a store would."""

    def __init__(self, root: str):
        self.root = root

    def write(self, label: int, block_id: str, points: np.ndarray) -> None:
        folder = os.path.join(self.root, f"label_{label}")
        os.makedirs(folder, exist_ok=True)
        np.savez(os.path.join(folder, f"block_{block_id}.npz"), points=points)

    def finalize(self) -> None:
        """Nothing is buffered: every write is already a file."""


class NpzReader:
    """Globs a label's folder, loads every block file and concatenates them."""

    def __init__(self, root: str, dimensions: int = 3, dtype: str = "int32"):
        self.root = root
        self.empty = np.empty((0, dimensions), dtype=dtype)

    def get_points(self, label: int) -> np.ndarray:
        paths = sorted(glob.glob(os.path.join(glob.escape(self.root), f"label_{label}", "block_*.npz")))
        if not paths:
            return self.empty
        arrays = []
        for path in paths:
            with np.load(path) as saved:
                arrays.append(saved["points"])
        return np.concatenate(arrays)

    def close(self) -> None:
        """Nothing is held open between calls."""
