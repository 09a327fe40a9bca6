"""The label browser: a paged, sortable, filterable table over a store's per-label summary.

Every page is one SQL query run in the kernel through ``Query.sql`` (a single
read-only SELECT on a read-only connection), so the browser only ever receives
the rows it shows, and nothing typed into it can change the store. The user's
WHERE expression and SELECT are placed on lines of their own inside the paged
query, so the whole statement, user text included, is what ``Query.sql`` checks.
Each query is stopped after ``timeout`` seconds, so a runaway one typed into a
box cannot hold the kernel.

Above each numeric column sits a histogram (``_histograms.py``); dragging on one
brushes a range of that column. The SELECT, the WHERE box, the brushes, the
explorer's box and the picked rows live in one ``Selection`` (``_selection.py``),
the explorer's or the browser's own: the browser shows it and changes it only
through ``Selection.update``. Each histogram counts under every clause but its
own brush. ``sql`` and ``data()`` give the view the table shows.
"""

from __future__ import annotations

import html
import pathlib
import re
import types
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import anywidget
import ipywidgets as w
import pyarrow as pa
import traitlets as t

from pocaduck import MappedQuery, PocaduckError, Reader
from pocaduck.keys import check_label

from . import _histograms
from ._histograms import quote as _quote
from ._selection import Brush, Selection, bound
from ._source import StoreLike, open_query
from ._wire import LabelList, encode_histograms, encode_page, front_end

_HERE = pathlib.Path(__file__).parent
_STATE = ("order_by", "descending", "offset", "page_size")  # how the table shows the rows; which rows: the selection


class LabelNotFoundError(PocaduckError, LookupError):
    """``jump_to`` was given a label that is not among the rows matching the current filter."""


_INTEGER_TEXT = re.compile(r"-?[0-9]+")


class _LabelTable(anywidget.AnyWidget):
    """The clickable table: draws the page the kernel sends, reports sort and selection clicks."""

    _esm = front_end("_table.js")
    _css = _HERE / "_table.css"
    page = t.Dict().tag(sync=True)
    label_column = t.Unicode("label").tag(sync=True)
    order_by = t.Unicode("").tag(sync=True)
    descending = t.Bool(True).tag(sync=True)
    selected = LabelList().tag(sync=True)
    histograms = t.Dict().tag(sync=True)
    # {column: [low, high]}, bounds as decimal text (exact for any integer) or null for an open side.
    brushes = t.Dict().tag(sync=True)


