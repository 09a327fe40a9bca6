"""The viewer sends exactly the chosen labels' points, scaled by voxel size, centered, as float32 binary buffers."""

from __future__ import annotations

import numpy as np
import pytest
import traitlets
from ipywidgets.widgets.widget import _remove_buffers
from pocaduck.widgets import PointCloudViewer
from pocaduck.widgets import viewer as viewer_module
from pocaduck.widgets._colors import label_color, ramp_colors

from pocaduck import Ingestor, Query, consolidate, create_store

VOXEL = np.array([8.0, 8.0, 33.0])
FAR = 10**6  # voxel coordinates this large lose digits in float32 unless centered first


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    store = str(tmp_path_factory.mktemp("viewer") / "store")
    create_store(store, columns=["x", "y", "z", "supervoxel"], voxel_size=VOXEL.tolist())
    rng = np.random.default_rng(11)
    with Ingestor(store, "w0") as ingestor:
        for label, count in ((1, 300), (2, 500), (2**64 - 1, 200)):
            for block in range(2):
                xyz = FAR + rng.integers(0, 400, size=(count, 3))
                supervoxel = rng.integers(0, 5, size=(count, 1)) + label % 1000 * 10
                ingestor.write(label, f"b{block}", np.hstack([xyz, supervoxel]))
    consolidate(store)
    return store


@pytest.fixture(scope="module")
def query(store):
    with Query(store) as query:
        yield query


def as_rows(array: np.ndarray) -> list[tuple]:
    return sorted(map(tuple, np.asarray(array).tolist()))


def test_buffers_hold_exactly_the_labels_points_scaled_and_centered(query):
    viewer = PointCloudViewer(query)
    viewer.show([1, 2**64 - 1])
    assert viewer.labels == [1, 2**64 - 1]
    for label in (1, 2**64 - 1):
        sent = viewer.positions(label)
        assert sent.dtype == np.float32
        expected = (query.get_points(label)[:, :3] - viewer.origin) * VOXEL
        assert as_rows(sent) == as_rows(expected.astype(np.float32))
        assert np.abs(sent).max() < 400 * 33  # centered: small numbers, full float32 precision


def test_positions_cross_as_binary_buffers(query):
    viewer = PointCloudViewer(query)
    viewer.show(2)
    attribute = viewer._shown[2].cloud.geometry.attributes["position"]
    _state, _paths, buffers = _remove_buffers(attribute.get_state())
    assert any(bytes(buffer) == viewer.positions(2).tobytes() for buffer in buffers)


def test_add_remove_clear(query):
    viewer = PointCloudViewer(query)
    viewer.show(1)
    viewer.add([2, 1])
    assert viewer.labels == [1, 2] and viewer.total_points == 600 + 1000
    viewer.remove(1)
    assert viewer.labels == [2] and len(viewer._cloud_group.children) == 1
    viewer.clear()
    assert viewer.labels == [] and viewer._cloud_group.children == () and viewer.total_points == 0


def test_each_label_keeps_its_color_everywhere(query):
    first, second = PointCloudViewer(query), PointCloudViewer(query)
    first.show([1, 2])
    second.show([2])
    assert first._shown[2].cloud.material.color == second._shown[2].cloud.material.color == label_color(2)
    assert label_color(1) != label_color(2)


def test_legend_lists_each_label_with_swatch_count_and_toggle(query):
    viewer = PointCloudViewer(query)
    viewer.show([1, 2])
    rows = viewer._legend.children
    assert len(rows) == 2
    toggle, text = rows[0].children
    assert ">1</code> 600 pts" in text.value and label_color(1) in text.value
    toggle.value = False
    assert viewer._shown[1].cloud.visible is False
    viewer.set_visible(1, True)
    assert viewer._shown[1].cloud.visible is True


