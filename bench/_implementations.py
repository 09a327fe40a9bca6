"""The three stores under test behind one small interface: open a writer, consolidate, open a reader.

Each is imported inside the process that measures it: the original library has
the same import name as ours, so which ``pocaduck`` is imported depends on that
process's ``PYTHONPATH`` (see ``bench_store.py``).
"""

from __future__ import annotations

from typing import Any

from _npz_layout import NpzReader, NpzWriter


class Ours:
    """This project's pocaduck."""

    name = "ours"
    below_2_63 = False
    consolidates = True

    def open_writer(self, store: str, worker_id: int) -> Any:
        from pocaduck import Ingestor

        return Ingestor(store, worker_id)

    def consolidate(self, store: str) -> None:
        from pocaduck import consolidate

        consolidate(store)

    def open_reader(self, store: str, cache_size: int = 0, **options: Any) -> Any:
        from pocaduck import Query

        return Query(store, cache_size=cache_size, **options)


class Original:
    """``pocaduck==0.1.1`` from PyPI; its labels must stay below 2**63 (it stores them as int64)."""

    name = "original"
    below_2_63 = True
    consolidates = True

    def open_writer(self, store: str, worker_id: int) -> Any:
        from pocaduck import Ingestor, StorageConfig

        return Ingestor(StorageConfig(store), worker_id)

    def consolidate(self, store: str) -> None:
        from pocaduck import Ingestor, StorageConfig

        Ingestor.consolidate_indexes(StorageConfig(store))

    def open_reader(self, store: str, cache_size: int = 0) -> Any:
        from pocaduck import Query, StorageConfig

        return Query(StorageConfig(store), cache_size=cache_size)


class NpzFolders:
    """One ``.npz`` per (label, block): nothing to consolidate, nothing held open."""

    name = "npz"
    below_2_63 = False
    consolidates = False

    def open_writer(self, store: str, worker_id: int) -> Any:
        return NpzWriter(store)

    def consolidate(self, store: str) -> None:
        raise NotImplementedError("the npz layout has no index to consolidate")

    def open_reader(self, store: str, cache_size: int = 0) -> Any:
        return NpzReader(store)


IMPLEMENTATIONS = {impl.name: impl for impl in (Ours(), Original(), NpzFolders())}
