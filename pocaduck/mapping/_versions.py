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
supervoxels it asks about (``lookup_stored``). A full mapping also stores its
assignments sorted by body, after those (a second section of row groups, in the
same file and publish), so a body's supervoxels are a ranged read too
(``members_stored``); for that section the rows also hold each body that no row
assigns, as its own supervoxel, so that a body found there needs no other read.
The key range of every row group is kept in the footer beside the record
(``pocaduck.mapping.groups``), so a reader finds its groups without walking the
Parquet statistics of thousands of groups. Files written before the second
section read as before: ``by_body`` is None for them.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import re
import threading
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
from ._sorting import ordered_pairs

_FOOTER_KEY = b"pocaduck.mapping"
_GROUPS_KEY = b"pocaduck.mapping.groups"
_ROOT_KEY = b"pocaduck.mapping.root"  # a child keeps where its root's footer is: (file size, footer length)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
# A lookup of one supervoxel or body reads one group, ~0.5 MB; 10^7 rows make ~600 groups a section, whose
# footer (~120 KB with both sections) parses in ~1 ms: half the groups of 16,384 rows, half the footer to parse.
_ROW_GROUP = 32_768


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
    root_location: tuple[int, int] | None = None,
) -> MappingVersion:
    """Publish a version from sorted, unique ``supervoxels`` and their ``bodies``; refuse a name already taken.

    A child (``parent`` given) also stores ``previous``: each supervoxel's body in the parent, and
    ``root_location``: its root's file size and footer length. A full mapping also stores its rows sorted by
    body, in the same file.
    """
    columns = {"supervoxel": supervoxels, "body": bodies}
    if parent is not None:
        columns["previous"] = previous
    by_supervoxel = pa.table(columns)
    sections = [by_supervoxel]
    groups = {"supervoxel": _fences(supervoxels)}
    if parent is None:
        members, owners, distinct = _sorted_by_body(supervoxels, bodies)
        sections.append(pa.table({"supervoxel": members, "body": owners}))
        groups["body"] = _fences(owners)
    else:
        distinct = pc.count_distinct(pa.array(bodies)).as_py()  # hashing: 10x faster than np.unique's sort at 10^7
    version = MappingVersion(
        name=name,
        parent=None if parent is None else parent.name,
        ancestors=() if parent is None else (parent.name, *parent.ancestors),
        created=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        note=note,
        assignments=len(supervoxels),
        bodies=distinct,
    )
    metadata = {_FOOTER_KEY: json.dumps(version.to_dict()).encode(), _GROUPS_KEY: _encode_groups(groups)}
    if root_location is not None:
        metadata[_ROOT_KEY] = json.dumps(list(root_location)).encode()
    staged = os.path.join(storage.staging_dir(layout.MAPPINGS), f".{name}.{uuid.uuid4().hex}.writing")
    try:
        with layout.writing(storage, layout.mapping_file(name)):
            _write_sections(staged, by_supervoxel.schema.with_metadata(metadata), sections)
            published = storage.publish_if_unchanged(staged, layout.mapping_file(name), None)
    finally:
        if os.path.exists(staged):
            os.unlink(staged)
    if published is None:
        raise _exists(storage, name)
    return version


