"""Real faults in worker processes (SIGKILL, a file size limit, no room at all) lose no finalized or written data."""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import subprocess
import threading

import numpy as np
import pytest
from _support import as_row_set, ingest, labels_of, worker_points
from test_processes import BLOCKS, assert_store_holds_exactly

from pocaduck import (
    Ingestor,
    Query,
    StoreWriteError,
    WorkerNotFinalizedError,
    WorkerWriteError,
    clear_cache,
    consolidate,
)
from pocaduck.cli import main as cli

SPAWN = multiprocessing.get_context("spawn")
FILE_POINTS = 200_000
GOOD = np.arange(6, dtype=np.int64).reshape(2, 3)
FILE_SIZE_LIMIT = 2 * 2**20  # above the small files and the index, below a file of FILE_POINTS random int64


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


def limited_session() -> list[tuple[int, str, np.ndarray]]:
    """A file's worth of writes, 1,000 small writes, then one write that makes the next file too large."""
    rng = np.random.default_rng(5)
    writes = [(i % 50, f"first/{i}", rng.integers(-1000, 1000, (2000, 3))) for i in range(100)]
    writes += [(i % 50, f"small/{i}", rng.integers(-1000, 1000, (20, 3))) for i in range(1000)]
    writes.append((99, "large", rng.integers(-(2**62), 2**62, (FILE_POINTS, 3))))
    return writes


def write_under_a_file_size_limit(store: str, errors: multiprocessing.Queue) -> None:
    """Write ``limited_session`` while files may not exceed FILE_SIZE_LIMIT, then lift the limit and finalize again."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, hard))
    ingestor = Ingestor(store, "limited", max_points_per_file=FILE_POINTS)
    try:
        for label, block_id, points in limited_session():
            ingestor.write(label, block_id, points)
        ingestor.finalize()
    except Exception as error:
        errors.put((type(error), str(error)))
    try:
        ingestor.finalize()  # the cause is still there: it fails again, keeping everything
    except Exception as error:
        errors.put((type(error), str(error)))
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    ingestor.finalize()


def test_a_file_too_large_for_the_disk_loses_no_write_and_finalize_retries_it(store):
    errors = SPAWN.Queue()
    worker = SPAWN.Process(target=write_under_a_file_size_limit, args=(store, errors))
    worker.start()
    failures = [errors.get(timeout=300) for _ in range(2)]
    worker.join()
    assert worker.exitcode == 0
    for error_type, message in failures:
        assert error_type is WorkerWriteError
        assert "File too large" in message and "finalize() again" in message and "limited" in message

    consolidate(store)
    expected: dict[int, list[np.ndarray]] = {}
    for label, _, points in limited_session():
        expected.setdefault(label, []).append(points)
    with Query(store) as query:
        assert query.get_labels().tolist() == sorted(expected)
        for label, parts in expected.items():
            assert as_row_set(query.get_points(label, use_cache=False)) == as_row_set(np.concatenate(parts))
        assert len(query.sql("SELECT path FROM files")) == 3


def write_where_no_byte_fits(store: str, outcome: multiprocessing.Queue) -> None:
    """Under RLIMIT_FSIZE 0 (files may be created, not written), finalize an empty worker, then start a new store."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    for attempt in (
        lambda: Ingestor(store, "new").finalize(),
        lambda: Ingestor(store + "-fresh", 0).write(1, "b", GOOD),
    ):
        try:
            attempt()
        except Exception as error:
            outcome.put((type(error), str(error)))


def test_a_store_that_refuses_writes_is_named_and_keeps_its_data(store):
    ingest(store, 0, BLOCKS)
    consolidate(store)
    outcome = SPAWN.Queue()
    worker = SPAWN.Process(target=write_where_no_byte_fits, args=(store, outcome))
    worker.start()
    (empty_worker_error, empty_worker), (new_store_error, new_store) = [outcome.get(timeout=300) for _ in range(2)]
    worker.join()
    assert worker.exitcode == 0
    assert empty_worker_error is StoreWriteError and new_store_error is StoreWriteError
    assert os.path.join(store, "workers", "new", "finalized.json") in empty_worker
    assert os.path.join(store + "-fresh", "pocaduck.json") in new_store
    for message in (empty_worker, new_store):
        assert "File too large" in message and "writable" in message and "intact" in message
    consolidate(store, ignore_unfinalized=True)  # worker "new" never finalized
    assert_store_holds_exactly(store, [0])


@pytest.fixture
def read_only_view(store, tmp_path):
    """``store``, once worker 0 wrote it, seen through a read-only bind mount: writes there fail with EROFS,
    as on a read-only disk.

    Permissions would not do: root ignores them. Mounting needs root, which CI has; elsewhere this skips.
    """
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the read-only store test mounts a read-only view and needs root, which CI has")
        pytest.skip("mounting a read-only view of a store needs root")
    ingest(store, 0, BLOCKS)
    consolidate(store)
    view = tmp_path / "read-only-view"
    view.mkdir()
    subprocess.run(["mount", "--bind", store, str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        yield str(view)
    finally:
        clear_cache()  # the process keeps the files of the index version it read open: a disk to unmount must not
        subprocess.run(["umount", str(view)], check=True)


def test_a_read_only_store_refuses_writes_clearly_and_still_answers(store, read_only_view):
    with pytest.raises(StoreWriteError, match=r"Read-only file system.*writable.*intact"):
        Ingestor(read_only_view, 1)
    with pytest.raises(StoreWriteError, match="Read-only file system"):
        consolidate(read_only_view)
    assert_store_holds_exactly(read_only_view, [0])  # reading needs no write
    assert_store_holds_exactly(store, [0])


def test_gc_dry_run_lists_a_read_only_store_and_gc_and_compact_refuse_it_in_one_guided_line(
    store, read_only_view, capsys
):
    consolidate(store)  # the first consolidation's index version is now garbage
    old_versions = sorted(os.listdir(os.path.join(store, "index_versions")))
    assert cli(["gc", read_only_view, "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert any(f"would remove index_versions/{version}" in listed for version in old_versions)
    for verb in ("gc", "compact"):
        assert cli([verb, read_only_view]) == 1
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"pocaduck {verb}: ") and "Read-only file system" in line
        assert "make the store writable" in line and "--debug" not in line
    assert sorted(os.listdir(os.path.join(store, "index_versions"))) == old_versions
    assert_store_holds_exactly(read_only_view, [0])
