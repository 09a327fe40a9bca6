"""The label browser pages, sorts and filters exactly as DuckDB does, and nothing typed into it can write."""

from __future__ import annotations

import hashlib
import itertools
import os

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import traitlets as t
from ipywidgets.widgets.widget import _remove_buffers
from pocaduck.widgets import LabelBrowser, LabelNotFoundError

from pocaduck import Ingestor, Query, consolidate, create_store

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
