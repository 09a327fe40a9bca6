"""Live ingestion panels: one per worker plus a total, fed by ProgressEvents.

Events may arrive from any thread (a background scan's callback) and much
faster than a browser wants redraws, so the monitor keeps only each worker's
latest event and redraws at most once per ``min_interval`` seconds; a timer
makes sure the last events are always drawn.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Iterable
from typing import Any

import ipywidgets as w
import traitlets as t

from pocaduck import ProgressEvent

_BAR_STYLES = {"queued": "", "running": "info", "finished": "success", "failed": "danger"}


def _size(count: float) -> str:
    """Bytes in binary units.

    >>> _size(1536), _size(3 * 2**30)
    ('1.5 KiB', '3.0 GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    """A short human duration.

    >>> _duration(75), _duration(4000)
    ('1m15s', '1h06m')
    """
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta_seconds(event: ProgressEvent) -> float | None:
    """Seconds left for a running worker at its rate so far, or None when unknown.

    >>> eta_seconds(ProgressEvent("0", "running", blocks_done=2, blocks_total=8, elapsed=1.0))
    3.0
    """
    if event.state != "running" or event.blocks_per_second <= 0 or not event.blocks_total:
        return None
    return (event.blocks_total - event.blocks_done) / event.blocks_per_second


class WorkerPanel(w.VBox):
    """One worker's progress bar, counters and state (with the error text when it failed)."""

    def __init__(self, worker_id: str):
        self.worker_id = worker_id
        self.bar = w.FloatProgress(min=0.0, max=1.0, layout=w.Layout(width="100%"))
        self.header = w.HTML()
        self.counters = w.HTML()
        super().__init__([self.header, self.bar, self.counters], layout=w.Layout(padding="2px 0"))

    def update(self, event: ProgressEvent) -> None:
        eta = eta_seconds(event)
        state = html.escape(event.state)
        error = f" <span style='color:#b00020'>{html.escape(event.error)}</span>" if event.error else ""
        counters = [
            f"blocks {event.blocks_done:,}/{event.blocks_total:,}",
            f"{event.points_written:,} points",
            f"{event.files_written:,} file{'' if event.files_written == 1 else 's'}",
            _size(event.bytes_written),
            f"{event.points_per_second:,.0f} points/s",
            f"elapsed {_duration(event.elapsed)}",
        ]
        if eta is not None:
            counters.append(f"ETA {_duration(eta)}")
        with self.hold_sync():
            self.bar.value = 1.0 if event.state == "finished" else event.fraction_done
            self.bar.bar_style = _BAR_STYLES[event.state]
            self.header.value = (
                f"<b>worker {html.escape(event.worker_id)}</b> · <span class='pocaduck-state'>{state}</span>{error}"
            )
            self.counters.value = "<small>" + " · ".join(counters) + "</small>"
            self._dom_classes = ("pocaduck-worker", f"pocaduck-state-{event.state}")


class IngestionMonitor(w.VBox):
    """Panels for every worker of a scan, updated live and throttled.

    Pass the monitor itself as the scan's progress callback, or let it follow a
    background scan's handle (or any iterable of events) with ``follow``.

    >>> monitor = IngestionMonitor()
    >>> monitor(ProgressEvent("a", "running", blocks_done=1, blocks_total=4))
    >>> monitor(ProgressEvent("a", "finished", blocks_done=4, blocks_total=4))
    >>> monitor.flush()
    >>> monitor.latest["a"].state, monitor.panels["a"].bar.value
    ('finished', 1.0)
    """

    min_interval = t.Float(0.1, help="least seconds between two redraws (0.1: at most 10 updates per second)")

    def __init__(self, title: str = "ingestion", *, min_interval: float = 0.1, **kwargs: Any):
        self.latest: dict[str, ProgressEvent] = {}
        self.panels: dict[str, WorkerPanel] = {}
        self.total_bar = w.FloatProgress(min=0.0, max=1.0, bar_style="info", layout=w.Layout(width="100%"))
        self.summary = w.HTML()
        self._worker_box = w.VBox()
        self._lock = threading.Lock()
        self._drawing = threading.Lock()  # a timer and an event's thread may flush at once: one draws at a time
        self._pending = False
        self._timer: threading.Timer | None = None
        self._last_draw: float | None = None  # not 0.0: time.monotonic() counts from boot, so 0.0 can be seconds ago
        self.draws = 0
        heading = w.HTML(f"<b>{html.escape(title)}</b>")
        super().__init__([heading, self.total_bar, self.summary, self._worker_box], min_interval=min_interval, **kwargs)
        self._draw()

    def __call__(self, event: ProgressEvent) -> None:
        """Take one event (thread-safe); the panels follow within ``min_interval`` seconds."""
        with self._lock:
            self.latest[event.worker_id] = event
            self._pending = True
            wait = 0.0 if self._last_draw is None else self._last_draw + self.min_interval - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self.flush)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self.flush()

    def follow(self, events: Any, *, background: bool = True) -> threading.Thread | None:
        """Consume events from a scan handle (its ``events``) or any iterable, then draw the final state.

        Example::

            monitor.follow(handle)
        """
        source: Iterable[ProgressEvent] = getattr(events, "events", events)

        def consume() -> None:
            for event in source:
                self(event)
            self.flush()

        if not background:
            consume()
            return None
        thread = threading.Thread(target=consume, name="pocaduck-monitor", daemon=True)
        thread.start()
        return thread

    def flush(self) -> None:
        """Draw the latest events now."""
        # The copy of the events is taken inside ``_drawing``: taken before it, a timer's older copy could be
        # drawn after a newer flush and leave stale panels on screen as the last word.
        with self._drawing:
            with self._lock:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                if not self._pending:
                    return
                self._pending = False
                self._last_draw = time.monotonic()
                events = dict(self.latest)
            self._draw(events)

    @property
    def finished(self) -> bool:
        """True once every worker seen has finished or failed."""
        return bool(self.latest) and all(e.state in ("finished", "failed") for e in self.latest.values())

    def _draw(self, events: dict[str, ProgressEvent] | None = None) -> None:
        events = events or {}
        self.draws += 1
        new_panels = [worker_id for worker_id in events if worker_id not in self.panels]
        for worker_id in new_panels:
            self.panels[worker_id] = WorkerPanel(worker_id)
        for worker_id, event in events.items():
            self.panels[worker_id].update(event)
        if new_panels:
            self._worker_box.children = tuple(self.panels[k] for k in sorted(self.panels, key=_natural_key))
        states = [event.state for event in events.values()]
        done = sum(event.blocks_done for event in events.values())
        total = sum(event.blocks_total for event in events.values())
        points = sum(event.points_written for event in events.values())
        written = sum(event.bytes_written for event in events.values())
        rate = sum(event.points_per_second for event in events.values() if event.state == "running")
        ended = states.count("finished") + states.count("failed")
        self.total_bar.value = done / total if total else (1.0 if events and ended == len(events) else 0.0)
        self.total_bar.bar_style = "danger" if "failed" in states else ("success" if ended == len(events) else "info")
        parts = [
            f"{states.count('finished')} of {len(events)} workers finished",
            f"{states.count('failed')} failed" if "failed" in states else "",
            f"blocks {done:,}/{total:,}",
            f"{points:,} points",
            _size(written),
            f"{rate:,.0f} points/s" if rate else "",
        ]
        self.summary.value = "<small>" + " · ".join(p for p in parts if p) + "</small>"


def _natural_key(worker_id: str) -> tuple:
    return (0, int(worker_id), "") if worker_id.isdigit() else (1, 0, worker_id)
