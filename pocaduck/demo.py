"""``python -m pocaduck.demo STORE``: build a small store with worker processes, consolidate, query it.

It shows the whole life of a store in a few seconds: parallel blockwise
ingestion, consolidation, then label queries with timings.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import time

import numpy as np

from .consolidate import consolidate
from .ingest import Ingestor
from .query import Query

GRID = 4  # blocks per axis
BLOCK = 64  # voxels per block side
LABELS = [2**63 + 11, 2**64 - 1, *range(1, 49)]


def _label_points_in_block(label: int, block: tuple[int, int, int]) -> np.ndarray:
    """A blob per label wandering through the grid: deterministic, so every run builds the same store."""
    rng = np.random.default_rng([label % 2**32, *block])
    centre = np.random.default_rng(label % 2**32).uniform(0, GRID * BLOCK, 3)
    origin = np.array(block) * BLOCK
    if np.any(np.abs(origin + BLOCK / 2 - centre) > BLOCK * 1.5):
        return np.empty((0, 3), np.int32)
    return (origin + rng.integers(0, BLOCK, (int(rng.integers(50, 400)), 3))).astype(np.int32)


def _ingest_worker(store: str, worker: int, workers: int) -> None:
    blocks = [(x, y, z) for x in range(GRID) for y in range(GRID) for z in range(GRID)]
    with Ingestor(store, worker) as ingestor:
        for block in blocks[worker::workers]:
            block_id = "_".join(map(str, block))
            for label in LABELS:
                ingestor.write(label, block_id, _label_points_in_block(label, block))


def build_demo_store(store: str, workers: int = 4) -> None:
    """Ingest the demo data with ``workers`` real processes, then consolidate.

    >>> import tempfile
    >>> store = tempfile.mkdtemp()
    >>> build_demo_store(store, workers=2)
    >>> Query(store).get_labels().size
    50
    """
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_ingest_worker, args=(store, w, workers)) for w in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"demo worker process exited with code {process.exitcode}")
    consolidate(store)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store", nargs="?", default="demo_store")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    shutil.rmtree(args.store, ignore_errors=True)
    started = time.perf_counter()
    build_demo_store(args.store, args.workers)
    print(f"built {args.store} with {args.workers} worker processes in {time.perf_counter() - started:.2f} s")
    with Query(args.store) as query:
        info = query.info()
        print(f"{info['labels']} labels, {info['points']:,} points in {info['files']} files ({info['bytes']:,} bytes)")
        for label in query.get_labels()[-3:]:
            points, timing = query.get_points(int(label), use_cache=False, timing=True)
            blocks = query.get_blocks_for_label(int(label))
            print(
                f"label {int(label)}: {len(points):,} points in {len(blocks)} blocks "
                f"(e.g. {blocks[:3]}), read in {timing['total_time'] * 1e3:.2f} ms"
            )


if __name__ == "__main__":
    main()
