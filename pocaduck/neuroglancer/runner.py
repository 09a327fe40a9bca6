"""A minimal runner for the export's tasks: in this process, in local processes, or on a Dask cluster.

Stands in until the shared executor lands; the tasks need nothing from it but
to be called (each is a picklable callable returning its result dict). Every
task is reported ``queued``, then ``finished`` (or ``failed``) as a
:class:`~pocaduck.ProgressEvent` whose worker id is the task's name. A failed
task stops the run with :class:`~pocaduck.ExportError`: what finished stays
done, and the next run resumes from there.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from .._lifeline import exit_with
from ..errors import ExportError
from ..progress import ProgressEvent
from .tasks import ExportTask

Sink = Callable[[ProgressEvent], None]


def run_tasks(tasks: Sequence[ExportTask], workers: int, client: Any, sink: Sink) -> list[dict[str, Any]]:
    """Run ``tasks``; return their results in the order they finished."""
    for task in tasks:
        sink(ProgressEvent(task.name, "queued", blocks_total=1))
    if client is not None:
        outcomes = _on_dask(client, tasks)
    elif workers <= 1 or len(tasks) <= 1:
        outcomes = ((task, task) for task in tasks)
    else:
        outcomes = _in_processes(tasks, workers)
    results = []
    for task, outcome in outcomes:
        try:
            result = outcome()
        except Exception as error:
            sink(ProgressEvent(task.name, "failed", blocks_total=1, error=repr(error)))
            close = getattr(outcomes, "close", None)
            if close is not None:
                close()  # stop the other tasks now, not when the generator is collected
            raise ExportError(
                f"export task {task.name} failed: {error!r}. Run the export again: it resumes from the tasks "
                f"already done"
            ) from error
        sink(
            ProgressEvent(
                task.name,
                "finished",
                blocks_done=1,
                blocks_total=1,
                labels_written=result["labels"],
                points_written=result["points"],
                files_written=result["files"],
                bytes_written=result["bytes"],
                elapsed=result["seconds"],
            )
        )
        results.append(result)
    return results


def _in_processes(tasks: Sequence[ExportTask], workers: int) -> Iterator[tuple[ExportTask, Callable[[], dict]]]:
    # forkserver (else spawn): never fork a parent that may hold DuckDB or pyarrow threads.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)),
        mp_context=multiprocessing.get_context(method),
        initializer=exit_with,  # a killed export leaves no worker behind
        initargs=(os.getpid(),),
    ) as pool:
        futures = {pool.submit(task): task for task in tasks}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result
        finally:
            for future in futures:
                future.cancel()


def _on_dask(client: Any, tasks: Sequence[ExportTask]) -> Iterator[tuple[ExportTask, Callable[[], dict]]]:
    from distributed import as_completed as dask_completed

    futures = [client.submit(task, key=f"pocaduck-export-{task.fingerprint}-{task.name}", pure=False) for task in tasks]
    task_of = {future.key: task for future, task in zip(futures, tasks, strict=True)}
    try:
        for future in dask_completed(futures):
            yield task_of[future.key], future.result
    finally:
        client.cancel(futures)
