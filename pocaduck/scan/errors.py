"""What can go wrong in a scan, each as its own class under :class:`pocaduck.PocaduckError`."""

from __future__ import annotations

from ..errors import PocaduckError


class InvalidVolumeError(PocaduckError, ValueError):
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
