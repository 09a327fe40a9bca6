"""Export a store as neuroglancer precomputed point annotations: :func:`export_neuroglancer`.

The modules, in the order data flows through them: ``plan`` (what is written
where, the output folder's layout and state), ``tasks`` (the picklable units of
work, run by :func:`pocaduck.executor.run_tasks`), ``annotations``, ``spatial``
and ``sharded`` (neuroglancer's encodings, spatial index and shard files); ``update``
moves a finished export of one mapping version to another.
"""

from .api import ExportReport, export_neuroglancer

__all__ = ["ExportReport", "export_neuroglancer"]
