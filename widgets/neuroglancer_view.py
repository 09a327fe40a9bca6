"""Neuroglancer in the notebook: a store's export served from this kernel, chosen labels selected as segments.

The export (:func:`pocaduck.export_neuroglancer`) is written once into a cache
folder per store (``$POCADUCK_CACHE_DIR`` or ``~/.cache/pocaduck``, then
``neuroglancer/``) and reused while the store is unchanged; an export folder or
bucket URL given instead is used as it is.

Everything is served by neuroglancer's own Python package, so nothing is
fetched from the internet: ``neuroglancer.Viewer`` serves the web client it
bundles and the viewer state, and its ``StaticFileServer`` (tornado, with the
CORS headers and the HTTP range requests that reading shards needs) serves a
local export folder. An export in a bucket is read by neuroglancer straight
from the bucket. The view is an iframe on the kernel's loopback address: it
shows where the browser runs on the kernel's machine (JupyterLab on a laptop or
workstation); with a remote kernel, forward the two ports or open
``view.url`` through a tunnel.

Neuroglancer shows an annotation layer's points of the segments selected in a
segmentation layer linked to it; the points come through the export's
``label`` relationship, one label at a time, however large the store. Each
label is drawn in its colour of the point cloud viewer (``label_color``), so a
neuron looks the same in both: the layer ``labels`` lists the selection with
those segment colours, and since an annotation layer has one colour, each label
has its own pair of layers, ``points <label>`` linked to ``label <label>``
(a segmentation layer holding no volume, only that one segment).
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
import threading
from collections.abc import Iterable
from typing import Any

import ipywidgets as w
import numpy as np

from pocaduck import ExportFolderError, Reader, StorageConfig, Store, export_neuroglancer, open_store
from pocaduck.keys import check_label

from ._colors import label_color
from ._selection import Selection

_servers: dict[str, Any] = {}  # export folder -> its StaticFileServer, one per folder per kernel
_servers_lock = threading.Lock()


def neuroglancer_viewer(
    store_or_export: Reader | Store | StorageConfig | str | os.PathLike,
    labels: int | Iterable[int] = (),
    *,
    export_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    height: int = 560,
) -> NeuroglancerView:
    """Neuroglancer showing a store's points, ``labels`` selected; a store is exported first (or its export reused).

    ``store_or_export`` is a store (path, URL, StorageConfig, Store or open reader) or the folder or
    URL of an export. ``export_dir`` chooses where a store is exported (default: a cache folder).

    Example::

        view = neuroglancer_viewer(store, labels=[42, 43])
        view.show([44])
    """
    return NeuroglancerView(store_or_export, labels, export_dir=export_dir, workers=workers, height=height)


class NeuroglancerView(w.VBox):
    """Neuroglancer in an iframe; ``show`` changes the labels selected. ``viewer`` is the ``neuroglancer.Viewer``.

    Given a ``selection_state`` (a ``Selection``, as the explorer hands it), it shows that selection's
    ``labels_to_draw`` and follows it: an empty selection shows no segment.

    Example::

        view = NeuroglancerView(store, [42])
        with view.viewer.txn() as state:   # anything neuroglancer's Python API can do
            state.layout = "xy-3d"
    """

    def __init__(
        self,
        store_or_export: Reader | Store | StorageConfig | str | os.PathLike,
        labels: int | Iterable[int] = (),
        *,
        export_dir: str | os.PathLike | None = None,
        workers: int | None = None,
        height: int = 560,
        selection_state: Selection | None = None,
    ):
        import neuroglancer

        self.export = exported(store_or_export, export_dir, workers)
        self.info = json.loads(open_store(self.export).storage.read_bytes("info"))
        self.source = f"precomputed://{_served(self.export)}"
        self.viewer = neuroglancer.Viewer()
        dimensions = self.info["dimensions"]
        with self.viewer.txn() as state:
            state.dimensions = neuroglancer.CoordinateSpace(
                names=list(dimensions), units=[unit for _, unit in dimensions.values()],
                scales=[scale for scale, _ in dimensions.values()],
            )  # fmt: skip
            state.layers["labels"] = neuroglancer.SegmentationLayer(source=[])
            state.layout = "3d"
        self.url = self.viewer.get_viewer_url()
        frame = w.HTML(
            f"<iframe src='{html.escape(self.url)}' class='pocaduck-neuroglancer' "
            f"style='width:100%;height:{int(height)}px;border:0'></iframe>"
        )
        link = w.HTML(f"<a href='{html.escape(self.url)}' target='_blank'>open in a tab of its own</a>")
        super().__init__([frame, link], layout=w.Layout(width="100%"))
        if selection_state is None:
            self.show(labels)
        else:
            self.show(selection_state.labels_to_draw)

            def follow(_change: dict) -> None:
                labels = selection_state.labels_to_draw
                if sorted(labels) != self.labels:  # the same segments: the camera stays where the user put it
                    self.show(labels)

            selection_state.observe(follow, "revision")

    @property
    def labels(self) -> list[int]:
        """The labels selected, as the viewer's state holds them."""
        return sorted(int(segment) for segment in self.viewer.state.layers["labels"].segments)

    def show(self, labels: int | Iterable[int]) -> None:
        """Select exactly these labels and aim the view at the export's bounding box.

        Example::

            view.show([42, 43])
        """
        import neuroglancer

        chosen = [check_label(label) for label in np.atleast_1d(np.asarray(labels, dtype=object)).tolist()]
        lower, upper = np.array(self.info["lower_bound"]), np.array(self.info["upper_bound"])
        scales = np.array([scale for scale, _ in self.info["dimensions"].values()])
        wanted = {f"{kind} {label}" for label in chosen for kind in ("label", "points")}
        with self.viewer.txn() as state:
            for layer in [layer.name for layer in state.layers]:
                if layer != "labels" and layer not in wanted:
                    del state.layers[layer]
            state.layers["labels"].segments = chosen
            state.layers["labels"].segment_colors = {label: label_color(label) for label in chosen}
            for label in chosen:
                if f"points {label}" in state.layers:
                    continue
                state.layers[f"label {label}"] = neuroglancer.SegmentationLayer(
                    source=[], segments=[label], segment_colors={label: label_color(label)}
                )
                state.layers[f"points {label}"] = neuroglancer.AnnotationLayer(
                    source=self.source,
                    linked_segmentation_layer={"label": f"label {label}"},
                    filter_by_segmentation=["label"],
                    annotation_color=label_color(label),
                )
            state.position = (lower + upper) / 2
            # In voxels of the finest axis: neuroglancer's canonical unit when voxels are anisotropic.
            state.projection_scale = float(np.max((upper - lower) * scales) / scales.min()) * 1.6 or 1.0


