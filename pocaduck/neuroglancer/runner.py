"""A minimal runner for the export's tasks: in this process, in local processes, or on a Dask cluster.

Stands in until the shared executor lands (it borrows compaction's process pool
and Dask mapping meanwhile); the tasks need nothing from it but to be called
(each is a picklable callable returning its result dict). Every task is reported ``queued``, then ``finished`` (or ``failed``) as a
:class:`~pocaduck.ProgressEvent` whose worker id is the task's name. A failed
task stops the run with :class:`~pocaduck.ExportError`: what finished stays
done, and the next run resumes from there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..compact import _in_processes, _on_dask
from ..errors import ExportError
from ..progress import ProgressEvent
from .tasks import ExportTask

Sink = Callable[[ProgressEvent], None]


def run_tasks(tasks: Sequence[ExportTask], workers: int, client: Any, sink: Sink) -> list[dict[str, Any]]:
    """Run ``tasks``; return their results in the order they finished."""
    for task in tasks:
        sink(ProgressEvent(task.name, "queued", blocks_total=1))
    # Compaction's process pool and Dask mapping, until both move to the shared executor.
    if client is not None:
        outcomes = _on_dask(_call, list(tasks), client)
    elif workers <= 1 or len(tasks) <= 1:
        outcomes = ((task, task) for task in tasks)
    else:
        outcomes = _in_processes(_call, list(tasks), workers)
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


def _call(task: ExportTask) -> dict[str, Any]:
    return task()
