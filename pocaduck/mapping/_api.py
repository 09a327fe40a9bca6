"""The public verbs on mapping versions: write one, list them, and say which bodies changed between two."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..config import StorageConfig
from ..errors import InvalidArgumentError
from ..storage import Storage
from ..store import Store, open_store
from ._pairs import mapping_pairs
from ._resolved import bodies_at, chain, resolve
from ._versions import (
    MappingVersion,
    check_name,
    match_sorted,
    open_version,
    read_change,
    read_version,
    refuse_existing,
    version_names,
    write_version,
)

StoreLike = Store | StorageConfig | str | os.PathLike


def write_mapping(
    store: StoreLike,
    name: str,
    supervoxels: Any,
    bodies: Any = None,
    parent: str | None = None,
    note: str | None = None,
) -> MappingVersion:
    """Write mapping version ``name``: which body each supervoxel (each stored label) belongs to.

    Without ``parent`` it is a full mapping; with ``parent`` it holds only the
    assignments that change (a merge: these supervoxels now belong to body A; a
    cleave: these move to a new body), and costs storage in proportion to them.
    ``supervoxels`` and ``bodies`` are integer arrays of equal length (numpy,
    pandas, Arrow, lists), or ``supervoxels`` is the path of a Parquet or CSV file
    of two columns or of DVID's ``/mappings`` text (``bodies`` then None).
    Supervoxels a mapping does not name are their own body. Versions never
    change: a name already written raises ``MappingExistsError``; bad input
    raises ``InvalidMappingError`` and an unknown parent ``MappingNotFoundError``,
    before anything is written. Returns the version's history record.

    >>> import tempfile
    >>> from pocaduck import Ingestor, consolidate
    >>> store = tempfile.mkdtemp()
    >>> with Ingestor(store, worker_id=0) as ingestor:
    ...     ingestor.write_block("b0", np.array([1, 2, 3]), np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]]))
    >>> _ = consolidate(store)
    >>> write_mapping(store, "v1", [1, 2], [10, 10]).assignments
    2
    >>> write_mapping(store, "v2", [3], [10], parent="v1", note="merge 3 into 10").ancestors
    ('v1',)
    """
    opened = open_store(store)
    opened.require("write_mapping")
    name = check_name(name)
    parent = None if parent is None else check_name(parent, "parent")
    if note is not None and not isinstance(note, str):
        raise InvalidArgumentError(f"note must be text or None, got {type(note).__name__} {note!r}")
    supervoxel_ids, body_ids = mapping_pairs(supervoxels, bodies)
    storage = opened.storage
    parent_file = None if parent is None else open_version(storage, parent)
    parent_version = None if parent_file is None else parent_file.version
    refuse_existing(storage, name)
    # A child keeps the bodies its changes replace: changed_bodies then needs no lookup in the root mapping.
    previous = root = None
    if parent_file is not None:
        previous = bodies_at(opened, parent_file, supervoxel_ids)
        root = chain(opened, parent_file).root.location  # kept in the child: a Query finds its root's footer at once
    return write_version(storage, name, supervoxel_ids, body_ids, parent_version, note, previous, root)


def list_mappings(store: StoreLike) -> list[MappingVersion]:
    """The store's mapping versions, oldest first, each with its parent, time, note and counts.

    Example: ``[(v.name, v.parent, v.created) for v in pocaduck.list_mappings(store)]``.
    """
    storage = open_store(store).storage
    versions = [read_version(storage, name) for name in version_names(storage)]
    return sorted(versions, key=lambda version: (version.created, version.name))


def changed_bodies(store: StoreLike, old: str, new: str) -> np.ndarray:
    """The bodies whose supervoxel sets differ between versions ``old`` and ``new``: old ids and new ids, sorted.

    Found from the changes of the versions between the two alone (each child
    keeps the bodies its changes replace), without reading points or the full
    mapping. Versions without a common ancestor are compared whole.

    >>> import tempfile
    >>> from pocaduck import create_store
    >>> store = tempfile.mkdtemp()
    >>> _ = create_store(store)
    >>> _ = write_mapping(store, "v1", [1, 2, 3], [10, 10, 20])
    >>> _ = write_mapping(store, "v2", [3], [10], parent="v1")  # 20 merged into 10
    >>> changed_bodies(store, "v1", "v2").tolist()
    [10, 20]
    """
    storage = open_store(store).storage
    old_version = read_version(storage, check_name(old, "old"))
    new_version = read_version(storage, check_name(new, "new"))
    old_chain, new_chain = (old_version.name, *old_version.ancestors), (new_version.name, *new_version.ancestors)
    common = next((name for name in new_chain if name in set(old_chain)), None)
    if common is None:
        return _whole_difference(storage, old_version, new_version)
    # The children from the common ancestor to each end, oldest first: only they can differ.
    old_side = old_chain[: old_chain.index(common)][::-1]
    new_side = new_chain[: new_chain.index(common)][::-1]
    changes = {name: read_change(storage, name) for name in {*old_side, *new_side}}
    old_named, old_first_previous, old_last_body = _first_and_last([changes[name] for name in old_side])
    new_named, new_first_previous, new_last_body = _first_and_last([changes[name] for name in new_side])
    touched = np.union1d(old_named, new_named)
    # In the common ancestor: what the first change on either side found there (both sides found the same).
    at_common = _overridden(touched, touched, (new_named, new_first_previous), (old_named, old_first_previous))
    before = _overridden(touched, at_common, (old_named, old_last_body))
    after = _overridden(touched, at_common, (new_named, new_last_body))
    differ = before != after
    return np.union1d(before[differ], after[differ]).astype(np.uint64)


def _first_and_last(changes: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over children's changes, oldest first: each supervoxel named, its first ``previous`` and its last body.

    >>> one = (np.array([1, 2], np.uint64), np.array([5, 5], np.uint64), np.array([1, 2], np.uint64))
    >>> two = (np.array([2], np.uint64), np.array([9], np.uint64), np.array([5], np.uint64))
    >>> [column.tolist() for column in _first_and_last([one, two])]
    [[1, 2], [1, 2], [5, 9]]
    """
    if not changes:
        return np.empty(0, np.uint64), np.empty(0, np.uint64), np.empty(0, np.uint64)
    supervoxels, bodies, previous = (np.concatenate(column) for column in zip(*changes, strict=True))
    order = np.argsort(supervoxels, kind="stable")  # stable: each supervoxel's changes stay oldest first
    supervoxels, bodies, previous = supervoxels[order], bodies[order], previous[order]
    first = np.ones(len(supervoxels), bool)
    first[1:] = supervoxels[1:] != supervoxels[:-1]
    last = np.ones(len(supervoxels), bool)
    last[:-1] = first[1:]
    return supervoxels[first], previous[first], bodies[last]


def _overridden(asked: np.ndarray, default: np.ndarray, *layers: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``default`` for each of ``asked``, replaced by each layer's value where that layer names it (later wins)."""
    values = default.copy()
    for named, layer_values in layers:
        found, found_values = match_sorted(named, layer_values, asked)
        values[found] = found_values[found]
    return values


def _whole_difference(storage: Storage, old: MappingVersion, new: MappingVersion) -> np.ndarray:
    before, after = resolve(storage, old), resolve(storage, new)
    named = np.union1d(before.supervoxels, after.supervoxels)
    old_bodies, new_bodies = before.bodies_of(named), after.bodies_of(named)
    differ = old_bodies != new_bodies
    return np.union1d(old_bodies[differ], new_bodies[differ]).astype(np.uint64)


__all__ = ["MappingVersion", "changed_bodies", "list_mappings", "write_mapping"]
