"""Neuroglancer's precomputed annotation encodings for points, as numpy arrays and bytes.

One annotation is its geometry (``rank`` float32) then its property values,
padded to 4 bytes: a *record*. Three encodings use it:

- ``by_id`` (one annotation): the record, then per relationship a uint32 count
  and that many uint64 segment ids; here always one relationship, the label;
- the relationship and spatial indexes (several annotations): a uint64 count,
  the records, then the uint64 annotation ids.

Property types are neuroglancer's: ``int8`` … ``uint32`` and ``float32``. A
store keeps one dtype for every column, so its extra columns map as a whole:
``float64`` becomes ``float32`` (rounded), ``int64`` and ``uint64`` become
``int32`` and ``uint32``, and a value out of their range stops the export
(:class:`~pocaduck.errors.InvalidArgumentError` naming the column: export
without it with ``properties=[...]``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..errors import InvalidArgumentError
from ..layout import Schema

RELATIONSHIP = "label"  # the one relationship: each point's label, as neuroglancer's segment id
_PROPERTY_ID = re.compile(r"^[a-z][a-zA-Z0-9_]*$")  # what neuroglancer accepts as a property id
_PROPERTY_TYPE_OF = {
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "uint16": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "float32": "float32",
    "float64": "float32",
    "int64": "int32",
    "uint64": "uint32",
}


def property_columns(schema: Schema, properties: Sequence[str] | None) -> list[str]:
    """The store columns exported as properties: ``properties``, or by default every column after x, y, z.

    >>> schema = Schema(("x", "y", "z", "supervoxel"), np.dtype("int64"), "string")
    >>> property_columns(schema, None), property_columns(schema, [])
    (['supervoxel'], [])
    """
    extra = list(schema.columns[3:])
    chosen = extra if properties is None else list(properties)
    unknown = [name for name in chosen if name not in extra]
    if isinstance(properties, str) or unknown:
        raise InvalidArgumentError(
            f"properties must be a list of the store's extra columns {extra}, got {properties!r}"
        )
    invalid = [name for name in chosen if not _PROPERTY_ID.match(name)]
    if invalid:
        raise InvalidArgumentError(
            f"neuroglancer property ids start with a lowercase letter; columns {invalid} cannot be exported as "
            f"they are named: leave them out with properties={[name for name in chosen if name not in invalid]}"
        )
    return list(dict.fromkeys(chosen))


def property_type(schema: Schema) -> str:
    """The neuroglancer type the store's extra columns are exported as.

    >>> property_type(Schema(("x", "y", "z", "t"), np.dtype("float64"), "string"))
    'float32'
    """
    return _PROPERTY_TYPE_OF[schema.dtype.name]


def record_dtype(rank: int, property_count: int, kind: str, supervoxel: bool = False) -> np.dtype:
    """The record of one point: float32 geometry, a uint32 ``supervoxel`` if asked, the properties (all of one
    type here), padding to 4 bytes. The supervoxel comes first: neuroglancer lays properties out by decreasing
    alignment, and uint32 has the largest.

    >>> record_dtype(3, 1, "uint8").itemsize, record_dtype(3, 2, "float32").itemsize, record_dtype(3, 1, "uint8", True).itemsize
    (16, 20, 20)
    """
    fields: list[tuple] = [("geometry", "<f4", (rank,))]
    if supervoxel:
        fields.append(("supervoxel", "<u4"))
    if property_count:
        fields.append(("properties", np.dtype(kind).newbyteorder("<"), (property_count,)))
    size = np.dtype(fields).itemsize
    if size % 4:
        fields.append(("padding", "u1", (4 - size % 4,)))
    return np.dtype(fields)


def encode_records(
    geometry: np.ndarray,
    properties: np.ndarray | None,
    kind: str,
    names: Sequence[str],
    supervoxels: np.ndarray | None = None,
) -> np.ndarray:
    """Records (a structured array) of points: ``geometry`` (n, rank), ``properties`` (n, len(names)) or None,
    and each point's supervoxel (below 2**32) or None.

    >>> encode_records(np.array([[1, 2, 3]]), np.array([[7]]), "uint8", ["t"]).tobytes().hex()
    '0000803f000000400000404007000000'
    >>> encode_records(np.array([[1, 2, 3]]), None, "uint8", [], np.array([9], np.uint64)).tobytes().hex()
    '0000803f000000400000404009000000'
    """
    count = 0 if properties is None else properties.shape[1]
    records = np.zeros(len(geometry), record_dtype(geometry.shape[1], count, kind, supervoxels is not None))
    records["geometry"] = geometry
    if supervoxels is not None:
        records["supervoxel"] = supervoxels
    if count:
        records["properties"] = _fitted(properties, np.dtype(kind), names)
    return records


def _fitted(values: np.ndarray, kind: np.dtype, names: Sequence[str]) -> np.ndarray:
    """``values`` in ``kind``; integers that do not fit are refused rather than wrapped around."""
    if np.issubdtype(kind, np.integer) and len(values):
        limits = np.iinfo(kind)
        low, high = values.min(axis=0), values.max(axis=0)
        outside = [name for name, lo, hi in zip(names, low, high, strict=True) if lo < limits.min or hi > limits.max]
        if outside:
            raise InvalidArgumentError(
                f"columns {outside} hold values outside {kind.name}, the widest integer neuroglancer properties "
                f"hold: export without them (properties=[...] listing the others)"
            )
    return values.astype(kind)


def encode_by_id(records: np.ndarray, labels: np.ndarray) -> bytes:
    """The ``by_id`` values of consecutive annotations, each the same size: record, count 1, its label.

    >>> records = encode_records(np.zeros((2, 3)), None, "uint8", [])
    >>> len(encode_by_id(records, np.array([5, 6], np.uint64))) == 2 * (12 + 4 + 8)
    True
    """
    values = np.empty(len(records), by_id_dtype(records.dtype))
    values["record"], values["count"], values["label"] = records, 1, labels
    return values.tobytes()


def by_id_dtype(record: np.dtype) -> np.dtype:
    """One ``by_id`` value: the record, the relationship's count (1) and the label."""
    return np.dtype({"names": ["record", "count", "label"], "formats": [record, "<u4", "<u8"]})


