"""Jupyter widgets for pocaduck stores: find labels, look at their points, watch ingestion.

Install with ``pip install pocaduck[widgets]``. The browser, viewer and
explorer take a store path, a ``StorageConfig`` or an open ``Query``.

Example::

    from pocaduck.widgets import Explorer
    Explorer(store)
"""

from .browser import LabelBrowser, LabelNotFoundError
from .explorer import Explorer
from .monitor import IngestionMonitor, WorkerPanel
from .viewer import PointCloudViewer

__all__ = ["Explorer", "IngestionMonitor", "LabelBrowser", "LabelNotFoundError", "PointCloudViewer", "WorkerPanel"]
