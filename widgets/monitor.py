"""Live ingestion panels: one per worker plus a total, fed by ProgressEvents.

Events may arrive from any thread (a background scan's callback) and much
faster than a browser wants redraws, so the monitor keeps only each worker's
latest event and redraws at most once per ``min_interval`` seconds; a timer
makes sure the last events are always drawn.

A few workers get a bar each. Above ``grid_above`` workers (a cluster's 64 or
1,000) bars would make a page-long list, so every worker becomes one small
cell of a single grid widget instead, redrawn as a whole: a cell's color says
its state and how far it got, its title its counters, and the failed workers'
errors are listed under the grid.
"""

from __future__ import annotations

import collections
import html
import pathlib
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import anywidget
import ipywidgets as w
import pyarrow as pa
import traitlets as t

from pocaduck import ProgressEvent

from ._wire import encode_page, front_end

_HERE = pathlib.Path(__file__).parent
_BAR_STYLES = {"queued": "", "running": "info", "finished": "success", "failed": "danger"}
# A grid cell's two colors: blocks done fill it from the left, blocks to do are the rest.
CELL_COLORS = {
    "queued": ("#9e9e9e", "#e0e0e0"),
    "running": ("#1976d2", "#cfe2f6"),
    "finished": ("#2e7d32", "#2e7d32"),
    "failed": ("#c62828", "#f5c6c6"),
}


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


def _counters(event: ProgressEvent) -> list[str]:
    """A worker's counters as short phrases, for its bar's caption and its grid cell's title."""
    counters = [
        f"blocks {event.blocks_done:,}/{event.blocks_total:,}",
        f"{event.points_written:,} points",
        f"{event.files_written:,} file{'' if event.files_written == 1 else 's'}",
        _size(event.bytes_written),
        f"{event.points_per_second:,.0f} points/s",
        f"elapsed {_duration(event.elapsed)}",
    ]
    eta = eta_seconds(event)
    if eta is not None:
        counters.append(f"ETA {_duration(eta)}")
    return counters


RATES_KEPT = 120  # throughput samples a sparkline shows: the last two minutes at the scans' 1 s reports


def recent_rate(before: ProgressEvent | None, after: ProgressEvent) -> float | None:
    """Points per second a worker wrote between two of its events: its throughput now, not its average.

    None when no time passed between them (the same report twice, or a worker's first event).

    >>> first = ProgressEvent("0", "running", points_written=1_000, elapsed=1.0)
    >>> recent_rate(first, ProgressEvent("0", "running", points_written=4_000, elapsed=2.5))
    2000.0
    """
    if before is None:
        return after.points_per_second if after.elapsed > 0 else None
    seconds = after.elapsed - before.elapsed
    return (after.points_written - before.points_written) / seconds if seconds > 0 else None


def sparkline(rates: Sequence[float], running: bool, width: int = 120, height: int = 22) -> str:
    """Throughput over time as a small inline SVG, with the highest rate, and the latest while ``running``.

    >>> sparkline([], True) == sparkline([0.0, 0.0], True) == ""
    True
    >>> 'points="0.0,21.0 120.0,1.0"' in sparkline([0.0, 50.0], False)
    True
    """
    if not rates or max(rates) <= 0:  # no rate measured yet (or reports came faster than the clock): nothing to say
        return ""
    peak = max(rates)
    step = width / max(len(rates) - 1, 1)
    points = " ".join(f"{i * step:.1f},{height - 1 - (height - 2) * rate / peak:.1f}" for i, rate in enumerate(rates))
    return (
        f"<span class='pocaduck-throughput' title='points/s over the last {len(rates)} reports'>"
        f"<svg width='{width}' height='{height}' style='vertical-align:middle'>"
        f"<polyline points=\"{points}\" fill='none' stroke='#1976d2' stroke-width='1.5'/></svg> "
        + (f"{rates[-1]:,.0f} points/s now, peak " if running else "peak ")
        + f"{max(rates):,.0f} points/s</span>"
    )


def _cell_background(event: ProgressEvent) -> str:
    """A grid cell's CSS background: its state's color filled as far as the worker's blocks are done.

    >>> _cell_background(ProgressEvent("7", "running", blocks_done=1, blocks_total=4))
    'linear-gradient(to right, #1976d2 25%, #cfe2f6 25%)'
    """
    done, to_do = CELL_COLORS[event.state]
    percent = 100.0 if event.state == "finished" else round(100 * event.fraction_done, 1)
    return f"linear-gradient(to right, {done} {percent:g}%, {to_do} {percent:g}%)"


