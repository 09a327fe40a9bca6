"""neuroglancer_viewer exports a store once, serves the export from the kernel and selects the labels asked for;
the Explorer's "open in neuroglancer" follows the selection."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from pocaduck import Ingestor, consolidate, create_store

pytest.importorskip("neuroglancer")
from pocaduck.widgets import Explorer, neuroglancer_viewer
from pocaduck.widgets._colors import label_color


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("POCADUCK_CACHE_DIR", str(tmp_path / "cache"))
    path = str(tmp_path / "store")
    create_store(path, voxel_size=[4, 4, 40])
    with Ingestor(path, worker_id=0) as ingestor:
        for label in (5, 6, 2**64 - 1):
            ingestor.write(label, "b0", np.arange(30).reshape(10, 3) + label % 100)
    consolidate(path)
    return path


def test_the_view_serves_the_export_and_selects_the_labels(store, tmp_path):
    view = neuroglancer_viewer(store, labels=[5, 2**64 - 1], workers=1)
    assert view.labels == [5, 2**64 - 1]
    assert view.export.startswith(str(tmp_path / "cache"))
    served = view.source.removeprefix("precomputed://")
    with urllib.request.urlopen(f"{served}/info") as response:  # what neuroglancer in the browser fetches
        assert json.load(response)["dimensions"] == {"x": [4.0, "nm"], "y": [4.0, "nm"], "z": [40.0, "nm"]}
    shard = next((tmp_path / "cache").rglob("label/*.shard")).name
    ranged = urllib.request.Request(f"{served}/label/{shard}", headers={"Range": "bytes=0-15"})
    with urllib.request.urlopen(ranged) as response:  # shards are read in byte ranges
        assert response.status == 206 and len(response.read()) == 16
    for label in (5, 2**64 - 1):  # each label's points drawn in its own layer, linked to a layer of its segment
        points = view.viewer.state.layers[f"points {label}"]
        assert list(points.filter_by_segmentation) == ["label"]
        assert dict(points.linked_segmentation_layer) == {"label": f"label {label}"}
        assert [int(segment) for segment in view.viewer.state.layers[f"label {label}"].segments] == [label]
    view.show(6)
    assert view.labels == [6]
    assert sorted(layer.name for layer in view.viewer.state.layers) == ["label 6", "labels", "points 6"]
    again = neuroglancer_viewer(view.export, labels=[6])  # an export folder is shown as it is
    assert again.export == view.export and again.labels == [6]


def test_the_explorer_opens_neuroglancer_with_the_selection_and_follows_it(store):
    explorer = Explorer(store)
    explorer.browser.selected_labels = [6]
    view = explorer.open_neuroglancer()
    assert view.labels == [6] and explorer.neuroglancer is view
    explorer.browser.selected_labels = [5, 6]
    assert view.labels == [5, 6]
    assert explorer.open_neuroglancer() is view  # exported once


def test_each_label_has_the_colour_of_the_point_cloud_viewer(store):
    view = neuroglancer_viewer(store, labels=[5, 6, 2**64 - 1], workers=1)
    state = view.viewer.state.to_json()  # what the browser receives
    layers = {layer["name"]: layer for layer in state["layers"]}
    colours = {int(segment): colour for segment, colour in layers["labels"]["segmentColors"].items()}
    assert colours == {label: label_color(label) for label in (5, 6, 2**64 - 1)}
    for label in (5, 6, 2**64 - 1):
        assert layers[f"points {label}"]["annotationColor"] == label_color(label)
    assert len({label_color(label) for label in (5, 6, 2**64 - 1)}) == 3
