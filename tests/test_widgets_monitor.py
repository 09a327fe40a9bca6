"""The ingestion monitor shows every worker of a real multi-process ingestion, failed ones with their error."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest
from pocaduck.widgets import IngestionMonitor

from pocaduck import Ingestor, ProgressEvent

BLOCKS = 6


def ingest_reporting_progress(store: str, worker_id: str, fail_at_block: int | None, events) -> None:
    """A worker process: real Ingestor writes, one ProgressEvent per block; a failure is reported, not hidden."""
    started = time.perf_counter()
    done = points = 0
    events.put(ProgressEvent(worker_id, "queued", blocks_total=BLOCKS))
    try:
        with Ingestor(store, worker_id, max_points_per_file=1000) as ingestor:
            for block in range(BLOCKS):
                if block == fail_at_block:
                    ingestor.write(1, f"{worker_id}/{block}", np.zeros((3, 2)))  # wrong dimensions: rejected
                rows = _blob(label=1 + block, seed=[int(worker_id[1:]), block])
                ingestor.write(1 + block, f"{worker_id}/{block}", rows)
                done, points = done + 1, points + len(rows)
                events.put(_event(worker_id, "running", done, points, ingestor, started))
        events.put(_event(worker_id, "finished", done, points, ingestor, started))
    except Exception as error:
        events.put(_event(worker_id, "failed", done, points, ingestor, started, f"{type(error).__name__}: {error}"))


def _blob(label: int, seed: list[int], count: int = 400) -> np.ndarray:
    """Points around a centre that depends on the label only: each label is one blob, whichever worker wrote it."""
    centre = np.random.default_rng(label).uniform(0, 300, 3)
    return np.round(centre + np.random.default_rng(seed).normal(0, 12, size=(count, 3))).astype(np.int64)


def _event(worker_id, state, done, points, ingestor, started, error=None) -> ProgressEvent:
    return ProgressEvent(
        worker_id,
        state,
        blocks_done=done,
        blocks_total=BLOCKS,
        points_written=points,
        files_written=ingestor.stats.files,
        bytes_written=ingestor.stats.bytes,
        elapsed=time.perf_counter() - started,
        error=error,
    )


def ingest_in_processes(store: str, plans: dict[str, int | None], monitor: IngestionMonitor) -> None:
    """Run one real worker process per plan (worker id → block to fail at, or None) feeding ``monitor``."""
    context = multiprocessing.get_context("fork")
    events = context.Queue()
    workers = [
        context.Process(target=ingest_reporting_progress, args=(store, worker_id, fail_at, events))
        for worker_id, fail_at in plans.items()
    ]
    for worker in workers:
        worker.start()
    ended = set()
    while len(ended) < len(workers):
        event = events.get(timeout=60)
        monitor(event)
        if event.state in ("finished", "failed"):
            ended.add(event.worker_id)
    for worker in workers:
        worker.join(timeout=30)
    monitor.flush()


@pytest.fixture(scope="module")
def monitor(tmp_path_factory) -> IngestionMonitor:
    """A monitor fed by three real worker processes, the third of which fails at its third block."""
    monitor = IngestionMonitor("test scan")
    ingest_in_processes(str(tmp_path_factory.mktemp("monitor") / "store"), {"w0": None, "w1": None, "w2": 2}, monitor)
    return monitor


def test_one_panel_per_worker_in_order(monitor):
    assert list(monitor.panels) and sorted(monitor.panels) == ["w0", "w1", "w2"]
    assert [panel.worker_id for panel in monitor._worker_box.children] == ["w0", "w1", "w2"]


def test_finished_workers_show_full_bars_and_their_counts(monitor):
    for worker_id in ("w0", "w1"):
        panel = monitor.panels[worker_id]
        assert panel.bar.value == 1.0 and panel.bar.bar_style == "success"
        assert "finished" in panel.header.value
        assert (
            f"blocks {BLOCKS}/{BLOCKS}" in panel.counters.value and f"{BLOCKS * 400:,} points" in panel.counters.value
        )
        assert "pocaduck-state-finished" in panel._dom_classes
        assert monitor.latest[worker_id].files_written >= 2


def test_a_failed_worker_shows_its_error(monitor):
    panel = monitor.panels["w2"]
    assert panel.bar.bar_style == "danger" and panel.bar.value == pytest.approx(2 / BLOCKS)
    assert "failed" in panel.header.value and "SchemaMismatchError" in panel.header.value
    assert "pocaduck-state-failed" in panel._dom_classes


def test_the_total_bar_sums_every_worker(monitor):
    assert monitor.finished
    assert monitor.total_bar.value == pytest.approx((2 * BLOCKS + 2) / (3 * BLOCKS))
    assert monitor.total_bar.bar_style == "danger"
    assert "2 of 3 workers finished" in monitor.summary.value and "1 failed" in monitor.summary.value


def test_redraws_are_throttled_but_the_last_event_always_lands():
    monitor = IngestionMonitor(min_interval=3600)  # nothing may draw twice in this test
    for done in range(1, 101):
        monitor(ProgressEvent("0", "running", blocks_done=done, blocks_total=100))
    assert monitor.draws == 2  # the empty start, then the first event; the other 99 wait
    monitor.flush()
    assert monitor.draws == 3 and monitor.panels["0"].bar.value == 1.0


def test_follows_an_iterable_of_events_in_the_background():
    monitor = IngestionMonitor(min_interval=0)
    events = [ProgressEvent(str(i), "finished", blocks_done=1, blocks_total=1) for i in range(3)]
    monitor.follow(events).join(timeout=10)
    assert monitor.finished and sorted(monitor.panels) == ["0", "1", "2"]
