"""One selection shared by every part of the explorer: clauses that compose (AND) into what each part shows.

The clauses are mosaic's: a WHERE typed by the user, a box (the labels with a
point inside it), one brush per column and the labels picked (clicked rows, a
double-clicked point). Each renders a SQL predicate with ``?`` parameters;
``predicate(skip=...)`` ANDs all but the skipped ones, so a view can leave out
its own clause. ``source`` is the relation the clauses filter (the labels table,
or a whole SELECT typed by the user).

Views never keep copies: they read the selection and observe ``revision``,
which counts every change; ``update(...)`` is the only way to change it, checks
its arguments before anything changes, and runs under one lock, so threads and
the widgets' callbacks always see whole states. ``labels_to_draw`` is derived:
the picked labels that pass every other clause; with none picked, a box's
labels that pass every filter; otherwise nothing (an empty selection draws
nothing anywhere, neuroglancer included).
"""

from __future__ import annotations

import math
import numbers
import threading
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import traitlets as t

from pocaduck import InvalidArgumentError, PocaduckError, Reader
from pocaduck.keys import check_label

from . import _histograms

Box = tuple[tuple[float, float, float], tuple[float, float, float]]
Brush = tuple[int | float | None, int | float | None]
_KEEP: Any = object()  # "leave this clause as it is" in ``update``
_LABELS = "SELECT * FROM labels"


class InvalidBrushError(InvalidArgumentError):
    """``brush`` was given a column without a histogram, or bounds that are not an ordered pair of numbers."""


@dataclass(frozen=True)
class _Clauses:
    """One whole state of a selection; replaced, never changed, so a reader never sees half of an update."""

    source: str = ""
    where: str = ""
    box: Box | None = None
    box_labels: tuple[int, ...] = ()
    brushes: Mapping[str, Brush] = field(default_factory=dict)
    picked: tuple[int, ...] = ()
    picked_only: bool = False
    schema: pa.Schema = field(default_factory=lambda: pa.schema([]), compare=False)  # the source's columns


