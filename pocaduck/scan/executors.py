"""Where scan workers run: local processes (the default) or Dask tasks; both stream progress while they run.

Both executors take the same tasks and return, per worker id, either a
:class:`WorkerOutcome` or the exception that ended it. Events flow into one
``sink`` in the coordinating thread: "queued" for every worker first, the
workers' own "running" events as they come, then one final event each
(finished, or failed with the error text; a cancelled worker is "failed" with
error ``"cancelled"``).

Running on a cluster through dask-jobqueue (the store must be on a filesystem
every node mounts, and the volume readable from every node: a zarr or
tensorstore array, or a ``.npy`` path on the shared filesystem)::

    from dask_jobqueue import SLURMCluster   # or LSFCluster, PBSCluster, ...
    from distributed import Client
    cluster = SLURMCluster(cores=8, processes=8, memory="32GB", walltime="02:00:00")
    cluster.scale(jobs=4)                     # 32 Dask workers
    with Client(cluster) as client:
        scan_volume(zarr.open_array("/shared/seg.zarr"), "/shared/store", workers=32, client=client, retries=2)

One task is one worker id with a fixed block set. A task Dask retries (after
an error when ``retries`` > 0, or after losing its worker process) starts a
new Ingestor with the same worker id, which discards or replaces the earlier
attempt's data, so results stay exact.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import multiprocessing
import os
import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from .._lifeline import exit_with
from ..errors import ScanCancelledError, ScanWorkerError
from ..progress import ProgressEvent
from .worker import ScanTask, WorkerOutcome, run_scan_task

Sink = Callable[[ProgressEvent], None]
Results = dict[str, Any]
_POLL_SECONDS = 0.1
_CANCEL_GRACE_SECONDS = 10.0
_EVENT_FIELDS = [f.name for f in dataclasses.fields(ProgressEvent)]


class _Tracker:
    """The latest event of every worker, and the one place that emits final events."""

    def __init__(self, tasks: Sequence[ScanTask], sink: Sink):
        self.sink = sink
        self.results: Results = {}
        self.latest = {t.worker_id: ProgressEvent(t.worker_id, "queued", blocks_total=len(t.blocks)) for t in tasks}
        for event in self.latest.values():
            sink(event)

    def running(self, event: ProgressEvent) -> None:
        if event.worker_id in self.latest and event.worker_id not in self.results:
            self.latest[event.worker_id] = event
            self.sink(event)

    def requeued(self, worker_id: str) -> None:
        self.latest[worker_id] = dataclasses.replace(self.latest[worker_id], state="queued", error=None)
        self.sink(self.latest[worker_id])

    def finish(self, worker_id: str, result: Any) -> None:
        if isinstance(result, WorkerOutcome):
            event = result.final_event
        else:
            error = "cancelled" if isinstance(result, ScanCancelledError) else str(result)
            event = dataclasses.replace(self.latest[worker_id], state="failed", error=error)
        self.results[worker_id] = result
        self.latest[worker_id] = event
        self.sink(event)


# -- local processes -----------------------------------------------------------


def _process_context(volume_library: str) -> multiprocessing.context.BaseContext:
    """forkserver where available: no fork of a parent holding DuckDB or thread state.

    As with spawn, each worker imports the caller's main script (as
    ``__mp_main__``), so a script must call the scan under
    ``if __name__ == "__main__":``; notebooks and ``python -c`` need nothing.

    The server imports, once, the worker's modules, pandas (pyarrow imports it
    on a worker's first Parquet write, 0.2-0.4 s) and the volume's library
    (zarr, tensorstore, ...), so each worker starts warm. The server starts
    with a process's first scan; later scans share it.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["pocaduck.scan.worker", "pandas", volume_library])
        return context
    return multiprocessing.get_context("spawn")


def _process_main(task: ScanTask, messages: Any, stop_flag: Any, parent_pid: int) -> None:
    exit_with(parent_pid)  # a killed scan leaves no workers behind
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us through stop_flag
    try:
        result: Any = run_scan_task(task, messages.put, stop_flag.is_set)
    except (ScanWorkerError, ScanCancelledError) as error:
        result = error
    messages.put((task.worker_id, result))


