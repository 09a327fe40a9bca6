"""Where the tasks of a scan, a compaction or a migration run, with live progress, cancel and retries alike.

A :class:`Task` is a worker id, how many units it has (blocks, shards, files)
and a module-level function ``function(argument, report, should_stop)``. The
function reports cumulative "running" :class:`~pocaduck.ProgressEvent` s
through ``report`` as it goes, polls ``should_stop()`` between its units (and
raises once it is true), and returns an outcome whose ``final_event`` is its
"finished" event (:class:`TaskOutcome`, or a verb's own).

:func:`run_tasks` returns, per worker id, that outcome or a :class:`Failure`.
Events reach one ``sink`` in the calling thread: "queued" for every task
first, the tasks' own "running" events as they come, then one final event each
(finished, or failed with the error text; a cancelled task is "failed" with
error ``"cancelled"``). The tasks run

* as Dask tasks when a ``client`` is given: events travel through a scheduler
  topic, a distributed ``Event`` cancels, Dask retries;
* in the calling thread when one runs at a time (``workers=1``);
* otherwise in local processes or threads, as the verb chooses. Processes
  come from a forkserver that imported the tasks' modules once; like any
  multiprocessing code they import the main script, so a script must call the
  verb under ``if __name__ == "__main__":`` (a process that dies before it
  starts gets that advice), and each ends with the process that started it.
  Threads need neither guard nor start-up, and suit work that releases the GIL
  (Arrow, Parquet, numpy).

A cancel (``stop`` set, or Ctrl-C in the calling thread) starts no new task and
asks the running ones to stop; processes still running after a grace period
are killed, threads end at their next check. A failed task runs again, up to
``retries`` times, unless it was cancelled or its process never started.

Running on a cluster through dask-jobqueue (the store must be in a bucket or
on a filesystem every node mounts, and a scanned volume readable from every node: a zarr or
tensorstore array, or a ``.npy`` path on the shared filesystem)::

    from dask_jobqueue import SLURMCluster   # or LSFCluster, PBSCluster, ...
    from distributed import Client
    cluster = SLURMCluster(cores=8, processes=8, memory="32GB", walltime="02:00:00")
    cluster.scale(jobs=4)                     # 32 Dask workers
    with Client(cluster) as client:
        scan_volume(zarr.open_array("/shared/seg.zarr"), "/shared/store", workers=32, client=client, retries=2)
        compact("/shared/store", client=client)

A task that runs again (a retry, or Dask replacing a lost worker process)
starts over with the same worker id; each verb makes that replace, not add to,
what the earlier attempt wrote, so results stay exact.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._lifeline import exit_with
from .errors import PocaduckError
from .progress import Callback, ProgressEvent

ShouldStop = Callable[[], bool]
Pool = Literal["processes", "threads"]
_POLL_SECONDS = 0.1
_CANCEL_GRACE_SECONDS = 10.0
_EVENT_FIELDS = [f.name for f in dataclasses.fields(ProgressEvent)]
_MAIN_GUARD_ADVICE = (
    "it never started: if this runs from a script, call it under "
    '`if __name__ == "__main__":` (worker processes import the main script)'
)


class TaskStopped(Exception):
    """What a task raises once ``should_stop()`` is true; the executor reports it as cancelled, never raises it."""


@dataclass(frozen=True)
class Task:
    """One worker's work: ``function(argument, report, should_stop)``, reported as ``worker_id`` with ``total`` units.

    ``function`` is module-level (it pickles by reference) and ``argument`` small and picklable.
    """

    worker_id: str
    total: int
    function: Callable[[Any, Callback, ShouldStop], Any]
    argument: Any = None


@dataclass(frozen=True)
class TaskOutcome:
    """What a finished task returns: its final event and any value for the verb."""

    final_event: ProgressEvent
    value: Any = None


@dataclass(frozen=True)
class Failure:
    """How a task ended without an outcome: ``text`` is one line for its "failed" event and the verb's error."""

    worker_id: str
    text: str
    error: BaseException | None = None  # the task's own exception; None when its process died or it was cancelled
    details: str = ""  # the task's traceback: a remote traceback does not survive pickling
    cancelled: bool = False
    never_started: bool = False  # its process failed before running it (no __main__ guard): a retry cannot help

    @property
    def retryable(self) -> bool:
        return not (self.cancelled or self.never_started)