def exported(
    source: Reader | Store | StorageConfig | str | os.PathLike,
    export_dir: str | os.PathLike | None,
    workers: int | None,
) -> str:
    """Where the export to show is: ``source`` if it is an export, else the store's export (written if needed)."""
    if isinstance(source, Reader):
        source = source.storage_config
    store = open_store(source)
    if _is_export(store):
        return store.path
    folder = os.fspath(export_dir) if export_dir is not None else _cache_folder(store)
    try:
        export_neuroglancer(store, folder, workers=workers)
    except ExportFolderError:
        if export_dir is not None:
            raise
        shutil.rmtree(folder)  # our own cache of an older version of the store
        export_neuroglancer(store, folder, workers=workers)
    return folder


def _is_export(store: Store) -> bool:
    if not store.storage.exists("info"):
        return False
    try:
        return json.loads(store.storage.read_bytes("info")).get("@type") == "neuroglancer_annotations_v1"
    except ValueError:
        return False


def _cache_folder(store: Store) -> str:
    root = os.environ.get("POCADUCK_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "pocaduck")
    return os.path.join(root, "neuroglancer", hashlib.sha256(store.path.encode()).hexdigest()[:16])


def _served(export: str) -> str:
    """The URL neuroglancer reads ``export`` from: a bucket URL as it is, a local folder served from this kernel."""
    if "://" in export and not export.startswith("file://"):
        return export
    from neuroglancer.static_file_server import StaticFileServer

    folder = os.path.abspath(export.removeprefix("file://"))
    with _servers_lock:
        if folder not in _servers:
            _servers[folder] = StaticFileServer(folder, bind_address="127.0.0.1", daemon=True)
        return _servers[folder].url