class LabelBrowser(w.VBox):
    """Find labels among millions: sort, filter with SQL, page, jump to a label, select rows.

    ``where`` is a SQL boolean expression over the table's columns; ``select``
    optionally replaces the labels table with any read-only SELECT over the
    index tables (``labels``, ``point_index``, ``files``, ``workers``). A bad
    expression sets ``error`` and leaves the table as it was.

    Which rows are listed is ``selection_state`` (a ``Selection``: WHERE, SELECT, brushes, a box and the picked
    labels); an ``Explorer`` hands its own, shared with its other parts. ``where``, ``select``,
    ``selected_only``, ``selected_labels``, ``brush`` and ``brushes`` read and change it.

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

    order_by = t.Unicode("point_count")
    descending = t.Bool(True)
    offset = t.Int(0, help="index of the first row shown, in the current order")
    page_size = t.Int(50)
    total_rows = t.Int(0, help="rows matching the current select and where")
    error = t.Unicode("", help="the last error, shown in the widget; empty when the last change worked")
    # The selection's picked labels as an observable trait (notebooks observe it); set it to pick.
    selected_labels = LabelList(help="labels of the selected rows; settable, each an integer in [0, 2**64)")
    timeout = t.Float(10.0, help="seconds a query may run before it is stopped and reported in the widget")

    def __init__(
        self, store: StoreLike, *, page_size: int = 50, selection_state: Selection | None = None, **kwargs: Any
    ):
        self._quiet = True  # no queries until the widget is fully built
        self.query = open_query(store)
        self.selection_state = Selection(self.query) if selection_state is None else selection_state
        self.page = pa.table({})
        self._table = _LabelTable(layout=w.Layout(width="100%", min_width="0", overflow="auto"))
        self._where_box = w.Text(
            placeholder="WHERE …  e.g. point_count > 1000 AND max_z - min_z > 100",
            continuous_update=False,
            layout=w.Layout(width="auto"),  # stretched to the browser's width; 100% would add the margins to it
        )
        self._select_box = w.Textarea(
            placeholder=_select_placeholder(self.query),
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
        clear_button.on_click(lambda _button: self.selection_state.update(picked=[]))
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
        self._selected_only_button.observe(lambda change: setattr(self, "selected_only", change["new"]), "value")
        self._jump_box.observe(self._on_jump_box, "value")
        t.link((self, "order_by"), (self._table, "order_by"))
        t.link((self, "descending"), (self._table, "descending"))
        t.link((self, "selected_labels"), (self._table, "selected"))
        self.observe(self._on_selected_labels, "selected_labels")
        self._table.observe(self._on_table_brushes, "brushes")
        self._counted: tuple[str, list[Any], int] | None = None
        self._shown_view: tuple[str, list[Any]] | None = (
            None  # the rows listed: the page is fetched anew when they change
        )
        self._good: dict[str, Any] = {}
        self._failure: PocaduckError | None = None  # why the last page could not be listed
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
        self.selection_state.observe(self._on_selection, "revision")

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
        source, source_params = self.selection_state.relation()
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
        self.selection_state.update(picked=[label])

    @property
    def where(self) -> str:
        """SQL boolean expression filtering the rows; empty for all rows. Bad SQL sets ``error`` and keeps the last."""
        return self.selection_state.where

    @where.setter
    def where(self, expression: str) -> None:
        self._update_selection(where=expression)

    @property
    def select(self) -> str:
        """A whole SELECT used instead of the labels table; empty for the labels table."""
        return self.selection_state.source

    @select.setter
    def select(self, statement: str) -> None:
        self._update_selection(source=statement)

    @property
    def selected_only(self) -> bool:
        """List only the selected rows (still under every other filter)."""
        return self.selection_state.picked_only

    @selected_only.setter
    def selected_only(self, only: bool) -> None:
        self._update_selection(picked_only=only)

    @property
    def brushes(self) -> types.MappingProxyType[str, Brush]:
        """The brushed ranges, ``{column: (low, high)}`` (inclusive; None for an open side); read-only."""
        return self.selection_state.brushes

    @property
    def histogram_columns(self) -> list[str]:
        """The columns that have a histogram and can be brushed: the numeric ones but ``label``."""
        return self.selection_state.brushable

    def brush(self, column: str, low: float | None = None, high: float | None = None) -> None:
        """Keep the rows whose ``column`` lies in [low, high], as a drag on its histogram does.

        A None bound leaves that side open; ``brush(column, None)`` (both None) removes the brush.
        Brushes on other columns, ``where``, a box and "selected only" still apply (AND).

        Example::

            browser.brush("point_count", 1000, None)  # at least 1,000 points
            browser.brush("point_count", None)  # all point counts again
        """
        self.selection_state.brush(column, low, high)

    @property
    def sql(self) -> tuple[str, list[Any]]:
        """The rows the table shows, in its order (no paging), as one SELECT and its ``?`` parameters.

        Values (brush bounds, a box's labels) stay parameters rather than text in the statement; run it with
        ``browser.query.sql(*browser.sql)`` or on the index's own DuckDB file.
        """
        view, params = self.selection_state.relation()
        return f"SELECT * FROM (\n{view}\n) AS view\nORDER BY {self._order_sql(self.columns)}", params

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

    def use_query(self, query: Reader) -> None:
        """List from ``query`` from now on (the Explorer's version picker); the rows follow the selection's
        next revision, which ``Selection.use_query`` makes. Nothing read from the old one is reused."""
        self.query = query
        self._select_box.placeholder = _select_placeholder(query)
        self._counted = self._extents = self._histograms = self._shown_view = None
        self._counts.clear()

    # -- queries -------------------------------------------------------------

    def _sql(self, statement: str, params: list[Any] | None = None) -> pa.Table:
        result = self.query.sql(statement, params, output="arrow", timeout=self.timeout)
        # DuckDB 1.5's .arrow() gives a RecordBatchReader, earlier versions a Table.
        return result.read_all() if isinstance(result, pa.RecordBatchReader) else result

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
        unbrushed, unbrushed_params = self.selection_state.relation(skip=["brushes"])
        columns = self.selection_state.schema.names
        if self.order_by not in columns:
            with self._quietly():
                self.order_by = "point_count" if "point_count" in columns else columns[0]
        source, params = self.selection_state.relation()
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
            schema = self.selection_state.schema
            extents = self._sql(_histograms.extents_sql(source, schema, columns), params)
            values = list(extents.to_pylist()[0].values())
            bins = [
                _histograms.choose_bins(schema, column, values[2 * i], values[2 * i + 1])
                for i, column in enumerate(columns)
            ]
            self._extents = (source, params, [b for b in bins if b is not None])
        bins = self._extents[2]
        brushes = dict(self.selection_state.brushes)
        key = (source, repr(params), repr(brushes))
        if self._histograms is None or self._histograms[0] != key:
            counts = _histograms.count_histograms(self._sql, source, params, bins, brushes, self._counts)
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
            self._failure = error
            with self._quietly():
                for name, value in self._good.items():
                    setattr(self, name, value)
            self._show_error(error)
            return
        self._show(page, total, histograms)

    def _show(self, page: pa.Table, total: int, histograms: list) -> None:
        self._shown_view = self.selection_state.relation()
        self.page, self.total_rows, self.error = page, total, ""
        self._good = {name: getattr(self, name) for name in _STATE}
        self._error_view.value = ""
        with self.hold_sync(), self._table.hold_sync():
            self._table.label_column = "label" if "label" in page.column_names else ""
            self._table.page = encode_page(page)
            self._table.histograms = encode_histograms(histograms)
            self._table.brushes = _brushes_to_json(self.selection_state.brushes)
            self._show_clauses()
            first = self.offset + 1 if page.num_rows else 0
            self._status.value = (
                f"<span style='white-space:nowrap'>&nbsp;{first:,}–{self.offset + page.num_rows:,} of <b>{total:,}</b>"
                "&nbsp;</span>"
            )
        self._count_selection()

    def _count_selection(self) -> None:
        """Say how many rows are selected and how many of those the filters hide: a selection is never invisible."""
        with self._quietly():
            self.selected_labels = self.selection_state.picked  # the observable handle follows the selection
        selected = len(self.selected_labels)
        hidden = self.selection_state.picked_hidden()
        self._selection_status.value = (
            f"<span class='pocaduck-selection' style='white-space:nowrap'>&nbsp;<b>{selected:,}</b> selected"
            + (f" ({hidden:,} hidden by the filters)" if hidden else "")
            + "&nbsp;</span>"
        )

    def _on_selected_labels(self, change: dict) -> None:
        """Rows clicked in the table, or ``selected_labels`` set from Python: the selection's picked labels."""
        if not self._quiet:
            self.selection_state.update(picked=change["new"])

    def _on_selection(self, _change: dict) -> None:
        """The selection changed (here or in another part): list its rows anew if they changed, else recount."""
        if self.selection_state.relation() != self._shown_view:
            with self._quietly():
                self.offset = 0
            self._apply()
        else:
            self._count_selection()

    def _show_clauses(self) -> None:
        """The text boxes and the "selected only" toggle show the selection's clauses (without acting on them)."""
        with self._quietly():
            self._where_box.value, self._select_box.value = self.where, self.select
            self._selected_only_button.value = self.selected_only

    def _update_selection(self, **clauses: Any) -> None:
        """A change typed into the browser: bad SQL is shown in the widget, and the selection stays as it was.

        SQL that DuckDB accepts can still fail listing the rows (a query past ``timeout``): then the
        clauses changed are set back, through ``update`` like any change.
        """
        selection = self.selection_state
        before = {name: getattr(selection, name) for name in clauses}
        self._failure = None
        try:
            selection.update(**clauses)
        except PocaduckError as error:
            self._failure = error
        failure = self._failure
        if failure is not None:
            selection.update(**before)
            self._show_clauses()
            self._show_error(failure)

    def _show_error(self, error: Exception) -> None:
        self.error = str(error)
        self._error_view.value = f"<pre style='color:#b00020;white-space:pre-wrap'>{html.escape(self.error)}</pre>"

    def _on_table_brushes(self, change: dict) -> None:
        """A drag or double-click on a histogram: the front end sends every brush, bounds as decimal text."""
        sent = change["new"]
        if sent == _brushes_to_json(self.selection_state.brushes):
            return  # our own echo
        try:
            brushes = {column: (_from_text(low), _from_text(high)) for column, (low, high) in sent.items()}
            self.selection_state.update(brushes=brushes)
        except (ValueError, TypeError) as error:  # InvalidBrushError is a ValueError too
            self._table.brushes = _brushes_to_json(self.selection_state.brushes)
            self._show_error(error)

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


def _select_placeholder(query: Reader) -> str:
    """What the SELECT box offers to read: through a mapping, the body tables first."""
    tables = (
        "labels (bodies), mapping, supervoxel_labels, point_index, files"
        if isinstance(query, MappedQuery)
        else "labels, point_index, files, workers"
    )
    return f"SELECT … over {tables} (optional, replaces the table)"


def _from_text(text: str | None) -> int | float | None:
    if text is None:
        return None
    return bound(int(text) if _INTEGER_TEXT.fullmatch(text) else float(text), "bound")


def _brushes_to_json(brushes: Mapping[str, Brush]) -> dict[str, list[str | None]]:
    return {column: [None if v is None else repr(v) for v in bounds] for column, bounds in brushes.items()}