class Selection(t.HasTraits):
    """What the explorer's parts show: WHERE, box, brushes and picked labels, ANDed; change it with ``update``.

    Example::

        selection = Selection(query)
        selection.update(where="point_count > 100", box=((0, 0, 0), (512, 512, 64)))
        selection.update(brushes={"max_z": (2000, None)}, picked=[42, 2**64 - 1])
        statement, params = selection.relation()  # the rows every clause keeps
        selection.labels_to_draw  # 42 and 2**64 - 1, if they pass the other clauses
    """

    revision = t.Int(0, read_only=True, help="counts the changes: observe it to follow the selection")

    def __init__(self, query: Reader, *, timeout: float = 10.0):
        super().__init__()
        self.query = query
        self.timeout = timeout
        self._lock = threading.RLock()
        self._clauses = replace(_Clauses(), schema=self._schema_of(_Clauses()))
        self._drawn: tuple[int, list[int]] | None = None  # (revision, labels_to_draw) cached

    # -- reading -------------------------------------------------------------

    @property
    def source(self) -> str:
        """The SELECT the clauses filter; empty for the labels table."""
        return self._clauses.source

    @property
    def where(self) -> str:
        """The user's SQL boolean expression over the source's columns; empty for none."""
        return self._clauses.where

    @property
    def box(self) -> Box | None:
        """The box's (lower, upper) voxel corners (lower inclusive, upper exclusive), or None."""
        return self._clauses.box

    @property
    def box_labels(self) -> list[int]:
        """The labels with a point in the box (empty without a box)."""
        return list(self._clauses.box_labels)

    @property
    def brushes(self) -> types.MappingProxyType[str, Brush]:
        """``{column: (low, high)}``, inclusive, None for an open side; read-only."""
        return types.MappingProxyType(dict(self._clauses.brushes))

    @property
    def picked(self) -> list[int]:
        """The labels picked, in the order they were picked."""
        return list(self._clauses.picked)

    @property
    def picked_only(self) -> bool:
        """True when the rows are limited to the picked labels ("show selected only")."""
        return self._clauses.picked_only

    @property
    def schema(self) -> pa.Schema:
        """The columns of ``source``."""
        return self._clauses.schema

    @property
    def brushable(self) -> list[str]:
        """The columns a brush may range over: the numeric ones but ``label``."""
        return _histograms.numeric_columns(self._clauses.schema)

    def predicate(self, skip: Iterable[str] = ()) -> tuple[str, list[Any]]:
        """Every clause but those named in ``skip``, ANDed, as SQL and its ``?`` parameters ("true" for none).

        Names: "where", "box", "picked", "brushes" (all of them) or "brush:<column>" (one).

        Example::

            sql, params = selection.predicate(skip=["brush:point_count"])  # what the point_count histogram counts
        """
        return _predicate(self._clauses, frozenset(skip))

    def relation(self, skip: Iterable[str] = ()) -> tuple[str, list[Any]]:
        """A SELECT of the source's rows passing ``predicate(skip)``, and its parameters.

        Example::

            query.sql(*selection.relation(), output="arrow")
        """
        return _relation(self._clauses, frozenset(skip))

    @property
    def labels_to_draw(self) -> list[int]:
        """The labels every view draws: picked ones passing the other clauses; none picked, a box's passing ones.

        Read-only and derived, computed once per revision. With neither a pick nor a box it is empty.
        """
        with self._lock:
            if self._drawn is None or self._drawn[0] != self.revision:
                clauses = self._clauses
                if clauses.picked:
                    labels = self._passing(clauses, clauses.picked)
                elif clauses.box is not None:
                    labels = self._labels(*_relation(clauses, frozenset({"picked"})))
                else:
                    labels = []
                self._drawn = (self.revision, labels)
            return list(self._drawn[1])

    def picked_hidden(self) -> int:
        """How many picked labels the other clauses hide: they stay picked, and are counted, not lost."""
        clauses = self._clauses
        if not clauses.picked:
            return 0
        return len(clauses.picked) - len(self._passing(clauses, clauses.picked))

    # -- changing -------------------------------------------------------------

    def update(
        self,
        *,
        source: str = _KEEP,
        where: str = _KEEP,
        box: Box | None = _KEEP,
        brushes: Mapping[str, Brush] = _KEEP,
        picked: Iterable[int] = _KEEP,
        picked_only: bool = _KEEP,
    ) -> bool:
        """Change the named clauses at once; False when nothing changed. Bad input raises and changes nothing.

        A new ``source`` drops the brushes on columns it lacks. ``box=None`` removes the box; a brush of
        ``(None, None)`` is no brush. SQL that DuckDB refuses raises ``SQLError`` (or ``ReadOnlySQLError``),
        a bad box ``InvalidBoxError``, a bad brush ``InvalidBrushError``, a bad label ``InvalidLabelError``.

        Example::

            selection.update(where="block_count > 2", brushes={**selection.brushes, "max_z": (None, 900)})
            selection.update(picked=[], box=None)
        """
        with self._lock:
            old = self._clauses
            new, schema = old, old.schema
            if source is not _KEEP or where is not _KEEP:
                new = replace(
                    new,
                    source=old.source if source is _KEEP else _text(source, "source").strip().rstrip(";").strip(),
                    where=old.where if where is _KEEP else _text(where, "where"),
                )
                schema = self._schema_of(new)  # refused SQL raises here, before anything changed
                new = replace(new, schema=schema)
                if brushes is _KEEP:
                    kept = _histograms.numeric_columns(schema)
                    new = replace(new, brushes={c: b for c, b in old.brushes.items() if c in kept})
            if brushes is not _KEEP:
                new = replace(new, brushes=_checked_brushes(brushes, _histograms.numeric_columns(schema)))
            if picked is not _KEEP:
                new = replace(new, picked=tuple(dict.fromkeys(check_label(label) for label in _iterable(picked))))
            if picked_only is not _KEEP:
                new = replace(new, picked_only=bool(picked_only))
            if box is not _KEEP:
                new = replace(new, box=None, box_labels=()) if box is None else self._with_box(new, box)
            if (new.box, new.picked_only) != (old.box, old.picked_only) and (new.box is not None or new.picked_only):
                self._schema_of(new)  # a source without a label column cannot take a box or "selected only"
            if new == old:
                return False
            self._clauses = new  # one store: a reader on another thread sees the old state or the new, whole
            self.set_trait("revision", self.revision + 1)  # observers run now, on this thread, under the lock
            return True

    def use_query(self, query: Reader) -> None:
        """Answer from ``query`` from now on (the store through another mapping version, or none), keeping what
        still holds: picked labels it lists, the box (asked anew), and the WHERE, SELECT and brushes unless its
        tables refuse them (a column only bodies have), in which case they are dropped. One change, one revision.

        Example::

            selection.use_query(Query(store, mapping="v2"))  # picked bodies still in v2 stay picked
        """
        with self._lock:
            old, previous = self._clauses, self.query
            self.query = query
            try:
                picked = np.array(old.picked, dtype=np.uint64)
                listed = np.isin(picked, query.get_labels())
                new = replace(old, picked=tuple(label for label, kept in zip(old.picked, listed, strict=True) if kept))
                new = new if old.box is None else self._with_box(new, old.box)
                try:
                    schema = self._schema_of(new)
                except PocaduckError:
                    new = replace(new, source="", where="")
                    schema = self._schema_of(new)
                kept = _histograms.numeric_columns(schema)
                new = replace(new, schema=schema, brushes={c: b for c, b in old.brushes.items() if c in kept})
            except BaseException:
                self.query = previous
                raise
            self._clauses, self._drawn = new, None  # the same labels may be drawn differently now
            self.set_trait("revision", self.revision + 1)

    def brush(self, column: str, low: float | None = None, high: float | None = None) -> None:
        """Keep ``column`` in [low, high] (a None bound is open; both None removes the brush).

        Example::

            selection.brush("point_count", 1000, None)
        """
        with self._lock:
            brushes = dict(self._clauses.brushes)
            brushes[column] = (low, high)
            self.update(brushes=brushes)

    # -- inside ---------------------------------------------------------------

    def _sql(self, statement: str, params: list[Any]) -> pa.Table:
        result = self.query.sql(statement, params, output="arrow", timeout=self.timeout)
        return result.read_all() if isinstance(result, pa.RecordBatchReader) else result

    def _schema_of(self, clauses: _Clauses) -> pa.Schema:
        statement, params = _relation(clauses, frozenset({"brushes"}))
        return self._sql(f"SELECT * FROM (\n{statement}\n) AS checked LIMIT 0", params).schema

    def _labels(self, statement: str, params: list[Any]) -> list[int]:
        return self._sql(f"SELECT label FROM (\n{statement}\n) AS drawn ORDER BY label", params)["label"].to_pylist()

    def _passing(self, clauses: _Clauses, labels: Sequence[int]) -> list[int]:
        """Those of ``labels`` every clause but the picked one keeps, in their own order."""
        statement, params = _relation(clauses, frozenset({"picked"}))
        held = set(
            self._sql(
                f"SELECT label FROM (\n{statement}\n) AS view WHERE list_contains(?::UBIGINT[], label)",
                [*params, list(labels)],
            )["label"].to_pylist()
        )
        return [label for label in labels if label in held]

    def _with_box(self, clauses: _Clauses, box: Box) -> _Clauses:
        try:
            lower, upper = box
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"box must be a (lower, upper) pair of corners, got {box!r}") from None
        labels = self.query.get_labels_in_box(lower, upper).tolist()  # a bad box raises InvalidBoxError here
        corners = (tuple(float(v) for v in lower), tuple(float(v) for v in upper))
        return replace(clauses, box=corners, box_labels=tuple(labels))


