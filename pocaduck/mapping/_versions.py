"""Mapping versions in the store: one immutable Parquet file each, sorted by supervoxel, its history in the footer.

A full mapping (no parent) stores every assignment it makes; a child stores
only the assignments it changes, each with the body its supervoxel had in the
parent (``previous``), so a version costs storage in proportion to its change
and two versions are compared from their changes alone. The footer names the version's parent and all its ancestors up to
the full mapping at the root, so one footer read gives the whole chain. A
version is built in local staging and published with
``publish_if_unchanged(..., expected=None)``: it appears whole or not at all,
and of two writers of one name exactly one wins. Rows are sorted by supervoxel
in row groups whose statistics let a reader fetch only the groups holding the
supervoxels it asks about (``lookup``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import uuid
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import layout
from ..errors import DamagedStoreError, InvalidArgumentError, MappingExistsError, MappingNotFoundError
from ..storage import Storage

_FOOTER_KEY = b"pocaduck.mapping"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_ROW_GROUP = 16_384  # a lookup of one supervoxel reads one group, ~0.25 MB; 10^8 rows make ~6,000 groups


@dataclasses.dataclass(frozen=True)
class MappingVersion:
    """One version's history record: what ``pocaduck mapping list`` prints.

    ``assignments`` is how many supervoxel→body rows the version stores (all of
    them for a full mapping, the changes for a child), ``bodies`` how many
    distinct bodies those rows name.
    """

    name: str
    parent: str | None
    ancestors: tuple[str, ...]  # the parent, its parent, … up to the full mapping at the root
    created: str  # ISO 8601, UTC
    note: str | None
    assignments: int
    bodies: int

    @property
    def root(self) -> str:
        return self.ancestors[-1] if self.ancestors else self.name

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["ancestors"] = list(self.ancestors)
        return record


def check_name(name: object, argument: str = "name") -> str:
    """A version name becomes a file name: letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit.

    >>> check_name("v2.1-merge")
    'v2.1-merge'
    >>> check_name("../x")
    Traceback (most recent call last):
    pocaduck.errors.InvalidArgumentError: mapping name '../x' is not usable: use up to 200 letters, digits, '.', '_' or '-', starting with a letter or digit
    """
    if not isinstance(name, str) or not _NAME.match(name):
        shown = name if isinstance(name, str) else f"{type(name).__name__} {name!r}"
        raise InvalidArgumentError(
            f"mapping {argument} {shown!r} is not usable: use up to 200 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit"
        )
    return name


def write_version(
    storage: Storage,
    name: str,
    supervoxels: np.ndarray,
    bodies: np.ndarray,
    parent: MappingVersion | None,
    note: str | None,
    previous: np.ndarray | None = None,
) -> MappingVersion:
    """Publish a version from sorted, unique ``supervoxels`` and their ``bodies``; refuse a name already taken.

    A child (``parent`` given) also stores ``previous``: each supervoxel's body in the parent.
    """
    version = MappingVersion(
        name=name,
        parent=None if parent is None else parent.name,
        ancestors=() if parent is None else (parent.name, *parent.ancestors),
        created=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        note=note,
        assignments=len(supervoxels),
        bodies=pc.count_distinct(pa.array(bodies)).as_py(),  # hashing: 10x faster than np.unique's sort at 10^7
    )
    columns = {"supervoxel": supervoxels, "body": bodies}
    if parent is not None:
        columns["previous"] = previous
    table = pa.table(columns)
    table = table.replace_schema_metadata({_FOOTER_KEY: json.dumps(version.to_dict()).encode()})
    staged = os.path.join(storage.staging_dir(layout.MAPPINGS), f".{name}.{uuid.uuid4().hex}.writing")
    try:
        with layout.writing(storage, layout.mapping_file(name)):
            pq.write_table(
                table,
                staged,
                row_group_size=_ROW_GROUP,
                # lz4: random 64-bit bodies barely compress, and lz4 reads 10^7 rows ~5x faster than zstd here.
                compression="lz4",
                use_dictionary=False,
                # Dense sorted ids differ by little: delta encoding stores a few bytes a supervoxel where plain takes 8.
                column_encoding={"supervoxel": "DELTA_BINARY_PACKED", "body": "PLAIN", "previous": "PLAIN"}
                if parent is not None
                else {"supervoxel": "DELTA_BINARY_PACKED", "body": "PLAIN"},
                write_statistics=["supervoxel"],
            )
            published = storage.publish_if_unchanged(staged, layout.mapping_file(name), None)
    finally:
        if os.path.exists(staged):
            os.unlink(staged)
    if published is None:
        raise _exists(storage, name)
    return version


def _exists(storage: Storage, name: str) -> MappingExistsError:
    return MappingExistsError(
        f"mapping {name!r} exists already in {storage.describe('')}: versions never change; write the new "
        f"assignments as a child under another name (write_mapping(..., parent={name!r}))"
    )


def refuse_existing(storage: Storage, name: str) -> None:
    """Raise ``MappingExistsError`` when ``name`` is taken (checked again, atomically, when publishing)."""
    if storage.exists(layout.mapping_file(name)):
        raise _exists(storage, name)


def version_names(storage: Storage) -> list[str]:
    """The names of the store's published versions, sorted."""
    suffix = ".parquet"
    return [
        entry.removesuffix(suffix)
        for entry in storage.listdir(layout.MAPPINGS)
        if entry.endswith(suffix) and not entry.startswith(".")
    ]