def test_point_budget_subsamples_reproducibly_and_says_so(query):
    viewer = PointCloudViewer(query, point_budget=400)
    viewer.show([1, 2])
    assert viewer.total_points == 1600 and viewer.shown_points <= 400
    assert f"showing {viewer.shown_points:,} of 1,600 points" in viewer._status.value
    full = {tuple(row) for row in ((query.get_points(2)[:, :3] - viewer.origin) * VOXEL).astype(np.float32).tolist()}
    assert {tuple(row) for row in viewer.positions(2).tolist()} <= full
    again = PointCloudViewer(query, point_budget=400)
    again.show([1, 2])
    assert np.array_equal(again.positions(2), viewer.positions(2))
    viewer.point_budget = 10_000
    assert viewer.shown_points == 1600 and len(viewer.positions(2)) == 1000


def test_color_by_depth_and_by_category_column(query):
    viewer = PointCloudViewer(query)
    viewer.show(1)
    assert "color" not in viewer._shown[1].cloud.geometry.attributes  # one material color per label
    viewer.color_by = "depth"
    colors = viewer._shown[1].cloud.geometry.attributes["color"].array
    assert colors.shape == (600, 3) and colors.dtype == np.float32
    viewer.color_by = "supervoxel"
    colors = viewer._shown[1].cloud.geometry.attributes["color"].array
    points = viewer._shown[1].points  # the drawn points, in the order their colors go
    assert as_rows(points) == as_rows(query.get_points(1))
    by_value = {}
    for value, color in zip(points[:, 3].tolist(), map(tuple, colors.tolist()), strict=True):
        by_value.setdefault(value, set()).add(color)
    assert all(len(c) == 1 for c in by_value.values())  # a category is one color
    assert len({next(iter(c)) for c in by_value.values()}) == len(by_value)  # different categories differ
    with pytest.raises(traitlets.TraitError, match="color_by must be one of"):
        viewer.color_by = "nope"


def test_fit_aims_at_the_visible_points_and_draws_box_and_axes(query):
    viewer = PointCloudViewer(query)
    viewer.show(1)
    viewer.show_box = viewer.show_axes = True
    low, high = viewer.positions(1).min(axis=0), viewer.positions(1).max(axis=0)
    assert np.allclose(viewer._controls.target, (low + high) / 2)
    kinds = sorted(type(child).__name__ for child in viewer._extras.children)
    assert kinds == ["Box3Helper", "LineSegments"]
    assert np.allclose(viewer._extras.children[0].box.min, low)


