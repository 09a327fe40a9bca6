"""Jupyter widgets for pocaduck stores: find labels, look at their points, watch ingestion.

Install with ``pip install pocaduck[widgets]`` (and ``pocaduck[neuroglancer]`` for
``neuroglancer_viewer``). The widgets take a store path, a ``StorageConfig`` or an open ``Query``.

Example::

    from pocaduck.widgets import Explorer
    Explorer(store)
"""

from ._selection import InvalidBrushError, Selection
from .browser import LabelBrowser, LabelNotFoundError
from .explorer import Explorer
from .monitor import IngestionMonitor, WorkerPanel
from .neuroglancer_view import NeuroglancerView, neuroglancer_viewer
from .viewer import PointCloudViewer

__all__ = [
    "Explorer",
    "IngestionMonitor",
    "InvalidBrushError",
    "LabelBrowser",
    "LabelNotFoundError",
    "NeuroglancerView",
    "PointCloudViewer",
    "Selection",
    "WorkerPanel",
    "neuroglancer_viewer",
]