def read_version(storage: Storage, name: str) -> MappingVersion:
    """The history record of version ``name``, from its footer (two ranged reads on a bucket)."""
    with _reading(storage, name) as path:
        metadata = pq.ParquetFile(storage.open_input(path)).schema_arrow.metadata or {}
    try:
        record = json.loads(metadata[_FOOTER_KEY])
        record["ancestors"] = tuple(record["ancestors"])
        return MappingVersion(**record)
    except (KeyError, TypeError, ValueError) as error:
        raise DamagedStoreError(
            f"{storage.describe(layout.mapping_file(name))} has no readable mapping record ({error}): it was not "
            f"written by write_mapping; remove it and write the version again"
        ) from error


def read_assignments(storage: Storage, name: str) -> tuple[np.ndarray, np.ndarray]:
    """All rows a version stores, as (supervoxels, bodies) sorted by supervoxel."""
    return _columns(_whole(storage, name))


def _whole(storage: Storage, name: str) -> pa.Table:
    """A version's table, fetched in one request (one GET on a bucket, where ranged reads ask the size first)."""
    with _reading(storage, name) as path:
        # ParquetFile, not read_table: its dataset machinery costs ~2 ms a file, and a chain has many small ones.
        return pq.ParquetFile(pa.BufferReader(storage.read_bytes(path))).read()


def read_change(storage: Storage, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A child's rows: (supervoxels, bodies, each supervoxel's body in the parent), sorted by supervoxel."""
    table = _whole(storage, name)
    if "previous" not in table.column_names:
        raise DamagedStoreError(
            f"{storage.describe(layout.mapping_file(name))} is a full mapping, or a child without the bodies its "
            f"parent gave: "
            f"rewrite it with write_mapping"
        )
    return (*_columns(table), table.column("previous").to_numpy().astype(np.uint64, copy=False))


def lookup_stored(storage: Storage, name: str, supervoxels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of the sorted ``supervoxels`` version ``name`` stores a row for, and those rows' bodies.

    Only the row groups whose supervoxel range can hold one of them are read:
    a few ranged reads however large the mapping.
    """
    with _reading(storage, name) as path:
        parquet = pq.ParquetFile(storage.open_input(path))
        metadata = parquet.metadata
        groups = []
        for group in range(metadata.num_row_groups):
            statistics = metadata.row_group(group).column(0).statistics
            if statistics is None or not statistics.has_min_max:
                groups.append(group)
                continue
            low = np.searchsorted(supervoxels, np.uint64(statistics.min), "left")
            high = np.searchsorted(supervoxels, np.uint64(statistics.max), "right")
            if high > low:
                groups.append(group)
        table = parquet.read_row_groups(groups) if groups else parquet.schema_arrow.empty_table()
    return match_sorted(*_columns(table), supervoxels)


def match_sorted(stored: np.ndarray, bodies: np.ndarray, asked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``asked`` the sorted ``stored`` supervoxels hold, and their bodies there (0 where not held).

    >>> match_sorted(np.array([2, 5], np.uint64), np.array([7, 8], np.uint64), np.array([5, 6], np.uint64))
    (array([ True, False]), array([8, 0], dtype=uint64))
    """
    found = np.zeros(len(asked), bool)
    found_bodies = np.zeros(len(asked), np.uint64)
    if len(stored):
        at = np.minimum(np.searchsorted(stored, asked), len(stored) - 1)
        found = stored[at] == asked
        found_bodies[found] = bodies[at[found]]
    return found, found_bodies


def _columns(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    return (
        table.column("supervoxel").to_numpy().astype(np.uint64, copy=False),
        table.column("body").to_numpy().astype(np.uint64, copy=False),
    )


class _reading:
    """Open a version's file, turning its absence into ``MappingNotFoundError`` naming the versions there are."""

    def __init__(self, storage: Storage, name: str):
        self.storage, self.name = storage, check_name(name)

    def __enter__(self) -> str:
        return layout.mapping_file(self.name)  # absent: the read raises FileNotFoundError, turned in __exit__

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: object) -> None:
        if isinstance(error, FileNotFoundError) and not isinstance(error, MappingNotFoundError):
            raise self._missing() from error
        if isinstance(error, pa.ArrowException | OSError) and not isinstance(error, FileNotFoundError):
            raise DamagedStoreError(
                f"{self.storage.describe(layout.mapping_file(self.name))} is damaged ({error}); remove it and write "
                f"the version again"
            ) from error

    def _missing(self) -> MappingNotFoundError:
        names = version_names(self.storage)
        known = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        return MappingNotFoundError(
            f"no mapping {self.name!r} in {self.storage.describe('')}; "
            + (f"it holds {known}" if names else "it holds no mapping yet: write one with write_mapping")
        )
