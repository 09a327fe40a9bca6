"""What a reader asks a store before its first read, asked at once: one round trip to a bucket, not three.

Opening a store for reading needs its manifest (``pocaduck.json``), the label
directory's pointer (``label_directory.json``, with the directory's top inside)
and the version of the unified index in force; none depends on another, so
they go out together (``Storage.fetch_together``). A process that opened the
store before kept its manifest with the index version it was read under
(``_immutables``): while that version is in force the manifest is not asked
again, so a new Query asks only the pointer and the version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import layout
from ._immutables import IMMUTABLES, store_key
from .label_directory import read_pointer
from .store import Store

_MANIFEST_WEIGHT = 4096


@dataclass(frozen=True)
class Opening:
    """What a store answered when a reader opened it: the pointer (None without one) and the index version in force."""

    store_key: str
    pointer: dict[str, Any] | None
    index_version: str | None

    @property
    def fetched(self) -> tuple[dict[str, Any] | None, str | None]:
        """As ``label_directory.in_force`` answers."""
        return self.pointer, self.index_version


def open_for_reading(store: Store) -> Opening:
    """Ask ``store`` for its manifest, pointer and index version at once (the manifest only if not known yet).

    The schema read lands in ``store.schema``; a store's errors (a damaged manifest first) are raised as they are.

    >>> import tempfile
    >>> from pocaduck.store import open_store
    >>> opening = open_for_reading(open_store(tempfile.mkdtemp()))
    >>> opening.pointer, opening.index_version
    (None, None)
    """
    storage = store.storage
    key = store_key(store.config)
    remembered = IMMUTABLES.get(("manifest", key))  # (index version, schema) as this process last read them
    calls = [lambda: read_pointer(storage), lambda: storage.version(layout.UNIFIED_INDEX)]
    if remembered is None and not store.schema_known:
        calls.insert(0, lambda: store.schema)  # first, so that a damaged manifest is the error reported
    *_, pointer, version = storage.fetch_together(calls)
    if version is not None and remembered is not None and remembered[0] == version and not store.schema_known:
        store.remember_schema(remembered[1])
    if version is not None and (remembered is None or remembered[0] != version):
        # A newer index is in force (or the first one this process sees): what older ones needed goes.
        IMMUTABLES.drop_other_versions(key, version)
        schema = store.schema  # read now if the store changed since the process last read it
        if schema is not None:
            IMMUTABLES.drop(lambda kept: kept == ("manifest", key))
            IMMUTABLES.keep(("manifest", key), (version, schema), _MANIFEST_WEIGHT)
    return Opening(key, pointer, version)