def raise_first_failure(
    results: dict[str, Any],
    what_failed: Callable[[Failure], str],
    run_again: str,
    error: type[Exception],
    cancelled: Exception,
) -> None:
    """Raise ``cancelled`` if a task was cancelled, else ``error`` for the first failed task, with advice that helps.

    ``run_again`` says how to resume ("run the compaction again: it resumes from …"): a task
    whose process never started gets no such advice (a re-run fails the same way), one that
    raised its own error is told to fix the cause first.

    >>> raise_first_failure({"a": Failure("a", "ValueError: bad")}, lambda f: f"task {f.worker_id} failed: {f.text}",
    ...                     "run it again", RuntimeError, RuntimeError("cancelled"))
    Traceback (most recent call last):
    RuntimeError: task a failed: ValueError: bad. Run it again
    """
    failures = [result for result in results.values() if isinstance(result, Failure)]
    if any(failure.cancelled for failure in failures):
        raise cancelled
    if not failures:
        return
    first = failures[0]
    what = what_failed(first)
    if first.never_started:
        raise error(what)
    if first.error is None:
        raise error(f"{what}. {run_again[0].upper()}{run_again[1:]}")
    raise error(f"{what}. Fix the cause, then {run_again}") from first.error


def describe(error: BaseException) -> str:
    """One line for an exception: our errors' messages say enough, others need their type.

    >>> describe(KeyError("x")), describe(PocaduckError("the store is busy"))
    ("KeyError: 'x'", 'the store is busy')
    """
    return str(error) if isinstance(error, PocaduckError) else f"{type(error).__name__}: {error}"


def local_cpus() -> int:
    """The CPUs of this machine (1 when Python cannot tell)."""
    return os.cpu_count() or 1


def worker_count(workers: int | None) -> int:
    """How many tasks run at once: ``workers``, or one per CPU for None, the default of every verb that runs tasks.

    >>> worker_count(3), worker_count(None) == local_cpus()
    (3, True)
    """
    return local_cpus() if workers is None else workers


def runs_here(workers: int | None, task_count: int, client: Any = None) -> bool:
    """True when :func:`run_tasks` runs the tasks in the calling thread (no Dask, one at a time)."""
    return client is None and min(worker_count(workers), task_count) <= 1


def run_tasks(
    tasks: Sequence[Task],
    *,
    workers: int | None,
    sink: Callback,
    stop: threading.Event | None = None,
    retries: int = 0,
    client: Any = None,
    pool: Pool = "processes",
    preload: Iterable[str] = (),
) -> dict[str, Any]:
    """Run ``tasks``, at most ``workers`` at a time (None: one per CPU), and return each one's outcome or
    :class:`Failure` by worker id.

    ``pool`` says what local workers are; ``preload`` names modules a
    forkserver imports beside the tasks' own (the volume's library for a scan).

    >>> def square(number, report, should_stop):
    ...     report(ProgressEvent("a", "running", blocks_total=1))
    ...     return TaskOutcome(ProgressEvent("a", "finished", blocks_done=1, blocks_total=1), number * number)
    >>> events = []
    >>> run_tasks([Task("a", 1, square, 3)], workers=1, sink=events.append)["a"].value
    9
    >>> [event.state for event in events]
    ['queued', 'running', 'finished']
    """
    stop = stop or threading.Event()
    tracker = _Tracker(tasks, sink)
    if client is not None:
        _run_on_dask(client, tasks, tracker, stop, retries)
    elif runs_here(workers, len(tasks)):
        _run_here(tasks, tracker, stop, retries)
    else:
        modules = ["pandas", *sorted({task.function.__module__ for task in tasks}), *preload]
        local = _Threads() if pool == "threads" else _Processes(modules)
        _run_pool(local, tasks, min(worker_count(workers), len(tasks)), tracker, stop, retries)
    return tracker.results


