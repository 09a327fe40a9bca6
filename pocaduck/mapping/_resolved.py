"""A mapping version resolved into memory: its full mapping with every child's changes laid over it.

Two sorted views of the same assignments answer both directions with
``searchsorted``: by supervoxel (a supervoxel's body) and by body (a body's
supervoxels). A supervoxel the mapping does not name is its own body. The
arrays never change once built, so any number of threads may read them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from .. import layout
from ..storage import Storage
from ._versions import MappingVersion, lookup_stored, match_sorted, read_assignments


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


def bodies_at(storage: Storage, version: MappingVersion, supervoxels: np.ndarray) -> np.ndarray:
    """The bodies of sorted ``supervoxels`` at ``version``, without resolving it whole.

    A version this process keeps resolved answers at once; else the chain's
    changes are read, newest first, and the root is asked only for the
    supervoxels none of them names, reading only the row groups that can hold them.
    """
    with _kept_lock:
        kept = _kept.get(_key(storage, version))
    if kept is not None:
        return kept.bodies_of(supervoxels)
    bodies = supervoxels.copy()  # a supervoxel no version names is its own body
    unanswered = np.ones(len(supervoxels), bool)
    chain = (version.name, *version.ancestors)
    for depth, name in enumerate(chain):
        if not unanswered.any():
            break
        asked = supervoxels[unanswered]
        if depth == len(chain) - 1:  # the root full mapping, maybe 10^8 rows: only the groups needed
            found, found_bodies = lookup_stored(storage, name, asked)
        else:
            found, found_bodies = match_sorted(*read_assignments(storage, name), asked)
        positions = np.flatnonzero(unanswered)[found]
        bodies[positions] = found_bodies[found]
        unanswered[positions] = False
    return bodies


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
