"""What a supervoxel→body mapping may be given as, turned into two checked uint64 arrays sorted by supervoxel.

Arrays (numpy, pandas, Arrow, lists of Python ints), or a file: Parquet or CSV
with two columns, or DVID's ``/mappings`` text (two whitespace-separated
integers per line). Values are parsed as integers, never through floats, so
ids ≥ 2**53 and ≥ 2**63 stay exact. Everything is checked here, before anything
is written: a bad mapping raises :class:`InvalidMappingError` saying what is wrong.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..errors import InvalidMappingError
from ._sorting import ordered_pairs

_COLUMN_NAMES = ("supervoxel", "body")


def mapping_pairs(supervoxels: Any, bodies: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(supervoxels, bodies)`` as uint64 arrays sorted by supervoxel, each supervoxel once.

    ``supervoxels`` is an array (then ``bodies`` is one of the same length) or a
    path to a file of two columns (then ``bodies`` is None). A supervoxel given
    twice with the same body counts once; with different bodies it is an error.

    >>> mapping_pairs([7, 2**64 - 1, 7], np.array([3, 5, 3]))
    (array([                   7, 18446744073709551615], dtype=uint64), array([3, 5], dtype=uint64))
    >>> mapping_pairs([1, 1], [2, 3])
    Traceback (most recent call last):
    pocaduck.errors.InvalidMappingError: supervoxel 1 is given two bodies, 2 and 3: a supervoxel belongs to one body
    """
    if isinstance(supervoxels, str | os.PathLike):
        if bodies is not None:
            raise InvalidMappingError("give either a file of two columns, or supervoxels and bodies: not both")
        supervoxels, bodies = _read_file(os.fspath(supervoxels))
    elif bodies is None:
        raise InvalidMappingError(
            "bodies is missing: give supervoxels and bodies as two arrays of equal length, or one file path"
        )
    supervoxel_ids = _uint64(supervoxels, "supervoxels")
    body_ids = _uint64(bodies, "bodies")
    if len(supervoxel_ids) != len(body_ids):
        raise InvalidMappingError(
            f"supervoxels has {len(supervoxel_ids)} entries and bodies {len(body_ids)}: give one body per supervoxel"
        )
    return _sorted_unique(supervoxel_ids, body_ids)


def _uint64(values: Any, name: str) -> np.ndarray:
    """A 1-D integer array as uint64, refusing floats, bools, negatives and anything not integer."""
    if isinstance(values, pa.ChunkedArray | pa.Array):
        if values.null_count:
            raise InvalidMappingError(f"{name} holds {values.null_count} missing values: every entry needs an id")
        if not pa.types.is_integer(values.type):
            raise InvalidMappingError(f"{name} must hold integers, got Arrow type {values.type}")
        values = values.to_numpy(zero_copy_only=False)
    elif hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):  # pandas Series or Index
        if getattr(values, "hasnans", False):
            raise InvalidMappingError(f"{name} holds missing values: every entry needs an id")
        values = values.to_numpy()
    if isinstance(values, list | tuple):  # numpy would turn ids past 2**63 mixed with others into floats
        values = _python_ints(values, name)
    array = np.asarray(values)
    if array.ndim != 1:
        raise InvalidMappingError(f"{name} must be 1-D, got shape {array.shape}")
    if not len(array):
        return np.empty(0, np.uint64)
    if array.dtype.kind not in "iu":
        raise InvalidMappingError(
            f"{name} must be integer ids (uint64), got {array.dtype}: floats cannot hold every id exactly"
        )
    if array.dtype.kind == "i" and array.min() < 0:
        first = int(np.flatnonzero(array < 0)[0])
        raise InvalidMappingError(f"{name} must be in the uint64 range [0, 2**64); {name}[{first}] is {array[first]}")
    return array.astype(np.uint64, copy=False)


def _python_ints(values: list | tuple, name: str) -> np.ndarray:
    for position, value in enumerate(values):
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
            raise InvalidMappingError(
                f"{name} must hold integer ids, got {type(value).__name__} {value!r} at {name}[{position}]"
            )
        if not 0 <= int(value) < 2**64:
            raise InvalidMappingError(f"{name} must be in the uint64 range [0, 2**64); {name}[{position}] is {value}")
    return np.array([int(value) for value in values], dtype=np.uint64)


