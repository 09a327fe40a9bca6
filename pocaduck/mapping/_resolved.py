"""A mapping version in memory: read by ranges (``Chain``), or resolved whole (``Assignments``).

A ``Chain`` holds a version's children's changes laid over one another and
its root's file opened: a body's supervoxels or a few supervoxels' bodies are
then a read of a few row groups, however large the root (kept per version in
the process's cache of immutable things). ``Assignments`` is the full mapping
with every change laid over it, for answers about every body: two sorted views
answer both directions with ``searchsorted``. A supervoxel the mapping does not
name is its own body. Neither changes once built, so any number of threads may
read them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from .. import layout
from .._immutables import IMMUTABLES, store_key
from ..storage import Storage
from ..store import Store
from ._versions import (
    MappingVersion,
    VersionFile,
    columns_of,
    lookup_in,
    match_sorted,
    members_stored,
    read_assignments,
)


def latest_wins(supervoxels: np.ndarray, bodies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Assignments given oldest first, possibly repeating a supervoxel: sorted, each supervoxel's last body kept.

    >>> latest_wins(np.array([5, 3, 5], np.uint64), np.array([1, 2, 9], np.uint64))
    (array([3, 5], dtype=uint64), array([2, 9], dtype=uint64))
    """
    order = np.argsort(supervoxels, kind="stable")
    supervoxels, bodies = supervoxels[order], bodies[order]
    last = np.ones(len(supervoxels), bool)
    last[:-1] = supervoxels[1:] != supervoxels[:-1]
    return supervoxels[last], bodies[last]


_SCANS_BEFORE_SORTING = 8  # bodies found by a scan (10 ms at 10^7) before sorting by body (3 s at 10^7) pays


