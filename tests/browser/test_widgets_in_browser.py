"""The widgets in a real JupyterLab in real headless Chromium: rows show, a click renders points, ingestion finishes.

Runs everywhere Chromium is installed; under CI (``CI=true``) a missing Chromium
is a failure, never a skip.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from lab import (
    ARTIFACTS,
    notebook_run,
    skip_without_browser,
    wait_for_drawing,
)

HERE = Path(__file__).parent
WORKERS = 3
VIEWPORT = {"width": 1280, "height": 800}  # a laptop; JupyterLab's file browser open leaves the outputs ~850 px

skip_without_browser()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The folder JupyterLab serves; the notebook writes its store into ``store`` there."""
    return tmp_path_factory.mktemp("lab")


@pytest.fixture(scope="module")
def page(root):
    """The test notebook opened in JupyterLab, every cell run to the end."""
    shutil.copy(HERE / "widgets.ipynb", root / "widgets.ipynb")
    with notebook_run(root, "widgets.ipynb", VIEWPORT, "notebook-end.png") as page:
        page.wait_for_selector(".pocaduck-table tbody tr", timeout=180_000)
        yield page


def test_the_table_shows_rows_of_labels(page):
    rows = page.locator(".pocaduck-table tbody tr")
    assert rows.count() == 50  # a first page of the synthetic volume's labels
    assert "of 56" in page.locator(".widget-hbox", has_text="of 56").first.inner_text()  # 56 labels in the volume
    headers = page.locator(".pocaduck-table th").all_inner_texts()
    assert headers[0] == "label" and headers[1].startswith("point_count")
    page.locator(".pocaduck-table").screenshot(path=ARTIFACTS / "label-table.png")


def test_the_monitor_reaches_finished_for_every_worker(page):
    monitor = page.locator(".jp-OutputArea-output").first
    page.wait_for_function(
        """(workers) => document.querySelector('.jp-OutputArea-output')
            .querySelectorAll('.pocaduck-worker.pocaduck-state-finished').length === workers""",
        arg=WORKERS,
        timeout=60_000,
    )
    assert monitor.locator(".pocaduck-worker").count() == WORKERS
    assert "3 of 3 workers finished" in monitor.inner_text()
    monitor.screenshot(path=ARTIFACTS / "monitor.png")


def test_a_cluster_of_500_workers_is_one_grid_of_cells_with_its_failures_listed(page):
    # The notebook's second cell feeds 500 simulated workers: 6 failed (i % 97 == 13), 50 queued (i % 10 == 2),
    # 98 running (i % 10 in (0, 1)), the other 346 finished.
    cluster = page.locator(".jp-OutputArea-output").nth(1)
    page.wait_for_function(
        """() => document.querySelectorAll('.pocaduck-cell').length === 500
            && document.querySelectorAll('.pocaduck-cell[data-state=failed]').length === 6""",
        timeout=60_000,
    )
    states = cluster.locator(".pocaduck-cell").evaluate_all("cells => cells.map((cell) => cell.dataset.state)")
    assert {state: states.count(state) for state in set(states)} == {
        "failed": 6,
        "queued": 50,
        "running": 98,
        "finished": 346,
    }
    assert cluster.locator(".pocaduck-worker").count() == 0  # no bar per worker
    assert "346 of 500 workers finished · 6 failed" in cluster.inner_text()

    failed = cluster.locator(".pocaduck-cell[data-worker='13']")
    colors = failed.evaluate("cell => getComputedStyle(cell).backgroundImage")
    assert "rgb(198, 40, 40)" in colors  # the failed color, #c62828
    assert "OSError: chunk (13, 0, 0) is unreadable" in failed.get_attribute("title")
    failed.hover()
    detail = cluster.locator(".pocaduck-grid-detail")
    assert detail.inner_text().startswith("worker 13 · failed")
    assert "blocks 3/8 · 13,000 points" in detail.inner_text()
    assert "OSError: chunk (13, 0, 0) is unreadable" in detail.inner_text()
    errors = cluster.locator(".pocaduck-failures li")
    assert errors.count() == 6
    assert errors.first.inner_text() == "worker 13: OSError: chunk (13, 0, 0) is unreadable"
    cluster.screenshot(path=ARTIFACTS / "monitor-grid.png")


