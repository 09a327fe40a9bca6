"""The label browser pages, sorts and filters exactly as DuckDB does, and nothing typed into it can write."""

from __future__ import annotations

import hashlib
import itertools
import os
import re

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import traitlets as t
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ipywidgets.widgets.widget import _remove_buffers
from pocaduck.widgets import InvalidBrushError, LabelBrowser, LabelNotFoundError

from pocaduck import Ingestor, InvalidArgumentError, Query, consolidate, create_store

LABELS = [*range(1, 120), 2**63 + 3, 2**64 - 1]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """Labels with point counts that tie often, so the tie-break order matters."""
    store = str(tmp_path_factory.mktemp("browser") / "store")
    create_store(store, voxel_size=[8, 8, 33])
    rng = np.random.default_rng(5)
    with Ingestor(store, "w0") as ingestor:
        for label in LABELS:
            for block in range(1 + label % 3):
                ingestor.write(label, f"b{block}", rng.integers(0, 500, size=(1 + label % 7, 3)))
    consolidate(store)
    return store


@pytest.fixture
def index(store):
    with duckdb.connect(os.path.join(store, "unified_index.duckdb"), read_only=True) as con:
        yield con


@pytest.fixture
def browser(store):
    return LabelBrowser(store, page_size=25)


def expected(index, sql: str, params=()) -> list[tuple]:
    return index.execute(sql, list(params)).fetchall()


def shown(browser: LabelBrowser) -> list[tuple]:
    return [tuple(row.values()) for row in browser.page.to_pylist()]


def test_first_page_is_the_largest_labels(browser, index):
    assert browser.total_rows == len(LABELS)
    assert shown(browser) == expected(index, "SELECT * FROM labels ORDER BY point_count DESC, label LIMIT 25")


@pytest.mark.parametrize("column", ["label", "point_count", "block_count", "min_x", "max_z"])
@pytest.mark.parametrize("descending", [False, True])
def test_every_column_sorts_both_ways_and_pages_follow(browser, index, column, descending):
    browser.order_by, browser.descending = column, descending
    browser.offset = 50
    direction = "DESC" if descending else "ASC"
    tie_break = "" if column == "label" else ", label"
    sql = f"SELECT * FROM labels ORDER BY {column} {direction}{tie_break} LIMIT 25 OFFSET 50"
    assert shown(browser) == expected(index, sql)


def test_the_pager_walks_every_row_once(browser, index):
    seen = shown(browser)
    while browser.offset + browser.page_size < browser.total_rows:
        browser._go(browser.offset + browser.page_size)
        seen += shown(browser)
    browser._go(browser.offset + browser.page_size)  # past the end: stays on the last page
    assert seen[-browser.page.num_rows :] == shown(browser)
    assert seen == expected(index, "SELECT * FROM labels ORDER BY point_count DESC, label")


def test_where_filters_and_counts_matches(browser, index):
    browser.where = "point_count BETWEEN 4 AND 6 AND block_count = 2"
    sql = "FROM labels WHERE point_count BETWEEN 4 AND 6 AND block_count = 2"
    assert browser.total_rows == expected(index, f"SELECT count(*) {sql}")[0][0]
    assert shown(browser) == expected(index, f"SELECT * {sql} ORDER BY point_count DESC, label LIMIT 25")
    assert browser.error == ""


def test_a_whole_select_replaces_the_table(browser, index):
    browser.select = "SELECT label, count(*) AS pieces FROM point_index GROUP BY label"
    assert browser.columns == ["label", "pieces"]
    browser.order_by, browser.descending = "pieces", True
    sql = "SELECT label, count(*) AS pieces FROM point_index GROUP BY label ORDER BY pieces DESC, label LIMIT 25"
    assert shown(browser) == expected(index, sql)


def test_a_trailing_comment_cannot_remove_the_page_limit(browser):
    browser.where = "true -- everything"
    assert browser.error == ""
    assert browser.page.num_rows == 25


