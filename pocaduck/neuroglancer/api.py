"""``export_neuroglancer``: a store as sharded precomputed point annotations that neuroglancer opens."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..config import StorageConfig, as_config
from ..errors import LegacyStoreError
from ..progress import ProgressEvent
from ..query import Query
from ..storage import open_storage
from ..store import Store, open_store
from .plan import (
    DEFAULT_SHARD_BYTES,
    FORMAT,
    FORMAT_VERSION,
    INFO,
    RECORD,
    WORK,
    make_plan,
    output_state,
    save_plan,
)
from .runner import run_tasks
from .spatial import POINTS_PER_CELL
from .tasks import ExportTask, is_done, publish, result_of


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote; ``reused`` when ``out`` already held this very export and nothing was written."""

    out: str
    labels: int
    points: int
    files: int
    bytes: int
    tasks: int
    tasks_reused: int
    seconds: float
    reused: bool = False

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds if self.seconds > 0 and not self.reused else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "points_per_second": round(self.points_per_second)}


def export_neuroglancer(
    store: Store | StorageConfig | str | os.PathLike,
    out: StorageConfig | str | os.PathLike,
    labels: Iterable[int] | None = None,
    properties: Sequence[str] | None = None,
    workers: int | None = None,
    client: Any = None,
    progress: Callable[[ProgressEvent], None] | Literal["tqdm"] | None = None,
    *,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    points_per_cell: int = POINTS_PER_CELL,
) -> ExportReport:
    """Write ``labels`` of a store (all by default) into ``out`` as neuroglancer precomputed point annotations.

    ``out`` is a new or empty folder, or a bucket URL (``s3://…``, ``gs://…``, ``az://…``). It
    gets ``info``, a ``by_id`` index, one relationship ``label`` (select a segment, see its
    points) and a spatial index of several levels, all sharded (``neuroglancer_uint64_sharded_v1``,
    shards of about ``shard_bytes``). Each spatial level holds about ``points_per_cell`` points per grid
    cell, the finest level the rest. Open it in neuroglancer as ``precomputed://URL-of-out``.

    Coordinates are the store's x, y, z as float32, in voxels of the manifest's ``voxel_size``
    (nm; 1 nm with a warning when it has none). ``properties`` (default: every column after x, y, z)
    become annotation properties; neuroglancer has no 64-bit types, so int64 and uint64 columns
    become int32 and uint32 (a value out of range stops the export, naming the column) and
    float64 columns float32.

    Tasks run in ``workers`` local processes (default one per CPU), or on a Dask ``client``;
    ``progress`` (a callable, or ``"tqdm"``) gets a :class:`~pocaduck.ProgressEvent` per task. A run
    that was killed resumes where it stopped when run again with the same arguments, and ends
    with the same bytes as an uninterrupted one; running it again once done changes nothing.
    A folder that holds anything else is refused untouched (``ExportFolderError``).

    >>> import tempfile, numpy as np
    >>> from pocaduck import Ingestor, consolidate, create_store
    >>> store = tempfile.mkdtemp()
    >>> _ = create_store(store, voxel_size=[8, 8, 40])
    >>> with Ingestor(store, worker_id=0) as ingestor:
    ...     ingestor.write(7, "b0", np.array([[1, 2, 3], [4, 5, 6]]))
    >>> _ = consolidate(store)
    >>> report = export_neuroglancer(store, tempfile.mkdtemp() + "/ng", workers=1)
    >>> report.points, report.labels
    (2, 1)
    """
    started = time.perf_counter()
    opened = open_store(store)
    opened.require("export_neuroglancer")
    if opened.kind != "pocaduck":
        raise LegacyStoreError(
            f"{opened.path} was written by the original pocaduck 0.1.x: convert it first with "
            f"`pocaduck migrate OLD NEW`, then export the new store"
        )
    out_config = as_config(out)
    storage = open_storage(out_config)
    with Query(opened) as query:
        plan, table = make_plan(opened, query, labels, properties, shard_bytes, points_per_cell)
    state = output_state(storage, plan.fingerprint)
    if state == "done":
        storage.delete_tree(WORK)  # a run killed after its last file leaves only this
        record = json.loads(storage.read_bytes(RECORD))
        return ExportReport(out_config.base_path, record["labels"], record["points"], record["files"],
                            record["bytes"], 0, 0, time.perf_counter() - started, reused=True)  # fmt: skip
    if state == "new":
        save_plan(storage, plan, table)
    sink = _sink(progress)
    try:
        phases = [plan.id_tasks(), plan.shard_tasks()]  # every shard task reads every ids task's rows
        pending = 0
        for names in phases:
            tasks = [ExportTask(opened.config, out_config, plan.fingerprint, name) for name in names]
            todo = [task for task in tasks if not is_done(storage, task.name)]
            pending += len(todo)
            run_tasks(todo, workers or os.cpu_count() or 1, client, sink)
    finally:
        close = getattr(sink, "close", None)
        if close is not None:
            close()
    names = [name for phase in phases for name in phase]
    results = [result_of(storage, name) for name in names]
    largest = {}
    for name, result in zip(names, results, strict=True):
        index = name.rsplit("-", 1)[0]
        largest[index] = max(largest.get(index, 0), result["largest_cell"])
    info = plan.info([largest.get(f"spatial{level}", 0) for level in range(len(plan.levels))])
    info_bytes = publish(storage, INFO, [json.dumps(info, indent=1).encode()])
    files = sum(result["files"] for result in results) + 1
    total = sum(result["bytes"] for result in results) + info_bytes
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": plan.fingerprint,
              "store": opened.path, "labels": plan.label_count, "points": plan.point_count, "files": files,
              "bytes": total}  # fmt: skip
    publish(storage, RECORD, [json.dumps(record, indent=1).encode()])
    storage.delete_tree(WORK)
    return ExportReport(out_config.base_path, plan.label_count, plan.point_count, files, total, len(names),
                        len(names) - pending, time.perf_counter() - started)  # fmt: skip


def _sink(progress: Callable[[ProgressEvent], None] | Literal["tqdm"] | None) -> Callable[[ProgressEvent], None]:
    if progress == "tqdm":
        from ..scan.events import TqdmProgress

        return TqdmProgress()
    return progress or (lambda event: None)