def test_clicking_a_row_renders_its_points_and_lists_it_in_the_legend(page):
    row = page.locator(".pocaduck-table tbody tr").first
    label = row.get_attribute("data-label")
    point_count = int(row.locator("td").nth(1).inner_text())
    row.click()
    assert "selected" in row.get_attribute("class")
    legend = page.locator(".pocaduck-legend-row")
    legend.first.wait_for(timeout=60_000)
    assert legend.count() == 1 and label in legend.first.inner_text()
    assert f"{point_count:,} pts" in legend.first.inner_text()
    canvas = page.locator(".jp-OutputArea-output canvas").last
    canvas.wait_for(timeout=60_000)
    differing, total, shot = wait_for_drawing(page, canvas)
    (ARTIFACTS / "viewer-canvas.png").write_bytes(shot)
    assert differing > 200, f"only {differing} of {total} canvas pixels differ from the background"
    assert differing < total  # and it is not a blank canvas of another color either


def test_shift_click_selects_a_range_of_rows_and_shows_them_all(page):
    rows = page.locator(".pocaduck-table tbody tr")
    labels = [rows.nth(i).get_attribute("data-label") for i in range(5)]
    rows.nth(0).click()
    rows.nth(4).click(modifiers=["Shift"])
    legend = page.locator(".pocaduck-legend-row")
    page.wait_for_function("() => document.querySelectorAll('.pocaduck-legend-row').length === 5", timeout=60_000)
    assert [label in legend.nth(i).inner_text() for i, label in enumerate(labels)] == [True] * 5
    assert page.locator(".pocaduck-table tbody tr.selected").count() == 5


def overlap(first: dict, second: dict) -> float:
    """The area two bounding boxes share."""
    width = min(first["x"] + first["width"], second["x"] + second["width"]) - max(first["x"], second["x"])
    height = min(first["y"] + first["height"], second["y"] + second["height"]) - max(first["y"], second["y"])
    return max(width, 0) * max(height, 0)


def test_at_1280_pixels_the_table_view_and_details_are_apart_and_every_header_can_be_read(page):
    assert page.viewport_size == VIEWPORT
    table = page.locator(".pocaduck-explorer-browser .pocaduck-table")
    table.evaluate("table => { table.scrollLeft = 0; }")  # clicking a row scrolled the table to the row's middle
    parts = {
        "browser": page.locator(".pocaduck-explorer-browser").bounding_box(),
        "table": table.bounding_box(),
        "viewer": page.locator(".pocaduck-explorer-viewer").bounding_box(),
        "canvas": page.locator(".pocaduck-explorer-viewer canvas").bounding_box(),
        "details": page.locator(".pocaduck-explorer-details").bounding_box(),
    }
    output = page.locator(".jp-OutputArea-output").last.bounding_box()
    assert overlap(parts["table"], parts["canvas"]) == 0
    for first, second in (("browser", "viewer"), ("browser", "details"), ("viewer", "details")):
        assert overlap(parts[first], parts[second]) == 0, f"the {first} and the {second} overlap: {parts}"
    for name, box in parts.items():  # all inside the output, none cut by its right edge
        assert output["x"] - 1 <= box["x"] and box["x"] + box["width"] <= output["x"] + output["width"] + 1, name
    assert abs(parts["canvas"]["width"] - 480) < 1  # the whole canvas,
    assert parts["table"]["width"] >= 300 and parts["details"]["width"] >= 180  # and room to read the others
    # Nothing of the browser (boxes, pager, table) pokes out of its box over its neighbour.
    assert page.locator(".pocaduck-explorer-browser").evaluate("box => box.scrollWidth <= box.clientWidth")

    # Every header is whole (no text cut inside it) and, where the table is wider than its box, scrolled to
    # inside the box: the table scrolls within its own box rather than under the view.
    headers = table.evaluate(
        """table => [...table.querySelectorAll('th')].map((th) => {
            th.scrollIntoView({block: 'nearest', inline: 'nearest'});
            const cell = th.getBoundingClientRect(), box = table.getBoundingClientRect();
            const shown = cell.left >= box.left - 0.5 && cell.right <= box.right + 0.5;
            const result = [th.dataset.column, th.scrollWidth <= th.clientWidth, shown, table.scrollLeft];
            table.scrollLeft = 0;
            return result;
        })"""
    )
    assert [column for column, _whole, _shown, _scroll in headers][:2] == ["label", "point_count"]
    assert [column for column, whole, shown, _scroll in headers if not (whole and shown)] == []
    unscrolled = [column for column, _whole, _shown, scroll in headers if scroll == 0]
    assert len(unscrolled) >= 5, f"only {unscrolled} show without scrolling the table sideways"
    # Scrolled to its far right, the table still shows each row's label at its left edge: the column is frozen.
    frozen = table.evaluate(
        """table => {
            table.scrollLeft = table.scrollWidth;
            const box = table.getBoundingClientRect();
            const label = table.querySelector('tbody td.label').getBoundingClientRect();
            const scrolled = table.scrollLeft;
            table.scrollLeft = 0;
            return [scrolled, label.left - box.left, label.right <= box.right];
        }"""
    )
    assert frozen[0] > 0 and abs(frozen[1]) < 1 and frozen[2], frozen
    # No control is cut: every button and text box of the explorer shows its whole text.
    cut = page.locator(
        ".pocaduck-explorer-browser, .pocaduck-explorer-viewer, .pocaduck-explorer-details"
    ).evaluate_all(
        """parts => parts.flatMap((part) => [...part.querySelectorAll('button, select, input[type=text]')])
            .filter((control) => control.scrollWidth > control.clientWidth + 1)
            .map((control) => control.textContent || control.placeholder || control.value)"""
    )
    assert cut == []

    # The picture in the README: this layout at 1,280 px wide, in a window made tall enough for all of it.
    differing, total, _shot = wait_for_drawing(page, page.locator(".pocaduck-explorer-viewer canvas"))
    assert differing > 200, f"only {differing} of {total} canvas pixels differ from the background"
    page.set_viewport_size({"width": VIEWPORT["width"], "height": 1600})
    try:
        table.evaluate("table => { table.scrollLeft = 0; table.scrollTop = 0; }")
        page.locator(".jp-OutputArea-output").last.screenshot(path=ARTIFACTS / "explorer.png")
    finally:
        page.set_viewport_size(VIEWPORT)


