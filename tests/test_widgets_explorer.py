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


@pytest.mark.parametrize("module", ["_colors", "_source", "_wire", "monitor"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(f"pocaduck.widgets.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
