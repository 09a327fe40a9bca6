"""Progress of every verb that runs tasks (scan, compaction, migration): events, their stream, and a tqdm display.

A task reports :class:`ProgressEvent` s as it goes. :class:`EventLog` keeps a
run's events in arrival order for notebook panels and scripts, which consume
it in one of three ways: ``subscribe(callback)`` (called for past and future
events), iterating it (blocks until the next event, ends when the run ends),
or ``latest()`` (one event per worker, for polling). :class:`TqdmProgress`
draws them as bars.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import itertools
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .errors import InvalidArgumentError

WorkerState = Literal["queued", "running", "finished", "failed"]
logger = logging.getLogger("pocaduck")


@dataclass(frozen=True)
class ProgressEvent:
    """One worker's state at one moment. Events of a worker are cumulative, not deltas.

    ``blocks_done`` and ``blocks_total`` count the worker's units: blocks for a
    scan worker, one for a compaction shard, files for a migrated worker.

    >>> ProgressEvent("0", "running", blocks_done=2, blocks_total=8, points_written=1000, elapsed=0.5).points_per_second
    2000.0
    """

    worker_id: str
    state: WorkerState
    blocks_done: int = 0
    blocks_total: int = 0
    labels_written: int = 0
    points_written: int = 0
    files_written: int = 0
    bytes_written: int = 0
    elapsed: float = 0.0
    error: str | None = None

    @property
    def points_per_second(self) -> float:
        return self.points_written / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def blocks_per_second(self) -> float:
        return self.blocks_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def fraction_done(self) -> float:
        return self.blocks_done / self.blocks_total if self.blocks_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Callback = Callable[[ProgressEvent], None]
# "auto": bars in a Jupyter notebook (where long work is watched), nothing in scripts and terminals;
# True or "tqdm": bars anywhere; False or None: nothing; a callable gets every event.
Progress = Callback | Literal["tqdm", "auto"] | bool | None


def _in_notebook() -> bool:
    """True in a Jupyter kernel with tqdm installed: there a bar is a widget, elsewhere a default must stay quiet."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell" and importlib.util.find_spec("tqdm") is not None


def check_progress(progress: object) -> Progress:
    """``progress`` if it is one of the forms :data:`Progress` lists; verbs check it before any work starts.

    >>> check_progress("auto"), check_progress(False)
    ('auto', False)
    """
    if progress is None or isinstance(progress, bool) or callable(progress) or progress in ("auto", "tqdm"):
        return progress
    raise InvalidArgumentError(
        f"progress must be 'auto' (bars in a notebook), 'tqdm' or True (bars), False or None (nothing), or a "
        f"callable taking each ProgressEvent; got {progress!r}"
    )


def display_for(progress: object, unit: str) -> Callback | None:
    """What ``progress`` asks for: bars of ``unit`` (close them when done), a callable, or nothing.

    >>> display_for(False, "block") is None, display_for(print, "block") is print
    (True, True)
    """
    progress = check_progress(progress)
    if progress == "auto":
        progress = _in_notebook()
    if progress is True or progress == "tqdm":
        return TqdmProgress(unit=unit)
    return progress or None


def _deliver(callback: Callback, event: ProgressEvent) -> None:
    """A failing display must not fail the run it displays: log its error and go on."""
    try:
        callback(event)
    except Exception:
        logger.exception("progress callback %r failed on %s", callback, event)


@contextlib.contextmanager
def progress_sink(progress: Progress, unit: str = "block") -> Iterator[Callback]:
    """Where a verb sends its events: ``progress`` (a callable), bars of ``unit`` (see :data:`Progress`), or nowhere.

    A failing callback is logged, not raised (Ctrl-C in one still stops the
    run); the bars close when the block ends.

    >>> seen = []
    >>> with progress_sink(seen.append) as sink:
    ...     sink(ProgressEvent("0", "queued"))
    >>> [event.state for event in seen]
    ['queued']
    """
    display = display_for(progress, unit)
    try:
        yield (lambda event: None) if display is None else (lambda event: _deliver(display, event))
    finally:
        if isinstance(display, TqdmProgress):
            display.close()


