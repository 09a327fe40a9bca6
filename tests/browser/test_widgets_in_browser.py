"""The widgets in a real JupyterLab in real headless Chromium: rows show, a click renders points, ingestion finishes.

Runs everywhere Chromium is installed; under CI (``CI=true``) a missing Chromium
is a failure, never a skip.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lab import (
    ARTIFACTS,
    chromium,
    jupyter_lab,
    open_notebook,
    run_all_cells,
    skip_without_browser,
    wait_for_drawing,
)

HERE = Path(__file__).parent
WORKERS = 3

skip_without_browser()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The test notebook opened in JupyterLab, every cell run to the end."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(HERE / "widgets.ipynb", root / "widgets.ipynb")
    ARTIFACTS.mkdir(exist_ok=True)
    with jupyter_lab(root) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1700, "height": 1100})
        open_notebook(page, url, "widgets.ipynb")
        run_all_cells(page)
        page.wait_for_selector(".pocaduck-table tbody tr", timeout=180_000)
        yield page
        page.screenshot(path=ARTIFACTS / "notebook-end.png", full_page=True)


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
    page.wait_for_timeout(1000)  # let the new geometry draw before the picture for the README
    page.locator(".jp-OutputArea-output").last.screenshot(path=ARTIFACTS / "explorer.png")


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