class _Tracker:
    """The latest event of every task, and the one place that emits final events."""

    def __init__(self, tasks: Sequence[Task], sink: Callback):
        self.sink = sink
        self.results: dict[str, Any] = {}
        self.latest = {t.worker_id: ProgressEvent(t.worker_id, "queued", blocks_total=t.total) for t in tasks}
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
        if isinstance(result, Failure):
            error = "cancelled" if result.cancelled else result.text
            event = dataclasses.replace(self.latest[worker_id], state="failed", error=error)
        else:
            event = result.final_event
        self.results[worker_id] = result
        self.latest[worker_id] = event
        self.sink(event)


def _attempt(task: Task, report: Callback, should_stop: ShouldStop, catching: type = Exception) -> Any:
    """Run ``task`` once: its outcome, or the :class:`Failure` it ended with."""
    try:
        return task.function(task.argument, report, should_stop)
    except catching as error:
        if should_stop():  # it stopped because it was asked to, or failed while stopping: either way, cancelled
            return Failure(task.worker_id, "cancelled", cancelled=True)
        return Failure(task.worker_id, describe(error), error, traceback.format_exc())


def _retry(result: Any, attempts: int, retries: int, stop: threading.Event) -> bool:
    return isinstance(result, Failure) and result.retryable and attempts < retries and not stop.is_set()


def _cancelled_before_start(worker_id: str) -> Failure:
    return Failure(worker_id, "cancelled before it started", cancelled=True)


# -- in the calling thread ------------------------------------------------------


def _run_here(tasks: Sequence[Task], tracker: _Tracker, stop: threading.Event, retries: int) -> None:
    """One task after another; Ctrl-C interrupts the running one and propagates."""
    for task in tasks:
        attempts = 0
        result = _cancelled_before_start(task.worker_id)
        while not stop.is_set():
            result = _attempt(task, tracker.running, stop.is_set)
            if not _retry(result, attempts, retries, stop):
                break
            attempts += 1
            tracker.requeued(task.worker_id)
        tracker.finish(task.worker_id, result)


# -- local processes or threads ---------------------------------------------------
#
# A worker sends ("started", worker_id, None), its events, then ("ended", worker_id, result). Each process
# writes to a pipe of its own, synchronously: a killed process cannot wedge a queue other workers share,
# and what it sent before it died is all there to read before the pipe's end, which the parent turns into
# ("gone", worker_id, exit_code).


def _process_main(task: Task, pipe: Any, stop_flag: Any, parent_pid: int) -> None:
    exit_with(parent_pid)  # a killed parent leaves no workers behind
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us through stop_flag
    pipe.send(("started", task.worker_id, None))
    result = _attempt(task, pipe.send, stop_flag.is_set)
    if isinstance(result, Failure) and not _travels(result.error):
        result = dataclasses.replace(result, error=None)
    pipe.send(("ended", task.worker_id, result))