def test_clicking_a_header_sorts_by_that_column_and_again_reverses(page):
    header = page.locator(".pocaduck-table th[data-column='block_count']")
    for arrow, descending in (("▼", True), ("▲", False)):
        header.click()
        # The arrow turns at once; the kernel's sorted page follows: wait for both.
        page.wait_for_function(
            """([arrow, descending]) => {
                const header = document.querySelector(".pocaduck-table th[data-column='block_count']");
                const cells = [...document.querySelectorAll('.pocaduck-table tbody tr td:nth-child(3)')];
                const values = cells.map((cell) => Number(cell.textContent));
                const sorted = [...values].sort((a, b) => (descending ? b - a : a - b));
                return header.textContent.endsWith(arrow) && values.length === 50
                    && values.every((value, i) => value === sorted[i]);
            }""",
            arg=[arrow, descending],
            timeout=30_000,
        )
        values = [int(text) for text in page.locator(".pocaduck-table tbody tr td:nth-child(3)").all_inner_texts()]
        assert values == sorted(values, reverse=descending)


def select_rows(page, labels: list[str]) -> None:
    """Select exactly these rows: click the first, Ctrl-click the others; wait for their legend rows."""
    for i, label in enumerate(labels):
        page.locator(f".pocaduck-table tbody tr[data-label='{label}']").click(modifiers=["Control"] if i else [])
    page.wait_for_function(
        "(n) => document.querySelectorAll('.pocaduck-legend-row').length === n", arg=len(labels), timeout=60_000
    )


def drawn_points(root: Path, labels: list[int]) -> dict[int, np.ndarray]:
    from pocaduck import Query

    with Query(str(root / "store")) as query:
        return {label: query.get_points(label)[:, :3].astype(np.float64) for label in labels}