def test_axes_have_a_tick_every_round_number_of_nanometres_and_say_so(query):
    viewer = PointCloudViewer(query)
    viewer.show(1)
    viewer.show_axes = True
    low, high = viewer.positions(1).min(axis=0), viewer.positions(1).max(axis=0)
    longest = float((high - low).max())  # about 400 voxels of 33 nm: 13 µm
    axes = viewer._extras.children[0]
    ends = axes.geometry.attributes["position"].array
    ticks_on_z = np.round((ends[2::2, 2][ends[2::2, 2] > low[2]] - low[2]) / 2000, 6)  # tick feet above the corner
    assert longest / 8 < 2000 < longest / 4 and "a tick every 2 µm" in viewer._axes_note.value
    assert set(ticks_on_z.tolist()) == set(range(1, int((high[2] - low[2]) // 2000) + 1))
    corner = (low + viewer.origin * VOXEL).round().astype(int)
    assert f"axes from ({corner[0]:,}, {corner[1]:,}, {corner[2]:,}) nm" in viewer._axes_note.value
    viewer.show_axes = False
    assert viewer._axes_note.value == "" and viewer._extras.children == ()


def legend_texts(viewer: PointCloudViewer) -> list[str]:
    return [row.children[1].value for row in viewer._legend.children if "pocaduck-legend-row" in row._dom_classes]


def test_depth_colouring_shows_a_colour_bar_of_the_drawn_range_in_nm_and_no_label_swatches(query):
    viewer = PointCloudViewer(query)
    viewer.show([1, 2])
    assert viewer.color_bar is None and all("pocaduck-swatch" in text for text in legend_texts(viewer))
    viewer.color_by = "depth"
    z = np.concatenate([query.get_points(label)[:, 2] for label in (1, 2)])
    assert viewer.color_bar == {"name": "z", "unit": "nm", "low": z.min() * 33.0, "high": z.max() * 33.0}
    key = viewer._legend.children[0]
    assert "pocaduck-colorbar" in key._dom_classes and "z (nm)" in key.value
    assert f">{z.min() * 33:,.0f}<" in key.value and f">{z.max() * 33:,.0f}<" in key.value
    texts = legend_texts(viewer)
    assert len(texts) == 2 and not any("pocaduck-swatch" in text for text in texts)  # rows, no contradicting colour
    viewer.color_by = "supervoxel"  # whole numbers: one colour per value, no ramp to explain
    assert viewer.color_bar is None and "one colour per value" in viewer._legend.children[0].value
    viewer.color_by = "label"
    assert len(viewer._legend.children) == 2 and all("pocaduck-swatch" in text for text in legend_texts(viewer))


def test_a_label_added_under_depth_colouring_recolours_the_others_to_the_new_range(query):
    viewer = PointCloudViewer(query)
    viewer.color_by = "depth"
    viewer.show(1)
    viewer.add(2)
    z = np.concatenate([query.get_points(label)[:, 2] for label in (1, 2)])
    assert viewer.color_bar["low"] == z.min() * 33.0 and viewer.color_bar["high"] == z.max() * 33.0
    for label in (1, 2):  # every cloud coloured along the bar's range, not the one of when it was drawn
        colors = viewer._shown[label].cloud.geometry.attributes["color"].array
        assert np.array_equal(colors, ramp_colors(viewer._shown[label].points[:, 2], z.min(), z.max()))


def test_hidden_labels_are_not_counted_drawn_or_picked(query):
    viewer = PointCloudViewer(query)
    viewer.show([1, 2])
    assert viewer.total_points == viewer.shown_points == 1600
    viewer.set_visible(2, False)
    assert viewer.total_points == viewer.shown_points == 600
    assert "showing 600 of 600 points" in viewer._status.value and "1 hidden label not counted" in viewer._status.value
    assert viewer._cloud_group.children == (viewer._shown[1].cloud,)  # the picker casts its rays at this group
    viewer.set_visible(2, True)
    assert viewer.total_points == 1600 and "hidden" not in viewer._status.value


def pick(viewer: PointCloudViewer, label: int, index: int) -> None:
    """What pythreejs's Picker sends after a double-click: the cloud hit and the point's index in it."""
    with viewer._picker.hold_trait_notifications():
        viewer._picker.object = viewer._shown[label].cloud
        viewer._picker.index = index
        viewer._picker.point = tuple(viewer.positions(label)[index].tolist())


def test_double_clicking_a_point_sets_picked_to_its_label_point_and_columns(query):
    viewer = PointCloudViewer(query)
    viewer.show([1, 2**64 - 1])
    assert viewer.picked is None and "double-click a point" in viewer._pick_note.value
    pick(viewer, 2**64 - 1, 7)
    x, y, z, supervoxel = viewer._shown[2**64 - 1].points[7].tolist()
    assert viewer.picked == {"label": 2**64 - 1, "point": [x, y, z], "supervoxel": supervoxel}
    assert type(viewer.picked["label"]) is int  # exact, not a float
    assert f">{2**64 - 1}</code> at voxel ({x:,}, {y:,}, {z:,}) · supervoxel {supervoxel:,}" in viewer._pick_note.value
    assert query.get_points(2**64 - 1)[:, :4].tolist().count([x, y, z, supervoxel]) >= 1
    viewer.remove(2**64 - 1)
    assert viewer.picked is None  # its label is gone from the view
    assert viewer._picker.pointThreshold > 0


class RecordingQuery(Query):
    """A real Query that remembers how each get_points call asked for points."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.point_calls: list[dict] = []

    def get_points(self, label, *args, **kwargs):
        self.point_calls.append({"label": label, "sample": kwargs.get("sample")})
        return super().get_points(label, *args, **kwargs)


BIG = 200_000


@pytest.fixture(scope="module")
def big_store(tmp_path_factory) -> str:
    store = str(tmp_path_factory.mktemp("viewer-big") / "store")
    create_store(store, columns=["x", "y", "z"])
    rng = np.random.default_rng(5)
    with Ingestor(store, "w0") as ingestor:
        for block in range(4):
            ingestor.write(7, f"b{block}", rng.integers(0, 10_000, size=(BIG // 4, 3)))
        ingestor.write(8, "b0", rng.integers(0, 10_000, size=(50, 3)))
    consolidate(store)
    return store


def drawn_voxels(viewer: PointCloudViewer, label: int) -> np.ndarray:
    return np.round(viewer.positions(label) / viewer.voxel_size + viewer.origin).astype(np.int64)


def test_viewer_fetches_only_the_budget_through_sample_and_more_points_refines(big_store):
    with RecordingQuery(big_store) as query:
        everything = {tuple(row) for row in query.get_points(7).tolist()}
        query.point_calls.clear()
        viewer = PointCloudViewer(query, point_budget=1_000)
        viewer.show(7)
        first = drawn_voxels(viewer, 7)
        assert len(first) == 1_000 and viewer.total_points == BIG
        assert {tuple(row) for row in first.tolist()} <= everything
        assert query.point_calls == [{"label": 7, "sample": 1_000}]  # never the whole label
        assert "showing 1,000 of 200,000 points" in viewer._status.value

        viewer._more_button.click()
        assert viewer.point_budget == 2_000 and len(viewer.positions(7)) == 2_000
        assert {tuple(row) for row in drawn_voxels(viewer, 7).tolist()} <= everything
        assert query.point_calls[-1] == {"label": 7, "sample": 2_000}
        assert all(call["sample"] is not None for call in query.point_calls)


def test_in_a_kernel_the_first_frame_is_a_small_sample_and_the_budget_follows_once_painted(big_store, monkeypatch):
    monkeypatch.setattr(viewer_module, "_front_end_answers", lambda: True)
    with RecordingQuery(big_store) as query:
        viewer = PointCloudViewer(query, point_budget=5_000, first_points=500)
        pings = []
        monkeypatch.setattr(viewer._painted, "send", pings.append)
        viewer.show(7)
        first = drawn_voxels(viewer, 7)
        assert len(first) == 500 and "a first sample" in viewer._status.value
        viewer._painted._handle_custom_msg({"painted": pings[0]["first_frame"] - 1}, [])  # about an older frame
        assert len(viewer.positions(7)) == 500
        viewer._painted._handle_custom_msg({"painted": pings[0]["first_frame"]}, [])  # as the browser answers
        assert len(viewer.positions(7)) == 5_000 and viewer.shown_points == 5_000
        assert "showing 5,000 of 200,000 points (sampled to the point budget" in viewer._status.value
        assert query.point_calls == [{"label": 7, "sample": 500}, {"label": 7, "sample": 5_000}]
        # the first frame's points are among the larger sample's: refining adds points, moves none
        assert set(map(tuple, first.tolist())) <= set(map(tuple, drawn_voxels(viewer, 7).tolist()))

        viewer.show(8)
        viewer.show(7)  # a browser that never answers: "more points" still draws the whole budget, doubled
        assert len(viewer.positions(7)) == 500
        viewer._more_button.click()
        assert len(viewer.positions(7)) == 10_000 and "a first sample" not in viewer._status.value


def test_budget_is_split_over_labels_by_their_counts(big_store):
    with RecordingQuery(big_store) as query:
        viewer = PointCloudViewer(query, point_budget=1_000)
        viewer.show([7, 8])
        assert len(viewer.positions(7)) == 1_000 * BIG // (BIG + 50)
        assert len(viewer.positions(8)) == 1  # its share rounds to nothing, but every label shows
        assert {call["sample"] for call in query.point_calls} == {len(viewer.positions(7)), 1}
        viewer.point_budget = BIG + 50
        assert len(viewer.positions(7)) == BIG and len(viewer.positions(8)) == 50
        assert viewer._more_button.disabled  # everything is drawn: nothing more to fetch