class EventLog:
    """Thread-safe, append-only stream of a run's events that can be followed live.

    It keeps the last ``history`` events (a long scan on many workers reports
    millions), and always the latest event of every worker.

    >>> log = EventLog()
    >>> log.append(ProgressEvent("0", "running", blocks_done=1, blocks_total=2))
    >>> log.close()
    >>> [event.blocks_done for event in log], log.latest()["0"].state
    ([1], 'running')
    """

    def __init__(self, history: int = 100_000) -> None:
        self._events: collections.deque[ProgressEvent] = collections.deque(maxlen=history)
        self._forgotten = 0  # events pushed out of the history
        self._latest: dict[str, ProgressEvent] = {}
        self._subscribers: list[Callback] = []
        self._changed = threading.Condition()
        self._delivering = threading.RLock()  # subscribers see events once each, in order
        self._closed = False

    def append(self, event: ProgressEvent) -> None:
        with self._delivering:
            with self._changed:
                if len(self._events) == self._events.maxlen:
                    self._forgotten += 1
                self._events.append(event)
                self._latest[event.worker_id] = event
                subscribers = list(self._subscribers)
                self._changed.notify_all()
            for callback in subscribers:
                _deliver(callback, event)

    def close(self) -> None:
        """Mark the stream complete: iterators end after the last event."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribe(self, callback: Callback) -> None:
        """Call ``callback`` with the kept events, then with each new one, in the thread that receives it."""
        with self._delivering:
            with self._changed:
                past = list(self._events)
                self._subscribers.append(callback)
            for event in past:
                _deliver(callback, event)

    def latest(self) -> dict[str, ProgressEvent]:
        """The most recent event of each worker."""
        with self._changed:
            return dict(self._latest)

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[ProgressEvent]:
        """The kept events, then each new one as it arrives, until the run ends (a slow reader skips forgotten ones)."""
        seen = 0  # events appended so far that this iterator has yielded or skipped
        while True:
            with self._changed:
                self._changed.wait_for(lambda seen=seen: seen < self._forgotten + len(self._events) or self._closed)
                batch = list(itertools.islice(self._events, max(seen - self._forgotten, 0), None))
                seen = self._forgotten + len(self._events)
            if not batch:
                return
            yield from batch


class TqdmProgress:
    """A progress display for scripts and terminals: one bar per worker, counting its ``unit`` s, and a total bar.

    ``progress="tqdm"`` in :func:`~pocaduck.scan_volume`, :func:`~pocaduck.compact`
    or :func:`~pocaduck.migrate` makes one and closes it at the end; close one
    you made yourself with :meth:`close`.

    Example::

        bars = TqdmProgress(ncols=100)
        scan_volume(volume, store, progress=bars)
        bars.close()
    """

    def __init__(self, unit: str = "block", **tqdm_options: Any) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self._unit = unit
        self._options = tqdm_options
        self._total: Any = None
        self._bars: dict[str, Any] = {}
        self._done: dict[str, int] = {}

    def __call__(self, event: ProgressEvent) -> None:
        if self._total is None:
            self._total = self._tqdm(total=0, desc="total", unit=self._unit, position=0, **self._options)
        bar = self._bars.get(event.worker_id)
        if bar is None:
            bar = self._tqdm(
                total=event.blocks_total,
                desc=f"worker {event.worker_id}",
                unit=self._unit,
                position=len(self._bars) + 1,
                leave=False,
                **self._options,
            )
            self._bars[event.worker_id] = bar
            self._total.total += event.blocks_total
            self._total.refresh()
        step = event.blocks_done - self._done.get(event.worker_id, 0)
        self._done[event.worker_id] = event.blocks_done
        bar.update(step)
        self._total.update(step)
        bar.set_postfix_str(f"{event.state}, {event.points_written:,} points, {event.points_per_second:,.0f} points/s")

    def close(self) -> None:
        """Close every bar (the worker bars disappear, the total stays)."""
        for bar in self._bars.values():
            bar.close()
        if self._total is not None:
            self._total.close()