def _travels(error: BaseException | None) -> bool:
    """True when ``error`` comes back whole through a pipe (some exceptions cannot be rebuilt from their args)."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return False
    return True


def _thread_main(task: Task, messages: queue.SimpleQueue, stop_flag: threading.Event) -> None:
    messages.put(("started", task.worker_id, None))
    result = _attempt(task, messages.put, stop_flag.is_set, catching=BaseException)  # a thread must always answer
    messages.put(("ended", task.worker_id, result))


class _Processes:
    """Worker processes from a forkserver that imported, once, what the tasks need.

    forkserver where available: no fork of a parent holding DuckDB or thread
    state. As with spawn, each worker imports the caller's main script (as
    ``__mp_main__``); notebooks and ``python -c`` need nothing. The server
    imports the tasks' modules and pandas (pyarrow imports it on a worker's
    first Parquet write, 0.2-0.4 s), so each worker starts warm; it starts
    with a process's first run of processes, and later runs share it.
    """

    def __init__(self, modules: list[str]):
        if "forkserver" in multiprocessing.get_all_start_methods():
            self.context = multiprocessing.get_context("forkserver")
            self.context.set_forkserver_preload(modules)
        else:
            self.context = multiprocessing.get_context("spawn")
        self.stop_flag = self.context.Event()
        self.pipes: dict[Any, tuple[str, Any]] = {}  # read end -> (worker id, process)

    def start(self, task: Task) -> Any:
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_process_main,
            args=(task, writer, self.stop_flag, os.getpid()),
            name=f"pocaduck-{task.worker_id}",
        )
        process.start()
        writer.close()  # the child holds the only write end: its death ends the pipe
        self.pipes[reader] = (task.worker_id, process)
        return process

    def receive(self, timeout: float) -> list[Any]:
        messages = []
        for reader in multiprocessing.connection.wait(list(self.pipes), timeout):
            try:
                messages.append(reader.recv())
            except EOFError:  # the process ended, and everything it sent has been read
                worker_id, process = self.pipes.pop(reader)
                reader.close()
                process.join()
                messages.append(("gone", worker_id, process.exitcode))
        return messages

    def kill(self, process: Any) -> bool:
        process.kill()
        process.join()
        return True

    def close(self, processes: list[Any]) -> None:
        self.stop_flag.set()
        for process in processes:
            process.join(timeout=2)
            if process.is_alive():
                process.kill()
                process.join()
        for reader in self.pipes:
            reader.close()
        self.pipes.clear()


class _Threads:
    """Worker threads of this process: they share its imports and memory, and cannot be killed."""

    def __init__(self) -> None:
        self.messages: queue.SimpleQueue = queue.SimpleQueue()
        self.stop_flag = threading.Event()

    def start(self, task: Task) -> threading.Thread:
        thread = threading.Thread(
            target=_thread_main, args=(task, self.messages, self.stop_flag), name=f"pocaduck-{task.worker_id}"
        )
        thread.daemon = True  # a second Ctrl-C may abandon it rather than hang the interpreter's exit
        thread.start()
        return thread

    def receive(self, timeout: float) -> list[Any]:
        try:
            messages = [self.messages.get(timeout=timeout)]
        except queue.Empty:
            return []
        while not self.messages.empty():
            messages.append(self.messages.get())
        return messages

    def kill(self, thread: threading.Thread) -> bool:
        return False  # it ends at its next should_stop() check

    def close(self, threads: list[threading.Thread]) -> None:
        self.stop_flag.set()
        for thread in threads:
            thread.join()


def _run_pool(
    pool: _Processes | _Threads,
    tasks: Sequence[Task],
    workers: int,
    tracker: _Tracker,
    stop: threading.Event,
    retries: int,
) -> None:
    """Run ``tasks`` on at most ``workers`` of ``pool``'s workers; a worker that dies counts as a failed task."""
    waiting = collections.deque(tasks)
    attempts = dict.fromkeys((t.worker_id for t in tasks), 0)
    running: dict[str, tuple[Any, Task]] = {}
    started: set[str] = set()
    stopped_at = None

    def ended(worker_id: str, result: Any) -> None:
        worker, task = running.pop(worker_id)
        worker.join()
        started.discard(worker_id)
        if _retry(result, attempts[worker_id], retries, stop):
            attempts[worker_id] += 1
            waiting.append(task)
            tracker.requeued(worker_id)
        else:
            tracker.finish(worker_id, result)

    def handle(message: Any) -> None:
        if isinstance(message, ProgressEvent):
            tracker.running(message)
            return
        kind, worker_id, value = message
        if worker_id not in running:  # already given up on (killed after a cancel), or its pipe ending
            return
        if kind == "started":
            started.add(worker_id)
        elif kind == "ended":
            ended(worker_id, value)
        else:  # "gone" without a result
            task = running[worker_id][1]
            ended(worker_id, _crash(task, value, tracker.latest[worker_id], worker_id in started))

    try:
        while waiting or running:
            if stop.is_set() and stopped_at is None:
                stopped_at = time.monotonic()
                pool.stop_flag.set()
                while waiting:
                    worker_id = waiting.popleft().worker_id
                    tracker.finish(worker_id, _cancelled_before_start(worker_id))
            while waiting and len(running) < workers:
                task = waiting.popleft()
                running[task.worker_id] = (pool.start(task), task)
            for message in pool.receive(_POLL_SECONDS):
                handle(message)
            if stopped_at is not None and time.monotonic() - stopped_at > _CANCEL_GRACE_SECONDS:
                for worker_id, (worker, _) in list(running.items()):
                    if pool.kill(worker):
                        running.pop(worker_id)
                        tracker.finish(
                            worker_id, Failure(worker_id, "killed after the cancel grace period", cancelled=True)
                        )
    finally:
        pool.close([worker for worker, _ in running.values()])


