"""The explorer renders whatever rows are selected, with their details; the widgets' docstring examples run."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
from pocaduck.widgets import Explorer

from pocaduck import Ingestor, consolidate


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    store = str(tmp_path_factory.mktemp("explorer") / "store")
    with Ingestor(store, "w0") as ingestor:
        for label in (5, 6, 2**64 - 1):
            for block in range(3):
                ingestor.write(label, f"block-{block}", np.full((label % 50 + block + 1, 3), block))
    consolidate(store)
    return store


def test_selecting_rows_shows_their_points_and_details(store):
    explorer = Explorer(store)
    assert explorer.viewer.labels == [] and "select rows" in explorer.details.value
    explorer.browser._table.set_state({"selected": ["18446744073709551615", "5"]})  # two clicked rows
    assert explorer.viewer.labels == [2**64 - 1, 5]
    assert explorer.viewer.total_points == sum(label % 50 * 3 + 6 for label in (2**64 - 1, 5))
    assert "18446744073709551615" in explorer.details.value and "block-0, block-1, block-2" in explorer.details.value
    explorer.browser.selected_labels = []
    assert explorer.viewer.labels == []


def test_double_clicking_a_point_in_the_view_selects_its_labels_row(store):
    explorer = Explorer(store)
    explorer.browser.selected_labels = [5, 2**64 - 1]
    viewer = explorer.viewer
    with viewer._picker.hold_trait_notifications():  # what pythreejs's Picker sends after the double-click
        viewer._picker.object = viewer._shown[2**64 - 1].cloud
        viewer._picker.index = 0
    assert viewer.picked["label"] == 2**64 - 1
    assert explorer.browser.selected_labels == explorer.browser._table.selected == [2**64 - 1]  # the table's too
    assert viewer.labels == [2**64 - 1] and viewer.picked["label"] == 2**64 - 1  # still said under the view
    assert "18446744073709551615" in explorer.details.value and ">5<" not in explorer.details.value


@pytest.mark.parametrize("module", ["_colors", "_source", "_wire", "monitor"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(f"pocaduck.widgets.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


LOWER, UPPER = np.array([10, 20, 0]), np.array([30, 45, 60])  # the box the box tool test draws


@pytest.fixture(scope="module")
def spread_store(tmp_path_factory) -> tuple[str, dict[int, np.ndarray]]:
    store = str(tmp_path_factory.mktemp("explorer-box") / "store")
    rng = np.random.default_rng(3)
    points = {label: rng.integers(0, 100, size=(40, 3)) for label in (11, 12, 13, 14, 2**64 - 1)}
    points[15] = np.full((5, 3), 90)  # only far from the box
    # On the box's faces: the lower ones are inside, the upper ones outside (lower <= p < upper).
    points[16] = np.array([LOWER, [LOWER[0], 44, 59], [29, 44, 59], [30, 30, 30], [20, 45, 30], [20, 30, 60], UPPER])
    points[17] = np.array([[30, 44, 59], [29, 45, 59], [29, 44, 60], UPPER, [9, 30, 30]])  # only on faces outside
    with Ingestor(store, "w0") as ingestor:
        for label, xyz in points.items():
            ingestor.write(label, "b0", xyz[: len(xyz) // 2])
            ingestor.write(label, "b1", xyz[len(xyz) // 2 :])
    consolidate(store)
    return store, points


def test_box_tool_lists_the_labels_inside_and_shows_only_their_points_inside(spread_store):
    store, points = spread_store
    lower, upper = LOWER, UPPER
    inside = {label: xyz[np.all((xyz >= lower) & (xyz < upper), axis=1)] for label, xyz in points.items()}
    expected = sorted(label for label, xyz in inside.items() if len(xyz))
    assert 0 < len(expected) < len(points) and 16 in expected and 17 not in expected
    assert len(inside[16]) == 3  # the lower corner, a point on the lower x face, one just below the upper corner

    explorer = Explorer(store)
    for name, value in zip(explorer._corners, [*lower, *upper], strict=True):
        explorer._corners[name].value = float(value)
    explorer._on_box_button()
    assert sorted(explorer.browser.page.column("label").to_pylist()) == expected
    assert explorer.browser.total_rows == len(expected) and f"{len(expected)} labels" in explorer.box_message.value
    assert sorted(explorer.viewer.labels) == expected
    for label in expected:
        drawn = np.round(explorer.viewer.positions(label) + explorer.viewer.origin).astype(np.int64)
        assert sorted(map(tuple, drawn.tolist())) == sorted(map(tuple, inside[label].tolist()))

    picked = expected[0]
    explorer.browser.selected_labels = [picked]  # a row clicked in the shrunken table: its points in the box
    assert explorer.viewer.labels == [picked] and explorer.viewer.total_points == len(inside[picked])

    explorer.clear_box()  # every label listed again; the selection stays, drawn whole
    assert explorer.browser.total_rows == len(points) and explorer.viewer.labels == [picked]
    assert explorer.viewer.total_points == len(points[picked])


def test_box_where_brush_and_selection_give_the_same_labels_to_every_part(spread_store, monkeypatch, tmp_path):
    monkeypatch.setenv("POCADUCK_CACHE_DIR", str(tmp_path / "cache"))  # neuroglancer's export goes there
    store, points = spread_store
    inside = {label for label, xyz in points.items() if np.any(np.all((xyz >= LOWER) & (xyz < UPPER), axis=1))}
    explorer = Explorer(store)
    view = explorer.open_neuroglancer()
    assert explorer.drawn == view.labels == explorer.viewer.labels == []  # nothing selected: nothing, anywhere
    chosen = [2**64 - 1, 16, 11, 15, 17]
    explorer.selection = chosen
    assert explorer.drawn == explorer.viewer.labels == chosen and view.labels == sorted(chosen)  # as segments

    explorer.limit_to_box(LOWER, UPPER)
    explorer.browser.where = "block_count = 2"  # every label here: composes without dropping any
    explorer.browser.brush("point_count", 6, None)  # drops 15 (5 points) and 17 (5 points)
    expected = [label for label in chosen if label in inside and len(points[label]) >= 6]
    assert 16 in expected and 15 not in expected and 17 not in expected
    assert explorer.selection == chosen  # the selection is kept whatever the filters hide
    assert explorer.drawn == expected == explorer.viewer.labels and view.labels == sorted(expected)
    assert [int(label) for label in explorer.browser.page.column("label").to_pylist() if label in chosen] != []
    hidden = len(chosen) - len(expected)
    assert f"<b>{len(chosen)}</b> selected ({hidden} hidden by the filters)" in explorer.browser._selection_status.value
    for label in expected:  # the details describe what is drawn, and only that
        assert f"label <code>{label}</code>" in explorer.details.value
    assert "label <code>15</code>" not in explorer.details.value

    explorer.browser.selected_only = True  # the table lists the selection under every filter
    assert sorted(explorer.browser.page.column("label").to_pylist()) == sorted(expected)
    explorer.browser.selected_only = False

    explorer.selection = []  # no selection, a box: every label in the box that passes the filters
    in_view = sorted(label for label in inside if len(points[label]) >= 6)
    assert sorted(explorer.drawn) == sorted(view.labels) == sorted(explorer.viewer.labels) == in_view
    explorer.clear_box()  # no selection, no box: nothing drawn, neuroglancer neither
    assert explorer.drawn == view.labels == explorer.viewer.labels == []
    assert sorted(layer.name for layer in view.viewer.state.layers) == ["labels"]


def test_box_tool_respects_the_point_budget(spread_store):
    store, points = spread_store
    explorer = Explorer(store, point_budget=10)
    labels = explorer.limit_to_box((0, 0, 0), (100, 100, 100))
    total = sum(len(xyz) for xyz in points.values())  # every point lies in [0, 100)
    assert explorer.viewer.shown_points <= 10 + len(labels) and explorer.viewer.total_points == total


def test_a_bad_box_says_what_is_wrong_and_changes_nothing(spread_store):
    store, points = spread_store
    explorer = Explorer(store)
    explorer._corners["x0"].value, explorer._corners["x1"].value = 50.0, 10.0
    explorer._on_box_button()
    assert "lower must be below upper" in explorer.box_message.value and "x" in explorer.box_message.value
    assert explorer.browser.total_rows == len(points) and explorer.selection_state.box is None


def test_neuroglancer_keeps_its_camera_when_a_change_leaves_the_same_labels_drawn(spread_store, monkeypatch, tmp_path):
    monkeypatch.setenv("POCADUCK_CACHE_DIR", str(tmp_path / "cache"))
    store, _points = spread_store
    explorer = Explorer(store)
    explorer.selection = [11, 12]
    view = explorer.open_neuroglancer()
    with view.viewer.txn() as state:  # the user moved the camera
        state.position = [1, 2, 3]
    explorer.browser.where = "point_count > 0"  # every label passes: the same two are drawn
    assert view.labels == [11, 12] and list(view.viewer.state.position) == [1, 2, 3]
    explorer.selection = [12]
    assert view.labels == [12] and list(view.viewer.state.position) != [1, 2, 3]  # new labels: aimed anew


def test_a_box_over_a_select_without_labels_says_why_in_the_box_tool_and_changes_nothing(spread_store):
    store, points = spread_store
    explorer = Explorer(store)
    explorer.browser.select = "SELECT point_count, block_count FROM labels"
    for name, value in zip(explorer._corners, [*LOWER, *UPPER], strict=True):
        explorer._corners[name].value = float(value)
    explorer._on_box_button()
    assert "labels in the box" not in explorer.box_message.value and "label" in explorer.box_message.value
    assert explorer.selection_state.box is None
    assert explorer.browser.total_rows == len(points) and explorer.browser.error == ""
