"""The ingestion monitor shows every worker of a real scan with several worker processes, failed ones with their error;
at cluster size, every worker as one cell of a grid."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest
from pocaduck.widgets import IngestionMonitor
from pocaduck.widgets.monitor import CELL_COLORS

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


# -- a cluster: one cell per worker ------------------------------------------------

CLUSTER = 500


def cluster_events(workers: int = CLUSTER) -> tuple[list[ProgressEvent], dict[str, ProgressEvent]]:
    """A cluster scan as its events arrive: every worker queued, then each one's progress to its latest state.

    Worker i ends failed when i % 97 == 13 (at block 3 of 8), queued when i % 10 == 2, running half way when
    i % 10 in (0, 1), finished otherwise. Returns (every event in order, the latest event of each worker).
    """
    events = [ProgressEvent(str(i), "queued", blocks_total=8) for i in range(workers)]
    latest = {}
    for i in range(workers):
        points = 1_000 * (i + 1)
        if i % 97 == 13:
            last = ProgressEvent(
                str(i), "failed", 3, 8, points_written=points, files_written=1, bytes_written=4096, elapsed=6.0,
                error=f"OSError: chunk ({i}, 0, 0) is unreadable",
            )  # fmt: skip
        elif i % 10 == 2:
            last = events[i]
        elif i % 10 in (0, 1):
            last = ProgressEvent(str(i), "running", 4, 8, points_written=points, files_written=1, elapsed=2.0)
        else:
            last = ProgressEvent(
                str(i), "finished", 8, 8, points_written=points, files_written=2, bytes_written=2**20, elapsed=4.0
            )
        if last.state != "queued":
            events.append(ProgressEvent(str(i), "running", 1, 8, points_written=points // 8, elapsed=0.5))
            events.append(last)
        latest[str(i)] = last
    return events, latest


@pytest.fixture(scope="module")
def cluster() -> tuple[IngestionMonitor, dict[str, ProgressEvent]]:
    """A monitor fed 500 workers' events; it draws when flushed (min_interval longer than any test)."""
    monitor = IngestionMonitor("cluster", min_interval=1e9)
    events, latest = cluster_events()
    for event in events:
        monitor(event)
    monitor.flush()
    return monitor, latest


def test_a_cluster_gets_one_grid_of_one_cell_per_worker_not_a_bar_each(cluster):
    monitor, latest = cluster
    assert monitor.draws == 3  # the empty start, the first event, the flush: throttled as the bars are
    assert monitor.panels == {} and monitor.grid is not None
    assert monitor._worker_box.children == (monitor._grid_legend, monitor.grid, monitor.failures)
    rows = monitor.grid.rows.to_pydict()
    assert rows["worker"] == [str(i) for i in range(CLUSTER)]  # in worker order, 2 before 10
    assert rows["state"] == [latest[worker_id].state for worker_id in rows["worker"]]
    # The whole grid crosses as one page of binary buffers, not 500 widgets nor JSON lists.
    page = monitor.grid.cells
    assert page["num_rows"] == CLUSTER
    assert all(isinstance(column["data"], bytes) for column in page["columns"])


def test_a_cell_is_colored_by_its_state_and_filled_as_far_as_its_blocks_are_done(cluster):
    monitor, _latest = cluster
    expected = {
        "queued": f"linear-gradient(to right, {CELL_COLORS['queued'][0]} 0%, {CELL_COLORS['queued'][1]} 0%)",
        "running": f"linear-gradient(to right, {CELL_COLORS['running'][0]} 50%, {CELL_COLORS['running'][1]} 50%)",
        "finished": f"linear-gradient(to right, {CELL_COLORS['finished'][0]} 100%, {CELL_COLORS['finished'][1]} 100%)",
        "failed": f"linear-gradient(to right, {CELL_COLORS['failed'][0]} 37.5%, {CELL_COLORS['failed'][1]} 37.5%)",
    }
    rows = monitor.grid.rows.to_pylist()
    assert {row["state"] for row in rows} == set(expected)
    assert all(row["background"] == expected[row["state"]] for row in rows)


