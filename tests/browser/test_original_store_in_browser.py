"""The widgets on a store written by the real pocaduck==0.1.1, in real JupyterLab in real headless Chromium.

The store is written by the original library itself (tests/_original.py) and
named to the notebook's kernel in ``POCADUCK_ORIGINAL_STORE``. Its labels are
1, 42 and 2**62 + 5: the last is exact only if it crosses to the browser as a
string, never as a JavaScript number.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _original import files_and_times
from lab import (
    ARTIFACTS,
    error_outputs,
    notebook_run,
    skip_without_browser,
    wait_for_drawing,
    wait_for_every_cell_run,
)

HERE = Path(__file__).parent

skip_without_browser()


@pytest.fixture(scope="module")
def original(original_stores):
    """(store, what the original's Query answered on it, its files and their times before the notebook ran)."""
    store, answers = original_stores()
    return store, answers, files_and_times(store)


@pytest.fixture(scope="module")
def page(original, tmp_path_factory):
    """original_store.ipynb opened in JupyterLab on the original's store, every cell run to the end."""
    store, _, _ = original
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(HERE / "original_store.ipynb", root / "original_store.ipynb")
    with notebook_run(
        root,
        "original_store.ipynb",
        {"width": 1700, "height": 1100},
        "original-store-notebook.png",
        env={"POCADUCK_ORIGINAL_STORE": str(store)},
    ) as page:
        wait_for_every_cell_run(page)
        yield page


def point_counts(answers: dict) -> dict[str, int]:
    """The original's point count per label (before its de-duplication, as its index counts), labels as text."""
    return {str(label): int(answers[f"count_{label}"]) for label in answers["labels"].tolist()}


def test_the_table_shows_every_label_of_the_original_store_with_its_point_count(page, original):
    _, answers, _ = original
    counts = point_counts(answers)
    page.wait_for_selector(".pocaduck-table tbody tr", timeout=60_000)
    rows = page.locator(".pocaduck-table tbody tr")
    headers = page.locator(".pocaduck-table th").all_inner_texts()
    assert headers[0] == "label" and headers[1].startswith("point_count")
    shown = {
        rows.nth(i).get_attribute("data-label"): int(rows.nth(i).locator("td").nth(1).inner_text())
        for i in range(rows.count())
    }
    assert rows.count() == len(counts) == 3
    assert shown == counts
    assert [rows.nth(i).locator("td").first.inner_text() for i in range(3)] == list(shown)  # the cells, too
    largest_first = sorted(counts, key=lambda label: (-counts[label], int(label)))
    assert [rows.nth(i).get_attribute("data-label") for i in range(3)] == largest_first
    assert page.locator(".widget-hbox", has_text="1–3 of 3").count() >= 1  # the pager counts them all, too
    page.locator(".pocaduck-table").screenshot(path=ARTIFACTS / "original-store-table.png")


def test_clicking_a_row_draws_the_points_the_original_returns_and_describes_the_label(page, original):
    _, answers, _ = original
    label = 2**62 + 5
    points = len(answers[f"points_{label}"])  # de-duplicated, as the original's get_points returns them
    row = page.locator(f".pocaduck-table tbody tr[data-label='{label}']")
    row.click()
    legend = page.locator(".pocaduck-legend-row")
    legend.first.wait_for(timeout=60_000)
    assert "selected" in row.get_attribute("class")
    assert legend.count() == 1
    assert f"{label} {points:,} pts" in legend.first.inner_text()
    page.get_by_text(f"showing {points:,} of {points:,} points").wait_for(timeout=60_000)  # the viewer's status line

    details = page.locator(".pocaduck-details")
    details.wait_for(timeout=60_000)
    text = details.inner_text()
    assert f"label {label}" in text
    assert f"point_count\t{int(answers[f'count_{label}']):,}" in text
    assert f"block_count\t{len(answers[f'blocks_{label}'])}" in text

    canvas = page.locator(".jp-OutputArea-output canvas").last
    differing, total, shot = wait_for_drawing(page, canvas)
    (ARTIFACTS / "original-store-viewer.png").write_bytes(shot)
    assert differing > 200, f"only {differing} of {total} canvas pixels differ from the background"
    assert differing < total


def test_the_explorer_opens_on_the_original_store_and_its_summary_shows_no_error(page, original):
    store, answers, untouched = original
    summary = page.locator(".jp-CodeCell").nth(1).locator(".jp-OutputArea-output").inner_text()
    assert "'format': 'pocaduck 0.1.x" in summary
    assert "'labels': 3" in summary
    assert f"'points': {sum(point_counts(answers).values())}" in summary
    assert error_outputs(page) == []
    assert files_and_times(store) == untouched, "the widgets must not change an original store"
