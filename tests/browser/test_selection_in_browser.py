"""One selection in a real JupyterLab: a box, a WHERE, a brush and picked rows give the same labels in the table,
the 3D view and neuroglancer; a cleared selection shows no segment in neuroglancer, not every one."""

from __future__ import annotations

import nbformat
import numpy as np
import pytest
from lab import ARTIFACTS, error_outputs, notebook_run, skip_without_browser

skip_without_browser()
pytest.importorskip("neuroglancer")

# Label k of LABELS has 5 + k points around (10 k, 10 k, 10 k), in 1 + k % 2 blocks: the box [0, 55)^3 holds
# the first six, and the point counts rise with k, so a brush from the histogram's left edge keeps the first ones.
LABELS = [2**64 - 1, 2**63 + 5, 1, 2, 3, 4, 5, 6, 7, 8]
PICKED = [2**64 - 1, 2**63 + 5, 3, 8]  # 3 is in the box but brushed out, 8 is outside the box
WHERE = "label <> 2"
SETUP = f"""\
import numpy as np
from pocaduck.widgets import Explorer

from pocaduck import Ingestor, consolidate, create_store

LABELS = {LABELS!r}
create_store("store", voxel_size=[8, 8, 8])
with Ingestor("store", "w0") as ingestor:
    for k, label in enumerate(LABELS):
        xyz = 10 * k + np.arange(5 + k)[:, None] % 3 * np.ones((1, 3), int)
        for block in range(1 + k % 2):
            ingestor.write(label, f"b{{block}}", xyz[block::1 + k % 2])
consolidate("store")
explorer = Explorer("store")
explorer.open_neuroglancer()
explorer"""


def points_of(k: int) -> np.ndarray:
    return 10 * k + np.arange(5 + k)[:, None] % 3 * np.ones((1, 3), int)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("selection-lab")
    kernel = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP)], metadata={"kernelspec": kernel})
    nbformat.write(notebook, root / "selection.ipynb")
    cache = {"POCADUCK_CACHE_DIR": str(root / "cache")}  # neuroglancer's export, not in the home folder
    with notebook_run(root, "selection.ipynb", {"width": 1280, "height": 900}, "selection.png", env=cache) as page:
        page.wait_for_selector(".pocaduck-explorer-browser .pocaduck-table tbody tr", timeout=180_000)
        page.wait_for_selector("iframe.pocaduck-neuroglancer", timeout=180_000)
        yield page, root


def table_labels(page) -> list[str]:
    return page.locator(".pocaduck-explorer-browser .pocaduck-table tbody tr").evaluate_all(
        "rows => rows.map((row) => row.dataset.label)"
    )


def wait_for_table(page, expected: list[str]) -> None:
    page.wait_for_function(
        """(expected) => {
            const rows = [...document.querySelectorAll('.pocaduck-explorer-browser .pocaduck-table tbody tr')];
            return rows.map((row) => row.dataset.label).sort().join() === [...expected].sort().join();
        }""",
        arg=expected,
        timeout=60_000,
    )


def drawn_in_3d(page) -> list[str]:
    """The labels the 3D view's legend lists: one row per label drawn."""
    return page.locator(".pocaduck-explorer-viewer .pocaduck-legend-row code").all_inner_texts()


def neuroglancer_segments(page) -> list[str] | None:
    """The segments of neuroglancer's "labels" layer, read from the viewer's own state in its frame."""
    frame = next(frame for frame in page.frames if "/v/" in frame.url)
    return frame.evaluate(
        """() => {
            if (!window.viewer) return null;
            const layer = (window.viewer.state.toJSON().layers || []).find((layer) => layer.name === 'labels');
            return layer ? (layer.segments || []).map(String) : null;
        }"""
    )


def wait_for_segments(page, expected: list[str]) -> list[str] | None:
    segments = None
    for _ in range(120):  # neuroglancer applies the kernel's state when its websocket delivers it
        segments = neuroglancer_segments(page)
        if segments is not None and sorted(segments) == sorted(expected):
            break
        page.wait_for_timeout(500)
    return segments


