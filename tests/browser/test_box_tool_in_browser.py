"""The explorer's box tool in a real JupyterLab: typed corners and one click shrink the table to the labels inside."""

from __future__ import annotations

import nbformat
import pytest
from lab import error_outputs, notebook_run, skip_without_browser

skip_without_browser()

# Label i's five points all sit at (10 i, 10 i, 10 i): the box [0, 35)^3 holds labels 1, 2 and 3 only.
SETUP = """\
import numpy as np
from pocaduck.widgets import Explorer

from pocaduck import Ingestor, consolidate

with Ingestor("store", "w0") as ingestor:
    for label in range(1, 11):
        ingestor.write(label, "b0", np.full((5, 3), 10 * label))
consolidate("store")
explorer = Explorer("store")
explorer"""


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("box-lab")
    kernel = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    # Without a kernelspec JupyterLab asks which kernel to start, and nothing runs.
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP)], metadata={"kernelspec": kernel})
    nbformat.write(notebook, root / "box.ipynb")
    with notebook_run(root, "box.ipynb", {"width": 1280, "height": 800}, "box-tool.png") as page:
        page.wait_for_selector(".pocaduck-table tbody tr", timeout=180_000)
        yield page


def test_typed_corners_and_a_click_list_only_the_labels_in_the_box(page):
    rows = page.locator(".pocaduck-explorer-browser .pocaduck-table tbody tr")
    assert rows.count() == 10
    corners = page.locator(".pocaduck-explorer-box input")
    for position, value in enumerate(["0", "0", "0", "35", "35", "35"]):
        corners.nth(position).fill(value)
        corners.nth(position).press("Enter")  # a number box reports its value on Enter
    page.locator(".pocaduck-explorer-box button", has_text="labels in box").click()
    page.wait_for_function(
        "() => document.querySelectorAll('.pocaduck-explorer-browser .pocaduck-table tbody tr').length === 3",
        timeout=60_000,
    )
    labels = rows.evaluate_all("rows => rows.map((row) => row.querySelector('td').textContent.trim())")
    assert sorted(labels) == ["1", "2", "3"]
    # The message is its own widget: its update may reach the page after the table's.
    page.wait_for_function(
        "() => document.querySelector('.pocaduck-explorer-box').innerText.includes('3 labels in the box')",
        timeout=60_000,
    )
    assert error_outputs(page) == []