class Assignments:
    """Every assignment of one version, sorted by supervoxel (and by body once that pays).

    A body's supervoxels are found by a scan of all bodies for the first few
    bodies asked, then from a copy sorted by body, made once: a Query of a
    large mapping gives its first body without waiting for that sort.

    >>> mapping = Assignments(np.array([1, 2, 3], np.uint64), np.array([10, 10, 3], np.uint64))
    >>> mapping.bodies_of(np.array([2, 3, 4], np.uint64)).tolist(), mapping.supervoxels_of(10).tolist()  # 10 too
    ([10, 3, 4], [1, 2, 10])
    >>> mapping.supervoxels_of(3).tolist(), mapping.supervoxels_of(1).tolist(), mapping.supervoxels_of(7).tolist()
    ([3], [], [7])
    """

    def __init__(self, supervoxels: np.ndarray, bodies: np.ndarray):
        self.supervoxels = supervoxels
        self.bodies = bodies
        for array in (supervoxels, bodies):
            array.flags.writeable = False  # shared by every Query of the version in the process
        self._by_body: tuple[np.ndarray, np.ndarray] | None = None  # (bodies sorted, their supervoxels)
        self._scans = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.supervoxels)

    def bodies_of(self, supervoxels: np.ndarray) -> np.ndarray:
        """The body of each supervoxel (uint64 array in, same shape out)."""
        named, bodies = match_sorted(self.supervoxels, self.bodies, supervoxels)
        return np.where(named, bodies, supervoxels)

    def supervoxels_of(self, body: int) -> np.ndarray:
        """The sorted supervoxels whose body is ``body``: those assigned to it, and itself unless it is assigned."""
        key = np.uint64(body)
        by_body = self._sorted_by_body()
        if by_body is None:
            assigned = self.supervoxels[self.bodies == key]  # a new array, sorted as the supervoxels are
        else:
            bodies, supervoxels = by_body
            assigned = supervoxels[np.searchsorted(bodies, key, "left") : np.searchsorted(bodies, key, "right")]
        at = np.searchsorted(self.supervoxels, key)
        named = at < len(self.supervoxels) and self.supervoxels[at] == key
        if named:
            return assigned.copy()  # a Query's caller may change what it gets; the sorted copy is shared
        return np.insert(assigned, np.searchsorted(assigned, key), key)

    def _sorted_by_body(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The assignments sorted by body, made on the first call past the scans; None while scanning is cheaper."""
        if self._by_body is not None:
            return self._by_body
        with self._lock:
            if self._by_body is None:
                if self._scans < _SCANS_BEFORE_SORTING:
                    self._scans += 1
                    return None
                order = np.argsort(self.bodies, kind="stable")  # stable: each body's supervoxels stay sorted
                self._by_body = (self.bodies[order], self.supervoxels[order])
            return self._by_body


_KEPT = 2  # versions kept resolved in the process: 10^8 supervoxels take ~3 GB with both sorted views
_kept: OrderedDict[tuple[str, str], Assignments] = OrderedDict()
_kept_lock = threading.Lock()


def _key(storage: Storage, version: MappingVersion) -> tuple[str, str]:
    return storage.describe(layout.mapping_file(version.name)), version.created


def resolved(storage: Storage, version: MappingVersion) -> Assignments:
    """``resolve``, remembered for the process's next Queries of the same version (a new Query per neuron is cheap).

    Versions never change, so what was resolved stays true; the key holds the
    version's creation time too (to the microsecond, from its footer: no request),
    so a store deleted and written anew under the same path is resolved afresh.
    """
    key = _key(storage, version)
    with _kept_lock:
        if key in _kept:
            _kept.move_to_end(key)
            return _kept[key]
    assignments = resolve(storage, version)  # outside the lock: other versions need not wait for a large one
    with _kept_lock:
        _kept[key] = assignments
        while len(_kept) > _KEPT:
            _kept.popitem(last=False)
    return assignments


def resolved_if_kept(storage: Storage, version: MappingVersion) -> Assignments | None:
    """Version ``version`` as resolved whole by this process, if it still keeps it (no request); else None."""
    with _kept_lock:
        return _kept.get(_key(storage, version))


class Chain:
    """What one body or a few supervoxels at a version need, without resolving it whole.

    The children of the chain, small, are read whole and laid over one another
    (latest wins); the root is the full mapping's file opened, read by row
    groups: by supervoxel for a supervoxel's body, by body for a body's
    supervoxels. Immutable once built: threads share it.

    A body's supervoxels at the version are the root's supervoxels of that body
    (itself too if the root does not name it), minus those some child
    reassigned, plus those whose latest change names that body.
    """

    def __init__(self, storage: Storage, opened: VersionFile):
        version = opened.version
        self.version = version
        names = (version.name, *version.ancestors)
        self.root = opened if not version.ancestors else VersionFile(storage, names[-1], opened.root_location)
        tables = [opened.rows()] if version.ancestors else []  # the version's own rows come with its footer
        changes = [columns_of(table) for table in tables]
        changes += [read_assignments(storage, name) for name in names[1:-1]]
        changes.reverse()  # oldest first: the latest change of a supervoxel wins
        if changes:
            self.changed, self.changed_bodies = latest_wins(
                np.concatenate([pair[0] for pair in changes]), np.concatenate([pair[1] for pair in changes])
            )
        else:
            self.changed, self.changed_bodies = np.empty(0, np.uint64), np.empty(0, np.uint64)
        self.weight = self.root.weight + 16 * len(self.changed) + 1024

    def bodies_of(self, supervoxels: np.ndarray) -> np.ndarray:
        """The body of each of ``supervoxels`` (any order), reading only the root's row groups that hold the ones
        no child names."""
        asked, back = np.unique(supervoxels, return_inverse=True)
        found, bodies = match_sorted(self.changed, self.changed_bodies, asked)
        unanswered = np.flatnonzero(~found)
        if len(unanswered):
            named, root_bodies = lookup_in(self.root, asked[unanswered])
            bodies[unanswered] = np.where(named, root_bodies, asked[unanswered])
        return bodies[back.reshape(-1)].reshape(np.shape(supervoxels))

    def supervoxels_of_each(self, bodies: list[int]) -> list[np.ndarray] | None:
        """The sorted supervoxels of each of ``bodies``, from one read of the row groups holding them all; None
        when the root has no body section (resolve it whole then)."""
        if self.root.by_body is None:
            return None
        asked = np.unique(np.array(bodies, np.uint64))
        members, owners = members_stored(self.root, asked)
        starts, stops = np.searchsorted(owners, asked, "left"), np.searchsorted(owners, asked, "right")
        unfound = asked[starts == stops]  # no row has this body: its own supervoxel unless the root names it
        named = dict(zip(unfound.tolist(), lookup_in(self.root, unfound)[0].tolist(), strict=True))
        answers = {}
        for body, start, stop in zip(asked.tolist(), starts.tolist(), stops.tolist(), strict=True):
            found = members[start:stop]
            if start == stop and not named[body]:
                found = np.array([body], np.uint64)
            if len(self.changed):
                reassigned, _ = match_sorted(self.changed, self.changed_bodies, found)  # both sorted: no np.isin
                moved_in = self.changed[self.changed_bodies == np.uint64(body)]
                found = np.union1d(found[~reassigned], moved_in).astype(np.uint64)
            answers[body] = found
        return [answers[body].copy() for body in bodies]  # each caller may change its own


def chain(store: Store, opened: VersionFile) -> Chain:
    """The ``Chain`` of an opened version, kept in the process's cache of immutable things (a new Query per body
    reads only the version's footer).

    The key holds the store's identity with its credentials (a Chain reads through the storage that made it)
    and the version's creation time (a store deleted and written anew under the same path shares nothing).
    """
    key = ("mapping chain", store_key(store.config), *_key(store.storage, opened.version))
    found = IMMUTABLES.get(key)
    if found is not None:
        return found
    built = Chain(store.storage, opened)
    return IMMUTABLES.keep(key, built, built.weight)


def bodies_at(store: Store, opened: VersionFile, supervoxels: np.ndarray) -> np.ndarray:
    """The bodies of ``supervoxels`` at the ``opened`` version, without resolving it whole.

    A version this process keeps resolved answers at once; else the chain's
    changes answer, and the root is asked only for the supervoxels none of
    them names, reading only the row groups that can hold them.
    """
    whole = resolved_if_kept(store.storage, opened.version)
    if whole is not None:
        return whole.bodies_of(supervoxels)
    return chain(store, opened).bodies_of(supervoxels)


def resolve(storage: Storage, version: MappingVersion) -> Assignments:
    """Version ``version`` as a whole: its root's assignments with the children's changes laid over, in order."""
    chain = [*reversed(version.ancestors), version.name]
    supervoxels, bodies = read_assignments(storage, chain[0])
    if len(chain) > 1:
        changes = [read_assignments(storage, name) for name in chain[1:]]
        changed, changed_bodies = latest_wins(
            np.concatenate([pair[0] for pair in changes]), np.concatenate([pair[1] for pair in changes])
        )
        supervoxels, bodies = overlay(supervoxels, bodies, changed, changed_bodies)
    return Assignments(supervoxels, bodies)


def overlay(
    supervoxels: np.ndarray, bodies: np.ndarray, changed: np.ndarray, changed_bodies: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted assignments with sorted, unique changes laid over them: one pass, however many changes.

    >>> overlay(np.array([1, 4], np.uint64), np.array([7, 7], np.uint64), np.array([2, 4], np.uint64),
    ...         np.array([8, 9], np.uint64))
    (array([1, 2, 4], dtype=uint64), array([7, 8, 9], dtype=uint64))
    """
    bodies = bodies.copy()
    found, _ = match_sorted(supervoxels, bodies, changed)
    bodies[np.searchsorted(supervoxels, changed[found])] = changed_bodies[found]
    new = ~found
    if not new.any():
        return supervoxels, bodies
    places = np.searchsorted(supervoxels, changed[new])
    return np.insert(supervoxels, places, changed[new]), np.insert(bodies, places, changed_bodies[new])