def _predicate(clauses: _Clauses, skip: frozenset[str]) -> tuple[str, list[Any]]:
    conditions: list[str] = []
    params: list[Any] = []
    if clauses.where.strip() and "where" not in skip:
        # User text on lines of its own, so a trailing "-- comment" cannot swallow our clauses.
        conditions.append(f"(\n{clauses.where}\n)")
    if clauses.box is not None and "box" not in skip:
        # list_contains, not ANY(?): the read-only check refuses the unnest that ANY becomes.
        conditions.append("list_contains(?::UBIGINT[], label)")
        params.append(list(clauses.box_labels))
    if clauses.picked_only and "picked" not in skip:
        conditions.append("list_contains(?::UBIGINT[], label)")
        params.append(list(clauses.picked))
    if "brushes" not in skip:
        for column, (low, high) in clauses.brushes.items():
            if f"brush:{column}" not in skip:
                predicate, values = _histograms.brush_predicate(column, low, high)
                conditions.append(predicate)
                params += values
    return ("\nAND ".join(conditions) if conditions else "true"), params


def _relation(clauses: _Clauses, skip: frozenset[str]) -> tuple[str, list[Any]]:
    predicate, params = _predicate(clauses, skip)
    source = clauses.source or _LABELS
    return f"SELECT * FROM (\n{source}\n) AS source\nWHERE {predicate}", params


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{name} must be SQL text, got {type(value).__name__} {value!r}")
    return value


def _iterable(labels: Any) -> Iterable[Any]:
    if isinstance(labels, str | bytes) or not isinstance(labels, Iterable):
        raise InvalidArgumentError(f"picked must be a list of labels, got {type(labels).__name__} {labels!r}")
    return labels


def _checked_brushes(brushes: Mapping[str, Brush], brushable: list[str]) -> dict[str, Brush]:
    checked = {}
    for column, bounds in dict(brushes).items():
        if not isinstance(column, str) or column not in brushable:
            raise InvalidBrushError(
                f"cannot brush {column!r}: only these columns have a histogram: {', '.join(brushable)}"
            )
        try:
            low, high = bounds
        except (TypeError, ValueError):
            raise InvalidBrushError(f"brush of {column!r} must be a (low, high) pair, got {bounds!r}") from None
        low, high = bound(low, "low"), bound(high, "high")
        if low is not None and high is not None and low > high:
            raise InvalidBrushError(f"brush of {column!r}: low ({low}) is above high ({high})")
        if (low, high) != (None, None):
            checked[column] = (low, high)
    return checked


def bound(value: Any, name: str) -> int | float | None:
    """A brush bound: None, or a finite real number kept as given (an int stays exact)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidBrushError(f"brush {name} must be a number or None, got {type(value).__name__} {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if not math.isfinite(value):
        raise InvalidBrushError(f"brush {name} must be finite, got {value!r}")
    return float(value)