def run_local(tasks: Sequence[ScanTask], workers: int, sink: Sink, stop: threading.Event, retries: int = 0) -> Results:
    """Run ``tasks`` in at most ``workers`` local processes; a crashed process counts as a failed worker."""
    context = _process_context(_library_of(tasks[0].source) if tasks else "numpy")
    messages = context.Queue()
    stop_flag = context.Event()
    tracker = _Tracker(tasks, sink)
    waiting = collections.deque(tasks)
    attempts = dict.fromkeys((t.worker_id for t in tasks), 0)
    running: dict[str, tuple[Any, ScanTask]] = {}
    stopped_at = None

    def handle(message: Any) -> None:
        if isinstance(message, ProgressEvent):
            tracker.running(message)
            return
        worker_id, result = message
        if worker_id not in running:  # already given up on (killed after a cancel)
            return
        process, task = running.pop(worker_id)
        process.join()
        if isinstance(result, ScanWorkerError) and attempts[worker_id] < retries and not stop.is_set():
            attempts[worker_id] += 1
            waiting.append(task)
            tracker.requeued(worker_id)
        else:
            tracker.finish(worker_id, result)

    try:
        while waiting or running:
            if stop.is_set() and stopped_at is None:
                stopped_at = time.monotonic()
                stop_flag.set()
                while waiting:
                    tracker.finish(waiting.popleft().worker_id, ScanCancelledError("cancelled before it started"))
            while waiting and len(running) < workers:
                task = waiting.popleft()
                process = context.Process(
                    target=_process_main,
                    args=(task, messages, stop_flag, os.getpid()),
                    name=f"pocaduck-scan-{task.worker_id}",
                )
                process.start()
                running[task.worker_id] = (process, task)
            try:
                handle(messages.get(timeout=_POLL_SECONDS))
            except queue.Empty:
                _collect_dead(running, messages, handle, tracker)
            if stopped_at is not None and time.monotonic() - stopped_at > _CANCEL_GRACE_SECONDS:
                for worker_id, (process, _) in list(running.items()):
                    process.kill()
                    process.join()
                    running.pop(worker_id)
                    tracker.finish(worker_id, ScanCancelledError("killed after the cancel grace period"))
    finally:
        stop_flag.set()
        for process, _ in running.values():
            process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join()
        messages.close()
    return tracker.results


def _library_of(source: Any) -> str:
    """The top-level package a volume source needs in the worker (zarr for a zarr array)."""
    return type(getattr(source, "volume", source)).__module__.split(".")[0]


def _collect_dead(
    running: dict[str, tuple[Any, ScanTask]], messages: Any, handle: Callable[[Any], None], tracker: _Tracker
) -> None:
    """Workers whose process ended without a result: drain what they sent, then report them as crashed."""
    dead = [worker_id for worker_id, (process, _) in running.items() if process.exitcode is not None]
    if not dead:
        return
    while True:  # a process flushes its queue before it exits: anything it sent is readable now
        try:
            handle(messages.get(timeout=_POLL_SECONDS))
        except queue.Empty:
            break
    for worker_id in dead:
        if worker_id in running:
            process, task = running.pop(worker_id)
            done = tracker.latest[worker_id].blocks_done
            text = (
                f"its process died (exit code {process.exitcode}) after about {done} of its {len(task.blocks)} blocks"
            )
            if process.exitcode == 1 and tracker.latest[worker_id].state == "queued":
                text += (
                    "; it never started: if the scan runs from a script, call it under "
                    '`if __name__ == "__main__":` (worker processes import the main script)'
                )
            tracker.finish(worker_id, ScanWorkerError(worker_id, None, None, text))


# -- Dask ---------------------------------------------------------------------


def _dask_main(task: ScanTask, topic: str, cancel_name: str) -> WorkerOutcome:
    from distributed import Event, get_worker

    worker = get_worker()
    cancel = Event(cancel_name)
    checked = [-math.inf, False]  # not 0.0: time.monotonic() counts from boot

    def stop_requested() -> bool:  # a scheduler round trip: ask at most twice a second
        if time.monotonic() - checked[0] > 0.5:
            checked[:] = [time.monotonic(), cancel.is_set()]
        return checked[1]

    return run_scan_task(task, lambda event: worker.log_event(topic, event.to_dict()), stop_requested)


def run_dask(client: Any, tasks: Sequence[ScanTask], sink: Sink, stop: threading.Event, retries: int = 0) -> Results:
    """Run each task as one Dask task on ``client``'s cluster; events arrive through a scheduler topic."""
    from distributed import Event, wait

    topic = f"pocaduck-scan-{uuid.uuid4().hex}"
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    client.subscribe_topic(topic, lambda record: inbox.put(record[1]))
    cancel = Event(f"{topic}-cancel", client=client)
    tracker = _Tracker(tasks, sink)
    futures = {
        client.submit(_dask_main, task, topic, cancel.name, key=f"{topic}-{task.worker_id}", retries=retries): task
        for task in tasks
    }
    pending = set(futures)
    stopped_at = None
    try:
        while pending:
            try:
                done, pending = wait(pending, timeout=_POLL_SECONDS, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            while not inbox.empty():
                tracker.running(_event_from_record(inbox.get()))
            for future in done:
                tracker.finish(futures[future].worker_id, _dask_result(future, futures[future]))
            if stop.is_set() and stopped_at is None:
                stopped_at = time.monotonic()
                cancel.set()
            if stopped_at is not None and time.monotonic() - stopped_at > _CANCEL_GRACE_SECONDS:
                client.cancel(list(pending), force=True)
                for future in pending:
                    tracker.finish(futures[future].worker_id, ScanCancelledError("cancelled after the grace period"))
                pending = set()
    finally:
        client.unsubscribe_topic(topic)
        client.cancel(list(pending), force=True)
    return tracker.results


def _event_from_record(record: dict) -> ProgressEvent:
    """A ProgressEvent back from its logged dict (the worker adds keys of its own, such as ``worker``)."""
    return ProgressEvent(**{name: record[name] for name in _EVENT_FIELDS})


def _dask_result(future: Any, task: ScanTask) -> Any:
    error = future.exception()
    if error is None:
        return future.result()
    if isinstance(error, (ScanWorkerError, ScanCancelledError)):
        return error
    return ScanWorkerError(task.worker_id, None, None, f"{type(error).__name__}: {error}")
