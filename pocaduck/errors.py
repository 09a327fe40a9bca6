"""Exception classes: one base, one class per thing that can go wrong.

Every bad argument (a label, a block id, points, a count, a volume) is an
:class:`InvalidArgumentError`, so one ``except`` catches them all. Input errors
also derive from ``ValueError`` (and lookup errors from ``FileNotFoundError``)
so code written for the original pocaduck, which raised those builtins, keeps
catching them.
"""

from __future__ import annotations


class PocaduckError(Exception):
    """Base class of every error this library raises on purpose."""


class InvalidArgumentError(PocaduckError, ValueError):
    """An argument has the wrong type or lies outside its range (a size, a count, a timeout, a box, a key)."""


class InvalidPointsError(InvalidArgumentError):
    """The points given to ``write`` are not a finite (N, D) numeric array."""


class InvalidLabelError(InvalidArgumentError):
    """A label is not an integer in [0, 2**64)."""


class InvalidBlockIdError(InvalidArgumentError):
    """A block id is not a str or an int64-range integer."""


class InvalidWorkerIdError(InvalidArgumentError):
    """A worker id cannot be used as a folder name in the store."""


class SchemaMismatchError(PocaduckError, ValueError):
    """Data does not fit the store's schema (dimensions, dtype, column names, block id type)."""


class IngestorClosedError(PocaduckError, RuntimeError):
    """``write`` or ``finalize`` was called on an Ingestor that was already finalized or closed."""


class WorkerBusyError(PocaduckError, RuntimeError):
    """Another live Ingestor already holds this worker id on this store."""


class WorkerNotFinalizedError(PocaduckError, RuntimeError):
    """Consolidation found workers that have not called ``finalize()``."""


class StoreNotFoundError(PocaduckError, FileNotFoundError):
    """The store path does not exist or holds no pocaduck store."""


class InvalidBoxError(InvalidArgumentError):
    """A box is not two points of the store's spatial width with finite ``lower < upper`` on every axis."""


class StoreWriteError(PocaduckError, OSError):
    """Writing into the store failed (disk full, read-only, file too large); what was published before is intact."""


class DamagedStoreError(PocaduckError, OSError):
    """A file that describes the store (manifest, ``finalized.json``, an index) is unreadable or corrupt."""


class LabelDirectoryError(DamagedStoreError):
    """A label directory (or the ``label_directory.json`` naming it) is missing, truncated or corrupt."""


class StoreChangedError(PocaduckError, RuntimeError):
    """What an open reader read was replaced and removed since it opened the store (consolidate, compact, gc)."""


class ReaderClosedError(PocaduckError, RuntimeError):
    """The Query was closed (perhaps by another thread) before this call: open a new one, which is cheap."""


class IndexConflictError(PocaduckError, RuntimeError):
    """The unified index kept being replaced by other consolidations while this one rebuilt it."""


class StoreNotConsolidatedError(PocaduckError, RuntimeError):
    """The store has worker data but no unified index yet."""


class EmptyStoreError(PocaduckError, RuntimeError):
    """The store holds no finalized data to consolidate."""


class DataFileError(PocaduckError, OSError):
    """A Parquet file that the index points at is missing or unreadable."""


class UnsupportedStorageError(PocaduckError, ValueError):
    """The storage URL's scheme is not supported."""


class StorageAccessError(PocaduckError, PermissionError):
    """The object store refused the request: wrong or missing credentials, or no permission."""


class StorageUnavailableError(PocaduckError, ConnectionError):
    """The object store could not be reached (network down, server gone, timeout)."""


class ReadOnlySQLError(PocaduckError, ValueError):
    """``Query.sql`` was given something other than a single read-only SELECT."""


class SQLError(PocaduckError, ValueError):
    """DuckDB rejected a statement given to ``Query.sql`` (syntax, unknown column, wrong type)."""


