"""Box, WHERE, brushes and picked labels compose into one selection: every part of the explorer shows the same labels."""

from __future__ import annotations

import os
import threading

import duckdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pocaduck.widgets import Explorer, InvalidBrushError, Selection

from pocaduck import Ingestor, InvalidBoxError, InvalidLabelError, Query, SQLError, consolidate, create_store

WHERE = ["", "block_count >= 2", "max_x - min_x > 300", "point_count % 2 = 1 OR label > 9223372036854775807"]
BRUSHABLE = ["point_count", "block_count", "min_x", "max_y", "max_z"]


@st.composite
def stores(draw):
    """Labels across the uint64 range (always some >= 2**63), 1-3 blocks each of random points."""
    labels = draw(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=16, unique=True))
    labels = sorted({*labels, 2**63, 2**64 - 1})
    return labels, draw(st.sampled_from(["int32", "float32"])), draw(st.integers(0, 2**32 - 1))


def build(root, labels: list[int], dtype: str, seed: int) -> tuple[str, dict[int, np.ndarray]]:
    store = os.path.join(root, f"store-{seed}-{dtype}-{len(labels)}")
    create_store(store, dtype=dtype, voxel_size=[8, 8, 33])
    rng = np.random.default_rng(seed)
    points: dict[int, list[np.ndarray]] = {}
    with Ingestor(store, "w0") as ingestor:
        for label in labels:
            for block in range(int(rng.integers(1, 4))):
                xyz = rng.uniform(-500, 500, size=(int(rng.integers(1, 30)), 3)).astype(dtype)
                ingestor.write(label, f"b{block}", xyz)
                points.setdefault(label, []).append(xyz)
    consolidate(store)
    return store, {label: np.concatenate(parts) for label, parts in points.items()}


def brute_force_rows(store, where: str, box, brushes: dict, labels_in: set[int] | None) -> set[int]:
    """The labels the index's labels table holds under ``where`` and the brushes, written by hand, in the box."""
    conditions, params = [f"({where})"] if where else [], []
    for column, (low, high) in brushes.items():
        if low is not None:
            conditions.append(f"{column} >= ?")
            params.append(low)
        if high is not None:
            conditions.append(f"{column} <= ?")
            params.append(high)
    sql = "SELECT label FROM labels" + (" WHERE " + " AND ".join(conditions) if conditions else "")
    with duckdb.connect(os.path.join(store, "unified_index.duckdb"), read_only=True) as con:
        rows = {int(label) for (label,) in con.execute(sql, params).fetchall()}
    return rows if labels_in is None else rows & labels_in


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stores(), st.sampled_from(WHERE), st.booleans(), st.data())
def test_table_sql_data_and_drawn_labels_equal_brute_force_for_any_composition(
    tmp_path_factory, stored, where, with_box, data
):
    store, points = build(tmp_path_factory.mktemp("selection"), *stored)
    explorer = Explorer(store)
    browser = explorer.browser
    box, inside = None, None
    if with_box:
        corners = [
            sorted(data.draw(st.lists(st.integers(-500, 500), min_size=2, max_size=2, unique=True))) for _ in "xyz"
        ]
        box = (tuple(c[0] for c in corners), tuple(c[1] for c in corners))
        lower, upper = np.array(box[0]), np.array(box[1])
        inside = {label for label, xyz in points.items() if np.any(np.all((xyz >= lower) & (xyz < upper), axis=1))}
        explorer.limit_to_box(*box)
    browser.where = where
    table = Query(store).sql("SELECT * FROM labels", output="pandas")
    brushes = {}
    for column in data.draw(st.lists(st.sampled_from(BRUSHABLE), max_size=2, unique=True)):
        values = sorted(v.item() if hasattr(v, "item") else v for v in table[column])
        low, high = sorted(data.draw(st.lists(st.sampled_from(values), min_size=2, max_size=2)))
        low, high = data.draw(st.sampled_from([(low, high), (None, high), (low, None)]))
        browser.brush(column, low, high)
        brushes[column] = (low, high)
    picked = data.draw(st.lists(st.sampled_from(sorted(points)), max_size=5, unique=True))
    explorer.selection = picked
    only = data.draw(st.booleans())
    browser.selected_only = only
    assert browser.error == ""

    rows = brute_force_rows(store, where, box, brushes, inside)
    listed = rows & set(picked) if only else rows
    assert set(browser.data().column("label").to_pylist()) == listed
    assert set(Query(store).sql(*browser.sql, output="arrow").column("label").to_pylist()) == listed
    assert set(browser.page.column("label").to_pylist()) == listed and browser.total_rows == len(listed)
    # Picked: those that pass, in pick order, whatever "selected only" lists. None picked: a box's passing
    # labels, or nothing without a box.
    drawn = [label for label in picked if label in rows] if picked else sorted(rows) if box is not None else []
    assert explorer.drawn == explorer.selection_state.labels_to_draw == drawn
    assert sorted(explorer.viewer.labels) == sorted(drawn)
    hidden = len(picked) - len([label for label in picked if label in rows])
    assert f"<b>{len(picked)}</b> selected" in browser._selection_status.value
    assert (f"({hidden} hidden by the filters)" in browser._selection_status.value) == (hidden > 0)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> str:
    return build(tmp_path_factory.mktemp("selection-small"), [5, 6, 2**63 + 1, 2**64 - 1], "int32", 7)[0]


