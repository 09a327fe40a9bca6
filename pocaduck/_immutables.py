"""The process's cache of what never changes once published: kept across Queries, keyed by what makes it immutable.

Everything a reader fetches after checking which unified index is in force (its
version token, with ``label_directory.json``) belongs to that index version:
the directory's top and pages, the footers of the point files it names (a path
is never published twice with other content while one index is in force), the
manifest. A new Query in a process that read the store before therefore asks
which version is in force, and finds the rest here when it is the same; a newly
published index has another version, so nothing kept for the old one is
served for it. Keys start with the store's
identity (:func:`store_key`: its URL and credentials, so a Query with other
credentials shares nothing with one that may read more).

Bounded by an estimate of the bytes each entry holds (``POCADUCK_IMMUTABLES_MB``,
default 256 MB), least recently used first out; thread-safe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

Value = TypeVar("Value")

_DEFAULT_BUDGET = 256 * 2**20


class ImmutableCache:
    """A least-recently-used map, bounded by the bytes its entries say they hold; one lock over it.

    >>> cache = ImmutableCache(budget=100)
    >>> cache.keep(("a",), "first", 60), cache.keep(("a",), "other", 60)  # the first kept wins a race
    ('first', 'first')
    >>> _ = cache.keep(("b",), "second", 60)  # over budget: "a", the least recently used, goes
    >>> cache.get(("a",)), cache.get(("b",))
    (None, 'second')
    """

    def __init__(self, budget: int = _DEFAULT_BUDGET):
        self.budget = budget
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        """The value kept under ``key``, or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def keep(self, key: Hashable, value: Value, weight: int) -> Value:
        """Keep ``value`` (about ``weight`` bytes) under ``key``, unless a value is kept there already: return that."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry[0]
            self._entries[key] = (value, weight)
            self._held += weight
            while self._held > self.budget and len(self._entries) > 1:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._held -= dropped
            return value

    def replace(self, key: Hashable, value: Value, weight: int) -> Value:
        """Keep ``value`` under ``key`` in place of what is kept there (what a newer opening found replaces the
        last one's); return it.

        >>> cache = ImmutableCache(budget=100)
        >>> cache.keep(("a",), "first", 10), cache.replace(("a",), "newer", 10), cache.get(("a",))
        ('first', 'newer', 'newer')
        """
        with self._lock:
            self._forget(key)
        return self.keep(key, value, weight)

    def forget(self, key: Hashable) -> None:
        """Forget the entry under ``key``, if any."""
        with self._lock:
            self._forget(key)

    def _forget(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._held -= entry[1]

    def drop(self, unwanted: Callable[[Hashable], bool]) -> None:
        """Forget every entry whose key is ``unwanted``."""
        with self._lock:
            for key in [key for key in self._entries if unwanted(key)]:
                self._held -= self._entries.pop(key)[1]

    def drop_other_versions(self, store: str, version: str) -> None:
        """Forget a store's entries of every index version but ``version``: once it is in force, nobody asks them.

        Entries of an index version have keys made by :func:`version_key`.
        """
        self.drop(lambda key: isinstance(key, tuple) and key[:2] == (_VERSION, store) and key[2] != version)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._held = 0

    def _after_fork(self) -> None:
        """A forked child starts empty: a lock its parent's threads held (the cache's, a file's) stays held here."""
        self._lock = threading.Lock()
        self._entries.clear()
        self._held = 0


IMMUTABLES = ImmutableCache(int(float(os.environ.get("POCADUCK_IMMUTABLES_MB", _DEFAULT_BUDGET / 2**20)) * 2**20))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=IMMUTABLES._after_fork)


_VERSION = "index version"


def clear_cache() -> None:
    """Forget what this process keeps of every store's index versions, and close the point files it holds open.

    A closed ``Query`` leaves the files of the index version it read open in the process (their footers are
    parsed once, so the next Query of that version reads at once). Call this before unmounting a disk that
    holds a store, or to give the memory back; later Queries read it all again.

    >>> import tempfile
    >>> import numpy as np
    >>> from pocaduck import Ingestor, Query, consolidate, clear_cache
    >>> store = tempfile.mkdtemp()
    >>> with Ingestor(store, worker_id=0) as ingestor:
    ...     ingestor.write(5, "b0", np.zeros((2, 3)))
    >>> _ = consolidate(store)
    >>> with Query(store) as query:
    ...     query.get_points(5).shape
    (2, 3)
    >>> clear_cache()
    """
    IMMUTABLES.clear()


def version_key(store: str, version: str, *what: Hashable) -> tuple:
    """The key of something read for one version of a store's unified index (its storage version token).

    ``what`` says which thing. Every publish of the index gives it a new version, so nothing kept for
    an older one is served once a newer is in force.

    >>> version_key("s1", "etag7", "file", "part-000000.arrow", 1024)
    ('index version', 's1', 'etag7', 'file', 'part-000000.arrow', 1024)
    """
    return (_VERSION, store, version, *what)


def store_key(config: Any) -> str:
    """A store's identity in the cache: a hash of its StorageConfig, credentials included (never shown).

    >>> from pocaduck import StorageConfig
    >>> store_key(StorageConfig("/a")) == store_key(StorageConfig("/a")) != store_key(StorageConfig("/b"))
    True
    """
    fields = dataclasses.asdict(config)
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=repr).encode()).hexdigest()[:32]
