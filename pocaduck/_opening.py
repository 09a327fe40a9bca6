"""What a reader asks a store before its first read, asked at once: one round trip to a bucket, not three.

Opening a store for reading needs its manifest (``pocaduck.json``), the label
directory's pointer (``label_directory.json``, with the directory's top inside)
and the version of the unified index in force; none depends on another, so
they go out together (``Storage.fetch_together``). A process that opened the
store before kept its manifest with the index version it was read under
(``_immutables``): while that version is in force the manifest is not asked
again, so a new Query asks only the pointer and the version.

The process also keeps what the last opening of each store answered
(:func:`remembered_opening`). A Query on a bucket may start from it without a
request, then check it with its first verb (``alongside``: that verb's own
first reads go out in the same round trip, on the guess that nothing changed);
when a newer index is in force the guess is thrown away and the Query opens
the store as it is now.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._immutables import IMMUTABLES, store_key
from .label_directory import in_force_reads, kept_directory
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


def open_for_reading(store: Store, alongside: Sequence[Callable[[], object]] = ()) -> Opening:
    """Ask ``store`` for its manifest, pointer and index version at once (the manifest only if not known yet).

    The schema read lands in ``store.schema``; a store's errors (a damaged manifest first) are raised as they are.
    ``alongside``: reads sent in the same round trip on a guess, for what they leave in caches; their errors
    are dropped (the read that needs them makes it again and says what is wrong).

    >>> import tempfile
    >>> from pocaduck.store import open_store
    >>> opening = open_for_reading(open_store(tempfile.mkdtemp()))
    >>> opening.pointer, opening.index_version
    (None, None)
    """
    storage = store.storage
    key = store_key(store.config)
    remembered = IMMUTABLES.get(("manifest", key))  # (index version, schema) as this process last read them
    calls = in_force_reads(storage)
    if remembered is None and not store.schema_known:
        calls.insert(0, lambda: store.schema)  # first, so that a damaged manifest is the error reported
    calls.extend(_guessed(read) for read in alongside)
    *_, pointer, version = storage.fetch_together(calls)[: len(calls) - len(alongside)]
    if version is not None and remembered is not None and remembered[0] == version and not store.schema_known:
        store.remember_schema(remembered[1])
    if version is not None and (remembered is None or remembered[0] != version):
        # A newer index is in force (or the first one this process sees): what older ones needed goes.
        IMMUTABLES.drop_other_versions(key, version)
        schema = store.schema  # read now if the store changed since the process last read it
        if schema is not None:
            IMMUTABLES.replace(("manifest", key), (version, schema), _MANIFEST_WEIGHT)
    opening = Opening(key, pointer, version)
    if version is not None:
        IMMUTABLES.replace(("opening", key), opening, _MANIFEST_WEIGHT + len(str(pointer)))
    return opening


def _guessed(read: Callable[[], object]) -> Callable[[], None]:
    def call() -> None:
        with contextlib.suppress(Exception):  # a guess: the read that needs it says what is wrong
            read()

    return call


def remembered_opening(store: Store) -> tuple[Store, Opening] | None:
    """What the last opening of ``store`` in this process answered, with a Store knowing the schema read then,
    when the process still keeps all a Query needs to start from it (the manifest and the directory): no request.

    Only a guess: the index in force may have changed since. ``store`` itself is left as it is.

    >>> import tempfile
    >>> from pocaduck.store import open_store
    >>> remembered_opening(open_store(tempfile.mkdtemp())) is None  # a store this process never opened
    True
    """
    key = store_key(store.config)
    opening = IMMUTABLES.get(("opening", key))
    manifest = IMMUTABLES.get(("manifest", key))
    if opening is None or manifest is None or opening.pointer is None or manifest[0] != opening.index_version:
        return None
    if opening.pointer["index_version"] != opening.index_version or kept_directory(key, opening.pointer) is None:
        return None
    guessed = Store(store.config, store.storage)
    guessed.remember_schema(manifest[1])
    return guessed, opening
