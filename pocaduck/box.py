"""An axis-aligned box over a store's spatial columns: the points ``p`` with ``lower <= p < upper``, like slicing.

The spatial columns are the first three (fewer when the store has fewer). A
box is tested two ways, both exact: against the bounding boxes the index
records for every row run (SQL over ``point_index``, to find the runs that may
hold such points and those that hold only such points), and against points.
On an integer store the bounds become the integers they admit
(``lower=1.5`` admits 2 and up), clamped to the dtype, so the comparisons run
in the store's own type; on a float store they run in float64, where every
stored float32 or float64 value is exact.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidBoxError
from .index import duckdb_type
from .layout import Schema


def _corner(values: object, name: str, width: int) -> tuple[float | int, ...]:
    """``values`` as ``width`` finite numbers, refused with a message that says what a corner is."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
        raise InvalidBoxError(f"{name} must be {width} numbers (one per spatial column), got {values!r}")
    values = list(np.asarray(values).tolist()) if isinstance(values, np.ndarray) else list(values)
    if len(values) != width:
        raise InvalidBoxError(
            f"{name} has {len(values)} values but this store's boxes have {width} (one per spatial column)"
        )
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise InvalidBoxError(f"{name} must hold finite numbers, got {value!r} in {values!r}")
    return tuple(values)


@dataclass(frozen=True)
class Box:
    """A validated box for one store; build it with :meth:`Box.of`.

    On an integer store ``low`` and ``high`` are the inclusive integer bounds; on
    a float store ``low`` is inclusive and ``high`` exclusive.

    >>> schema = Schema(("x", "y", "z"), np.dtype("int32"), "string")
    >>> box = Box.of((0, 0, 0.5), (10, 10, 4), schema)
    >>> box.low, box.high, box.holds([np.array([0, 0, 0]), np.array([9, 10, 0]), np.array([1, 1, 0])]).tolist()
    ((0, 0, 1), (9, 9, 3), [True, False, False])
    """

    columns: tuple[str, ...]
    dtype: np.dtype
    low: tuple[float | int, ...]
    high: tuple[float | int, ...]

    @classmethod
    def of(cls, lower: object, upper: object, schema: Schema) -> Box:
        """The box ``lower <= p < upper`` over ``schema``'s spatial columns; :class:`InvalidBoxError` when it is not one."""
        columns = schema.spatial_columns
        lower, upper = _corner(lower, "lower", len(columns)), _corner(upper, "upper", len(columns))
        wrong = [c for c, lo, up in zip(columns, lower, upper, strict=True) if not lo < up]
        if wrong:
            raise InvalidBoxError(
                f"lower must be below upper on every axis (the box is lower <= p < upper), but not on "
                f"{', '.join(wrong)}: lower={list(lower)}, upper={list(upper)}"
            )
        if schema.dtype.kind == "f":
            return cls(columns, schema.dtype, tuple(map(float, lower)), tuple(map(float, upper)))
        info = np.iinfo(schema.dtype)
        low = tuple(max(math.ceil(value), int(info.min)) for value in lower)
        high = tuple(min(math.ceil(value) - 1, int(info.max)) for value in upper)
        return cls(columns, schema.dtype, low, high)

    @property
    def _integer(self) -> bool:
        return self.dtype.kind != "f"

    @property
    def empty(self) -> bool:
        """True when no value of the store's dtype lies in the box (an integer store's box between two integers)."""
        return self._integer and any(lo > hi for lo, hi in zip(self.low, self.high, strict=True))

    def _bounds(self) -> tuple[str, str]:
        """The comparison that keeps a value below ``high``, and the SQL cast of the bounds."""
        return ("<=", duckdb_type(self.dtype)) if self._integer else ("<", "DOUBLE")

    def meets_sql(self) -> tuple[str, list[Any]]:
        """A condition on ``point_index`` rows whose bounding box meets the box, and its parameters."""
        below, cast = self._bounds()
        terms = [f"min_{c} {below} ?::{cast} AND max_{c} >= ?::{cast}" for c in self.columns]
        params = [bound for pair in zip(self.high, self.low, strict=True) for bound in pair]
        return " AND ".join(terms), params

    def inside_sql(self) -> tuple[str, list[Any]]:
        """An expression, true for ``point_index`` rows whose bounding box lies inside the box, and its parameters."""
        below, cast = self._bounds()
        terms = [f"min_{c} >= ?::{cast} AND max_{c} {below} ?::{cast}" for c in self.columns]
        params = [bound for pair in zip(self.low, self.high, strict=True) for bound in pair]
        return "(" + " AND ".join(terms) + ")", params

    def holds(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        """Which rows lie in the box, given the store's columns as arrays (the spatial ones first)."""
        count = len(columns[0]) if len(columns) else 0
        if self.empty:  # its bounds may not even fit the dtype
            return np.zeros(count, dtype=bool)
        inside = np.ones(count, dtype=bool)
        for column, low, high in zip(columns, self.low, self.high, strict=False):  # one pass per axis, not per row
            if self._integer:
                # low <= v <= high as one unsigned comparison: v - low wraps around to a huge value below low.
                unsigned = np.dtype(f"u{self.dtype.itemsize}")
                offset = np.subtract(column, self.dtype.type(low), dtype=self.dtype).view(unsigned)
                within = np.less_equal(offset, unsigned.type(high - low))
            else:  # float64, where every stored float is exact
                within = column >= np.float64(low)
                within &= column < np.float64(high)
            inside &= within
        return inside
