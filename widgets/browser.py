"""The label browser: a paged, sortable, filterable table over a store's per-label summary.

Every page is one SQL query run in the kernel through ``Query.sql`` (a single
read-only SELECT on a read-only connection), so the browser only ever receives
the rows it shows, and nothing typed into it can change the store. The user's
WHERE expression and SELECT are placed on lines of their own inside the paged
query, so the whole statement, user text included, is what ``Query.sql`` checks.
Each query is stopped after ``timeout`` seconds, so a runaway one typed into a
box cannot hold the kernel.

Above each numeric column sits a histogram (``_histograms.py``); dragging on one
brushes a range of that column. Brushes, the WHERE box and ``only_labels`` are
clauses ANDed into one WHERE; each histogram counts under every clause but its
own brush. ``sql`` and ``data()`` give the view the table shows.
"""

from __future__ import annotations

import html
import math
import numbers
import pathlib
import re
import types
from contextlib import contextmanager
from typing import Any

import anywidget
import ipywidgets as w
import pyarrow as pa
import traitlets as t

from pocaduck import InvalidArgumentError, PocaduckError
from pocaduck.keys import check_label

from . import _histograms
from ._histograms import quote as _quote
from ._source import StoreLike, open_query
from ._wire import encode_histograms, encode_page, front_end

_HERE = pathlib.Path(__file__).parent
_STATE = ("select", "where", "only_labels", "selected_only", "order_by", "descending", "offset", "page_size")


class LabelNotFoundError(PocaduckError, LookupError):
    """``jump_to`` was given a label that is not among the rows matching the current filter."""


class InvalidBrushError(InvalidArgumentError):
    """``brush`` was given a column without a histogram, or bounds that are not an ordered pair of numbers."""


Brush = tuple[int | float | None, int | float | None]
_INTEGER_TEXT = re.compile(r"-?[0-9]+")


def _labels_to_json(labels: list[int], _widget: Any) -> list[str]:
    # Labels reach 2**64 - 1; JSON numbers in the browser are exact only to 2**53.
    return [str(label) for label in labels]


def _labels_from_json(labels: list[str], _widget: Any) -> list[int]:
    return [int(label) for label in labels]


class _LabelTable(anywidget.AnyWidget):
    """The clickable table: draws the page the kernel sends, reports sort and selection clicks."""

    _esm = front_end("_table.js")
    _css = _HERE / "_table.css"
    page = t.Dict().tag(sync=True)
    label_column = t.Unicode("label").tag(sync=True)
    order_by = t.Unicode("").tag(sync=True)
    descending = t.Bool(True).tag(sync=True)
    selected = t.List(t.Int()).tag(sync=True, to_json=_labels_to_json, from_json=_labels_from_json)
    histograms = t.Dict().tag(sync=True)
    # {column: [low, high]}, bounds as decimal text (exact for any integer) or null for an open side.
    brushes = t.Dict().tag(sync=True)


