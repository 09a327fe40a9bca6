"""The label browser: a paged, sortable, filterable table over a store's per-label summary.

Every page is one SQL query run in the kernel through ``Query.sql`` (a single
read-only SELECT on a read-only connection), so the browser only ever receives
the rows it shows, and nothing typed into it can change the store. The user's
WHERE expression and SELECT are placed on lines of their own inside the paged
query, so the whole statement, user text included, is what ``Query.sql`` checks.
Each query is stopped after ``timeout`` seconds, so a runaway one typed into a
box cannot hold the kernel.
"""

from __future__ import annotations

import html
import pathlib
from contextlib import contextmanager
from typing import Any

import anywidget
import ipywidgets as w
import pyarrow as pa
import traitlets as t

from pocaduck import PocaduckError
from pocaduck.keys import check_label

from ._source import StoreLike, open_query
from ._wire import encode_page, front_end

_HERE = pathlib.Path(__file__).parent
_STATE = ("select", "where", "order_by", "descending", "offset", "page_size")


class LabelNotFoundError(PocaduckError, LookupError):
    """``jump_to`` was given a label that is not among the rows matching the current filter."""


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


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


class LabelBrowser(w.VBox):
    """Find labels among millions: sort, filter with SQL, page, jump to a label, select rows.

    ``where`` is a SQL boolean expression over the table's columns; ``select``
    optionally replaces the labels table with any read-only SELECT over the
    index tables (``labels``, ``point_index``, ``files``, ``workers``). A bad
    expression sets ``error`` and leaves the table as it was.

    Example::

        browser = LabelBrowser(store)
        browser.where = "point_count > 1000"
        browser.order_by, browser.descending = "block_count", True
        browser.selected_labels = [42]
    """

    select = t.Unicode("", help="a whole SELECT used instead of the labels table; empty for the labels table")
    where = t.Unicode("", help="SQL boolean expression filtering the rows; empty for all rows")
    order_by = t.Unicode("point_count")
    descending = t.Bool(True)
    offset = t.Int(0, help="index of the first row shown, in the current order")
    page_size = t.Int(50)
    total_rows = t.Int(0, help="rows matching the current select and where")
    error = t.Unicode("", help="the last error, shown in the widget; empty when the last change worked")
    selected_labels = t.List(help="labels of the selected rows; settable, each an integer in [0, 2**64)")
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
        self._jump_box = w.Text(placeholder="jump to label", continuous_update=False, layout=w.Layout(width="11em"))
        self._status = w.HTML()
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
        self._counted: tuple[str, str, int] | None = None
        self._good: dict[str, Any] = {}
        super().__init__(
            [
                self._select_box,
                self._where_box,
                w.HBox([*pager, self._status, self._jump_box], layout=w.Layout(flex_flow="row wrap")),
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
        source = self._filtered_sql(self.select, self.where)
        column = _quote(self.order_by)
        label = check_label(label)
        found = self._sql(f"SELECT {column} AS value FROM (\n{source}\n) WHERE label = ? LIMIT 1", [label])
        if found.num_rows == 0:
            raise LabelNotFoundError(f"label {label} is not among the {self.total_rows:,} matching rows")
        value = found.column("value")[0].as_py()
        before, params = self._rows_before(column, value, label)
        (position,) = self._sql(f"SELECT count(*) FROM (\n{source}\n) WHERE {before}", params)[0].to_pylist()
        self.offset = position // self.page_size * self.page_size
        self.selected_labels = [label]

    def refresh(self) -> None:
        """Run the current query again (after the store was consolidated anew, for instance)."""
        self._counted = None
        self._apply()

    # -- queries -------------------------------------------------------------

    def _sql(self, statement: str, params: list[Any] | None = None) -> pa.Table:
        result = self.query.sql(statement, params, output="arrow", timeout=self.timeout)
        # DuckDB 1.5's .arrow() gives a RecordBatchReader, earlier versions a Table.
        return result.read_all() if isinstance(result, pa.RecordBatchReader) else result

    @staticmethod
    def _filtered_sql(select: str, where: str) -> str:
        # User text sits on lines of its own so a trailing "-- comment" cannot swallow our clauses.
        source = select.strip().rstrip(";").strip() or "SELECT * FROM labels"
        sql = f"SELECT * FROM (\n{source}\n) AS source"
        return f"{sql}\nWHERE (\n{where}\n)" if where.strip() else sql

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

    def _fetch(self) -> tuple[pa.Table, int]:
        source = self._filtered_sql(self.select, self.where)
        columns = self._sql(f"SELECT * FROM (\n{source}\n) LIMIT 0").column_names
        if self.order_by not in columns:
            with self._quietly():
                self.order_by = "point_count" if "point_count" in columns else columns[0]
        if self._counted is None or self._counted[:2] != (self.select, self.where):
            (count,) = self._sql(f"SELECT count(*) FROM (\n{source}\n)")[0].to_pylist()
            self._counted = (self.select, self.where, count)
        page_sql = f"SELECT * FROM (\n{source}\n) AS page\nORDER BY {self._order_sql(columns)}\nLIMIT ? OFFSET ?"
        page = self._sql(page_sql, [self.page_size, self.offset])
        return page.slice(0, self.page_size), self._counted[2]

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
            page, total = self._fetch()
        except PocaduckError as error:
            with self._quietly():
                for name, value in self._good.items():
                    setattr(self, name, value)
            self._show_error(error)
            return
        self._show(page, total)

    def _show(self, page: pa.Table, total: int) -> None:
        self.page, self.total_rows, self.error = page, total, ""
        self._good = {name: getattr(self, name) for name in _STATE}
        self._error_view.value = ""
        with self.hold_sync(), self._table.hold_sync():
            self._table.label_column = "label" if "label" in page.column_names else ""
            self._table.page = encode_page(page)
            self._where_box.value, self._select_box.value = self.where, self.select
            first = self.offset + 1 if page.num_rows else 0
            self._status.value = (
                f"<span style='white-space:nowrap'>&nbsp;{first:,}–{self.offset + page.num_rows:,} of <b>{total:,}</b>"
                "&nbsp;</span>"
            )

    def _show_error(self, error: Exception) -> None:
        self.error = str(error)
        self._error_view.value = f"<pre style='color:#b00020;white-space:pre-wrap'>{html.escape(self.error)}</pre>"

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
