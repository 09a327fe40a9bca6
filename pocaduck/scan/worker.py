"""One scan worker: read its blocks, extract their points, write them with one Ingestor, report as it goes.

The same function runs in a local process and in a Dask task. A worker id
names one fixed set of blocks, and a new Ingestor with that id replaces what an
earlier attempt left, so running a task again (a retry, a resumed scan)
replaces its data instead of adding to it.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..config import StorageConfig
from ..errors import ScanCancelledError, ScanWorkerError
from ..ingest import Ingestor
from ..progress import ProgressEvent
from .blocks import BlockGrid
from .extract import PointSelection, extract_block, read_padded
from .volumes import VolumeSource, check_volume

COLUMNS = ("x", "y", "z")


@dataclass(frozen=True)
class ScanTask:
    """Everything a worker needs; small and picklable (the volume travels as a :mod:`.volumes` source)."""

    worker_id: str
    store: StorageConfig
    source: VolumeSource | None  # set just before the tasks are sent
    grid: BlockGrid
    blocks: range | tuple[int, ...]  # block numbers of this worker: a contiguous run, or sorted numbers (re-scan)
    tile_grid: BlockGrid  # how the volume is read: tile by tile
    selection: PointSelection
    voxel_offset: tuple[int, int, int]
    dtype: str
    max_points_per_file: int
    report_interval: float
    replace: bool = False  # the blocks replace every earlier write of them (a re-scan)

    def reads(self) -> Iterator[tuple[tuple[int, ...], tuple[int, ...], list[int]]]:
        """The worker's reads, tile by tile: the box holding its blocks of the tile, and those blocks.

        >>> grid = BlockGrid((8, 8, 8), (4, 4, 4))
        >>> task = ScanTask("0", None, None, grid, range(2, 6), grid.tiles(1, 1, 512), PointSelection(), (0, 0, 0), "int32", 1, 1)
        >>> list(task.reads())
        [((0, 4, 0), (4, 8, 8), [2, 3]), ((4, 0, 0), (8, 4, 8), [4, 5])]
        """
        runs_from, runs_to = self.grid.position(self.blocks[0])[0], self.grid.position(self.blocks[-1])[0]
        block_z = self.grid.block_shape[0]
        for tile in range(self.tile_grid.count):
            start, stop = self.tile_grid.bounds(tile)
            if stop[0] <= runs_from * block_z or start[0] > runs_to * block_z:
                continue
            numbers = self.grid.numbers_within(start, stop)
            if isinstance(self.blocks, range):
                mine = numbers[(numbers >= self.blocks.start) & (numbers < self.blocks.stop)]
            else:
                mine = numbers[np.isin(numbers, self.blocks)]
            if len(mine):
                positions = np.array(np.unravel_index(mine, self.grid.grid_shape))
                first = positions.min(axis=1) * self.grid.block_shape
                last = np.minimum((positions.max(axis=1) + 1) * self.grid.block_shape, self.grid.volume_shape)
                yield tuple(first.tolist()), tuple(last.tolist()), mine.tolist()


@dataclass
class WorkerOutcome:
    """A finished worker's totals and where its time went (seconds)."""

    final_event: ProgressEvent
    voxels: int
    timings: dict[str, float] = field(default_factory=dict)


class _Meter:
    """Cumulative counts of one worker, turned into progress events."""

    def __init__(self, worker_id: str, blocks_total: int):
        self.worker_id = worker_id
        self.blocks_total = blocks_total
        self.blocks_done = 0
        self.labels: set[int] = set()
        self.points = 0
        self.voxels = 0
        self.started = time.perf_counter()

    def event(self, state: str, ingestor: Ingestor | None) -> ProgressEvent:
        stats = ingestor.stats if ingestor is not None else None
        return ProgressEvent(
            self.worker_id,
            state,
            blocks_done=self.blocks_done,
            blocks_total=self.blocks_total,
            labels_written=len(self.labels),
            points_written=self.points,
            files_written=stats.files if stats else 0,
            bytes_written=stats.bytes if stats else 0,
            elapsed=time.perf_counter() - self.started,
        )