class LabelBrowser(w.VBox):
    """Find labels among millions: sort, filter with SQL, page, jump to a label, select rows.

    ``where`` is a SQL boolean expression over the table's columns; ``select``
    optionally replaces the labels table with any read-only SELECT over the
    index tables (``labels``, ``point_index``, ``files``, ``workers``). A bad
    expression sets ``error`` and leaves the table as it was.

    Each numeric column but the label has a histogram above the rows; drag on
    one (or call ``brush``) to keep a range of that column. ``sql`` is the view
    as a ``(statement, params)`` pair for ``Query.sql``; ``data()`` runs it.

    Example::

        browser = LabelBrowser(store)
        browser.where = "point_count > 1000"
        browser.brush("max_z", 2000, None)
        browser.order_by, browser.descending = "block_count", True
        browser.selected_labels = [42]
        table = browser.data()  # every row shown, as Arrow
    """

    select = t.Unicode("", help="a whole SELECT used instead of the labels table; empty for the labels table")
    where = t.Unicode("", help="SQL boolean expression filtering the rows; empty for all rows")
    only_labels = t.List(
        default_value=None,
        allow_none=True,
        help="keep only rows whose label is one of these (the explorer's box); None for all",
    )
    order_by = t.Unicode("point_count")
    descending = t.Bool(True)
    offset = t.Int(0, help="index of the first row shown, in the current order")
    page_size = t.Int(50)
    total_rows = t.Int(0, help="rows matching the current select and where")
    error = t.Unicode("", help="the last error, shown in the widget; empty when the last change worked")
    selected_labels = t.List(help="labels of the selected rows; settable, each an integer in [0, 2**64)")
    selected_only = t.Bool(False, help="list only the selected rows (still under every other filter)")
    revision = t.Int(0, read_only=True, help="counts the changes of which rows match (select, where, boxes, brushes)")
    timeout = t.Float(10.0, help="seconds a query may run before it is stopped and reported in the widget")

    def __init__(self, store: StoreLike, *, page_size: int = 50, **kwargs: Any):
        self._quiet = True  # no queries until the widget is fully built
        self.query = open_query(store)
        self.page = pa.table({})
        self._table = _LabelTable(layout=w.Layout(width="100%", min_width="0", overflow="auto"))
        self._where_box = w.Text(
            placeholder="WHERE …  e.g. point_count > 1000 AND max_z - min_z > 100",
            continuous_update=False,
            layout=w.Layout(width="auto"),  # stretched to the browser's width; 100% would add the margins to it
        )
        self._select_box = w.Textarea(
            placeholder="SELECT … over labels, point_index, files, workers (optional, replaces the table)",
            continuous_update=False,
            rows=2,
            layout=w.Layout(width="auto"),
        )
        # Wide enough for a 20-digit label, the largest uint64.
        self._jump_box = w.Text(placeholder="jump to label", continuous_update=False, layout=w.Layout(width="14em"))
        self._status = w.HTML()
        self._selection_status = w.HTML()
        self._selected_only_button = w.ToggleButton(
            description="selected only", tooltip="list only the selected rows", layout=w.Layout(width="auto")
        )
        clear_button = w.Button(description="clear selection", layout=w.Layout(width="auto"))
        clear_button.on_click(lambda _button: setattr(self, "selected_labels", []))
        self._error_view = w.HTML()
        buttons = {
            "«": lambda: self._go(0),
            "‹": lambda: self._go(self.offset - self.page_size),
            "›": lambda: self._go(self.offset + self.page_size),
            "»": lambda: self._go(self.total_rows),
        }
        pager = []
        for text, action in buttons.items():
            button = w.Button(description=text, layout=w.Layout(width="3em"))
            button.on_click(lambda _button, action=action: action())
            pager.append(button)
        self._where_box.observe(lambda change: setattr(self, "where", change["new"]), "value")
        self._select_box.observe(lambda change: setattr(self, "select", change["new"]), "value")
        self._jump_box.observe(self._on_jump_box, "value")
        t.link((self, "order_by"), (self._table, "order_by"))
        t.link((self, "descending"), (self._table, "descending"))
        t.link((self, "selected_labels"), (self._table, "selected"))
        t.link((self, "selected_only"), (self._selected_only_button, "value"))
        self.observe(self._on_selected, "selected_labels")
        self._table.observe(self._on_table_brushes, "brushes")
        self._counted: tuple[str, list[Any], int] | None = None
        self._shown_view: tuple[str, list[Any]] | None = None  # the view whose rows are shown: see ``revision``
        self._good: dict[str, Any] = {}
        self._brushes: dict[str, Brush] = {}
        self._good_brushes: dict[str, Brush] = {}
        self._schema = pa.schema([])
        self._extents: tuple[str, list[Any], list[_histograms.Bins]] | None = None
        self._histograms: tuple[tuple, list] | None = None
        self._counts: dict[tuple, list[int]] = {}  # histogram counts by view and brushes (see count_histograms)
        super().__init__(
            [
                self._select_box,
                self._where_box,
                w.HBox(
                    [
                        *pager,
                        self._status,
                        self._jump_box,
                        self._selection_status,
                        self._selected_only_button,
                        clear_button,
                    ],
                    layout=w.Layout(flex_flow="row wrap", align_items="center"),
                ),
                self._error_view,
                self._table,
            ],
            page_size=page_size,
            **kwargs,
        )
        self._quiet = False
        self._show(*self._fetch())  # a store whose index cannot be listed fails here, loudly

    # -- public ------------------------------------------------------------

    @property
    def columns(self) -> list[str]:
        """Column names of the current table."""
        return self.page.column_names

    def jump_to(self, label: int) -> None:
        """Show the page holding ``label`` in the current filter and order, and select it.

        Example::

            browser.jump_to(2**64 - 1)
        """
        if "label" not in self.columns:
            raise LabelNotFoundError("the current table has no 'label' column to jump by")
        source, source_params = self._view_sql()
        column = _quote(self.order_by)
        label = check_label(label)
        found = self._sql(
            f"SELECT {column} AS value FROM (\n{source}\n) WHERE label = ? LIMIT 1", [*source_params, label]
        )
        if found.num_rows == 0:
            raise LabelNotFoundError(f"label {label} is not among the {self.total_rows:,} matching rows")
        value = found.column("value")[0].as_py()
        before, params = self._rows_before(column, value, label)
        counted = self._sql(f"SELECT count(*) FROM (\n{source}\n) WHERE {before}", [*source_params, *params])
        (position,) = counted[0].to_pylist()
        self.offset = position // self.page_size * self.page_size
        self.selected_labels = [label]

    @property
    def brushes(self) -> types.MappingProxyType[str, Brush]:
        """The brushed ranges, ``{column: (low, high)}`` (inclusive; None for an open side); read-only."""
        return types.MappingProxyType(dict(self._brushes))

    @property
    def histogram_columns(self) -> list[str]:
        """The columns that have a histogram and can be brushed: the numeric ones but ``label``."""
        return _histograms.numeric_columns(self._schema)

    def brush(self, column: str, low: float | None = None, high: float | None = None) -> None:
        """Keep the rows whose ``column`` lies in [low, high], as a drag on its histogram does.

        A None bound leaves that side open; ``brush(column, None)`` (both None) removes the brush.
        Brushes on other columns, ``where`` and ``only_labels`` still apply (AND).

        Example::

            browser.brush("point_count", 1000, None)  # at least 1,000 points
            browser.brush("point_count", None)  # all point counts again
        """
        if not isinstance(column, str) or column not in self.histogram_columns:
            raise InvalidBrushError(
                f"cannot brush {column!r}: only these columns have a histogram: {', '.join(self.histogram_columns)}"
            )
        low, high = _bound(low, "low"), _bound(high, "high")
        if low is not None and high is not None and low > high:
            raise InvalidBrushError(f"brush of {column!r}: low ({low}) is above high ({high})")
        brushes = dict(self._brushes)
        if low is None and high is None:
            brushes.pop(column, None)
        else:
            brushes[column] = (low, high)
        self._set_brushes(brushes)

    @property
    def sql(self) -> tuple[str, list[Any]]:
        """The rows the table shows, in its order (no paging), as one SELECT and its ``?`` parameters.

        Values (brush bounds, ``only_labels``) stay parameters rather than text in the statement; run it with
        ``browser.query.sql(*browser.sql)`` or on the index's own DuckDB file.
        """
        view, params = self._view_sql()
        return f"SELECT * FROM (\n{view}\n) AS view\nORDER BY {self._order_sql(self.columns)}", params

    def selected_in_view(self) -> list[int]:
        """The selected labels the current view holds (every filter applied), in selection order.

        What the explorer draws: a selected row that a filter hides stays selected, and is counted as hidden.

        Example::

            browser.selected_labels = [5, 6]
            browser.where = "point_count > 100"
            browser.selected_in_view()  # [6] if label 5 has 100 points or fewer
        """
        if not self.selected_labels or "label" not in self.columns:
            return []
        source, params = self._view_sql()
        found = self._sql(
            f"SELECT label FROM (\n{source}\n) WHERE list_contains(?::UBIGINT[], label)",
            [*params, self.selected_labels],
        )
        held = set(found.column("label").to_pylist())
        return [label for label in self.selected_labels if label in held]

    def data(self, timeout: float | None = None) -> pa.Table:
        """Every row of the current view, in the table's order, as an Arrow table.

        Runs ``sql`` through ``Query.sql``, stopped after ``timeout`` seconds (the browser's ``timeout`` by default).
        No DuckDB relation is offered: the index connection is shared and locked down, and a relation would
        let its caller run any statement on it.
        """
        result = self.query.sql(*self.sql, output="arrow", timeout=self.timeout if timeout is None else timeout)
        return result.read_all() if isinstance(result, pa.RecordBatchReader) else result

    def refresh(self) -> None:
        """Run the current query again (after the store was consolidated anew, for instance)."""
        self._counted = self._extents = self._histograms = None
        self._counts.clear()
        self._apply()

    # -- queries -------------------------------------------------------------

    def _sql(self, statement: str, params: list[Any] | None = None) -> pa.Table:
        result = self.query.sql(statement, params, output="arrow", timeout=self.timeout)
        # DuckDB 1.5's .arrow() gives a RecordBatchReader, earlier versions a Table.
        return result.read_all() if isinstance(result, pa.RecordBatchReader) else result

    def _view_sql(self, brushed: bool = True) -> tuple[str, list[Any]]:
        """The current table as SQL and the parameters it takes; without the brushes when not ``brushed``."""
        # User text sits on lines of its own so a trailing "-- comment" cannot swallow our clauses.
        source = self.select.strip().rstrip(";").strip() or "SELECT * FROM labels"
        sql = f"SELECT * FROM (\n{source}\n) AS source"
        conditions = [f"(\n{self.where}\n)"] if self.where.strip() else []
        params: list[Any] = []
        if self.only_labels is not None:
            # list_contains, not ANY(?): the read-only check refuses the unnest that ANY becomes.
            conditions.append("list_contains(?::UBIGINT[], label)")
            params.append(self.only_labels)
        if self.selected_only:
            conditions.append("list_contains(?::UBIGINT[], label)")
            params.append(self.selected_labels)
        for column, (low, high) in self._brushes.items() if brushed else ():
            predicate, values = _histograms.brush_predicate(column, low, high)
            conditions.append(predicate)
            params += values
        return (f"{sql}\nWHERE " + "\nAND ".join(conditions) if conditions else sql), params

    def _order_sql(self, columns: list[str]) -> str:
        order = f"{_quote(self.order_by)} {'DESC' if self.descending else 'ASC'} NULLS LAST"
        return order + (", label ASC" if "label" in columns and self.order_by != "label" else "")

    def _rows_before(self, column: str, value: Any, label: int) -> tuple[str, list[Any]]:
        """Condition selecting the rows ordered before (value, label), mirroring ``_order_sql``."""
        if self.order_by == "label":
            return f"label {'>' if self.descending else '<'} ?", [label]
        if value is None:
            return f"({column} IS NOT NULL OR label < ?)", [label]
        comparison = ">" if self.descending else "<"
        return f"({column} {comparison} ? OR ({column} = ? AND label < ?))", [value, value, label]

    def _fetch(self) -> tuple[pa.Table, int, list]:
        unbrushed, unbrushed_params = self._view_sql(brushed=False)
        self._schema = self._sql(f"SELECT * FROM (\n{unbrushed}\n) LIMIT 0", unbrushed_params).schema
        columns = self._schema.names
        if self.order_by not in columns:
            with self._quietly():
                self.order_by = "point_count" if "point_count" in columns else columns[0]
        brushable = self.histogram_columns  # a new SELECT may lack a brushed column: its brush goes
        self._brushes = {column: bounds for column, bounds in self._brushes.items() if column in brushable}
        source, params = self._view_sql()
        if self._counted is None or self._counted[:2] != (source, params):
            (count,) = self._sql(f"SELECT count(*) FROM (\n{source}\n)", params)[0].to_pylist()
            self._counted = (source, params, count)
        page_sql = f"SELECT * FROM (\n{source}\n) AS page\nORDER BY {self._order_sql(columns)}\nLIMIT ? OFFSET ?"
        page = self._sql(page_sql, [*params, self.page_size, self.offset])
        return page.slice(0, self.page_size), self._counted[2], self._column_histograms(unbrushed, unbrushed_params)

    def _column_histograms(self, source: str, params: list[Any]) -> list:
        """``(name, scale, integer, edges, counts)`` per numeric column; two statements when the view changed.

        Bins come from the unbrushed view's extents, so a brush never moves the bars it is drawn over.
        """
        columns = self.histogram_columns
        if not columns:
            return []
        if self._extents is None or self._extents[:2] != (source, params):
            extents = self._sql(_histograms.extents_sql(source, self._schema, columns), params)
            values = list(extents.to_pylist()[0].values())
            bins = [
                _histograms.choose_bins(self._schema, column, values[2 * i], values[2 * i + 1])
                for i, column in enumerate(columns)
            ]
            self._extents = (source, params, [b for b in bins if b is not None])
        bins = self._extents[2]
        key = (source, repr(params), repr(self._brushes))
        if self._histograms is None or self._histograms[0] != key:
            counts = _histograms.count_histograms(self._sql, source, params, bins, self._brushes, self._counts)
            histograms = [(b.column, b.scale, b.integer, list(b.edges), c) for b, c in zip(bins, counts, strict=True)]
            self._histograms = (key, histograms)
        return self._histograms[1]

    # -- state changes -----------------------------------------------------

    @contextmanager
    def _quietly(self):
        quiet, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = quiet

    @t.validate("page_size")
    def _check_page_size(self, proposal: dict) -> int:
        if not 1 <= proposal["value"] <= 10_000:
            raise t.TraitError("page_size must be between 1 and 10,000")
        return proposal["value"]

    @t.validate("timeout")
    def _check_timeout(self, proposal: dict) -> float:
        if not proposal["value"] > 0:
            raise t.TraitError(f"timeout must be a positive number of seconds, got {proposal['value']!r}")
        return proposal["value"]

    @t.validate("selected_labels")
    def _check_selected_labels(self, proposal: dict) -> list[int]:
        # The table sends labels as decimal strings and a label is a uint64: anything else could never be a row.
        try:
            return [check_label(label) for label in proposal["value"]]
        except PocaduckError as error:
            raise t.TraitError(f"selected_labels: {error}") from error

    @t.observe(*_STATE)
    def _on_state(self, change: dict) -> None:
        if self._quiet:
            return
        if change["name"] not in ("offset", "page_size"):
            with self._quietly():
                self.offset = 0
        self._apply()

    def _apply(self) -> None:
        """Show the page for the current state, or restore the last good state and report why not."""
        with self._quietly():
            self.offset = max(self.offset, 0)
        try:
            page, total, histograms = self._fetch()
        except PocaduckError as error:
            with self._quietly():
                for name, value in self._good.items():
                    setattr(self, name, value)
            self._brushes = dict(self._good_brushes)
            self._table.brushes = _brushes_to_json(self._brushes)
            self._show_error(error)
            return
        self._show(page, total, histograms)

    def _show(self, page: pa.Table, total: int, histograms: list) -> None:
        view = self._view_sql()
        if view != self._shown_view:  # which rows match changed: views of the selection redraw
            self._shown_view = view
            self.set_trait("revision", self.revision + 1)
        self.page, self.total_rows, self.error = page, total, ""
        self._good = {name: getattr(self, name) for name in _STATE}
        self._good_brushes = dict(self._brushes)
        self._error_view.value = ""
        with self.hold_sync(), self._table.hold_sync():
            self._table.label_column = "label" if "label" in page.column_names else ""
            self._table.page = encode_page(page)
            self._table.histograms = encode_histograms(histograms)
            self._table.brushes = _brushes_to_json(self._brushes)
            self._where_box.value, self._select_box.value = self.where, self.select
            first = self.offset + 1 if page.num_rows else 0
            self._status.value = (
                f"<span style='white-space:nowrap'>&nbsp;{first:,}–{self.offset + page.num_rows:,} of <b>{total:,}</b>"
                "&nbsp;</span>"
            )
        self._count_selection()

    def _count_selection(self) -> None:
        """Say how many rows are selected and how many of those the filters hide: a selection is never invisible."""
        selected = len(self.selected_labels)
        hidden = selected - len(self.selected_in_view()) if selected else 0
        self._selection_status.value = (
            f"<span class='pocaduck-selection' style='white-space:nowrap'>&nbsp;<b>{selected:,}</b> selected"
            + (f" ({hidden:,} hidden by the filters)" if hidden else "")
            + "&nbsp;</span>"
        )

    def _on_selected(self, change: dict) -> None:
        if self._quiet:
            return
        if self.selected_only:  # the rows listed are the selection: list them anew
            with self._quietly():
                self.offset = 0
            self._apply()
        else:
            self._count_selection()

    def _show_error(self, error: Exception) -> None:
        self.error = str(error)
        self._error_view.value = f"<pre style='color:#b00020;white-space:pre-wrap'>{html.escape(self.error)}</pre>"

    def _set_brushes(self, brushes: dict[str, Brush]) -> None:
        if brushes == self._brushes:
            return
        self._brushes = brushes
        with self._quietly():
            self.offset = 0
        self._apply()

    def _on_table_brushes(self, change: dict) -> None:
        """A drag or double-click on a histogram: the front end sends every brush, bounds as decimal text."""
        sent = change["new"]
        if sent == _brushes_to_json(self._brushes):
            return  # our own echo
        try:
            brushes = {}
            for column, (low, high) in sent.items():
                if column not in self.histogram_columns:
                    raise InvalidBrushError(f"cannot brush {column!r}: it has no histogram")
                brushes[column] = (_from_text(low), _from_text(high))
        except (ValueError, TypeError) as error:
            self._table.brushes = _brushes_to_json(self._brushes)
            self._show_error(error)
            return
        self._set_brushes({column: bounds for column, bounds in brushes.items() if bounds != (None, None)})

    def _go(self, offset: int) -> None:
        last_page = max(self.total_rows - 1, 0) // self.page_size * self.page_size
        self.offset = min(max(offset, 0), last_page)

    def _on_jump_box(self, change: dict) -> None:
        text = change["new"].strip()
        if not text:
            return
        try:
            self.jump_to(int(text))
        except (ValueError, PocaduckError) as error:
            self._show_error(error)


def _bound(value: Any, name: str) -> int | float | None:
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


def _from_text(text: str | None) -> int | float | None:
    if text is None:
        return None
    return _bound(int(text) if _INTEGER_TEXT.fullmatch(text) else float(text), "bound")


def _brushes_to_json(brushes: dict[str, Brush]) -> dict[str, list[str | None]]:
    return {column: [None if v is None else repr(v) for v in bounds] for column, bounds in brushes.items()}
