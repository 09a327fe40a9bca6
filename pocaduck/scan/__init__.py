"""Scanning label volumes into stores: blocks, per-block extraction, executors and progress.

The entry point is :func:`scan_volume`; the rest is here for tools that need
the pieces (block ids, the event stream, the tqdm display).
"""

from ..errors import InvalidVolumeError, ScanCancelledError, ScanConflictError, ScanWorkerError
from ..progress import EventLog, TqdmProgress
from .api import ScanHandle, ScanResult, scan_volume
from .blocks import BlockGrid, block_id_of, block_position
from .volumes import open_volume

__all__ = [
    "BlockGrid",
    "EventLog",
    "InvalidVolumeError",
    "ScanCancelledError",
    "ScanConflictError",
    "ScanHandle",
    "ScanResult",
    "ScanWorkerError",
    "TqdmProgress",
    "block_id_of",
    "block_position",
    "open_volume",
    "scan_volume",
]