def test_the_view_explains_its_colours_and_axes_in_nm_at_1280_pixels(page, root):
    label = page.locator(".pocaduck-table tbody tr").first.get_attribute("data-label")
    select_rows(page, [label])
    viewer = page.locator(".pocaduck-explorer-viewer")
    assert viewer.locator(".pocaduck-legend-row .pocaduck-swatch").count() == 1  # by label: its swatch
    viewer.locator("select").first.select_option("depth")
    viewer.locator(".pocaduck-colorbar").wait_for(timeout=60_000)
    points = drawn_points(root, [int(label)])[int(label)]  # the demo store's voxels are 8 nm: all drawn
    z_low, z_high = points[:, 2].min() * 8, points[:, 2].max() * 8
    assert viewer.locator(".pocaduck-colorbar-name").inner_text() == "z (nm)"
    assert viewer.locator(".pocaduck-colorbar-low").inner_text() == f"{z_low:,.0f}"
    assert viewer.locator(".pocaduck-colorbar-high").inner_text() == f"{z_high:,.0f}"
    assert viewer.locator(".pocaduck-legend-row .pocaduck-swatch").count() == 0  # no swatch to contradict the ramp

    viewer.locator(".widget-checkbox", has_text="axes").locator("input").check()
    note = viewer.locator(".pocaduck-axes-note")
    page.wait_for_function(
        "() => document.querySelector('.pocaduck-explorer-viewer .pocaduck-axes-note').textContent.includes('tick')",
        timeout=60_000,
    )
    corner = ", ".join(f"{value:,.0f}" for value in points.min(axis=0) * 8)
    assert f"axes from ({corner}) nm" in note.inner_text()
    longest = float((points.max(axis=0) - points.min(axis=0)).max() * 8)
    step = float(note.locator(".pocaduck-axes-step").inner_text().split()[-2])
    assert longest / 8 <= step <= longest / 2  # in nm: 4 to 8 ticks along the longest axis
    assert page.viewport_size["width"] == 1280
    legend, canvas = viewer.locator(".pocaduck-colorbar").bounding_box(), viewer.locator("canvas").bounding_box()
    assert overlap(legend, canvas) == 0 and legend["width"] > 100  # beside or under the canvas, whole
    differing, _total, _shot = wait_for_drawing(page, viewer.locator("canvas"))
    assert differing > 200
    viewer.screenshot(path=ARTIFACTS / "viewer-explained.png")
    viewer.locator("select").first.select_option("label")
    viewer.locator(".widget-checkbox", has_text="axes").locator("input").uncheck()


