"""``scan_volume``: a 3D label volume into a store, block by block, by many workers, with live progress.

Conventions, fixed for every scan:

* the volume is indexed ``[z, y, x]`` (C order, as numpy, zarr and tensorstore
  hold image stacks); pass ``volume.T`` for an ``[x, y, z]`` array such as
  CloudVolume's. Every per-axis argument (``block_shape``, ``voxel_size``,
  ``voxel_offset``) is given in that same z, y, x order;
* points are stored in columns ``x, y, z`` (int32, int64 only when the
  coordinates need it): the voxel's global index = its index in the volume +
  ``voxel_offset``. Multiply by ``voxel_size`` for physical units;
* block ids are int64 grid positions, ``gz << 42 | gy << 21 | gx`` (see
  :mod:`pocaduck.scan.blocks`);
* the manifest records, in column order (x, y, z), ``voxel_size``,
  ``voxel_offset`` and ``volume_shape``, plus the scan settings under ``scan``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arguments import (
    flag,
    non_negative_int,
    non_negative_number,
    one_of,
    optional_uint64,
    per_axis,
    positive_int,
)
from ..config import StorageConfig
from ..consolidate import consolidate as consolidate_store
from ..errors import EmptyStoreError, InvalidArgumentError, ScanCancelledError, ScanConflictError, ScanWorkerError
from ..executor import Failure, Pool, Task, run_tasks, runs_here
from ..layout import check_worker_id
from ..progress import EventLog, Progress, ProgressEvent, TqdmProgress, check_progress, display_for
from ..store import Store, create_store, open_store
from .blocks import BlockGrid
from .extract import MODES, Mode, PointSelection
from .volumes import Pickled, check_volume, library_of, share_with_processes, share_with_task
from .worker import COLUMNS, ScanTask, WorkerOutcome, run_scan_task

_INT32_LIMIT = 2**31
_POOL: Pool = "processes"  # local scan workers: see bench/bench_executors.py


@dataclass(frozen=True)
class ScanResult:
    """What a scan did. ``timings`` holds worker seconds summed over workers (read, extract, write, and
    cpu: the workers' CPU time over all their threads) and wall seconds (consolidate, total).

    >>> ScanResult("s", 2, 8, 10**6, 5000, 2, 10**5, {"total": 0.5}).voxels_per_second
    2000000.0
    """

    store: str
    workers: int
    blocks: int
    voxels: int
    points: int
    files: int
    bytes: int
    timings: dict[str, float]

    @property
    def voxels_per_second(self) -> float:
        return self.voxels / self.timings["total"] if self.timings["total"] > 0 else 0.0

    @property
    def points_per_second(self) -> float:
        return self.points / self.timings["total"] if self.timings["total"] > 0 else 0.0


def _xyz(values: Sequence) -> list:
    return [values[2], values[1], values[0]]


class ScanHandle:
    """A scan running in a background thread: follow ``events``, ``wait()`` for the result, or ``cancel()``.

    Example::

        handle = scan_volume(volume, "store", background=True)
        handle.events.subscribe(print)
        handle.wait()
    """

    def __init__(
        self, run: Callable[[Callable[[ProgressEvent], None], threading.Event], ScanResult], progress: Progress
    ):
        self.events = EventLog()
        self._run = run
        self._stop = threading.Event()
        self._result: ScanResult | None = None
        self._error: BaseException | None = None
        self._finished = threading.Event()
        display = display_for(progress, "block")
        self._display = display if isinstance(display, TqdmProgress) else None  # bars it made, closed at the end
        if display is not None:
            self.events.subscribe(display)
        self._thread: threading.Thread | None = None

    def _execute(self) -> None:
        try:
            self._result = self._run(self.events.append, self._stop)
        except BaseException as error:
            self._error = error
        finally:
            if self._display is not None:
                self._display.close()
            self.events.close()
            self._finished.set()

    def _start(self) -> ScanHandle:
        self._thread = threading.Thread(target=self._execute, name="pocaduck-scan", daemon=True)
        self._thread.start()
        return self

    def _run_here(self) -> ScanResult:
        """Run in the calling thread (Ctrl-C stops the workers, then propagates) and return the result."""
        self._execute()
        return self.wait()

    @property
    def done(self) -> bool:
        """True once the scan has ended, whether it succeeded, failed or was cancelled."""
        return self._finished.is_set()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._stop.is_set()

    def cancel(self) -> None:
        """Ask every worker to stop after its current block; ``wait()`` then raises ScanCancelledError."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> ScanResult:
        """Block until the scan ends; return its result or raise its error (TimeoutError if ``timeout`` passes)."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"the scan is still running after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def scan_volume(
    volume: Any,
    store: Store | StorageConfig | str | os.PathLike,
    block_shape: int | Sequence[int] = (64, 64, 64),
    workers: int = 4,
    mode: Mode = "surface",
    client: Any = None,
    progress: Progress = None,
    *,
    ignore_label: int | None = 0,
    sample_cap: int = 1000,
    seed: int = 0,
    voxel_size: float | Sequence[float] = (1, 1, 1),
    voxel_offset: int | Sequence[int] = (0, 0, 0),
    consolidate: bool = True,
    resume: bool = False,
    retries: int = 0,
    background: bool = False,
    max_points_per_file: int = 2_000_000,
    tile_bytes: int = 128 * 2**20,
    report_interval: float = 0.25,
    payload: str | None = None,
    blocks: Sequence[int] | np.ndarray | None = None,
    worker_prefix: str | None = None,
) -> ScanResult | ScanHandle:
    """Scan a 3D label volume into ``store`` with ``workers`` parallel workers, then consolidate.

    ``volume`` is any ``[z, y, x]`` integer array-like with ``shape``, ``dtype``
    and slicing from index 0 (numpy, ``np.load(..., mmap_mode="r")``, zarr, a
    tensorstore array after ``.translate_to[0, 0, 0]``). Each worker gets one
    worker id, ``scan-<i>``, and a contiguous run of blocks in raster order.
    It reads them by tiles, boxes of blocks up to ``tile_bytes`` of labels,
    when the volume is chunked (see :mod:`pocaduck.scan.blocks`); numpy
    arrays are read block by block. ``mode`` is ``"surface"``, ``"all"`` or
    ``"sample"`` (at most ``sample_cap`` points per label per block, seeded by
    ``seed``); see :mod:`pocaduck.scan.extract`. Label ``ignore_label`` (0)
    is skipped; None keeps every label.

    Workers are local processes (from a script, call this under
    ``if __name__ == "__main__":``, as for any multiprocessing code; a single
    worker runs in this process), or Dask tasks when ``client`` (a
    ``distributed.Client``, e.g. on a dask-jobqueue SLURMCluster or LSFCluster:
    see :mod:`pocaduck.executor`) is given; ``retries`` re-runs a failed
    worker, or one whose process died. ``progress`` (a callable receiving
    :class:`~pocaduck.ProgressEvent` s while the scan runs; ``"tqdm"`` or True
    for bars, ``"auto"`` for bars in a notebook only; None or False, the
    default, for nothing) is checked before any work starts. A failed worker
    does not stop the others: the scan consolidates what finished and raises
    :class:`ScanWorkerError` naming the worker and block. Re-running the same
    scan replaces its data; ``resume=True`` keeps finished workers.
    ``background=True`` returns a :class:`ScanHandle` at once. ``payload``
    (``"parquet"``, the default for a new store, or ``"arrow"``) is the workers'
    file format, recorded in the manifest (see ``create_store``).

    ``blocks`` (block ids, as :func:`~pocaduck.scan.blocks.block_id_of` makes
    them) re-scans only those blocks of a store scanned before with the same
    settings, after a region was re-segmented: their new points replace every
    earlier write of them, from any worker, at the consolidation that ends the
    scan (see :mod:`pocaduck.replacement`). The workers are named
    ``<worker_prefix>-<i>`` (default ``rescan-<UTC time>-<random>``), so they
    never collide with the scan's own. A re-scan that fails or is killed is not
    consolidated and leaves the old blocks served; re-run it with the same
    ``worker_prefix`` (``resume=True`` redoes only the failed workers). In
    ``"surface"`` mode a voxel's neighbours decide whether it is a point: re-scan
    the blocks around the changed region too.

    >>> from pocaduck import Query, make_demo_volume
    >>> import tempfile
    >>> volume = make_demo_volume(48, seed=2)
    >>> result = scan_volume(volume, tempfile.mkdtemp(), block_shape=32, workers=2, voxel_size=(33, 8, 8))
    >>> result.blocks, result.voxels
    (8, 110592)
    >>> volume[:16, :16, :16] = 9  # a region re-segmented, then its block scanned again
    >>> scan_volume(volume, result.store, block_shape=32, workers=2, voxel_size=(33, 8, 8), blocks=[0]).blocks
    1
    """
    block_shape = per_axis(block_shape, "block_shape", int, positive=True)
    progress = check_progress(progress)
    voxel_size = per_axis(voxel_size, "voxel_size", float, positive=True)
    voxel_offset = per_axis(voxel_offset, "voxel_offset", int, positive=False)
    selection = PointSelection(
        one_of(mode, "mode", MODES),
        optional_uint64(ignore_label, "ignore_label", "the label to skip, None to keep every label"),
        positive_int(sample_cap, "sample_cap", "sample mode: points per label per block"),
        non_negative_int(seed, "seed"),
    )
    # Not None for one per CPU, as elsewhere: the volume is cut into this many parts, and a re-run must cut
    # it the same way on any machine.
    workers = positive_int(workers, "workers", "how many parts the volume is cut into")
    retries = non_negative_int(retries, "retries")
    consolidate = flag(consolidate, "consolidate")
    resume = flag(resume, "resume")
    background = flag(background, "background")
    max_points_per_file = positive_int(max_points_per_file, "max_points_per_file")
    tile_bytes = positive_int(tile_bytes, "tile_bytes")
    report_interval = non_negative_number(report_interval, "report_interval", "seconds")
    shape, volume_dtype = check_volume(volume)
    grid = BlockGrid(shape, block_shape)
    # numpy arrays (memory-mapped .npy included) have no chunks to decode: reading block by block saves a copy
    tile_grid = grid.tiles(workers, volume_dtype.itemsize, 0 if isinstance(volume, np.ndarray) else tile_bytes)
    config = open_store(store).config.absolute()  # workers may run in another directory
    opened = open_store(config)
    runs: list[range] | list[tuple[int, ...]] = grid.split(workers)
    recorded_workers, prefix = len(runs), "scan"
    if blocks is not None:
        numbers = grid.numbers_of(blocks)
        recorded_workers = _scanned_workers(opened)
        runs = [tuple(part.tolist()) for part in np.array_split(numbers, min(workers, len(numbers)))]
        prefix = _rescan_prefix(worker_prefix)
    elif worker_prefix is not None:
        raise InvalidArgumentError("worker_prefix names the workers of a re-scan: pass it with blocks=[...]")
    reach = max(abs(o) + s for o, s in zip(voxel_offset, shape, strict=True))
    dtype = "int32" if reach < _INT32_LIMIT else "int64"
    _prepare_store(opened, dtype, grid, selection, voxel_size, voxel_offset, recorded_workers, payload)
    if resume:  # a worker whose later run did not finish is redone, though its earlier run is still served
        finalized, unfinished = opened.worker_states()
        finished = set(finalized) - set(unfinished)
    else:
        finished = set()
    tasks = [
        ScanTask(
            f"{prefix}-{i}",
            config,
            None,
            grid,
            run,
            tile_grid,
            selection,
            voxel_offset,
            dtype,
            max_points_per_file,
            report_interval,
            replace=blocks is not None,
        )
        for i, run in enumerate(runs)
        if f"{prefix}-{i}" not in finished
    ]

    def execute(emit: Callable[[ProgressEvent], None], stop: threading.Event) -> ScanResult:
        started = time.perf_counter()
        results = _run_tasks(volume, tasks, client, len(runs), retries, emit, stop)
        return _finish(opened, results, consolidate, started, rescan=blocks is not None)

    handle = ScanHandle(execute, progress)
    return handle._start() if background else handle._run_here()


def _run_tasks(
    volume: Any,
    tasks: list[ScanTask],
    client: Any,
    workers: int,
    retries: int,
    emit: Callable[[ProgressEvent], None],
    stop: threading.Event,
) -> dict:
    """Send the volume the cheapest way the executor allows, run the tasks, and return each one's outcome or error."""
    temporary = None
    if client is not None:
        tasks = [
            dataclasses.replace(t, source=share_with_task(volume, *t.grid.region(t.blocks, t.selection.halo)))
            for t in tasks
        ]
    else:
        if runs_here(workers, len(tasks)):
            source = Pickled(volume)  # in this process the volume serves as it is: no copy, no pickling
        else:
            source, temporary = share_with_processes(volume)
        tasks = [dataclasses.replace(t, source=source) for t in tasks]
    try:
        results = run_tasks(
            [Task(t.worker_id, len(t.blocks), run_scan_task, t) for t in tasks],
            workers=workers,
            sink=emit,
            stop=stop,
            retries=retries,
            client=client,
            pool=_POOL,
            preload=[library_of(tasks[0].source)] if tasks else [],
        )
    finally:
        if temporary is not None:
            os.unlink(temporary)
    return {worker_id: _scan_outcome(result) for worker_id, result in results.items()}


def _scan_outcome(result: WorkerOutcome | Failure) -> WorkerOutcome | ScanWorkerError | ScanCancelledError:
    """A task's failure as the scan's error: the worker's own, or one saying how its process died."""
    if not isinstance(result, Failure):
        return result
    if result.cancelled:
        return ScanCancelledError(result.text)
    if isinstance(result.error, ScanWorkerError):
        return result.error
    return ScanWorkerError(result.worker_id, None, None, result.text, result.details)


def _prepare_store(
    store: Store,
    dtype: str,
    grid: BlockGrid,
    selection: PointSelection,
    voxel_size: tuple,
    voxel_offset: tuple,
    workers: int,
    payload: str | None,
) -> None:
    """Declare the schema, payload and scan settings; a store scanned with other settings is refused, not mixed.

    A folder that holds files but no pocaduck store is refused before anything is written.
    """
    store.require_or_empty("scan")
    metadata = {
        "voxel_size": _xyz(voxel_size),
        "voxel_offset": _xyz(voxel_offset),
        "volume_shape": _xyz(grid.volume_shape),
        "scan": {
            "axes": "zyx",
            "block_shape": list(grid.block_shape),
            "block_id": "gz << 42 | gy << 21 | gx",
            "mode": selection.mode,
            "ignore_label": selection.ignore_label,
            "sample_cap": selection.sample_cap if selection.mode == "sample" else None,
            "seed": selection.seed if selection.mode == "sample" else None,
            "workers": workers,
        },
    }
    schema = create_store(store, columns=COLUMNS, dtype=dtype, block_id_type="int64", payload=payload, **metadata)
    wanted = json.loads(json.dumps(metadata))
    if schema.metadata != wanted:
        held = {**schema.metadata, **schema.metadata.get("scan", {})}
        differences = ", ".join(
            f"{key} {held.get(key)!r} (this scan: {value!r})"
            for key, value in {**wanted, **wanted["scan"]}.items()
            if key != "scan" and held.get(key) != value
        )
        raise ScanConflictError(
            f"{store.path} holds a scan made with other settings: {differences}. Re-run with the store's "
            f"settings to redo or finish that scan, or use a new store"
        )


def _scanned_workers(store: Store) -> int:
    """The worker count a store's scan recorded: a re-scan of some blocks keeps the scan's settings as they are."""
    schema = store.schema
    scan = {} if schema is None else schema.metadata.get("scan")
    if not scan:
        raise InvalidArgumentError(
            f"blocks=[...] re-scans blocks of a scanned store, and {store.path} holds no scan: "
            f"scan the whole volume first (leave blocks out)"
        )
    return int(scan["workers"])


def _rescan_prefix(worker_prefix: str | None) -> str:
    """The re-scan's worker id prefix: the one given, or one no earlier scan or re-scan used."""
    if worker_prefix is None:
        return f"rescan-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    if not isinstance(worker_prefix, str) or worker_prefix == "scan":
        raise InvalidArgumentError(
            f"worker_prefix must be a text other than 'scan' (the scan's own workers), got {worker_prefix!r}"
        )
    return check_worker_id(worker_prefix)


def _finish(store: Store, results: dict, consolidate: bool, started: float, rescan: bool = False) -> ScanResult:
    outcomes = [r for r in results.values() if isinstance(r, WorkerOutcome)]
    failures = [r for r in results.values() if isinstance(r, ScanWorkerError)]
    if any(isinstance(r, ScanCancelledError) for r in results.values()):
        raise ScanCancelledError(
            f"the scan of {store.path} was cancelled after {len(outcomes)} of {len(results)} workers finished; "
            f"run the same scan again to finish it (resume=True keeps the finished workers)"
        )
    timings = {name: sum(o.timings[name] for o in outcomes) for name in ("read", "extract", "write", "cpu")}
    clock = time.perf_counter()
    if consolidate and not (rescan and failures):  # a re-scan's blocks are replaced all together, or not yet
        with contextlib.suppress(EmptyStoreError):  # nothing finished, or no labels at all: nothing to index
            consolidate_store(store, ignore_unfinalized=bool(failures))
    timings["consolidate"] = time.perf_counter() - clock
    timings["total"] = time.perf_counter() - started
    if failures:
        first = failures[0]
        first.failures = failures
        raise first
    events = [o.final_event for o in outcomes]
    return ScanResult(
        store=store.path,
        workers=len(results),
        blocks=sum(e.blocks_done for e in events),
        voxels=sum(o.voxels for o in outcomes),
        points=sum(e.points_written for e in events),
        files=sum(e.files_written for e in events),
        bytes=sum(e.bytes_written for e in events),
        timings=timings,
    )