def test_a_bad_expression_shows_the_error_and_keeps_the_table(browser):
    browser.where = "point_count > 3"
    before = (shown(browser), browser.total_rows)
    browser.where = "no_such_column > 3"
    assert "no_such_column" in browser.error and "Binder Error" in browser.error
    assert browser.where == "point_count > 3"
    assert (shown(browser), browser.total_rows) == before
    browser.where = ""
    assert browser.error == "" and browser.total_rows == len(LABELS)


def _store_digest(store: str) -> str:
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(store)):
        for name in sorted(files):
            with open(os.path.join(folder, name), "rb") as handle:
                digest.update(name.encode() + handle.read())
    return digest.hexdigest()


WRITES = {
    "drop": "DROP TABLE labels",
    "delete": "DELETE FROM labels",
    "copy": "COPY labels TO '/tmp/pocaduck-leak.csv'",
    "attach": "ATTACH '/tmp/pocaduck-other.duckdb' AS other",
    "install": "INSTALL httpfs",
    "two statements": "SELECT 1; DROP TABLE labels",
    "file read": "SELECT * FROM read_csv('/etc/passwd')",
}
SMUGGLED = {
    "drop": "true)) ; DROP TABLE labels; SELECT * FROM ((SELECT 1",
    "copy": "true)) ; COPY labels TO '/tmp/pocaduck-leak.csv'; SELECT * FROM ((SELECT 1",
    "attach": "true)) ; ATTACH '/tmp/pocaduck-other.duckdb' AS other; SELECT * FROM ((SELECT 1",
    "install": "true)) ; INSTALL httpfs; SELECT * FROM ((SELECT 1",
    "update": "true)) ; UPDATE labels SET point_count = 0; SELECT * FROM ((SELECT 1",
    "subquery": "label IN (SELECT * FROM read_parquet('/etc/passwd'))",
}


@pytest.mark.parametrize("statement", WRITES.values(), ids=WRITES.keys())
def test_a_typed_select_cannot_write_or_read_files(store, browser, statement):
    before = _store_digest(store), shown(browser)
    browser.select = statement
    assert browser.error
    assert browser.select == ""
    assert (_store_digest(store), shown(browser)) == before
    assert not os.path.exists("/tmp/pocaduck-leak.csv") and not os.path.exists("/tmp/pocaduck-other.duckdb")


@pytest.mark.parametrize("expression", SMUGGLED.values(), ids=SMUGGLED.keys())
def test_a_where_expression_cannot_smuggle_statements(store, browser, expression):
    before = _store_digest(store), shown(browser)
    browser.where = expression
    assert browser.error
    if expression.startswith("true))"):  # the whole paged query reached Query.sql, which refused it
        assert "only a single SELECT statement is allowed" in browser.error
    assert (_store_digest(store), shown(browser)) == before
    assert Query(store).get_labels().tolist() == sorted(LABELS)


def test_jump_to_shows_the_labels_page_and_selects_it(browser, index):
    browser.order_by, browser.descending = "max_x", False
    browser.jump_to(2**64 - 1)
    ranked = [label for (label,) in expected(index, "SELECT label FROM labels ORDER BY max_x, label")]
    assert browser.offset == ranked.index(2**64 - 1) // 25 * 25
    assert 2**64 - 1 in browser.page.column("label").to_pylist()
    assert browser.selected_labels == [2**64 - 1]
    with pytest.raises(LabelNotFoundError):
        browser.jump_to(10**6)


def test_the_jump_box_reports_unknown_labels_inline(browser):
    browser._jump_box.value = "123456789"
    assert "123456789" in browser.error


def test_selection_round_trips_with_the_front_end_exactly(browser):
    table = browser._table
    browser.selected_labels = [2**64 - 1, 7]
    assert table.get_state()["selected"] == ["18446744073709551615", "7"]  # strings: JS numbers stop at 2**53
    table.set_state({"selected": ["9223372036854775811", "3"]})  # as a click in the browser sends it
    assert browser.selected_labels == [2**63 + 3, 3]