def screen_position(points: dict[int, np.ndarray], target: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """Where the viewer's camera, fitted to ``points`` (voxels, 8 nm), draws the voxel ``target``, in pixels."""
    every = np.concatenate(list(points.values()))
    origin = np.round((every.min(axis=0) + every.max(axis=0)) / 2)
    drawn = ((every - origin) * 8).astype(np.float32).astype(np.float64)
    low, high = drawn.min(axis=0), drawn.max(axis=0)
    center, radius = (low + high) / 2, max(float(np.linalg.norm(high - low)) / 2, 1e-3)
    half_fov = np.radians(45 / 2)
    direction = np.array([1.0, -1.2, 0.8]) / np.linalg.norm([1.0, -1.2, 0.8])
    eye = center + direction * radius / np.tan(half_fov) * 1.1
    forward = (center - eye) / np.linalg.norm(center - eye)
    right = np.cross(forward, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    relative = (target - origin) * 8 - eye
    depth = relative @ forward
    x = (relative @ right) / (depth * np.tan(half_fov) * width / height)
    y = (relative @ up) / (depth * np.tan(half_fov))
    return (x + 1) / 2 * width, (1 - y) / 2 * height


def test_double_clicking_a_drawn_point_shows_its_label_and_selects_its_row(page, root):
    labels = [page.locator(".pocaduck-table tbody tr").nth(i).get_attribute("data-label") for i in (0, 1)]
    select_rows(page, labels)
    viewer = page.locator(".pocaduck-explorer-viewer")
    canvas = viewer.locator("canvas")
    wait_for_drawing(page, canvas)
    box = canvas.bounding_box()
    points = drawn_points(root, [int(label) for label in labels])
    # The second label's point nearest the camera: nothing drawn lies in front of it.
    every = np.concatenate(list(points.values()))
    origin = np.round((every.min(axis=0) + every.max(axis=0)) / 2)
    toward_camera = np.array([1.0, -1.2, 0.8])
    target = points[int(labels[1])][np.argmax((points[int(labels[1])] - origin) @ toward_camera)]
    x, y = screen_position(points, target, round(box["width"]), round(box["height"]))
    assert 0 < x < box["width"] and 0 < y < box["height"]
    started = time.perf_counter()
    canvas.dblclick(position={"x": x, "y": y})
    page.wait_for_function(
        "(label) => (document.querySelector('.pocaduck-explorer-viewer .pocaduck-picked-label') || {}).textContent"
        " === label",
        arg=labels[1],
        timeout=30_000,
    )
    shown_after = time.perf_counter() - started
    page.wait_for_function(
        "(label) => [...document.querySelectorAll('.pocaduck-table tbody tr.selected')]"
        ".map((row) => row.dataset.label).join() === label",
        arg=labels[1],
        timeout=30_000,
    )
    picked = viewer.locator(".pocaduck-picked").inner_text()
    print(f"label shown {shown_after * 1e3:.0f} ms after the double-click; {picked}")
    assert f"picked label {labels[1]} at voxel (" in picked
    viewer.screenshot(path=ARTIFACTS / "viewer-picked.png")


def histogram_counts(page, column: str) -> list[int]:
    return page.locator(f".pocaduck-histogram[data-histogram='{column}'] rect.bar").evaluate_all(
        "bars => bars.map((bar) => Number(bar.dataset.count))"
    )


def test_dragging_on_a_histogram_filters_the_rows_and_redraws_the_other_histograms(page, root):
    from pocaduck import Query

    histogram = page.locator(".pocaduck-histogram[data-histogram='point_count']")
    before = {column: histogram_counts(page, column) for column in ("point_count", "block_count", "max_z")}
    histogram.scroll_into_view_if_needed()  # the mouse drags at screen positions: the histogram must be on screen
    box = histogram.bounding_box()
    page.mouse.move(box["x"] + 1, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2, steps=5)
    page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    # The kernel's answer carries the brush back: the band's bounds, then the new page.
    page.wait_for_function(
        "() => document.querySelector(\".pocaduck-histogram[data-histogram='point_count']\")?.dataset.high",
        timeout=30_000,
    )
    histogram = page.locator(".pocaduck-histogram[data-histogram='point_count']")
    low, high = int(histogram.get_attribute("data-low")), int(histogram.get_attribute("data-high"))
    with Query(root / "store") as query:
        where = "FROM labels WHERE point_count BETWEEN ? AND ?"
        rows = query.sql(f"SELECT label {where}", [low, high], "arrow")
        expected = sorted(str(label) for label in rows.column("label").to_pylist())
        total = query.sql(f"SELECT count(*) AS n {where}", [low, high], "arrow").column("n")[0].as_py()
        block_counts = query.sql(
            f"SELECT block_count, count(*) AS n {where} GROUP BY block_count", [low, high], "arrow"
        ).to_pylist()
    assert 0 < total < 56, (low, high, total)  # the drag kept some labels, not all
    page.wait_for_function(
        """(expected) => {  // in whatever order the earlier tests left the table
            const rows = [...document.querySelectorAll('.pocaduck-table tbody tr')];
            const kept = new Set(expected);
            return rows.length === Math.min(expected.length, 50) && rows.every((row) => kept.has(row.dataset.label));
        }""",
        arg=expected,
        timeout=30_000,
    )
    assert f"of {total}" in page.locator(".widget-hbox", has_text=f"of {total}").first.inner_text()
    # Its own histogram keeps every bar (the brush shows as a band); the others count the kept rows only.
    assert histogram_counts(page, "point_count") == before["point_count"]
    assert histogram.locator("rect.band").is_visible()
    after = {column: histogram_counts(page, column) for column in ("block_count", "max_z")}
    assert sum(after["block_count"]) == sum(after["max_z"]) == total
    assert after["block_count"] != before["block_count"] and after["max_z"] != before["max_z"]
    assert sorted(c for c in after["block_count"] if c) == sorted(row["n"] for row in block_counts)
    page.locator(".pocaduck-table").screenshot(path=ARTIFACTS / "label-table-brushed.png")

    histogram.dblclick()  # clears the brush: every label again
    page.wait_for_function(
        "() => document.querySelectorAll('.pocaduck-table tbody tr').length === 50"
        " && !document.querySelector(\".pocaduck-histogram[data-histogram='point_count']\").dataset.high",
        timeout=30_000,
    )
    assert histogram_counts(page, "block_count") == before["block_count"]
