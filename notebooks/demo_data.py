"""The demo store the notebooks open: a synthetic neuron segmentation scanned by worker processes.

``make lab`` and Binder's ``postBuild`` run this file before JupyterLab starts,
so the notebooks open a ready store; a notebook run elsewhere builds it here
(a few seconds) the first time it asks for it.

>>> from demo_data import demo_store  # doctest: +SKIP
>>> Query(demo_store()).info()["labels"]  # doctest: +SKIP
101
"""

from __future__ import annotations

from pathlib import Path

from pocaduck import make_demo_volume, scan_volume

DEMO_STORE = Path(__file__).resolve().parent / "demo_store"
VOLUME_SIZE = 192  # voxels per side: about a hundred neurons, a million surface points
VOXEL_SIZE = (8, 8, 8)  # nm, z, y, x
WORKERS = 4


def demo_store() -> str:
    """The demo store's path, scanning the demo volume into it first if it has not been built."""
    if not (DEMO_STORE / "unified_index.duckdb").exists():
        volume = make_demo_volume(VOLUME_SIZE, seed=0)
        scan_volume(volume, DEMO_STORE, workers=WORKERS, voxel_size=VOXEL_SIZE)
    return str(DEMO_STORE)


if __name__ == "__main__":
    print(f"demo store ready at {demo_store()}")