def test_predicate_skips_the_named_clauses_and_keeps_values_as_parameters(small_store):
    selection = Selection(Query(small_store))
    selection.update(where="block_count >= 1", box=((-500, -500, -500), (500, 500, 500)), picked=[2**64 - 1])
    selection.update(brushes={"point_count": (1, None), "max_z": (None, 10**6)}, picked_only=True)
    sql, params = selection.predicate()
    assert sql.count("?") == len(params) == 4 and str(2**64 - 1) not in sql
    assert "point_count" not in selection.predicate(skip=["brush:point_count"])[0]
    assert "max_z" in selection.predicate(skip=["brush:point_count"])[0]
    assert selection.predicate(skip=["where", "box", "picked", "brushes"]) == ("true", [])
    assert Query(small_store).sql(*selection.relation(), output="arrow").column("label").to_pylist() == [2**64 - 1]


def test_a_bad_update_raises_and_changes_nothing(small_store):
    selection = Selection(Query(small_store))
    selection.update(where="point_count > 0", picked=[5])
    before = (selection.revision, selection.predicate(), selection.picked)
    with pytest.raises(SQLError):
        selection.update(where="no_such_column > 1", picked=[6])
    with pytest.raises(InvalidBoxError):
        selection.update(box=((10, 0, 0), (0, 10, 10)), picked=[6])
    with pytest.raises(InvalidBrushError, match="only these columns have a histogram"):
        selection.update(brushes={"label": (1, 2)})
    with pytest.raises(InvalidLabelError):
        selection.update(picked=[-1])
    assert (selection.revision, selection.predicate(), selection.picked) == before
    selection.update(source="SELECT point_count FROM labels", where="")  # no label column to limit by
    before = (selection.revision, selection.predicate(), selection.picked)
    with pytest.raises(SQLError):
        selection.update(box=((-500, -500, -500), (500, 500, 500)))
    with pytest.raises(SQLError):
        selection.update(picked_only=True)
    assert (selection.revision, selection.predicate(), selection.picked) == before
    selection.update(source="", where="point_count > 0")
    before = (selection.revision, selection.predicate(), selection.picked)
    assert selection.update(picked=[5]) is False and selection.revision == before[0]  # nothing changed


def test_an_empty_selection_draws_nothing_and_picks_hidden_by_filters_are_counted(small_store):
    selection = Selection(Query(small_store))
    assert selection.labels_to_draw == []  # nothing picked, no box: not everything
    selection.update(picked=[2**64 - 1, 5], where="label > 9223372036854775807")
    assert selection.labels_to_draw == [2**64 - 1] and selection.picked_hidden() == 1
    assert selection.picked == [2**64 - 1, 5]  # hidden, not lost


def test_updates_from_many_threads_each_leave_a_whole_state(small_store):
    selection = Selection(Query(small_store))
    seen: list[str] = []
    selection.observe(lambda change: seen.append(selection.where), "revision")

    def pick(i: int) -> None:
        for n in range(20):
            selection.update(where=f"point_count >= {n % 3}", picked=[[5], [6], [2**64 - 1]][(i + n) % 3])

    threads = [threading.Thread(target=pick, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert selection.revision == len(seen) and all(where.startswith("point_count >= ") for where in seen)
    passing = Query(small_store).sql(f"SELECT label FROM labels WHERE {selection.where}", output="arrow")
    assert selection.labels_to_draw == [label for label in selection.picked if label in passing["label"].to_pylist()]