def test_header_clicks_sort(browser, index):
    browser._table.set_state({"order_by": "block_count", "descending": False})
    sql = "SELECT * FROM labels ORDER BY block_count, label LIMIT 25"
    assert shown(browser) == expected(index, sql)


def test_pages_cross_as_binary_buffers_not_json_lists(browser):
    state, buffer_paths, buffers = _remove_buffers(browser._table.get_state())
    assert ["page", "columns", 0, "data"] in buffer_paths
    labels = np.frombuffer(buffers[buffer_paths.index(["page", "columns", 0, "data"])], "<u8")
    assert labels.tolist() == browser.page.column("label").to_pylist()
    assert all(not isinstance(value, list) for column in state["page"]["columns"] for value in column.values())


def test_accepts_an_open_query(store):
    with Query(store) as query:
        assert LabelBrowser(query).total_rows == len(LABELS)


def test_text_and_null_columns_are_encoded(browser):
    browser.select = "SELECT label, CASE WHEN label % 2 = 0 THEN 'even' END AS parity FROM labels"
    browser.order_by, browser.descending = "label", False
    column = browser._table.page["columns"][1]
    assert column["type"] == "string"
    offsets = np.frombuffer(column["offsets"], "<i4")
    words = [column["data"][a:b].decode() for a, b in itertools.pairwise(offsets)]
    valid = np.frombuffer(column["valid"], np.uint8).tolist()
    assert [w if v else None for w, v in zip(words, valid, strict=True)] == browser.page.column("parity").to_pylist()
    assert pa.types.is_string(browser.page.schema.field("parity").type)


def test_a_runaway_select_is_stopped_and_reported_inline(browser):
    before = shown(browser), browser.total_rows
    browser.timeout = 0.5
    browser.select = "SELECT a.label FROM " + ", ".join(f"point_index t{i}" for i in range(8)) + ", labels a"
    assert "stopped after 0.5 s" in browser.error and "stopped after 0.5 s" in browser._error_view.value
    assert browser.select == "" and (shown(browser), browser.total_rows) == before


def test_typed_sql_cannot_read_files_or_settings(browser):
    for select in ("SELECT * FROM glob('*')", "SELECT current_setting('temp_directory') AS path", "SHOW DATABASES"):
        browser.select = select
        assert "only a single SELECT statement is allowed here" in browser.error
        assert browser.select == "" and browser.total_rows == len(LABELS)


@pytest.mark.parametrize("labels", [[2**70], [-1], [1.5], ["7"], [True]])
def test_selected_labels_must_be_uint64_labels(browser, labels):
    browser.selected_labels = [7]
    with pytest.raises(t.TraitError, match="selected_labels: label"):
        browser.selected_labels = labels
    assert browser.selected_labels == [7] and browser._table.get_state()["selected"] == ["7"]
    browser.selected_labels = [np.uint64(2**64 - 1)]
    assert browser.selected_labels == [2**64 - 1]


# -- column histograms and brushes ---------------------------------------------

HISTOGRAM_WHERE = {
    "": lambda table: np.ones(len(table), bool),
    "block_count >= 2": lambda table: table["block_count"].to_numpy() >= 2,
    "max_x - min_x > 100": lambda table: (table["max_x"] - table["min_x"]).to_numpy() > 100,
}


@st.composite
def label_stores(draw):
    """Labels across the uint64 range (always some >= 2**63), each written in 1-3 blocks, int or float points."""
    labels = draw(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=24, unique=True))
    labels += [2**63 + 1, 2**64 - 1] if draw(st.booleans()) else [2**63]
    dtype = draw(st.sampled_from(["int32", "float32"]))
    most_points = draw(st.sampled_from([6, 400]))  # a narrow span gets one bin per count, a wide one powers of two
    seed = draw(st.integers(0, 2**32 - 1))
    return sorted(set(labels)), dtype, most_points, seed


