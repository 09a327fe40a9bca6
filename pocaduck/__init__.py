"""PoCADuck: store and fetch vast numbers of point clouds indexed by uint64 labels.

Ingest blockwise with one :class:`Ingestor` per worker, merge the worker indexes
with :func:`consolidate`, then read any label's points with :class:`Query`.
"""

from .config import StorageConfig
from .consolidate import consolidate
from .errors import (
    DataFileError,
    EmptyStoreError,
    IngestorClosedError,
    InvalidBlockIdError,
    InvalidLabelError,
    InvalidPointsError,
    InvalidWorkerIdError,
    PocaduckError,
    ReadOnlySQLError,
    SchemaMismatchError,
    StoreNotConsolidatedError,
    StoreNotFoundError,
    UnsupportedStorageError,
    WorkerBusyError,
    WorkerNotFinalizedError,
    WorkerWriteError,
)
from .ingest import Ingestor
from .layout import Schema, create_store
from .progress import ProgressEvent
from .query import Query

__version__ = "0.2.0"

__all__ = [
    "DataFileError",
    "EmptyStoreError",
    "Ingestor",
    "IngestorClosedError",
    "InvalidBlockIdError",
    "InvalidLabelError",
    "InvalidPointsError",
    "InvalidWorkerIdError",
    "PocaduckError",
    "ProgressEvent",
    "Query",
    "ReadOnlySQLError",
    "Schema",
    "SchemaMismatchError",
    "StorageConfig",
    "StoreNotConsolidatedError",
    "StoreNotFoundError",
    "UnsupportedStorageError",
    "WorkerBusyError",
    "WorkerNotFinalizedError",
    "WorkerWriteError",
    "consolidate",
    "create_store",
]
