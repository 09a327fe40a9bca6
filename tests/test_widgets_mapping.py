"""Under a mapping the widgets speak bodies: the browser lists bodies with their supervoxel counts, the explorer's
version picker reads another version and keeps the picked labels that version still lists, and one body drawn
alone is coloured by supervoxel."""

from __future__ import annotations

import numpy as np
import pytest
from pocaduck.widgets import Explorer, LabelBrowser
from pocaduck.widgets._colors import category_colors, label_color

from pocaduck import Ingestor, MappingNotFoundError, Query, consolidate, write_mapping

# Supervoxel -> points; bodies: v1 merges 2 and 2**64-1 into 1; v2 (child of v1) also merges 3 into 1.
POINTS = {
    1: np.array([[0, 0, 0], [0, 0, 9]]),
    2: np.array([[1, 1, 1], [1, 1, 8], [1, 2, 8]]),
    3: np.array([[2, 2, 2]]),
    2**63 + 1: np.array([[7, 7, 7], [7, 7, 6]]),
    2**64 - 1: np.array([[5, 5, 5]]),
}
V1 = {2: 1, 2**64 - 1: 1}
V2 = {**V1, 3: 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    store = str(tmp_path_factory.mktemp("widgets-mapping") / "store")
    with Ingestor(store, worker_id=0) as ingestor:
        for supervoxel, points in POINTS.items():
            ingestor.write(supervoxel, "b0", points)
    consolidate(store)
    write_mapping(store, "v1", list(V1), list(V1.values()))
    write_mapping(store, "v2", [3], [1], parent="v1", note="merge 3 into 1")
    return store


def bodies(assignments: dict[int, int]) -> list[dict]:
    rows: dict[int, dict] = {}
    for supervoxel, points in POINTS.items():
        row = rows.setdefault(assignments.get(supervoxel, supervoxel), {"point_count": 0, "supervoxel_count": 0})
        row["point_count"] += len(points)
        row["supervoxel_count"] += 1
    return [{"label": body, **rows[body]} for body in sorted(rows)]


def test_a_label_browser_on_a_mapped_query_lists_bodies_with_supervoxel_counts(store):
    with Query(store, mapping="v1") as query:
        browser = LabelBrowser(query, page_size=10)
        page = browser.page.select(["label", "point_count", "supervoxel_count"]).to_pylist()
    assert sorted(page, key=lambda row: row["label"]) == bodies(
        V1
    )  # 1 holds three supervoxels; 2**63 + 1 is its own body, exact past 2**63
    assert browser.total_rows == 3 and "mapping" in browser._select_box.placeholder


def test_the_version_picker_reads_another_version_and_keeps_the_labels_it_still_lists(store):
    explorer = Explorer(store)
    assert [label for label, _ in explorer.version_menu.options] == ["supervoxels (no mapping)", "v1", "v2"]
    assert explorer.version_menu.label == "supervoxels (no mapping)"  # shown chosen, not an empty menu
    explorer.selection = [1, 2, 3]
    explorer.version_menu.value = "v1"  # 2 is part of body 1 now: no such row
    assert explorer.mapping == "v1" and explorer.selection == [1, 3] and explorer.drawn == [1, 3]
    assert explorer.browser.total_rows == 3 and "supervoxel_count" in explorer.browser.columns
    explorer.browser.where = "supervoxel_count >= 2"
    assert explorer.browser.total_rows == 1
    explorer.use_mapping("v2")  # 3 merged into 1
    assert explorer.selection == [1] and explorer.browser.total_rows == 1
    assert sorted(map(tuple, explorer.viewer._shown[1].points.tolist())) == sorted(
        tuple(p) for s in (1, 2, 3, 2**64 - 1) for p in POINTS[s].tolist()
    )
    with pytest.raises(MappingNotFoundError):
        explorer.use_mapping("no-such-version")
    assert explorer.mapping == "v2" and explorer.selection == [1] and explorer.browser.total_rows == 1
    explorer.use_mapping(None)  # the supervoxels have no supervoxel_count: the WHERE on it is dropped
    assert explorer.mapping is None and explorer.browser.where == "" and explorer.browser.total_rows == len(POINTS)
    assert explorer.version_menu.label == "supervoxels (no mapping)"
    explorer.version_menu.value = "v2"  # chosen in the menu, then back to the stored labels
    assert explorer.mapping == "v2"
    explorer.version_menu.index = 0
    assert explorer.mapping is None and explorer.browser.total_rows == len(POINTS)
    assert explorer.selection == [1] and explorer.viewer._shown[1].count == len(POINTS[1])


def test_one_body_is_coloured_by_supervoxel_and_several_by_body(store):
    explorer = Explorer(Query(store, mapping="v2"))
    explorer.selection = [1]
    shown = explorer.viewer._shown[1]
    colors = shown.cloud.geometry.attributes["color"].array
    assert np.array_equal(colors, category_colors(shown.supervoxels))
    assert sorted(np.unique(shown.supervoxels).tolist()) == [1, 2, 3, 2**64 - 1]
    for supervoxel in np.unique(shown.supervoxels).tolist():  # each point carries its own supervoxel's points
        rows = shown.points[shown.supervoxels == np.uint64(supervoxel)]
        assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, POINTS[supervoxel].tolist()))
    explorer.selection = [1, 2**63 + 1]
    assert "color" not in explorer.viewer._shown[1].cloud.geometry.attributes
    assert explorer.viewer._shown[1].cloud.material.color == label_color(1)