def _cell_title(event: ProgressEvent) -> str:
    """A grid cell's hover text: the worker, its state, its counters and its error.

    >>> print(_cell_title(ProgressEvent("7", "failed", blocks_done=1, blocks_total=4, error="disk full")))
    worker 7 · failed
    blocks 1/4 · 0 points · 0 files · 0 B · 0 points/s · elapsed 0s
    error: disk full
    """
    lines = [f"worker {event.worker_id} · {event.state}", " · ".join(_counters(event))]
    if event.error:
        lines.append(f"error: {event.error}")
    return "\n".join(lines)


class WorkerPanel(w.VBox):
    """One worker's progress bar, counters and state (with the error text when it failed)."""

    def __init__(self, worker_id: str):
        self.worker_id = worker_id
        self.bar = w.FloatProgress(min=0.0, max=1.0, layout=w.Layout(width="100%"))
        self.header = w.HTML()
        self.counters = w.HTML()
        super().__init__([self.header, self.bar, self.counters], layout=w.Layout(padding="2px 0"))

    def update(self, event: ProgressEvent, rates: Sequence[float] = ()) -> None:
        """Draw ``event``, and ``rates`` (the worker's recent points/s, oldest first) as a sparkline."""
        state = html.escape(event.state)
        error = f" <span style='color:#b00020'>{html.escape(event.error)}</span>" if event.error else ""
        counters = [html.escape(counter) for counter in _counters(event)]
        with self.hold_sync():
            self.bar.value = 1.0 if event.state == "finished" else event.fraction_done
            self.bar.bar_style = _BAR_STYLES[event.state]
            self.header.value = (
                f"<b>worker {html.escape(event.worker_id)}</b> · <span class='pocaduck-state'>{state}</span>{error}"
            )
            self.counters.value = (
                "<small>" + " · ".join(counters) + "</small> " + sparkline(rates, event.state == "running")
            )
            self._dom_classes = ("pocaduck-worker", f"pocaduck-state-{event.state}")

    def close(self) -> None:
        for part in self.children:
            part.close()
        super().close()


class _WorkerGrid(anywidget.AnyWidget):
    """Every worker as one small cell in one widget: the whole grid crosses to the browser as one page.

    ``rows`` is the Arrow table last sent (worker, state, background, title), one
    row per worker in worker order; ``_grid.js`` only paints it.
    """

    _esm = front_end("_grid.js")
    _css = _HERE / "_grid.css"
    cells = t.Dict().tag(sync=True)

    def __init__(self, **kwargs: Any):
        self.rows = pa.table({name: pa.array([], pa.string()) for name in ("worker", "state", "background", "title")})
        super().__init__(**kwargs)

    def update(self, events: list[ProgressEvent]) -> None:
        self.rows = pa.table(
            {
                "worker": [event.worker_id for event in events],
                "state": [event.state for event in events],
                "background": [_cell_background(event) for event in events],
                "title": [_cell_title(event) for event in events],
            },
            schema=self.rows.schema,
        )
        self.cells = encode_page(self.rows)