def test_box_where_brush_and_picks_give_the_same_labels_in_table_3d_view_and_neuroglancer(lab):
    page, root = lab
    from pocaduck import Query

    rows = page.locator(".pocaduck-explorer-browser .pocaduck-table tbody tr")
    for i, label in enumerate(PICKED):  # click the first, ctrl-click the others
        rows.locator(f"xpath=self::*[@data-label='{label}']").click(modifiers=["Control"] if i else [])
    page.wait_for_function(
        "() => document.querySelector('.pocaduck-selection')?.textContent.includes('4 selected')", timeout=60_000
    )
    assert wait_for_segments(page, [str(label) for label in PICKED]) is not None

    corners = page.locator(".pocaduck-explorer-box input")
    for position, value in enumerate(["0", "0", "0", "55", "55", "55"]):
        corners.nth(position).fill(value)
        corners.nth(position).press("Enter")
    page.locator(".pocaduck-explorer-box button", has_text="labels in box").click()
    in_box = [str(label) for label in LABELS[:6]]
    wait_for_table(page, in_box)
    where = page.locator(".pocaduck-explorer-browser input[placeholder^='WHERE']")
    where.fill(WHERE)
    where.press("Enter")
    wait_for_table(page, [label for label in in_box if label != "2"])

    histogram = page.locator(".pocaduck-explorer-browser .pocaduck-histogram[data-histogram='point_count']")
    histogram.scroll_into_view_if_needed()
    box = histogram.bounding_box()
    page.mouse.move(box["x"] + 1, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    page.wait_for_function(
        "() => document.querySelector(\".pocaduck-histogram[data-histogram='point_count']\")?.dataset.high",
        timeout=30_000,
    )
    histogram = page.locator(".pocaduck-explorer-browser .pocaduck-histogram[data-histogram='point_count']")
    low, high = int(histogram.get_attribute("data-low")), int(histogram.get_attribute("data-high"))

    with Query(root / "store") as query:  # brute force: each clause written out by hand over the index
        rows_sql = (
            "SELECT label FROM labels WHERE list_contains(?::UBIGINT[], label) AND label <> 2"
            " AND point_count >= ? AND point_count <= ?"
        )
        kept = query.sql(rows_sql, [LABELS[:6], low, high], "arrow").column("label").to_pylist()
    drawn = [label for label in PICKED if label in kept]
    assert 2**64 - 1 in drawn and len(drawn) < len(PICKED), (low, high, kept)  # some drawn, some hidden

    wait_for_table(page, [str(label) for label in kept])
    page.wait_for_function(
        "(expected) => [...document.querySelectorAll('.pocaduck-explorer-viewer .pocaduck-legend-row code')]"
        ".map((code) => code.textContent).sort().join() === expected",
        arg=",".join(sorted(str(label) for label in drawn)),
        timeout=60_000,
    )
    assert sorted(drawn_in_3d(page)) == sorted(str(label) for label in drawn)
    inside = sum(
        int(np.all((points_of(k) >= 0) & (points_of(k) < 55), axis=1).sum())
        for k, label in enumerate(LABELS)
        if label in drawn
    )
    status = page.locator(".pocaduck-explorer-viewer").inner_text()
    assert f"of {inside:,} points inside the box" in status
    segments = wait_for_segments(page, [str(label) for label in drawn])
    assert sorted(segments) == sorted(str(label) for label in drawn)
    selection = page.locator(".pocaduck-explorer-browser .pocaduck-selection").inner_text()
    assert f"{len(PICKED)} selected ({len(PICKED) - len(drawn)} hidden by the filters)" in selection
    page.locator(".pocaduck-explorer-browser").screenshot(path=ARTIFACTS / "selection-composed.png")

    page.locator(".pocaduck-explorer-browser button", has_text="selected only").click()
    wait_for_table(page, [str(label) for label in drawn])  # the selection's rows that every filter keeps
    page.locator(".pocaduck-explorer-browser button", has_text="selected only").click()
    wait_for_table(page, [str(label) for label in kept])

    page.locator(".pocaduck-explorer-browser button", has_text="clear selection").click()
    # No pick, a box: the box's labels that pass the filters, the same in every part.
    assert sorted(wait_for_segments(page, [str(label) for label in kept])) == sorted(str(label) for label in kept)
    page.locator(".pocaduck-explorer-box button", has_text="all labels").click()
    assert wait_for_segments(page, []) == []  # an empty selection: no segment, not every one
    page.wait_for_function(
        "() => document.querySelectorAll('.pocaduck-explorer-viewer .pocaduck-legend-row').length === 0",
        timeout=60_000,
    )
    assert "0 selected" in page.locator(".pocaduck-explorer-browser .pocaduck-selection").inner_text()
    assert error_outputs(page) == []
