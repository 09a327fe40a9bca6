"""The order a compaction by mapping lays labels out in: by (body, supervoxel), so a body reads like one label.

Compaction by label cuts the sorted labels into shards of contiguous label
ranges. By a mapping version, every stored label (a supervoxel) is put after
the others of its body at that version, bodies in id order, each body's
supervoxels in id order; shards are cut only between bodies, or inside a body
larger than a file between its supervoxels about every ``points_per_file``
points, so a body lies in one file, its rows one contiguous range. The order
is too long for the plan at field scale (10^8 supervoxels), so it is written
once beside the plan, as Parquet, and each shard reads only its slice.
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .mapping._resolved import resolved
from .mapping._versions import MappingVersion, check_name, read_version
from .storage import Storage

_ORDER_ROW_GROUP = 1 << 20  # a shard reads the groups holding its slice: ~16 MB of labels at most beyond it


def mapping_version(storage: Storage, mapping: object) -> MappingVersion:
    """The version a compaction is asked to follow, refused (``InvalidArgumentError``, ``MappingNotFoundError``)
    before anything is written.

    Example: ``mapping_version(store.storage, "v2").name``.
    """
    return read_version(storage, check_name(mapping, "mapping"))


def by_body(
    storage: Storage, version: MappingVersion, labels: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``labels`` (sorted) and their point ``counts`` in (body, label) order, with each label's body.

    >>> import tempfile
    >>> from pocaduck import create_store, open_store, write_mapping
    >>> folder = tempfile.mkdtemp()
    >>> _ = create_store(folder)
    >>> store = open_store(folder)
    >>> version = write_mapping(store, "v1", [1, 2, 3], [30, 10, 30])
    >>> [a.tolist() for a in by_body(store.storage, version, np.array([1, 2, 3, 20], np.uint64), np.arange(4))]
    [[2, 20, 1, 3], [1, 3, 0, 2], [10, 20, 30, 30]]
    """
    bodies = resolved(storage, version).bodies_of(labels)
    order = np.lexsort((labels, bodies))
    return labels[order], counts[order], bodies[order]


def groups(bodies: np.ndarray, counts: np.ndarray, points_per_file: int) -> np.ndarray:
    """Where each unit a shard may not cut starts: a body, or a ``points_per_file`` piece of a larger body.

    ``bodies`` are in storage order (each body's labels adjacent), ``counts`` their labels' points.

    >>> groups(np.array([7, 7, 9, 9, 9], np.uint64), np.array([5, 5, 4, 4, 4]), points_per_file=6).tolist()
    [0, 2, 4]
    """
    if not len(bodies):
        return np.empty(0, np.int64)
    new_body = np.concatenate([[True], bodies[1:] != bodies[:-1]])
    before = np.cumsum(counts) - counts
    body_start = np.maximum.accumulate(np.where(new_body, before, 0))  # points before each label's body
    piece = (before - body_start) // points_per_file
    return np.flatnonzero(new_body | np.concatenate([[True], piece[1:] != piece[:-1]]))


def write_order(storage: Storage, key: str, labels: np.ndarray) -> None:
    """Publish the labels in storage order at ``key``, for the shards to read their slices of.

    Example: ``write_order(storage, "compacted/3f2a/order.parquet", ordered_labels)``.
    """
    staged = os.path.join(storage.staging_dir(os.path.dirname(key)), f".order-{uuid.uuid4().hex}.parquet")
    try:
        pq.write_table(
            pa.table({"label": pa.array(labels, pa.uint64())}),
            staged,
            row_group_size=_ORDER_ROW_GROUP,
            compression="lz4",
            use_dictionary=False,
        )
        storage.publish(staged, key)
    finally:
        if os.path.exists(staged):
            os.unlink(staged)


def read_order(storage: Storage, key: str, start: int, stop: int) -> np.ndarray:
    """Labels ``start`` to ``stop`` (excluded) of the order at ``key``, reading only the row groups holding them.

    Example: ``read_order(storage, "compacted/3f2a/order.parquet", 0, 812)``.
    """
    if stop <= start:
        return np.empty(0, np.uint64)
    file = pq.ParquetFile(storage.open_input(key))
    sizes = [file.metadata.row_group(group).num_rows for group in range(file.num_row_groups)]
    ends = np.cumsum(sizes)
    first, last = int(np.searchsorted(ends, start, "right")), int(np.searchsorted(ends, stop - 1, "right"))
    wanted = list(range(first, last + 1))
    offset = int(ends[first] - sizes[first])
    labels = file.read_row_groups(wanted, columns=["label"]).column("label").to_numpy()
    return labels[start - offset : stop - offset].astype(np.uint64, copy=False)
