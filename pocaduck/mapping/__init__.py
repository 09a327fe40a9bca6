"""Versioned supervoxel→body mappings: the stored labels are supervoxels, a mapping says which body each is in.

Versions form a history: a full mapping at the root, children that store only
the assignments they change (merges, cleaves). ``write_mapping`` publishes a
version, ``list_mappings`` lists them, ``changed_bodies`` says which bodies two
versions disagree on, and ``Query(store, mapping=name)`` (a :class:`MappedQuery`)
reads bodies. Rooms: ``_pairs`` (inputs), ``_versions`` (the files),
``_resolved`` (a version in memory), ``_api`` (the verbs), ``_query`` (reads).
"""

from ._api import changed_bodies, list_mappings, write_mapping
from ._query import MappedQuery
from ._versions import MappingVersion

__all__ = ["MappedQuery", "MappingVersion", "changed_bodies", "list_mappings", "write_mapping"]
