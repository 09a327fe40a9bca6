"""Every widget takes a store (path, URL, StorageConfig or Store) or an open reader: turn any of them into a reader.

``Query(path)`` of a store written by the original library is a ``LegacyQuery``; both are
``pocaduck.Reader``s and answer the same calls (``sql``, ``schema``, summaries): widgets take either.
"""

from __future__ import annotations

import os

from pocaduck import Query, Reader, StorageConfig, Store

StoreLike = Reader | Store | StorageConfig | str | os.PathLike


def open_query(store: StoreLike) -> Reader:
    """The given reader itself, or a new one on the named store.

    >>> open_query("/no/such/store")
    Traceback (most recent call last):
    pocaduck.errors.StoreNotFoundError: no store at /no/such/store: the path does not exist
    """
    return store if isinstance(store, Reader) else Query(store)


def voxel_size(query: Reader) -> tuple[float, float, float]:
    """The store's voxel size (``voxel_size`` in the manifest), or 1 per axis when it has none."""
    size = query.schema.metadata.get("voxel_size", 1)
    values = [float(v) for v in size] if isinstance(size, list | tuple) else [float(size)] * 3
    return tuple([*values, 1.0, 1.0, 1.0][:3])