def build_store(root, labels, dtype, most_points, seed) -> str:
    store = os.path.join(root, f"store-{seed}-{dtype}-{most_points}-{len(labels)}")
    create_store(store, dtype=dtype, voxel_size=[8, 8, 33])
    rng = np.random.default_rng(seed)
    with Ingestor(store, "w0") as ingestor:
        for label in labels:
            for block in range(int(rng.integers(1, 4))):
                points = rng.uniform(-500, 500, size=(int(rng.integers(1, most_points + 1)), 3))
                ingestor.write(label, f"b{block}", points.astype(dtype))
    consolidate(store)
    return store


def brushed(table, brushes: dict, skip: str | None = None) -> np.ndarray:
    """Rows of the labels table inside every brush but ``skip``'s, as numpy sees them."""
    keep = np.ones(len(table), bool)
    for column, (low, high) in brushes.items():
        if column != skip:
            values = table[column].to_numpy(dtype=float if table[column].dtype.kind == "f" else object)
            keep &= np.array([(low is None or v >= low) and (high is None or v <= high) for v in values], bool)
    return keep


def brute_force_counts(values: np.ndarray, edges: list, integer: bool) -> list[int]:
    if integer:  # exact: each value against the edges, as Python integers
        return [sum(1 for v in values.tolist() if edges[i] <= int(v) < edges[i + 1]) for i in range(len(edges) - 1)]
    values = values.astype(float)
    size = len(edges) - 1
    width = (edges[-1] - edges[0]) / size if size > 1 else 1.0
    bins = np.minimum(np.floor((values - edges[0]) / width), size - 1).astype(int)
    return np.bincount(bins, minlength=size).tolist()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(label_stores(), st.sampled_from(list(HISTOGRAM_WHERE)), st.booleans(), st.data())
def test_brushes_filter_rows_and_each_histogram_counts_under_the_other_brushes(
    tmp_path_factory, stored, where, only_some, data
):
    store = build_store(tmp_path_factory.mktemp("brush"), *stored)
    with duckdb.connect(os.path.join(store, "unified_index.duckdb"), read_only=True) as con:
        table = con.execute("SELECT * FROM labels").df()
    table["label"] = [int(label) for label in table["label"]]
    browser = LabelBrowser(store, page_size=10)
    browser.where = where
    keep = HISTOGRAM_WHERE[where](table)
    if only_some:
        only = data.draw(st.lists(st.sampled_from(table["label"].tolist()), min_size=1, unique=True))
        browser.selected_labels, browser.selected_only = only, True
        keep &= table["label"].isin(only).to_numpy()
    columns = data.draw(st.lists(st.sampled_from(browser.histogram_columns), max_size=3, unique=True))
    brushes = {}
    for column in columns:
        values = sorted(table[column].tolist())
        low, high = sorted(data.draw(st.lists(st.sampled_from(values), min_size=2, max_size=2)))
        low, high = data.draw(st.sampled_from([(low, high), (None, high), (low, None)]))
        browser.brush(column, low, high)
        brushes[column] = (low, high)
    assert browser.error == "" and dict(browser.brushes) == {c: b for c, b in brushes.items()}

    expected_rows = table[keep & brushed(table, brushes)].sort_values(
        ["point_count", "label"], ascending=[False, True], kind="stable"
    )
    rows = browser.data()
    assert rows.column("label").to_pylist() == expected_rows["label"].tolist()
    assert rows.num_rows == browser.total_rows
    assert Query(store).sql(*browser.sql, output="arrow").equals(rows)

    histograms = {
        name: (scale, integer, edges, counts) for name, scale, integer, edges, counts in browser._histograms[1]
    }
    assert set(histograms) == (set(browser.histogram_columns) if keep.any() else set())  # no values: no bins
    for column, (scale, integer, edges, counts) in histograms.items():
        shown = table[column][keep].to_numpy()  # the bins span the view before any brush
        assert edges[0] <= shown.min() and (shown.max() < edges[-1] or (not integer and shown.max() == edges[-1]))
        assert scale == ("log" if column.endswith("_count") and shown.max() - shown.min() >= 24 else "linear")
        values = table[column][keep & brushed(table, brushes, skip=column)].to_numpy()
        assert counts == brute_force_counts(values, edges, integer), column