def _sorted_unique(supervoxels: np.ndarray, bodies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(supervoxels) > 1 and not bool(np.all(supervoxels[1:] > supervoxels[:-1])):
        supervoxels, bodies = ordered_pairs(supervoxels, bodies)
        repeated = np.flatnonzero(supervoxels[1:] == supervoxels[:-1])
        clashes = repeated[bodies[repeated] != bodies[repeated + 1]]
        if len(clashes):
            at = int(clashes[0])
            raise InvalidMappingError(
                f"supervoxel {supervoxels[at]} is given two bodies, {bodies[at]} and {bodies[at + 1]}: "
                f"a supervoxel belongs to one body"
            )
        keep = np.ones(len(supervoxels), bool)
        keep[repeated + 1] = False
        supervoxels, bodies = supervoxels[keep], bodies[keep]
    return np.ascontiguousarray(supervoxels), np.ascontiguousarray(bodies)


def _read_file(path: str) -> tuple[Any, Any]:
    """The two columns of a Parquet or CSV file, or of DVID's whitespace-separated text."""
    if not os.path.isfile(path):
        raise InvalidMappingError(f"no mapping file at {path}: give a .parquet, .csv or text file of two columns")
    if path.endswith(".parquet"):
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as error:
            raise InvalidMappingError(f"{path} is not a readable Parquet file: {error}") from error
        return _two_columns(table, path)
    with open(path, "rb") as file:
        first = file.readline()
    if b"," in first:
        return _read_csv(path, first)
    return _read_text(path, first)


def _two_columns(table: pa.Table, path: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    if set(_COLUMN_NAMES) <= set(table.column_names):
        return table.column("supervoxel"), table.column("body")
    if table.num_columns != 2:
        raise InvalidMappingError(
            f"{path} has columns {table.column_names}: give two columns (supervoxel, body), or name them so"
        )
    return table.column(0), table.column(1)


def _has_header(first: bytes, separator: bytes | None) -> bool:
    fields = first.split(separator) if separator else first.split()
    return bool(fields) and not fields[0].strip().isdigit()


def _read_csv(path: str, first: bytes) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    header = _has_header(first, b",")
    named = [field.strip().decode(errors="replace") for field in first.split(b",")] if header else []
    names = named if sorted(named) == sorted(_COLUMN_NAMES) else list(_COLUMN_NAMES)
    try:
        # Read as text, then parsed as uint64: a float or a negative number is then refused, never rounded.
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=int(header)),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string())),
        )
    except pa.ArrowException as error:
        raise InvalidMappingError(f"{path} is not a CSV file of two integer columns: {error}") from error
    return _parsed(table.column("supervoxel"), path), _parsed(table.column("body"), path)


def _parsed(column: pa.ChunkedArray, path: str) -> pa.ChunkedArray:
    try:
        return pc.utf8_trim_whitespace(column).cast(pa.uint64())
    except pa.ArrowInvalid as error:
        raise InvalidMappingError(
            f"{path}: every value must be an integer in [0, 2**64) (no signs, decimals or exponents): {error}"
        ) from error


def _read_text(path: str, first: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        # numpy's integer parser reads uint64 exactly and refuses '-1', '1.5' and '1e3'.
        pairs = np.loadtxt(path, dtype=np.uint64, ndmin=2, comments="#", skiprows=int(_has_header(first, None)))
    except ValueError as error:
        raise InvalidMappingError(
            f"{path}: each line must be two integers in [0, 2**64), a supervoxel and its body ({error})"
        ) from error
    if pairs.size == 0:
        return np.empty(0, np.uint64), np.empty(0, np.uint64)
    if pairs.shape[1] != 2:
        raise InvalidMappingError(f"{path} has {pairs.shape[1]} values a line: give two, a supervoxel and its body")
    return pairs[:, 0], pairs[:, 1]
