"""Shared test support: worker bodies run in real child processes, and point comparison."""

from __future__ import annotations

import sys

import numpy as np

from pocaduck import Ingestor


def as_row_set(points: np.ndarray) -> list[tuple]:
    """Points as a sorted list of rows: equal exactly when the multisets of points are equal."""
    return sorted(map(tuple, np.asarray(points).tolist()))


def worker_points(worker: int, label: int, block: int, dimensions: int = 3) -> np.ndarray:
    """Deterministic points for (worker, label, block), so the parent can recompute what was written."""
    rng = np.random.default_rng([worker, label % 2**32, block])
    return rng.integers(-1000, 1000, size=(int(rng.integers(1, 50)), dimensions))


def labels_of(worker: int) -> list[int]:
    return [0, 7, 2**63 + worker, 2**64 - 1 - worker]


def ingest(store: str, worker: int, blocks: range, max_points_per_file: int = 200) -> None:
    with Ingestor(store, worker, max_points_per_file=max_points_per_file) as ingestor:
        for block in blocks:
            for label in labels_of(worker):
                ingestor.write(label, f"{worker}/{block}", worker_points(worker, label, block))


def ingest_without_end(store: str, worker: int) -> None:
    """Write forever with tiny files, so a kill always lands mid-way."""
    ingestor = Ingestor(store, worker, max_points_per_file=50)
    block = 0
    while True:
        for label in labels_of(worker):
            ingestor.write(label, f"{worker}/{block}", worker_points(worker, label, block))
        block += 1


if __name__ == "__main__":
    ingest_without_end(sys.argv[1], int(sys.argv[2]))