def test_a_brush_is_a_range_anded_with_where_and_clears_with_none(browser, index):
    browser.where = "block_count >= 2"
    browser.brush("point_count", 3, 5)
    browser.brush("max_x", None, 400)
    sql = "FROM labels WHERE block_count >= 2 AND point_count BETWEEN 3 AND 5 AND max_x <= 400"
    assert browser.total_rows == expected(index, f"SELECT count(*) {sql}")[0][0]
    assert shown(browser) == expected(index, f"SELECT * {sql} ORDER BY point_count DESC, label LIMIT 25")
    assert dict(browser.brushes) == {"point_count": (3, 5), "max_x": (None, 400)}
    browser.brush("point_count", None)
    browser.brush("max_x")
    assert (
        browser.brushes == {}
        and browser.total_rows == expected(index, "SELECT count(*) FROM labels WHERE block_count >= 2")[0][0]
    )


@pytest.mark.parametrize(
    ("column", "low", "high", "message"),
    [
        ("label", 1, 2, "only these columns have a histogram"),
        ("no_such_column", 1, 2, "only these columns have a histogram"),
        ("point_count", 5, 3, "low (5) is above high (3)"),
        ("point_count", "3", 5, "must be a number or None"),
        ("point_count", True, 5, "must be a number or None"),
        ("point_count", 1, float("nan"), "must be finite"),
    ],
)
def test_a_bad_brush_says_why_and_changes_nothing(browser, column, low, high, message):
    browser.brush("block_count", 2, 2)
    before = shown(browser), browser.total_rows
    with pytest.raises(InvalidBrushError, match=re.escape(message)):
        browser.brush(column, low, high)
    assert isinstance(InvalidBrushError("x"), InvalidArgumentError)
    assert dict(browser.brushes) == {"block_count": (2, 2)} and (shown(browser), browser.total_rows) == before
    with pytest.raises(TypeError):
        browser.brushes["point_count"] = (1, 2)  # read-only: change brushes through brush()


def test_a_drag_in_the_front_end_brushes_with_exact_decimal_bounds(browser, index):
    browser._table.set_state({"brushes": {"point_count": ["2", "4"]}})
    assert dict(browser.brushes) == {"point_count": (2, 4)}
    assert browser.total_rows == expected(index, "SELECT count(*) FROM labels WHERE point_count BETWEEN 2 AND 4")[0][0]
    assert browser._table.get_state()["brushes"] == {"point_count": ["2", "4"]}
    browser._table.set_state({"brushes": {}})  # a double-click on the only brush
    assert browser.brushes == {} and browser.total_rows == len(LABELS)
    browser._table.set_state({"brushes": {"label": ["1", "2"]}})  # not brushable: reported, nothing changes
    assert "label" in browser.error and browser.brushes == {} and browser._table.get_state()["brushes"] == {}


def test_histograms_cross_as_binary_buffers_with_exact_edges(browser, index):
    state, buffer_paths, buffers = _remove_buffers(browser._table.get_state())
    histograms = state["histograms"]["columns"]
    assert [h["name"] for h in histograms] == browser.histogram_columns
    assert "label" not in browser.histogram_columns
    first = histograms[0]
    counts = np.frombuffer(buffers[buffer_paths.index(["histograms", "columns", 0, "counts", "data"])], "<i8")
    assert first["name"] == "point_count" and counts.sum() == len(LABELS)
    assert all(not isinstance(v, list) for h in histograms for part in ("edges", "counts") for v in h[part].values())


def test_a_new_select_without_a_brushed_column_drops_that_brush(browser):
    browser.brush("max_z", 0, 100)
    browser.select = "SELECT label, point_count FROM labels"
    assert browser.brushes == {} and browser.total_rows == len(LABELS) and browser.error == ""
    assert browser.histogram_columns == ["point_count"]
