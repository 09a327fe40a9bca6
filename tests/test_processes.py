"""Real worker processes: several writing one store at once, and one killed with SIGKILL mid-write."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _support import as_row_set, ingest, labels_of, worker_points

from pocaduck import Query, WorkerNotFinalizedError, consolidate

BLOCKS = range(12)


def expected_points(workers, label):
    parts = [worker_points(w, label, b) for w in workers for b in BLOCKS if label in labels_of(w)]
    return np.concatenate(parts) if parts else np.empty((0, 3))


def assert_store_holds_exactly(store, workers):
    with Query(store) as query:
        labels = sorted({label for w in workers for label in labels_of(w)})
        assert query.get_labels().tolist() == labels
        for label in labels:
            assert as_row_set(query.get_points(label, use_cache=False)) == as_row_set(expected_points(workers, label))
        for path in query.sql("SELECT path FROM files")["path"]:
            assert os.path.exists(os.path.join(store, path)), f"index references missing file {path}"


def test_several_worker_processes_write_one_store_at_once(store):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=ingest, args=(store, w, BLOCKS)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
        assert process.exitcode == 0
    consolidate(store)
    assert_store_holds_exactly(store, range(4))


def start_endless_worker(store, worker):
    support = Path(__file__).with_name("_support.py")
    return subprocess.Popen([sys.executable, str(support), store, str(worker)], env={**os.environ, "PYTHONPATH": ""})


def wait_for_published_files(store, worker, count, process):
    sessions = Path(store) / "workers" / str(worker) / "sessions"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(list(sessions.glob("*/part-*.parquet"))) >= count:
            return
        assert process.poll() is None, "the worker died on its own"
        time.sleep(0.05)
    pytest.fail("the worker never published files")


def test_a_worker_killed_mid_write_leaves_a_usable_store_and_reruns_exactly(store):
    ingest(store, 0, BLOCKS)
    ingest(store, 1, BLOCKS)
    victim = start_endless_worker(store, 2)
    try:
        wait_for_published_files(store, 2, 5, victim)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert victim.returncode == -signal.SIGKILL

    with pytest.raises(WorkerNotFinalizedError, match="worker '2'"):
        consolidate(store)
    consolidate(store, ignore_unfinalized=True)
    assert_store_holds_exactly(store, [0, 1])

    ingest(store, 2, BLOCKS)  # the same worker id, from the start
    consolidate(store)
    assert_store_holds_exactly(store, [0, 1, 2])
    sessions = list((Path(store) / "workers" / "2" / "sessions").iterdir())
    assert len(sessions) == 1, "the killed run's files were not cleaned up"