def by_id_size(record: np.dtype) -> int:
    """Bytes of one ``by_id`` value."""
    return record.itemsize + 4 + 8


def encode_groups(counts: np.ndarray, records: np.ndarray, ids: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Values of the several-annotation encoding, one per group of consecutive rows, and their sizes.

    >>> data, sizes = encode_groups(np.array([2, 1]), np.arange(3, dtype="<u4"), np.array([7, 8, 9], np.uint64))
    >>> sizes.tolist(), np.frombuffer(data[:8], "<u8").tolist(), np.frombuffer(data[16:32], "<u8").tolist()
    ([32, 20], [2], [7, 8])
    """
    counts = np.asarray(counts, np.int64)
    record_bytes = memoryview(np.ascontiguousarray(records).tobytes())
    id_bytes = memoryview(np.asarray(ids, "<u8").tobytes())
    headers = memoryview(counts.astype("<u8").tobytes())
    row_ends = np.cumsum(counts)
    row_starts = row_ends - counts
    size = records.dtype.itemsize
    pieces = []
    # One Python step per group (a label, a cell), never per point: each group is three slices.
    for group, (first, last) in enumerate(zip(row_starts.tolist(), row_ends.tolist(), strict=True)):
        pieces += (
            headers[8 * group : 8 * group + 8],
            record_bytes[first * size : last * size],
            id_bytes[first * 8 : last * 8],
        )
    return b"".join(pieces), (8 + counts * (size + 8)).astype(np.uint64)