def _crash(task: Task, exit_code: int | None, latest: ProgressEvent, started: bool) -> Failure:
    """The failure of a worker whose process ended without a result, with advice when it never started."""
    how = f"exit code {exit_code}"
    if exit_code is not None and exit_code < 0:
        how += f", {signal.Signals(-exit_code).name}"
    text = f"its process died ({how}) with {latest.blocks_done} of its {task.total} done"
    # Exit code 1 before the task began: the main script failed in the worker, as it does without the guard.
    # (Killed before it began, by a signal, it may well start the next time.)
    never_started = not started and exit_code == 1
    if never_started:
        text += "; " + _MAIN_GUARD_ADVICE
    return Failure(task.worker_id, text, never_started=never_started)


# -- Dask ---------------------------------------------------------------------


def _dask_main(task: Task, topic: str, cancel_name: str) -> Any:
    from distributed import Event, get_worker

    worker = get_worker()
    cancel = Event(cancel_name)
    checked = [-math.inf, False]  # not 0.0: time.monotonic() counts from boot

    def should_stop() -> bool:  # a scheduler round trip: ask at most twice a second
        if time.monotonic() - checked[0] > 0.5:
            checked[:] = [time.monotonic(), cancel.is_set()]
        return checked[1]

    result = _attempt(task, lambda event: worker.log_event(topic, event.to_dict()), should_stop)
    if isinstance(result, Failure) and not result.cancelled:
        raise result.error  # Dask retries a task that raised
    return result


def _run_on_dask(client: Any, tasks: Sequence[Task], tracker: _Tracker, stop: threading.Event, retries: int) -> None:
    """Each task as one Dask task on ``client``'s cluster; events arrive through a scheduler topic."""
    from distributed import Event, wait

    topic = f"pocaduck-{uuid.uuid4().hex}"
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    client.subscribe_topic(topic, lambda record: inbox.put(record[1]))
    cancel = Event(f"{topic}-cancel", client=client)
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
                    worker_id = futures[future].worker_id
                    tracker.finish(worker_id, Failure(worker_id, "cancelled after the grace period", cancelled=True))
                pending = set()
    finally:
        client.unsubscribe_topic(topic)
        client.cancel(list(pending), force=True)


def _event_from_record(record: dict) -> ProgressEvent:
    """A ProgressEvent back from its logged dict (the worker adds keys of its own, such as ``worker``)."""
    return ProgressEvent(**{name: record[name] for name in _EVENT_FIELDS})


def _dask_result(future: Any, task: Task) -> Any:
    error = future.exception()
    if error is None:
        return future.result()
    details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return Failure(task.worker_id, describe(error), error, details)