def _sorted_by_body(supervoxels: np.ndarray, bodies: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The rows sorted by body (each body's supervoxels sorted), with each body no row assigns as its own row; and
    how many distinct bodies there are (counted here for free).

    Such a body is its own supervoxel (the rule for supervoxels a mapping does not name): with that row, the
    rows found for a body are all its supervoxels, without asking the supervoxel section whether it is named.

    >>> _sorted_by_body(np.array([1, 5, 9], np.uint64), np.array([9, 7, 7], np.uint64))
    (array([5, 7, 9, 1], dtype=uint64), array([7, 7, 7, 9], dtype=uint64), 2)
    """
    owners, members = ordered_pairs(bodies, supervoxels)  # each body's supervoxels sorted
    if not len(owners):
        return members, owners, 0
    starts = np.flatnonzero(np.concatenate([[True], owners[1:] != owners[:-1]]))
    distinct = owners[starts]
    named, _ = match_sorted(supervoxels, bodies, distinct)
    unnamed = ~named
    # Within a body its supervoxels are sorted, so those below the body's own id come first: count them.
    below = np.add.reduceat((members < owners).astype(np.int64), starts)
    places = starts[unnamed] + below[unnamed]
    own = distinct[unnamed]
    return np.insert(members, places, own), np.insert(owners, places, own), len(distinct)


def _write_sections(path: str, schema: pa.Schema, sections: list[pa.Table]) -> None:
    """Write ``sections`` one after another into one Parquet file, each in row groups of its own."""
    child = "previous" in schema.names
    with pq.ParquetWriter(
        path,
        schema,
        # lz4: random 64-bit bodies barely compress, and lz4 reads 10^7 rows ~5x faster than zstd here.
        compression="lz4",
        use_dictionary=False,
        # Dense sorted ids differ by little: delta encoding stores a few bytes a supervoxel where plain takes 8.
        column_encoding={
            "supervoxel": "DELTA_BINARY_PACKED",
            "body": "PLAIN",
            **({"previous": "PLAIN"} if child else {}),
        },
        write_statistics=["supervoxel", "body"],
        # The Arrow schema copy would repeat the footer's record and fences (a third of the footer at 10^7):
        # the Parquet types give back uint64 alone.
        store_schema=False,
    ) as writer:
        for section in sections:
            if section.num_rows:
                writer.write_table(section.cast(schema), row_group_size=_ROW_GROUP)
        writer.add_key_value_metadata(schema.metadata)  # without the Arrow schema copy, this is how it is kept


def _fences(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first and last of sorted ``keys`` in each row group of ``_ROW_GROUP`` rows.

    >>> [fence.tolist() for fence in _fences(np.arange(_ROW_GROUP + 2, dtype=np.uint64))]
    [[0, 32768], [32767, 32769]]
    """
    count = len(keys)
    starts = np.arange(0, count, _ROW_GROUP)
    stops = np.minimum(starts + _ROW_GROUP, count) - 1
    return keys[starts].astype(np.uint64), keys[stops].astype(np.uint64)


def _encode_groups(groups: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """The fences of each section, as JSON of base64 little-endian uint64s (compact, parsed in microseconds)."""
    return json.dumps(
        {
            section: base64.b64encode(np.concatenate([first, last]).astype("<u8").tobytes()).decode()
            for section, (first, last) in groups.items()
        }
    ).encode()


@dataclasses.dataclass(frozen=True)
class Fences:
    """The row groups of one sorted section: the first group's index and each group's first and last key."""

    offset: int
    first: np.ndarray
    last: np.ndarray

    def holding(self, keys: np.ndarray) -> list[int]:
        """The groups whose key range holds one of the sorted ``keys``.

        >>> Fences(2, np.array([1, 10], np.uint64), np.array([9, 20], np.uint64)).holding(np.array([9], np.uint64))
        [2]
        """
        low = np.searchsorted(keys, self.first, "left")
        high = np.searchsorted(keys, self.last, "right")
        return (np.flatnonzero(high > low) + self.offset).tolist()


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


class VersionFile:
    """A version's file opened once: its record, its parsed footer and where its row groups' keys lie.

    Reads of row groups go through the one open file under a lock (on a
    bucket, a small file is held whole after its footer was read: its rows come
    without another request). Immutable otherwise: kept per version in the process.
    """

    def __init__(self, storage: Storage, name: str, located: tuple[int, int] | None = None):
        """Open version ``name``; ``located`` (its size and footer's length, which a child keeps of its root)
        fetches the footer in one ranged read, where finding it takes two or three."""
        with _reading(storage, name) as path:
            footer = None
            if located is not None:
                size, length = located
                footer = pq.read_metadata(pa.BufferReader(storage.read_range(path, size - length, length)))
            source = storage.open_input(path, None if located is None else located[0])
            # On a bucket, pre-buffering fetches a row group's column chunks in one coalesced GET; a local file
            # reads them directly (pre-buffering only adds a hop through Arrow's I/O threads there).
            self._parquet = pq.ParquetFile(source, metadata=footer, pre_buffer=not isinstance(source, str))
            size = storage.size(path) if isinstance(source, str) else source.seek(0, io.SEEK_END)
        self._storage, self._name, self._lock = storage, name, threading.Lock()
        metadata = self._parquet.metadata.metadata or {}
        self.version = _record(storage, name, metadata)
        self.weight = self._parquet.metadata.serialized_size
        self.location = (size, self.weight + 8)  # the footer, its length (4 bytes) and the magic "PAR1"
        root = metadata.get(_ROOT_KEY)
        self.root_location: tuple[int, int] | None = None if root is None else tuple(json.loads(root))
        groups = _decode_groups(metadata.get(_GROUPS_KEY))
        if groups is None:  # written before the footer held the fences: the statistics, and no body section
            self.by_supervoxel, self.by_body = self._fences_from_statistics(), None
        else:
            first, last = groups["supervoxel"]
            self.by_supervoxel = Fences(0, first, last)
            self.by_body = None if "body" not in groups else Fences(len(first), *groups["body"])

    def _fences_from_statistics(self) -> Fences:
        metadata = self._parquet.metadata
        first = np.zeros(metadata.num_row_groups, np.uint64)
        last = np.full(metadata.num_row_groups, np.iinfo(np.uint64).max, np.uint64)  # no statistics: read it
        for group in range(metadata.num_row_groups):
            statistics = metadata.row_group(group).column(0).statistics
            if statistics is not None and statistics.has_min_max:
                first[group], last[group] = statistics.min, statistics.max
        return Fences(0, first, last)

    def rows(self, groups: list[int] | None = None) -> pa.Table:
        """The rows of ``groups`` (all rows sorted by supervoxel when None), in one pre-buffered read."""
        if groups is None:
            groups = list(range(self.by_supervoxel.offset, self.by_supervoxel.offset + len(self.by_supervoxel.first)))
        with _reading(self._storage, self._name), self._lock:
            if not groups:
                return self._parquet.schema_arrow.empty_table()
            return self._parquet.read_row_groups(groups, use_threads=False)


def open_version(storage: Storage, name: str) -> VersionFile:
    """Version ``name``'s file, its footer read (two ranged reads on a bucket, or one GET of a small file)."""
    return VersionFile(storage, name)


def read_version(storage: Storage, name: str) -> MappingVersion:
    """The history record of version ``name``, from its footer (two ranged reads on a bucket)."""
    return open_version(storage, name).version


def _record(storage: Storage, name: str, metadata: dict[bytes, bytes]) -> MappingVersion:
    try:
        record = json.loads(metadata[_FOOTER_KEY])
        record["ancestors"] = tuple(record["ancestors"])
        return MappingVersion(**record)
    except (KeyError, TypeError, ValueError) as error:
        raise DamagedStoreError(
            f"{storage.describe(layout.mapping_file(name))} has no readable mapping record ({error}): it was not "
            f"written by write_mapping; remove it and write the version again"
        ) from error


def _decode_groups(encoded: bytes | None) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    if encoded is None:
        return None
    groups = {}
    for section, text in json.loads(encoded).items():
        keys = np.frombuffer(base64.b64decode(text), "<u8").astype(np.uint64)
        groups[section] = (keys[: len(keys) // 2], keys[len(keys) // 2 :])
    return groups


def read_assignments(storage: Storage, name: str) -> tuple[np.ndarray, np.ndarray]:
    """All assignments a version stores, as (supervoxels, bodies) sorted by supervoxel."""
    return columns_of(_whole(storage, name))


def _whole(storage: Storage, name: str) -> pa.Table:
    """A version's rows sorted by supervoxel, fetched in one request (one GET on a bucket, where ranged reads ask
    the size first)."""
    with _reading(storage, name) as path:
        # ParquetFile, not read_table: its dataset machinery costs ~2 ms a file, and a chain has many small ones.
        parquet = pq.ParquetFile(pa.BufferReader(storage.read_bytes(path)))
        groups = _decode_groups((parquet.schema_arrow.metadata or {}).get(_GROUPS_KEY))
        if groups is None or "body" not in groups:
            return parquet.read()
        return parquet.read_row_groups(range(len(groups["supervoxel"][0])))


def read_change(storage: Storage, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A child's rows: (supervoxels, bodies, each supervoxel's body in the parent), sorted by supervoxel."""
    return change_columns(storage, name, _whole(storage, name))


def change_columns(storage: Storage, name: str, table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A child's table as (supervoxels, bodies, previous bodies); ``DamagedStoreError`` for a full mapping."""
    if "previous" not in table.column_names:
        raise DamagedStoreError(
            f"{storage.describe(layout.mapping_file(name))} is a full mapping, or a child without the bodies its "
            f"parent gave: "
            f"rewrite it with write_mapping"
        )
    return (*columns_of(table), table.column("previous").to_numpy().astype(np.uint64, copy=False))


def lookup_stored(storage: Storage, name: str, supervoxels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of the sorted ``supervoxels`` version ``name`` stores a row for, and those rows' bodies.

    Only the row groups whose supervoxel range can hold one of them are read:
    a few ranged reads however large the mapping.
    """
    return lookup_in(open_version(storage, name), supervoxels)


def lookup_in(opened: VersionFile, supervoxels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``lookup_stored`` in a version file already open."""
    table = opened.rows(opened.by_supervoxel.holding(supervoxels))
    return match_sorted(*columns_of(table), supervoxels)


def members_stored(opened: VersionFile, bodies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows a full mapping's body section holds for the sorted ``bodies``, as (supervoxels, bodies) sorted by
    body then supervoxel, from the row groups that can hold them. A body's rows are its supervoxels (itself too
    when no row names it and it is some row's body); none leaves open whether it is named as another's.

    The file must have a body section (``opened.by_body`` not None).
    """
    table = opened.rows(opened.by_body.holding(bodies))
    supervoxels, owners = columns_of(table)
    wanted = np.isin(owners, bodies)  # the groups hold other bodies too
    return supervoxels[wanted], owners[wanted]


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


def columns_of(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
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