class IngestionMonitor(w.VBox):
    """Panels for every worker of a scan, updated live and throttled.

    Pass the monitor itself as the scan's progress callback, or let it follow a
    background scan's handle (or any iterable of events) with ``follow``. Above
    ``grid_above`` workers the bars give way to a grid of one cell per worker
    (``grid``), with the failed workers' errors listed under it (``failures``).

    >>> monitor = IngestionMonitor()
    >>> monitor(ProgressEvent("a", "running", blocks_done=1, blocks_total=4))
    >>> monitor(ProgressEvent("a", "finished", blocks_done=4, blocks_total=4))
    >>> monitor.flush()
    >>> monitor.latest["a"].state, monitor.panels["a"].bar.value
    ('finished', 1.0)
    """

    min_interval = t.Float(0.1, help="least seconds between two redraws (0.1: at most 10 updates per second)")
    grid_above = t.Int(32, help="above this many workers, one small cell per worker instead of one bar each")

    def __init__(self, title: str = "ingestion", *, min_interval: float = 0.1, grid_above: int = 32, **kwargs: Any):
        self.latest: dict[str, ProgressEvent] = {}
        # Throughput over time: each worker's points/s between its events (all of them, drawn or not), and
        # the sum of the running workers' latest rates at each redraw.
        self.rates: dict[str, collections.deque[float]] = {}
        self.total_rates: collections.deque[float] = collections.deque(maxlen=RATES_KEPT)
        self._fresh: set[str] = set()  # workers with a rate measured since the last redraw
        self.panels: dict[str, WorkerPanel] = {}
        self.grid: _WorkerGrid | None = None
        self.failures = w.HTML(layout=w.Layout(max_height="14em", overflow="auto"))
        self._grid_legend = w.HTML()
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
        super().__init__(
            [heading, self.total_bar, self.summary, self._worker_box],
            min_interval=min_interval,
            grid_above=grid_above,
            **kwargs,
        )
        self._draw()

    def __call__(self, event: ProgressEvent) -> None:
        """Take one event (thread-safe); the panels follow within ``min_interval`` seconds."""
        with self._lock:
            rate = recent_rate(self.latest.get(event.worker_id), event)
            if rate is not None:
                self.rates.setdefault(event.worker_id, collections.deque(maxlen=RATES_KEPT)).append(rate)
                self._fresh.add(event.worker_id)
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
                rates = {worker_id: list(kept) for worker_id, kept in self.rates.items()}
                fresh, self._fresh = self._fresh, set()
            self._draw(events, rates, fresh)

    @property
    def finished(self) -> bool:
        """True once every worker seen has finished or failed."""
        return bool(self.latest) and all(e.state in ("finished", "failed") for e in self.latest.values())

    def _draw(
        self,
        events: dict[str, ProgressEvent] | None = None,
        rates: dict[str, list[float]] | None = None,
        fresh: set[str] = frozenset(),
    ) -> None:
        events, rates = events or {}, rates or {}
        self.draws += 1
        if len(events) > self.grid_above:
            self._draw_grid([events[worker_id] for worker_id in sorted(events, key=_natural_key)])
        else:
            self._draw_panels(events, rates)
        if events:
            # The running workers' latest rates, and the last interval of those that ended since the last redraw:
            # a worker reporting only its start and its end still counts once.
            counted = [w for w, event in events.items() if rates.get(w) and (event.state == "running" or w in fresh)]
            self.total_rates.append(sum(rates[w][-1] for w in counted))
        self._draw_totals(events)

    def _draw_panels(self, events: dict[str, ProgressEvent], rates: dict[str, list[float]]) -> None:
        regrouped = self.grid is not None  # grid_above was raised past the number of workers
        if regrouped:
            self.grid.close()
            self.grid = None
            self.failures.value = ""
        new_panels = [worker_id for worker_id in events if worker_id not in self.panels]
        for worker_id in new_panels:
            self.panels[worker_id] = WorkerPanel(worker_id)
        for worker_id, event in events.items():
            self.panels[worker_id].update(event, rates.get(worker_id, ()))
        if new_panels or regrouped:
            self._worker_box.children = tuple(self.panels[k] for k in sorted(self.panels, key=_natural_key))

    def _draw_grid(self, events: list[ProgressEvent]) -> None:
        if self.grid is None:
            for panel in self.panels.values():
                panel.close()
            self.panels.clear()
            self.grid = _WorkerGrid()
            self._worker_box.children = (self._grid_legend, self.grid, self.failures)
        self.grid.update(events)
        self._grid_legend.value = _legend_html([event.state for event in events])
        self.failures.value = _failures_html([event for event in events if event.state == "failed"])

    def _draw_totals(self, events: dict[str, ProgressEvent]) -> None:
        states = [event.state for event in events.values()]
        done = sum(event.blocks_done for event in events.values())
        total = sum(event.blocks_total for event in events.values())
        points = sum(event.points_written for event in events.values())
        written = sum(event.bytes_written for event in events.values())
        ended = states.count("finished") + states.count("failed")
        self.total_bar.value = done / total if total else (1.0 if events and ended == len(events) else 0.0)
        self.total_bar.bar_style = "danger" if "failed" in states else ("success" if ended == len(events) else "info")
        parts = [
            f"{states.count('finished')} of {len(events)} workers finished",
            f"{states.count('failed')} failed" if "failed" in states else "",
            f"blocks {done:,}/{total:,}",
            f"{points:,} points",
            _size(written),
        ]
        running = "running" in states
        self.summary.value = (
            "<small>" + " · ".join(p for p in parts if p) + "</small> " + sparkline(self.total_rates, running)
        )


def _legend_html(states: list[str]) -> str:
    """What each cell color means, with how many workers are in that state."""
    swatch = "display:inline-block;width:10px;height:10px;border-radius:2px;vertical-align:middle;background:"
    keys = (
        f"<span class='pocaduck-grid-key'><span style='{swatch}{done}'></span> {state} {states.count(state):,}</span>"
        for state, (done, _to_do) in CELL_COLORS.items()
    )
    return "<small>" + " &nbsp; ".join(keys) + "</small>"


def _failures_html(failed: list[ProgressEvent]) -> str:
    """The failed workers, each with its error: the first thing to read after a cluster scan."""
    if not failed:
        return ""
    items = "".join(
        f"<li data-worker='{html.escape(event.worker_id)}'><b>worker {html.escape(event.worker_id)}</b>: "
        f"<span style='color:#b00020'>{html.escape(event.error or 'no error text')}</span></li>"
        for event in failed
    )
    return (
        f"<div class='pocaduck-failures' style='line-height:1.5'><b>{len(failed):,} failed</b>"
        f"<ul style='margin:2px 0'>{items}</ul></div>"
    )


def _natural_key(worker_id: str) -> tuple:
    return (0, int(worker_id), "") if worker_id.isdigit() else (1, 0, worker_id)
