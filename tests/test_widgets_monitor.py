"""The ingestion monitor shows every worker of a real scan with several worker processes, failed ones with their error."""

from __future__ import annotations

import numpy as np
import pytest
from pocaduck.widgets import IngestionMonitor

from pocaduck import ProgressEvent, make_demo_volume, scan_volume
from pocaduck.scan import ScanWorkerError

WORKERS = 3


class UnreadableFarCorner:
    """A volume whose far corner cannot be read, like a missing chunk: the worker scanning there fails."""

    def __init__(self, data: np.ndarray):
        self.data = data
        self.shape, self.dtype = data.shape, data.dtype

    def __getitem__(self, key):
        if all(part.stop >= size for part, size in zip(key, self.shape, strict=True)):
            raise OSError("the chunk at the far corner is unreadable")
        return self.data[key]


@pytest.fixture(scope="module")
def volume():
    return make_demo_volume(40, seed=3)


@pytest.fixture(scope="module")
def monitor(volume, tmp_path_factory) -> IngestionMonitor:
    """A monitor fed by a real scan of three worker processes, one of which meets an unreadable chunk."""
    monitor = IngestionMonitor("test scan")
    store = tmp_path_factory.mktemp("monitor")
    with pytest.raises(ScanWorkerError):
        scan_volume(UnreadableFarCorner(volume), store, block_shape=16, workers=WORKERS, progress=monitor)
    monitor.flush()
    return monitor


def workers_in(monitor: IngestionMonitor, state: str) -> list[str]:
    return [worker_id for worker_id, event in monitor.latest.items() if event.state == state]


def test_one_panel_per_worker_in_order(monitor):
    assert sorted(monitor.panels) == ["scan-0", "scan-1", "scan-2"]
    assert [panel.worker_id for panel in monitor._worker_box.children] == ["scan-0", "scan-1", "scan-2"]


def test_finished_workers_show_full_bars_and_their_counts(monitor):
    assert len(workers_in(monitor, "finished")) == WORKERS - 1
    for worker_id in workers_in(monitor, "finished"):
        panel, event = monitor.panels[worker_id], monitor.latest[worker_id]
        assert event.points_written > 0
        assert panel.bar.value == 1.0 and panel.bar.bar_style == "success"
        assert "finished" in panel.header.value and "pocaduck-state-finished" in panel._dom_classes
        assert f"blocks {event.blocks_total}/{event.blocks_total}" in panel.counters.value
        assert f"{event.points_written:,} points" in panel.counters.value
        assert f"{event.files_written:,} file" in panel.counters.value


def test_a_failed_worker_shows_its_error(monitor):
    (failed,) = workers_in(monitor, "failed")
    panel, event = monitor.panels[failed], monitor.latest[failed]
    assert panel.bar.bar_style == "danger" and panel.bar.value == pytest.approx(event.fraction_done)
    assert "failed" in panel.header.value and "the chunk at the far corner is unreadable" in panel.header.value
    assert "pocaduck-state-failed" in panel._dom_classes


def test_the_total_bar_sums_every_worker(monitor):
    events = monitor.latest.values()
    assert monitor.finished
    assert monitor.total_bar.value == pytest.approx(
        sum(e.blocks_done for e in events) / sum(e.blocks_total for e in events)
    )
    assert monitor.total_bar.bar_style == "danger"
    assert "2 of 3 workers finished" in monitor.summary.value and "1 failed" in monitor.summary.value


def test_follows_a_background_scan_to_its_end(volume, tmp_path):
    monitor = IngestionMonitor()
    handle = scan_volume(volume, tmp_path / "store", block_shape=16, workers=2, background=True)
    follower = monitor.follow(handle)
    result = handle.wait(timeout=120)
    follower.join(timeout=120)
    assert sorted(monitor.panels) == ["scan-0", "scan-1"]
    assert all(panel.bar.value == 1.0 for panel in monitor.panels.values())
    assert sum(event.points_written for event in monitor.latest.values()) == result.points
    assert "2 of 2 workers finished" in monitor.summary.value


def test_redraws_are_throttled_but_the_last_event_always_lands():
    # Longer than any uptime: time.monotonic() counts from boot, so a "never drawn" sentinel of 0.0 would
    # look like a draw moments ago and hold back the first event on every machine, not only fresh ones.
    monitor = IngestionMonitor(min_interval=1e9)
    for done in range(1, 101):
        monitor(ProgressEvent("0", "running", blocks_done=done, blocks_total=100))
    assert monitor.draws == 2  # the empty start, then the first event; the other 99 wait
    monitor.flush()
    assert monitor.draws == 3 and monitor.panels["0"].bar.value == 1.0


def test_follows_an_iterable_of_events_in_the_background():
    monitor = IngestionMonitor(min_interval=0)
    events = [ProgressEvent(str(i), "finished", blocks_done=1, blocks_total=1) for i in range(3)]
    monitor.follow(events).join(timeout=120)
    assert monitor.finished and sorted(monitor.panels) == ["0", "1", "2"]