def run_scan_task(
    task: ScanTask, report: Callable[[ProgressEvent], None], stop_requested: Callable[[], bool]
) -> WorkerOutcome:
    """Scan ``task.blocks`` into the store as worker ``task.worker_id``; raise ScanWorkerError naming the failing block.

    ``report`` receives cumulative "running" events at most every
    ``task.report_interval`` seconds; the caller emits the final event from the
    returned outcome. ``stop_requested`` is polled between blocks.
    """
    meter = _Meter(task.worker_id, len(task.blocks))
    timings = {"read": 0.0, "extract": 0.0, "write": 0.0}
    cpu_at_start = time.process_time()
    block_number = None
    try:
        volume, origin = task.source.open()
        tile_voxels = int(np.prod([b + 2 * task.selection.halo for b in task.tile_grid.block_shape]))
        buffer = np.empty(tile_voxels, dtype=check_volume(volume)[1])  # one tile's memory, reused for every tile
        report(meter.event("running", None))
        last_report = time.perf_counter()
        with Ingestor(
            task.store, task.worker_id, max_points_per_file=task.max_points_per_file, columns=COLUMNS
        ) as ingestor:
            for tile_start, tile_stop, blocks in task.reads():
                block_number = blocks[0]  # a failed read is reported on its first block
                clock = time.perf_counter()
                padded_tile = read_padded(
                    volume, origin, task.grid.volume_shape, tile_start, tile_stop, task.selection.halo, buffer
                )
                timings["read"] += time.perf_counter() - clock
                for block_number in blocks:
                    if stop_requested():
                        raise ScanCancelledError(f"worker {task.worker_id} stopped: the scan was cancelled")
                    _scan_block(task, padded_tile, tile_start, block_number, ingestor, meter, timings)
                    meter.blocks_done += 1
                    if time.perf_counter() - last_report >= task.report_interval:
                        report(meter.event("running", ingestor))
                        last_report = time.perf_counter()
            block_number = None
            clock = time.perf_counter()
            ingestor.finalize()
            timings["write"] += time.perf_counter() - clock
        timings["cpu"] = time.process_time() - cpu_at_start  # every thread: extraction and the Parquet writer
        return WorkerOutcome(meter.event("finished", ingestor), meter.voxels, timings)
    except (ScanCancelledError, ScanWorkerError):
        raise
    except Exception as error:
        block_id = None if block_number is None else task.grid.block_id(block_number)
        position = None if block_number is None else task.grid.position(block_number)
        text = f"{type(error).__name__}: {error}"
        raise ScanWorkerError(task.worker_id, block_id, position, text, traceback.format_exc()) from error


def _scan_block(
    task: ScanTask,
    padded_tile: np.ndarray,
    tile_start: tuple[int, ...],
    block_number: int,
    ingestor: Ingestor,
    meter: _Meter,
    timings: dict[str, float],
) -> None:
    """Extract one block from its tile (the tile's halo-padded array) and write its labels' points."""
    start, stop = task.grid.bounds(block_number)
    halo = task.selection.halo
    block_id = task.grid.block_id(block_number)
    clock = time.perf_counter()
    box = tuple(slice(a - t, b - t + 2 * halo) for a, b, t in zip(start, stop, tile_start, strict=True))
    padded = np.ascontiguousarray(padded_tile[box])
    read_done = time.perf_counter()
    points = extract_block(
        padded,
        start,
        task.grid.volume_shape,
        task.selection,
        task.voxel_offset,
        block_id=block_id,
        dtype=task.dtype,
    )
    extract_done = time.perf_counter()
    ingestor.write_block(block_id, np.repeat(points.labels, points.counts), points.columns.T, replace=task.replace)
    meter.labels.update(points.labels.tolist())
    meter.points += points.point_count
    meter.voxels += int(np.prod(np.subtract(stop, start)))
    timings["read"] += read_done - clock
    timings["extract"] += extract_done - read_done
    timings["write"] += time.perf_counter() - extract_done
