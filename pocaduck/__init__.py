"""PoCADuck: store and fetch vast numbers of point clouds indexed by uint64 labels.

Open a store once with :func:`open_store` (or name it by path or URL), ingest
blockwise with one :class:`Ingestor` per worker, merge the worker indexes with
:func:`consolidate`, then read any label's points with :class:`Query`. When the
stored labels are supervoxels, :func:`write_mapping` records versions of which
body each belongs to, and ``Query(store, mapping=name)`` reads bodies. Errors
are in :mod:`pocaduck.errors` and exported here too.
"""

from ._immutables import clear_cache
from .compact import CompactionReport, compact
from .config import StorageConfig
from .consolidate import consolidate
from .dataset import PointCloudDataset
from .errors import (
    CompactionBusyError,
    CompactionCancelledError,
    CompactionError,
    ConsolidationError,
    DamagedStoreError,
    DataFileError,
    EmptyStoreError,
    ExportCancelledError,
    ExportError,
    ExportFolderError,
    ExportRangeError,
    IndexConflictError,
    IngestorClosedError,
    InvalidArgumentError,
    InvalidBlockIdError,
    InvalidBoxError,
    InvalidLabelError,
    InvalidMappingError,
    InvalidPointsError,
    InvalidVolumeError,
    InvalidWorkerIdError,
    LabelDirectoryError,
    LegacyStoreError,
    MappingExistsError,
    MappingNotFoundError,
    MigrationError,
    PocaduckError,
    QueryTimeoutError,
    ReaderClosedError,
    ReadOnlySQLError,
    ScanCancelledError,
    ScanConflictError,
    ScanWorkerError,
    SchemaMismatchError,
    SQLError,
    StorageAccessError,
    StorageUnavailableError,
    StoreChangedError,
    StoreNotConsolidatedError,
    StoreNotFoundError,
    StoreWriteError,
    UnknownLabelError,
    UnsupportedStorageError,
    WorkerBusyError,
    WorkerNotFinalizedError,
    WorkerWriteError,
)
from .gc import GarbageReport, collect_garbage
from .ingest import Ingestor
from .layout import Schema
from .mapping import MappedQuery, MappingVersion, changed_bodies, list_mappings, write_mapping
from .migration import migrate
from .neuroglancer import ExportReport, export_neuroglancer
from .progress import ProgressEvent
from .query import Query
from .reader import Reader
from .scan import ScanHandle, ScanResult, scan_volume
from .store import Store, create_store, open_store
from .synthetic import make_demo_volume
from .verify import VerifyReport, verify

__version__ = "0.2.0"

__all__ = [
    "CompactionBusyError",
    "CompactionCancelledError",
    "CompactionError",
    "CompactionReport",
    "ConsolidationError",
    "DamagedStoreError",
    "DataFileError",
    "EmptyStoreError",
    "ExportCancelledError",
    "ExportError",
    "ExportFolderError",
    "ExportRangeError",
    "ExportReport",
    "GarbageReport",
    "IndexConflictError",
    "Ingestor",
    "IngestorClosedError",
    "InvalidArgumentError",
    "InvalidBlockIdError",
    "InvalidBoxError",
    "InvalidLabelError",
    "InvalidMappingError",
    "InvalidPointsError",
    "InvalidVolumeError",
    "InvalidWorkerIdError",
    "LabelDirectoryError",
    "LegacyStoreError",
    "MappedQuery",
    "MappingExistsError",
    "MappingNotFoundError",
    "MappingVersion",
    "MigrationError",
    "PocaduckError",
    "PointCloudDataset",
    "ProgressEvent",
    "Query",
    "QueryTimeoutError",
    "ReadOnlySQLError",
    "Reader",
    "ReaderClosedError",
    "SQLError",
    "ScanCancelledError",
    "ScanConflictError",
    "ScanHandle",
    "ScanResult",
    "ScanWorkerError",
    "Schema",
    "SchemaMismatchError",
    "StorageAccessError",
    "StorageConfig",
    "StorageUnavailableError",
    "Store",
    "StoreChangedError",
    "StoreNotConsolidatedError",
    "StoreNotFoundError",
    "StoreWriteError",
    "UnknownLabelError",
    "UnsupportedStorageError",
    "VerifyReport",
    "WorkerBusyError",
    "WorkerNotFinalizedError",
    "WorkerWriteError",
    "changed_bodies",
    "clear_cache",
    "collect_garbage",
    "compact",
    "consolidate",
    "create_store",
    "export_neuroglancer",
    "list_mappings",
    "make_demo_volume",
    "migrate",
    "open_store",
    "scan_volume",
    "verify",
    "write_mapping",
]
