"""Real faults in worker processes lose no finalized or written data."""

from __future__ import annotations

import multiprocessing
import signal
import threading

import pytest
from _support import ingest, labels_of, worker_points
from test_processes import BLOCKS, assert_store_holds_exactly

from pocaduck import Ingestor, WorkerNotFinalizedError, consolidate

SPAWN = multiprocessing.get_context("spawn")


def rerun_until_killed(store: str, worker: int, files_published: multiprocessing.Event) -> None:
    """Start a re-run of ``worker`` that publishes files of a new session, then wait to be killed before finalize()."""
    ingestor = Ingestor(store, worker, max_points_per_file=50)
    for block in range(20):
        for label in labels_of(worker):
            ingestor.write(label, f"rerun/{block}", worker_points(worker, label, 100 + block))
    # Buffers beyond the few in flight have been written by now: write() waits for the oldest.
    files_published.set()
    threading.Event().wait()


def test_a_killed_rerun_leaves_the_last_finalized_run_served(store):
    ingest(store, 0, BLOCKS)
    ingest(store, 1, BLOCKS)
    files_published = SPAWN.Event()
    rerun = SPAWN.Process(target=rerun_until_killed, args=(store, 1, files_published))
    rerun.start()
    try:
        assert files_published.wait(timeout=300), "the re-run never got going"
    finally:
        rerun.kill()
        rerun.join()
    assert rerun.exitcode == -signal.SIGKILL

    with pytest.raises(WorkerNotFinalizedError, match=r"worker '1'.*never called finalize"):
        consolidate(store)
    consolidate(store, ignore_unfinalized=True)
    assert_store_holds_exactly(store, [0, 1])
