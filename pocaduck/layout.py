"""The store's layout: where every file lives, and the manifest that fixes the schema.

::

    STORE/
      pocaduck.json                          manifest: format version, columns, dtype, block id type
      unified_index.duckdb                   consolidated index (replaced atomically)
      label_directory.json                   names the index version in force (its build id) and the
                                             version of unified_index.duckdb it was published as
      index_versions/<build>/                one per published unified index, never changed; the index
                                             names its own build (table ``label_directory``)
        unified_index.duckdb                 that index, for readers that fetch it after it was replaced
        label_directory.bin                  where each label's rows are, read by ranges (``label_directory.py``)
      .unified_index.duckdb.building-<id>    a consolidation's index while it is built (+ .wal, .labeldir,
                                             .pointer, .lock held while it runs), in the store's staging
                                             folder: the store itself on a local disk, private scratch on
                                             a bucket. gc removes a dead one's
      .unified_index.duckdb.building-<id>.parts/   the sorted label ranges of a split build, written by
                                             its range tasks wherever they run (on a bucket too), with
                                             .lock inside held by the build: gc removes a dead one's
      workers/<worker_id>/
        .lock                                held by the worker's live Ingestor
        finalized.json                       names the worker's finalized session
        sessions/<session_id>/index.duckdb   the session's own index
        sessions/<session_id>/part-000000.parquet ...   (or .arrow: the store's payload, in the manifest)
      mappings/<name>.parquet                one supervoxel→body mapping version, never changed: a full
                                             mapping, or a child's changed assignments; sorted by
                                             supervoxel, its history in the footer (``mapping/``)
      compacted/.lock                        held by a running compaction or gc
      compacted/<generation>/                one compaction: each label's points together
        index.duckdb                         its files, point_index, the sessions it covers, its settings
        part-000000.parquet ...              one file per shard (a contiguous label range): .parquet, or
                                             .arrow when compacted with payload="arrow"
        plan.json, source.duckdb, shards/    only while it is built: the plan, the index it reads, done shards

A point file's extension says its format (``PAYLOADS``): ``.parquet`` or
``.arrow`` (the Arrow IPC file format), read and written by ``pointfile``.

The unified index names the compaction generation it is built on (table
``compaction``); consolidation keeps using that generation for the sessions it
covers and adds newer sessions beside it.

A store of the original pocaduck (0.1.x) has no manifest; it is known by its
``unified_index.db`` and ``optimized/optimized_index.db`` (see ``legacy.py``).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import (
    DamagedStoreError,
    InvalidArgumentError,
    InvalidWorkerIdError,
    PocaduckError,
    SchemaMismatchError,
    StoreNotFoundError,
    StoreWriteError,
)
from .storage import Storage

FORMAT_NAME = "pocaduck-store"
FORMAT_VERSION = 1
MANIFEST = "pocaduck.json"
UNIFIED_INDEX = "unified_index.duckdb"
WORKERS = "workers"
COMPACTED = "compacted"
BUILDING_PREFIX = f".{UNIFIED_INDEX}.building-"
# What a build keeps beside its index: DuckDB's log, its label directory, the pointer to them, its lock.
BUILDING_SUFFIXES = (".wal", ".labeldir", ".pointer", ".lock")
BUILDING_PARTS = ".parts"  # a folder in the store: the sorted label ranges a split consolidation assembles
COMPACTION_LOCK = f"{COMPACTED}/.lock"
LABEL_DIRECTORY_POINTER = "label_directory.json"
INDEX_VERSIONS = "index_versions"
MAPPINGS = "mappings"
LEGACY_INDEX = "unified_index.db"
LEGACY_OPTIMIZED_INDEX = "optimized/optimized_index.db"
# Rows per Parquet row group, for ingestion and compaction alike. A label read decodes whole row groups:
# 8,192 rows read a small label ~3x faster than 32,768; files grow a little (each group has its own dictionaries).
ROW_GROUP_SIZE = 8_192
# The point file formats a store can hold, by name, and each one's file extension.
PAYLOADS = {"parquet": ".parquet", "arrow": ".arrow"}
DEFAULT_PAYLOAD = "parquet"

SUPPORTED_DTYPES = tuple(
    np.dtype(name)
    for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64")
)
BLOCK_ID_TYPES = ("string", "int64")
_COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_COLUMNS = {"label", "block_id"}
_DEFAULT_COLUMNS = ("x", "y", "z")
_NAME_MAX = 255  # bytes in one folder name on common filesystems (ext4, xfs, apfs, ntfs)


def worker_dir(worker_id: str) -> str:
    return f"{WORKERS}/{worker_id}"


def worker_lock(worker_id: str) -> str:
    return f"{worker_dir(worker_id)}/.lock"


def worker_finalized(worker_id: str) -> str:
    return f"{worker_dir(worker_id)}/finalized.json"


def sessions_dir(worker_id: str) -> str:
    return f"{worker_dir(worker_id)}/sessions"


def session_dir(worker_id: str, session_id: str) -> str:
    return f"{sessions_dir(worker_id)}/{session_id}"


def session_index(worker_id: str, session_id: str) -> str:
    return f"{session_dir(worker_id, session_id)}/index.duckdb"


def check_payload(payload: object) -> str:
    """A payload name of ``PAYLOADS``, else an error listing them.

    >>> check_payload("feather")
    Traceback (most recent call last):
    pocaduck.errors.InvalidArgumentError: payload 'feather' is not one of 'parquet' or 'arrow' (Arrow IPC files)
    """
    if not isinstance(payload, str) or payload not in PAYLOADS:
        raise InvalidArgumentError(f"payload {payload!r} is not one of 'parquet' or 'arrow' (Arrow IPC files)")
    return payload


def payload_of(path: str) -> str:
    """The format of a point file, from its extension.

    >>> payload_of("compacted/3f2a/part-000000.arrow"), payload_of("workers/0/sessions/s/part-000001.parquet")
    ('arrow', 'parquet')
    """
    return "arrow" if path.endswith(PAYLOADS["arrow"]) else "parquet"


def data_file(worker_id: str, session_id: str, sequence: int, payload: str = DEFAULT_PAYLOAD) -> str:
    return f"{session_dir(worker_id, session_id)}/part-{sequence:06d}{PAYLOADS[payload]}"


def compaction_dir(generation: str) -> str:
    return f"{COMPACTED}/{generation}"


def compaction_index(generation: str) -> str:
    return f"{compaction_dir(generation)}/index.duckdb"


def compaction_file(generation: str, shard: int, payload: str = DEFAULT_PAYLOAD) -> str:
    return f"{compaction_dir(generation)}/part-{shard:06d}{PAYLOADS[payload]}"


def index_version(build_id: str) -> str:
    """The folder of what one consolidation (or compaction) published: its index and its label directory.

    >>> index_version("5f0c"), index_version_index("5f0c"), index_version_directory("5f0c")
    ('index_versions/5f0c', 'index_versions/5f0c/unified_index.duckdb', 'index_versions/5f0c/label_directory.bin')
    """
    return f"{INDEX_VERSIONS}/{build_id}"


def index_version_index(build_id: str) -> str:
    return f"{index_version(build_id)}/{UNIFIED_INDEX}"


def index_version_directory(build_id: str) -> str:
    return f"{index_version(build_id)}/label_directory.bin"


def mapping_file(name: str) -> str:
    """The one file of a mapping version.

    >>> mapping_file("v2")
    'mappings/v2.parquet'
    """
    return f"{MAPPINGS}/{name}.parquet"


def building_parts(build_id: str) -> str:
    """The store folder (a prefix on a bucket) of a split build's label ranges, and the lock its build holds.

    >>> building_parts("5f0c"), building_parts_lock("5f0c")
    ('.unified_index.duckdb.building-5f0c.parts', '.unified_index.duckdb.building-5f0c.parts/.lock')
    """
    return f"{BUILDING_PREFIX}{build_id}{BUILDING_PARTS}"


def building_parts_lock(build_id: str) -> str:
    # Inside the folder, so removing the folder removes it too.
    return f"{building_parts(build_id)}/.lock"


def checksum(chunks: Iterable[bytes]) -> str:
    """A file's checksum as the index's ``files.checksum`` records it: ``crc32:`` and 8 hex digits.

    CRC-32 from the standard library hashes ~6.5 GB/s here (google-crc32c, an optional
    dependency, ~16 GB/s; sha256 ~1.9): a rounding error next to encoding the file.

    >>> checksum([b"point", b"s"])
    'crc32:27ba8e29'
    """
    crc = 0
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
    return f"crc32:{crc:08x}"


def rewrite_advice(path: str) -> str:
    """What rewrites a damaged data file: the worker whose session holds it, or the compaction.

    >>> rewrite_advice("workers/w3/sessions/20260101T000000-ab/part-000000.parquet")
    "re-run worker 'w3', then consolidate"
    """
    parts = path.split("/")
    if parts[0] == WORKERS and len(parts) > 2:
        return f"re-run worker {parts[1]!r}, then consolidate"
    return (
        "rebuild the index from the workers' sessions (pocaduck consolidate --from-sessions STORE), then compact again"
    )


def check_worker_id(worker_id: object) -> str:
    """Worker ids become folder names: text without path separators, or an integer (numpy's too, not bool).

    Other types are refused rather than turned into folders named "None" or "3.5".

    >>> check_worker_id(np.int64(7))
    '7'
    """
    if isinstance(worker_id, (bool, np.bool_)) or not isinstance(worker_id, (str, int, np.integer)):
        raise InvalidWorkerIdError(
            f"worker id must be a str or an int, got {type(worker_id).__name__} {worker_id!r}: "
            f"give each worker a distinct text or integer id"
        )
    text = worker_id if isinstance(worker_id, str) else str(int(worker_id))
    if not text or text in (".", "..") or any(c in text for c in "/\\\0") or text.startswith("."):
        raise InvalidWorkerIdError(
            f"worker id {worker_id!r} cannot name a folder: use text without '/', '\\' or NUL that does not start with '.'"
        )
    try:
        size = len(text.encode())
    except UnicodeEncodeError as error:
        raise InvalidWorkerIdError(
            f"worker id {worker_id!r} cannot name a folder: it is not valid UTF-8 text"
        ) from error
    if size > _NAME_MAX:
        raise InvalidWorkerIdError(
            f"worker id {text[:20]!r}... is {size} bytes long, and a folder name holds at most {_NAME_MAX}: "
            f"use a shorter id"
        )
    return text


def default_columns(dimensions: int) -> tuple[str, ...]:
    """``x, y, z`` then ``column_3``, ``column_4``, ... for extra dimensions."""
    return tuple(_DEFAULT_COLUMNS[i] if i < 3 else f"column_{i}" for i in range(dimensions))


@dataclass(frozen=True)
class Schema:
    """What every point row of a store looks like; fixed by the first write or at creation."""

    columns: tuple[str, ...]
    dtype: np.dtype
    block_id_type: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    # How ingestion writes point files; not part of what a row looks like, so schemas compare without it.
    payload: str = field(default=DEFAULT_PAYLOAD, compare=False)

    def __post_init__(self) -> None:
        check_columns(self.columns)
        if self.dtype not in SUPPORTED_DTYPES:
            raise SchemaMismatchError(
                f"dtype {self.dtype} is not supported; use one of {', '.join(d.name for d in SUPPORTED_DTYPES)}"
            )
        if self.block_id_type not in BLOCK_ID_TYPES:
            raise SchemaMismatchError(f"block id type {self.block_id_type!r} is not one of {BLOCK_ID_TYPES}")
        check_payload(self.payload)

    @property
    def dimensions(self) -> int:
        return len(self.columns)

    @property
    def spatial_columns(self) -> tuple[str, ...]:
        """The columns a bounding box is kept for: the first three at most."""
        return self.columns[:3]

    def to_json(self) -> bytes:
        body = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "columns": list(self.columns),
            "dtype": self.dtype.name,
            "block_id_type": self.block_id_type,
            "payload": self.payload,
            **self.metadata,
        }
        return json.dumps(body, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Schema:
        body = _json_object(data, where)
        if body.get("format") != FORMAT_NAME:
            raise StoreNotFoundError(f"{where} is not a pocaduck store manifest")
        version = body.get("format_version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise DamagedStoreError(
                f"{where} has format_version {version!r}, not a number: restore it from a backup, or rewrite it "
                f"with create_store(...) and the store's columns, dtype and block id type"
            )
        if version > FORMAT_VERSION:
            raise SchemaMismatchError(
                f"{where} has format version {body['format_version']}; this pocaduck reads up to "
                f"{FORMAT_VERSION}: upgrade pocaduck"
            )
        known = {"format", "format_version", "columns", "dtype", "block_id_type", "payload"}
        if not isinstance(body.get("columns"), list) or not {"dtype", "block_id_type"} <= body.keys():
            raise DamagedStoreError(
                f"{where} lacks the store's columns, dtype or block id type: restore it from a backup, or rewrite "
                f"it with create_store(...) and the store's columns, dtype and block id type"
            )
        return cls(
            columns=tuple(body["columns"]),
            dtype=dtype_of(body["dtype"]),
            block_id_type=body["block_id_type"],
            metadata={k: v for k, v in body.items() if k not in known},
            payload=body.get("payload", DEFAULT_PAYLOAD),  # manifests written before Arrow payloads: Parquet
        )


def _json_object(data: bytes, where: str) -> dict:
    """A JSON object read from a store file; anything else means the file is damaged (a torn copy, an editor)."""
    try:
        body = json.loads(data)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError alike
        body = error
    if not isinstance(body, dict):
        problem = body if isinstance(body, ValueError) else f"holds a {type(body).__name__}, not an object"
        raise DamagedStoreError(
            f"{where} is not a valid JSON object ({problem}): restore it from a backup; a manifest can be rewritten "
            f"with create_store(...) and the store's columns, dtype and block id type, a worker's finalized.json "
            f"by re-running that worker"
        )
    return body


def dtype_of(name: object) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError as error:
        raise SchemaMismatchError(
            f"dtype {name!r} is not supported; use one of {', '.join(d.name for d in SUPPORTED_DTYPES)}"
        ) from error


def column_names(columns: object) -> tuple[str, ...]:
    """Column names as a tuple; one string is refused, since "xyz" would silently become x, y, z.

    >>> column_names(["x", "y", "z"])
    ('x', 'y', 'z')
    """
    if isinstance(columns, str) or not isinstance(columns, (list, tuple)):
        raise SchemaMismatchError(f"columns must be a list of column names such as ['x', 'y', 'z'], got {columns!r}")
    names = tuple(columns)
    check_columns(names)
    return names


def check_columns(columns: tuple[str, ...]) -> None:
    if not columns:
        raise SchemaMismatchError("a store needs at least one column")
    for name in columns:
        if not isinstance(name, str) or not _COLUMN_NAME.match(name) or name.lower() in _RESERVED_COLUMNS:
            raise SchemaMismatchError(
                f"column name {name!r} is not allowed: use letters, digits and '_' (not starting with a digit), "
                f"and not {sorted(_RESERVED_COLUMNS)}"
            )
    if len({c.lower() for c in columns}) != len(columns):
        raise SchemaMismatchError(f"column names {list(columns)} repeat a name")


def read_schema(storage: Storage) -> Schema | None:
    """The store's schema, or None when nothing has been written yet."""
    try:
        data = storage.read_bytes(MANIFEST)  # one request on an object store, not a HEAD and a GET
    except FileNotFoundError:
        return None
    return Schema.from_json(data, storage.describe(MANIFEST))


def read_finalized(storage: Storage, worker_id: str) -> dict | None:
    """A worker's ``finalized.json`` record (its session and the superseded ones), or None before its first finalize."""
    path = worker_finalized(worker_id)
    if not storage.exists(path):
        return None
    return _json_object(storage.read_bytes(path), storage.describe(path))


@contextlib.contextmanager
def writing(storage: Storage, path: str) -> Iterator[None]:
    """Report an OSError met while writing ``path`` as a StoreWriteError naming it, with what to do."""
    try:
        yield
    except PocaduckError:
        raise
    except (NotADirectoryError, FileExistsError) as error:  # a file stands where a folder must be
        raise StoreWriteError(
            f"cannot write {storage.describe(path)}: {storage.describe('')} or a folder in that path is a file, "
            f"not a folder; name a folder (new or existing) for the store"
        ) from error
    except OSError as error:
        raise StoreWriteError(
            f"cannot write {storage.describe(path)}: {error.strerror or error}. Make the store writable by this "
            f"user and give it room, then run again; what was published before is intact"
        ) from error


def establish_schema(storage: Storage, proposed: Schema) -> Schema:
    """Record ``proposed`` as the store's schema unless one exists; return the one in force.

    Many workers may race to write the first manifest: exactly one wins and the
    others check that theirs agrees.
    """
    if storage.create_exclusive(MANIFEST, proposed.to_json()):
        return proposed
    existing = read_schema(storage)
    assert existing is not None
    require_same_schema(existing, proposed)
    return existing


def require_same_schema(existing: Schema, proposed: Schema) -> None:
    if existing != proposed:
        raise SchemaMismatchError(
            f"the store holds columns {list(existing.columns)} of {existing.dtype} with {existing.block_id_type} "
            f"block ids, but this data has columns {list(proposed.columns)} of {proposed.dtype} with "
            f"{proposed.block_id_type} block ids"
        )


def check_voxel_setting(name: str, values: object) -> None:
    """``voxel_size`` (finite, positive) or ``voxel_offset`` (finite): three numbers, one per axis.

    A NaN would be written into the manifest and make the next identical run refuse its own store.

    >>> check_voxel_setting("voxel_size", [8, 8, float("nan")])
    Traceback (most recent call last):
    pocaduck.errors.InvalidArgumentError: voxel_size must be 3 finite numbers, one per axis, got [8, 8, nan]
    """
    numbers = values if isinstance(values, (list, tuple)) else ()
    if len(numbers) != 3 or not all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)
        for v in numbers
    ):
        raise InvalidArgumentError(f"{name} must be 3 finite numbers, one per axis, got {values!r}")
    if name == "voxel_size" and min(numbers) <= 0:
        raise InvalidArgumentError(f"voxel_size must be positive along every axis, got {values!r}")
