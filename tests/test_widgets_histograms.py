"""Column histograms counted by DuckDB agree with counting by hand, at the edges where floating point would slip."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pocaduck.widgets import _histograms

# Values a log2 in doubles puts in the wrong bin: one below and at large powers of two.
NEAR_POWERS = [v for k in (1, 2, 3, 31, 32, 47, 48, 52, 53, 60, 61) for v in ((1 << k) - 1, 1 << k, (1 << k) + 1)]


def counted(values: list[int | None], kind: pa.DataType) -> tuple[_histograms.Bins, list[int]]:
    """The bins ``choose_bins`` gives a ``*_count`` column of ``values`` and DuckDB's count in each."""
    table = pa.table({"point_count": pa.array(values, kind)})
    numbers = [v for v in values if v is not None]
    bins = _histograms.choose_bins(table.schema, "point_count", min(numbers), max(numbers))
    sql, params = _histograms.counts_sql("SELECT * FROM table_of_values", [], [bins], {})
    with duckdb.connect() as con:
        con.register("table_of_values", table)
        result = con.sql(sql, params=params).to_arrow_table()
    return bins, _histograms.counts_of(result, [bins])[0]


@pytest.mark.parametrize("kind", [pa.int64(), pa.uint64()])
def test_log_bins_count_each_value_in_its_power_of_two_even_next_to_one(kind):
    values = [0, None, *NEAR_POWERS, None, 5]
    bins, counts = counted(values, kind)
    assert bins.scale == "log" and bins.edges[:3] == (0, 1, 2) and bins.edges[-1] == 1 << 62
    by_hand = [0] * bins.size
    for value in values:
        if value is not None:  # NULL is not counted
            by_hand[value.bit_length()] += 1  # bin k + 1 holds [2**k, 2**(k + 1)), bin 0 holds 0
    assert counts == by_hand and sum(counts) == len(values) - 2


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2**62 - 1) | st.sampled_from(NEAR_POWERS) | st.none(), min_size=1, max_size=60))
def test_log_bins_of_any_counts_match_the_edges(values):
    numbers = [v for v in values if v is not None]
    assume(numbers and max(numbers) - min(numbers) >= _histograms.MAX_BINS)  # narrower spans: integer-wide bins
    bins, counts = counted(values, pa.uint64())
    assert bins.scale == "log"
    by_hand = [sum(1 for v in numbers if bins.edges[i] <= v < bins.edges[i + 1]) for i in range(bins.size)]
    assert counts == by_hand


def histograms_of(browser) -> dict[str, list[int]]:
    return {name: counts for name, _scale, _integer, _edges, counts in browser._histograms[1]}


def by_hand(query, column: str, edges: tuple, where: str = "TRUE") -> list[int]:
    values = query.sql(f"SELECT {column} AS v FROM labels WHERE {where}", None, "arrow").column("v").to_pylist()
    return [sum(1 for v in values if edges[i] <= v < edges[i + 1]) for i in range(len(edges) - 1)]


def test_counts_follow_brushes_taken_back_and_a_store_consolidated_anew(tmp_path):
    from pocaduck.widgets import LabelBrowser

    from pocaduck import Ingestor, Query, consolidate, create_store

    store = str(tmp_path / "store")
    create_store(store, voxel_size=[8, 8, 33])
    rng = np.random.default_rng(3)
    with Ingestor(store, "w0") as ingestor:
        for label in range(1, 80):
            ingestor.write(label, "b0", rng.integers(0, 300, size=(label % 40 + 1, 3)))
    consolidate(store)
    browser = LabelBrowser(store)
    edges = {b.column: b.edges for b in browser._extents[2]}
    unbrushed = histograms_of(browser)
    browser.brush("point_count", 5, 20)
    browser.brush("max_x", 200, None)
    browser.brush("max_x", None)  # back to one brush: counts as under that brush alone, not a stale pair
    assert histograms_of(browser)["min_y"] == by_hand(
        browser.query, "min_y", edges["min_y"], "point_count BETWEEN 5 AND 20"
    )
    assert histograms_of(browser)["point_count"] == unbrushed["point_count"]  # its own brush never filters it
    browser.brush("point_count", None)
    assert histograms_of(browser) == unbrushed

    with Ingestor(store, "w1") as ingestor:  # more labels, then the index built anew: refresh() counts them
        for label in range(1000, 1100):
            ingestor.write(label, "b1", rng.integers(0, 300, size=(3, 3)))
    consolidate(store)
    browser.query = Query(store)  # an open Query keeps reading the index it opened
    browser.refresh()  # the same SQL as before: no counts may come from before
    edges = {b.column: b.edges for b in browser._extents[2]}
    assert sum(histograms_of(browser)["point_count"]) == 179
    assert histograms_of(browser)["min_z"] == by_hand(browser.query, "min_z", edges["min_z"])
