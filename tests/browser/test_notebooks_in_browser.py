"""The quick start, render, neuroglancer and proofreading notebooks, run in real JupyterLab in headless Chromium:
their widgets appear and draw.

The notebooks run from a copy of notebooks/ with no demo store yet, as on a
fresh checkout. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lab import (
    ARTIFACTS,
    chromium,
    error_outputs,
    jupyter_lab,
    open_notebook,
    pixels_unlike,
    run_all_cells,
    skip_without_browser,
    wait_for_drawing,
    wait_for_every_cell_run,
)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
skip_without_browser()


@pytest.fixture
def lab(tmp_path):
    """JupyterLab over a copy of notebooks/, and a headless Chromium; one each per notebook, as a user opens one
    notebook in a fresh JupyterLab (a second page would restore the first's tabs and run-all would go there)."""
    root = tmp_path
    shutil.copytree(NOTEBOOKS, root / "notebooks", ignore=shutil.ignore_patterns("*_store", "__pycache__", "*.zarr"))
    ARTIFACTS.mkdir(exist_ok=True)
    with jupyter_lab(root) as url, chromium() as browser:
        yield url, browser, root


def run_notebook_in_browser(lab, name: str):
    """A page with the notebook opened and every cell run, no error output."""
    url, browser, _root = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    open_notebook(page, url, f"notebooks/{name}")
    run_all_cells(page)
    wait_for_every_cell_run(page)
    assert error_outputs(page) == []
    return page


def test_the_quick_start_shows_every_worker_finish_and_draws_the_biggest_neurons(lab):
    page = run_notebook_in_browser(lab, "01_quick_start.ipynb")
    page.wait_for_function(
        "() => document.querySelectorAll('.pocaduck-worker.pocaduck-state-finished').length === 4", timeout=60_000
    )
    assert page.locator(".pocaduck-worker").count() == 4
    assert page.get_by_text("4 of 4 workers finished").count() == 1
    assert page.locator(".pocaduck-legend-row").count() == 3
    differing, total, shot = wait_for_drawing(page, page.locator(".jp-OutputArea-output canvas").last)
    (ARTIFACTS / "quick-start-viewer.png").write_bytes(shot)
    page.screenshot(path=ARTIFACTS / "notebook-01-quick-start.png", full_page=True)
    assert 200 < differing < total


def test_the_render_notebook_draws_every_viewer(lab):
    page = run_notebook_in_browser(lab, "03_render_neurons.ipynb")
    canvases = page.locator(".jp-OutputArea-output canvas")
    assert canvases.count() == 5  # one, several, supervoxels, anisotropic, point budget
    for index in range(5):
        differing, total, shot = wait_for_drawing(page, canvases.nth(index))
        (ARTIFACTS / f"render-viewer-{index + 1}.png").write_bytes(shot)
        assert 200 < differing < total, f"viewer {index + 1} drew {differing} of {total} pixels"
    legend_rows = [viewer.locator(".pocaduck-legend-row").count() for viewer in _viewers(page)]
    assert legend_rows == [1, 5, 2, 1, 1]
    assert page.get_by_text("showing 5,000 of").count() >= 1  # the budget's note under the last viewer
    page.screenshot(path=ARTIFACTS / "notebook-03-render.png", full_page=True)


def _viewers(page):
    """Each viewer's output area, in notebook order."""
    outputs = page.locator(".jp-OutputArea-output", has=page.locator("canvas"))
    return [outputs.nth(i) for i in range(outputs.count())]


def test_the_neuroglancer_notebook_draws_the_exported_labels_points(lab):
    pytest.importorskip("neuroglancer")
    from pocaduck.widgets._colors import label_color

    from pocaduck import Query

    page = run_notebook_in_browser(lab, "06_neuroglancer.ipynb")
    with Query(str(lab[2] / "notebooks" / "demo_store")) as query:  # the store the notebook built
        biggest = query.sql("SELECT label FROM labels ORDER BY point_count DESC LIMIT 3").label.tolist()
    # each label in its point cloud viewer colour: the first view shows three labels, the Explorer's two
    colors = [[_rgb(label_color(label)) for label in biggest[:shown]] for shown in (3, 2)]
    frames = page.locator("iframe.pocaduck-neuroglancer")
    assert frames.count() == 2  # the viewer, and the one the Explorer opened
    for index in range(2):
        frame = frames.nth(index)
        frame.scroll_into_view_if_needed()
        box = frame.bounding_box()
        below_the_layer_bar = {"x": box["x"], "y": box["y"] + 60, "width": box["width"], "height": box["height"] - 60}
        points = 0
        for _ in range(360):  # neuroglancer loads its client and the labels' shards, then draws (software WebGL)
            shot = page.screenshot(clip=below_the_layer_bar)
            of_each = [
                total - differing for differing, total in (pixels_unlike(page, shot, c, 60) for c in colors[index])
            ]
            points = sum(of_each)
            if points > 2000 and all(of_each):
                break
            page.wait_for_timeout(500)
        (ARTIFACTS / f"neuroglancer-{index + 1}.png").write_bytes(shot)
        assert points > 2000 and all(of_each), f"neuroglancer {index + 1} drew {of_each} pixels of each label's colour"
    page.screenshot(path=ARTIFACTS / "notebook-06-neuroglancer.png", full_page=True)


def _rgb(color: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` as a tuple of integers."""
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))


def test_the_proofreading_notebook_lists_bodies_and_colours_one_by_supervoxel(lab):
    page = run_notebook_in_browser(lab, "07_proofreading.ipynb")
    assert page.locator(".pocaduck-explorer-box select").first.input_value() == "cleave"  # the version picked last
    assert page.locator(".pocaduck-explorer-browser").get_by_text("supervoxel_count").count() >= 1
    assert page.get_by_text("one body: coloured by supervoxel (5 drawn)").count() == 1
    differing, total, shot = wait_for_drawing(page, page.locator(".pocaduck-explorer-viewer canvas").first)
    (ARTIFACTS / "proofreading-viewer.png").write_bytes(shot)
    page.screenshot(path=ARTIFACTS / "notebook-07-proofreading.png", full_page=True)
    assert 200 < differing < total
