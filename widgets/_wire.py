"""How table pages cross to the browser: one place for the wire format.

A page is a dict ``{"num_rows": n, "columns": [column, ...]}``; each column is
``{"name", "type", "data", "valid"}`` where ``data`` is a binary buffer (numbers
as little-endian int64 / uint64 / float64 arrays; text as UTF-8 bytes plus
``offsets``, an int32 array of n + 1 positions) and ``valid`` is one byte per
row (1 = not null). ipywidgets sends every ``bytes`` value found in a synced
dict as a binary buffer, so numbers never travel as JSON lists. ``_wire.js``
decodes exactly this, and :func:`front_end` puts it before every front end
that reads pages.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import traitlets as t

from pocaduck import PocaduckError
from pocaduck.keys import check_label

_HERE = pathlib.Path(__file__).parent
_INTEGER_TYPES = {True: ("int64", np.int64), False: ("uint64", np.uint64)}


def encode_page(table: pa.Table) -> dict[str, Any]:
    """Encode an Arrow table as the page dict described above.

    >>> page = encode_page(pa.table({"label": pa.array([7, 2**64 - 1], pa.uint64()), "name": ["a", None]}))
    >>> [(c["name"], c["type"]) for c in page["columns"]], page["num_rows"]
    ([('label', 'uint64'), ('name', 'string')], 2)
    >>> np.frombuffer(page["columns"][0]["data"], np.uint64).tolist()
    [7, 18446744073709551615]
    """
    return {
        "num_rows": table.num_rows,
        "columns": [
            _encode_column(name, column) for name, column in zip(table.column_names, table.columns, strict=True)
        ],
    }


def encode_histograms(histograms: list[tuple[str, str, bool, list, list[int]]]) -> dict[str, Any]:
    """Encode column histograms ``(name, scale, integer, edges, counts)`` for the browser's header.

    Edges (one more than counts) travel as decimal text, so an integer edge stays exact beyond 2**53;
    counts as an int64 buffer, like a page's numbers.

    >>> encoded = encode_histograms([("point_count", "log", True, [1, 2, 4], [5, 3])])["columns"][0]
    >>> encoded["bins"], np.frombuffer(encoded["counts"]["data"], "<i8").tolist()
    (2, [5, 3])
    """
    return {
        "columns": [
            {
                "name": name,
                "scale": scale,
                "integer": integer,
                "bins": len(counts),
                "edges": _encode_column("edges", pa.array([repr(edge) for edge in edges], pa.string())),
                "counts": _encode_column("counts", pa.array(counts, pa.int64())),
            }
            for name, scale, integer, edges, counts in histograms
        ]
    }


class LabelList(t.List):
    """A trait holding uint64 labels: each is checked, and they cross the wire as decimal strings.

    JSON numbers in the browser are exact only to 2**53 and labels reach 2**64 - 1.

    >>> class Shown(t.HasTraits):
    ...     labels = LabelList()
    >>> Shown(labels=[2**64 - 1]).labels
    [18446744073709551615]
    >>> Shown.class_traits()["labels"].metadata["to_json"]([2**64 - 1], None)
    ['18446744073709551615']
    >>> Shown(labels=[-1])
    Traceback (most recent call last):
    ...
    traitlets.traitlets.TraitError: labels: label must be in [0, 2**64): -1 is outside the uint64 range
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.metadata.update(to_json=_labels_to_json, from_json=_labels_from_json)

    def validate(self, obj: Any, value: Any) -> list[int]:
        try:
            return [check_label(label) for label in super().validate(obj, value)]
        except PocaduckError as error:
            raise t.TraitError(f"{self.name}: {error}") from error


def _labels_to_json(labels: list[int], _widget: Any) -> list[str]:
    return [str(label) for label in labels]


def _labels_from_json(labels: list[str], _widget: Any) -> list[int]:
    return [int(label) for label in labels]


def front_end(script: str) -> str:
    """An anywidget ES module: the page decoder of ``_wire.js`` followed by the widget's own ``script``.

    >>> "function decodeColumn" in front_end("_table.js") and "export default" in front_end("_table.js")
    True
    """
    return (_HERE / "_wire.js").read_text() + "\n" + (_HERE / script).read_text()


def _encode_column(name: str, column: pa.ChunkedArray) -> dict[str, Any]:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    valid = pc.is_valid(column).to_numpy(zero_copy_only=False).astype(np.uint8).tobytes()
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        type_name, dtype = _INTEGER_TYPES[not pa.types.is_unsigned_integer(kind)]
        values = pc.fill_null(column.cast(pa.int64() if dtype is np.int64 else pa.uint64()), 0)
        return {
            "name": name,
            "type": type_name,
            "data": values.to_numpy().astype("<" + np.dtype(dtype).str[1:]).tobytes(),
            "valid": valid,
        }
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = pc.fill_null(column.cast(pa.float64()), float("nan"))
        return {"name": name, "type": "float64", "data": values.to_numpy().astype("<f8").tobytes(), "valid": valid}
    text = pc.fill_null(_as_text(column), "")
    offsets = np.frombuffer(text.buffers()[1], np.int32)[text.offset : text.offset + len(text) + 1]
    data = np.frombuffer(text.buffers()[2], np.uint8) if text.buffers()[2] is not None else np.zeros(0, np.uint8)
    body = data[offsets[0] : offsets[-1]].tobytes()
    return {
        "name": name,
        "type": "string",
        "data": body,
        "offsets": (offsets - offsets[0]).astype("<i4").tobytes(),
        "valid": valid,
    }


def _as_text(column: pa.Array) -> pa.Array:
    """Any other column as text; types Arrow cannot cast (lists, structs) go through Python, a page is small."""
    try:
        return column.cast(pa.string())
    except pa.ArrowNotImplementedError:
        return pa.array([None if value is None else str(value) for value in column.to_pylist()], pa.string())