class QueryTimeoutError(PocaduckError, TimeoutError):
    """A ``Query.sql`` statement ran past its ``timeout`` and was interrupted."""


class WorkerWriteError(PocaduckError, RuntimeError):
    """Writing or indexing one of a worker's files failed; the Ingestor keeps its points: fix the cause, finalize again."""


class ConsolidationError(PocaduckError, RuntimeError):
    """A label range of a consolidation failed or its worker died; the unified index in force is unchanged: run it again."""


class CompactionError(PocaduckError, RuntimeError):
    """A compaction shard failed or its worker process died; run the compaction again to resume it."""


class CompactionCancelledError(CompactionError):
    """The compaction was stopped (``stop`` set); the shards written are kept, and running it again resumes it."""


class CompactionBusyError(PocaduckError, RuntimeError):
    """Another compaction or garbage collection is running on this store."""


class LegacyStoreError(PocaduckError, ValueError):
    """A store written by the original pocaduck (0.1.x) cannot be read or migrated as it is."""


class MigrationError(PocaduckError, RuntimeError):
    """A migration worker's process died or was stopped; the message says what to do (usually: run ``migrate`` again)."""


# -- scanning volumes -----------------------------------------------------------


class InvalidVolumeError(InvalidArgumentError):
    """The volume is not a 3D integer array-like with ``shape``, ``dtype`` and slicing."""


class ScanConflictError(PocaduckError, ValueError):
    """The store already holds a scan made with other settings (volume, blocks, mode or workers)."""


class ScanCancelledError(PocaduckError, RuntimeError):
    """The scan was cancelled; finished workers are finalized, the rest will be redone by a re-run."""


class ScanWorkerError(PocaduckError, RuntimeError):
    """A scan worker failed, on the block named here (``None`` when it failed before its first block).

    The other workers ran to the end and were consolidated, so their data is
    queryable; re-run the same scan (``resume=True`` redoes only the failed
    workers) once the cause is fixed. ``failures`` lists every failed worker.
    """

    def __init__(
        self, worker_id: str, block_id: int | None, block_position: tuple | None, error: str, details: str = ""
    ):
        super().__init__(worker_id, block_id, block_position, error, details)
        self.worker_id = worker_id
        self.block_id = block_id
        self.block_position = block_position
        self.error = error
        self.details = details  # the worker's traceback: remote tracebacks do not survive pickling
        self.failures: list[ScanWorkerError] = [self]

    def __str__(self) -> str:
        where = (
            "before its first block"
            if self.block_id is None
            else (f"on block {self.block_id} (grid position z, y, x = {self.block_position})")
        )
        message = f"scan worker {self.worker_id!r} failed {where}: {self.error}"
        others = [f.worker_id for f in self.failures if f is not self]
        return message + (f" (workers {others} failed too)" if others else "")


# -- exporting ------------------------------------------------------------------


class UnknownLabelError(PocaduckError, LookupError):
    """Labels given to an export are not in the store."""


class ExportFolderError(PocaduckError, FileExistsError):
    """The export's output folder holds other files or another export; nothing in it was changed."""


class ExportRangeError(PocaduckError, ValueError):
    """Coordinates of the labels to export are not finite in float32, neuroglancer's type for them; nothing was written."""


class ExportError(PocaduckError, RuntimeError):
    """An export task failed or its process died; run the export again to resume it."""


class ExportCancelledError(ExportError):
    """The export was stopped (``stop`` set); the tasks done are kept, and running it again resumes it."""


# -- mappings -------------------------------------------------------------------


class InvalidMappingError(InvalidArgumentError):
    """A supervoxel→body mapping given to ``write_mapping`` is malformed (types, signs, lengths, contradictions)."""


class MappingNotFoundError(PocaduckError, LookupError):
    """No mapping version of that name in the store; ``pocaduck mapping list STORE`` lists them."""


class MappingExistsError(PocaduckError, FileExistsError):
    """A mapping version of that name exists already: versions are immutable, write a child under a new name."""