def test_a_cell_title_holds_its_workers_counters_and_error(cluster):
    monitor, latest = cluster
    for row in monitor.grid.rows.to_pylist():
        event = latest[row["worker"]]
        title = row["title"]
        assert title.startswith(f"worker {event.worker_id} · {event.state}\n")
        assert f"blocks {event.blocks_done}/{event.blocks_total}" in title
        assert f"{event.points_written:,} points" in title and f"{event.files_written} file" in title
        assert f"{event.points_per_second:,.0f} points/s" in title
        assert ("error: OSError: chunk" in title) == (event.state == "failed")
    finished = monitor.grid.rows.filter(pc.equal(monitor.grid.rows["state"], "finished"))
    assert "1.0 MiB" in finished["title"][0].as_py()


def test_the_totals_and_every_failed_workers_error_show_under_the_grid(cluster):
    monitor, latest = cluster
    states = [event.state for event in latest.values()]
    failed = [event for event in latest.values() if event.state == "failed"]
    assert len(failed) == 6  # workers 13, 110, 207, 304, 401, 498
    assert f"{states.count('finished')} of {CLUSTER} workers finished" in monitor.summary.value
    assert "6 failed" in monitor.summary.value and monitor.total_bar.bar_style == "danger"
    assert f"blocks {sum(e.blocks_done for e in latest.values()):,}/{8 * CLUSTER:,}" in monitor.summary.value
    for state in CELL_COLORS:
        assert f"{state} {states.count(state)}" in monitor._grid_legend.value
    assert monitor.failures.value.count("<li") == len(failed)
    for event in failed:
        assert f"<b>worker {event.worker_id}</b>: <span style='color:#b00020'>{event.error}</span>" in (
            monitor.failures.value
        )


def test_the_grid_takes_over_above_grid_above_workers_and_closes_the_bars():
    monitor = IngestionMonitor(min_interval=0)
    for i in range(32):
        monitor(ProgressEvent(str(i), "running", 1, 4))
    assert len(monitor.panels) == 32 and monitor.grid is None  # 32 workers: still a bar each
    bars = list(monitor.panels.values())
    monitor(ProgressEvent("32", "running", 1, 4))
    assert monitor.panels == {} and monitor.grid.rows.num_rows == 33
    assert all(bar.comm is None and bar.bar.comm is None for bar in bars)  # their widgets closed in the browser too

    few = IngestionMonitor(min_interval=0, grid_above=2)
    for i in range(3):
        few(ProgressEvent(str(i), "finished", 4, 4))
    assert few.grid.rows["state"].to_pylist() == ["finished"] * 3 and few.failures.value == ""


def test_throughput_over_time_is_drawn_per_worker_and_in_total():
    monitor = IngestionMonitor(min_interval=0)
    reports = [  # (worker, points written so far, seconds since it started)
        ("a", 1_000, 1.0),
        ("b", 500, 1.0),
        ("a", 4_000, 2.0),
        ("b", 2_500, 2.0),
        ("a", 4_000, 2.0),  # the same report again: no time passed, no rate
        ("a", 10_000, 4.0),
    ]
    for worker, points, elapsed in reports:
        monitor(ProgressEvent(worker, "running", blocks_total=10, points_written=points, elapsed=elapsed))
    assert list(monitor.rates["a"]) == [1_000.0, 3_000.0, 3_000.0]
    assert list(monitor.rates["b"]) == [500.0, 2_000.0]
    # each redraw sums the running workers' latest rates: a alone, then a + b as each report lands
    assert list(monitor.total_rates) == [1_000.0, 1_500.0, 3_500.0, 5_000.0, 5_000.0, 5_000.0]
    assert "3,000 points/s now, peak 3,000 points/s" in monitor.panels["a"].counters.value
    assert "<polyline" in monitor.panels["b"].counters.value
    assert "5,000 points/s now, peak 5,000 points/s" in monitor.summary.value
    monitor(ProgressEvent("a", "finished", blocks_total=10, blocks_done=10, points_written=10_000, elapsed=5.0))
    monitor(ProgressEvent("b", "finished", blocks_total=10, blocks_done=10, points_written=2_500, elapsed=5.0))
    assert monitor.total_rates[-1] == 0.0  # nothing runs any more; the peak stays in the line
    assert "now" not in monitor.summary.value and "peak 5,000 points/s" in monitor.summary.value
    # A worker that reports only its start and its end (a short Dask task) counts once, at its end.
    monitor(ProgressEvent("c", "running", blocks_total=1, points_written=0, elapsed=0.5))
    monitor(ProgressEvent("c", "finished", blocks_total=1, blocks_done=1, points_written=6_000, elapsed=2.5))
    assert list(monitor.total_rates)[-2:] == [0.0, 3_000.0]
