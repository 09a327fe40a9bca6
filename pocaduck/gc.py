"""Garbage collection: remove the files no index refers to any more, only when asked.

Compaction and re-runs of workers leave the old files in place so that readers
holding the old layout keep working; nothing removes them behind a reader's
back. ``collect_garbage`` removes, after those readers have reopened:

- compaction generations other than the one the unified index is built on
  (including the parts of a killed compaction: it then starts over),
- leftovers of building the generation in force,
- sessions that ``workers/*/finalized.json`` lists as superseded and that the
  unified index no longer refers to,
- index versions (a copy of a unified index and its label directory) other
  than the one the unified index in force names,
- the half-built unified index of a killed consolidation (never a live one's:
  each build holds a lock while its process lives),
- the staging files of mapping versions whose writer was killed
  (``mappings/.NAME.*.writing``, over an hour old: a version is written in
  seconds to a minute, and its writer holds no lock gc could ask).

It refuses a folder that holds no pocaduck store, deleting nothing there.

It keeps every worker's finalized session, even one a compaction covers:
consolidation rebuilds from those when a covered worker is re-run.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import duckdb

from . import layout
from .arguments import flag
from .config import StorageConfig
from .consolidate import write_failures_reported
from .errors import CompactionBusyError, DamagedStoreError
from .index import attach_read_only
from .label_directory import recorded_build
from .storage import Storage, lock_is_held
from .store import Store, open_store


@dataclass(frozen=True)
class GarbageReport:
    """The store-relative paths removed (or, for a dry run, that would be)."""

    removed: list[str] = field(default_factory=list)
    dry_run: bool = False


def collect_garbage(
    storage_config: Store | StorageConfig | str | os.PathLike, *, dry_run: bool = False
) -> GarbageReport:
    """Remove unreferenced generations and superseded sessions; ``dry_run`` only lists them, read-only.

    Readers that opened the store before the last compaction or consolidation
    may still read those files: run this once they have reopened.

    >>> import tempfile
    >>> from pocaduck import create_store
    >>> store = tempfile.mkdtemp()
    >>> _ = create_store(store)
    >>> collect_garbage(store).removed
    []
    """
    dry_run = flag(dry_run, "dry_run")
    store = open_store(storage_config)
    storage = store.storage
    store.require("gc")
    # A dry run writes nothing, so it takes no lock and works on a store it may not write; what it lists
    # while a compaction runs may include that compaction's unfinished files.
    lock = contextlib.nullcontext(True) if dry_run else storage.lock(layout.COMPACTION_LOCK)
    with write_failures_reported(storage, "garbage collection"), lock as free:
        if not free:
            raise CompactionBusyError(f"a compaction is running on {store.path}; collect garbage after it")
        # Listed before the index is read: a consolidation uploads its index version only once its index is
        # in force, so every version listed here belongs to the index read next or to an older one.
        versions = [layout.index_version(build) for build in storage.listdir(layout.INDEX_VERSIONS)]
        referenced = _referenced_paths(store)
        garbage = (
            _unreferenced_compactions(storage, referenced)
            + _unreferenced_sessions(storage, referenced)
            + [path for path in versions if path not in referenced]
        )
        if not dry_run:
            for path in garbage:
                storage.delete_tree(path)
        builds = _dead_builds(storage, dry_run) + _stale_mapping_staging(storage, dry_run)
    return GarbageReport(garbage + builds, dry_run)


def _referenced_paths(store: Store) -> set[str]:
    """Every payload file the unified index lists, its index version, and the index of its compaction."""
    storage = store.storage
    if not storage.exists(layout.UNIFIED_INDEX):
        return set()
    con = duckdb.connect(":memory:")
    try:
        attach_read_only(con, storage.local_copy(layout.UNIFIED_INDEX), "current")
        paths = {path for (path,) in con.execute("SELECT path FROM current.files").fetchall()}
        build = recorded_build(con, "current")
    finally:
        con.close()
    generation = store.compaction_in_force()
    paths |= {layout.index_version(build)} if build else set()
    return paths | ({layout.compaction_index(generation)} if generation else set())


def _unreferenced_compactions(storage: Storage, referenced: set[str]) -> list[str]:
    garbage = []
    for name in storage.listdir(layout.COMPACTED):
        path = f"{layout.COMPACTED}/{name}"
        if name == os.path.basename(layout.COMPACTION_LOCK):
            continue
        if name.startswith("."):  # the index snapshot of a killed compaction
            garbage.append(path)
            continue
        inside = [f"{path}/{entry}" for entry in storage.listdir(path)]
        leftovers = sorted(entry for entry in inside if entry not in referenced)
        garbage.extend([path] if len(leftovers) == len(inside) else leftovers)
    return garbage


def _unreferenced_sessions(storage: Storage, referenced: set[str]) -> list[str]:
    in_use = {path.rsplit("/", 1)[0] for path in referenced if path.startswith(layout.WORKERS + "/")}
    garbage = []
    for worker_id in storage.listdir(layout.WORKERS):
        try:
            record = layout.read_finalized(storage, worker_id)
        except DamagedStoreError:  # which sessions it superseded is unknown: keep them all until a re-run says
            continue
        if record is None:
            continue
        on_disk = set(storage.listdir(layout.sessions_dir(worker_id)))
        for session_id in record.get("superseded", []):
            session = layout.session_dir(worker_id, session_id)
            if session_id in on_disk and session not in in_use:
                garbage.append(session)
    return garbage


def _dead_builds(storage: Storage, dry_run: bool) -> list[str]:
    """The leftovers of unified index builds whose process is gone (their lock is free), removed unless ``dry_run``.

    A build's index and the files beside it are in the local folder
    ``staging_dir("")``: the store's own on a local disk (where a killed one
    stays behind), a private scratch folder otherwise. A split build's label
    ranges are in the store itself, a bucket too, with their own lock.
    """
    folder = storage.staging_dir("")
    names = [
        name
        for name in os.listdir(folder)
        if name.startswith(layout.BUILDING_PREFIX) and not name.endswith(layout.BUILDING_PARTS)
    ]
    # A lock file alone may be a build that is just starting: only a build with data is judged.
    builds = sorted({_build_of(name) for name in names if not name.endswith(".lock")})
    removed = []
    for build in builds:
        # Asked without taking the lock, which a dry run on a read-only store could not: a dead build stays dead.
        if lock_is_held(os.path.join(folder, build + ".lock")):
            continue
        for name in [build + suffix for suffix in ("", *layout.BUILDING_SUFFIXES)]:
            path = os.path.join(folder, name)
            if os.path.exists(path):
                removed.append(name)
                if not dry_run:
                    os.unlink(path)
    return removed + _dead_range_parts(storage, dry_run)


def _dead_range_parts(storage: Storage, dry_run: bool) -> list[str]:
    """The label range folders of split builds whose lock is free, removed unless ``dry_run``.

    On a bucket the lock is seen from this machine only: run gc where the consolidations run, or when none does.
    """
    removed = []
    for name in storage.listdir(""):
        if not (name.startswith(layout.BUILDING_PREFIX) and name.endswith(layout.BUILDING_PARTS)):
            continue
        build_id = name.removeprefix(layout.BUILDING_PREFIX).removesuffix(layout.BUILDING_PARTS)
        lock = layout.building_parts_lock(build_id)
        # A folder holding only its lock may be a build that is just starting, as above.
        if storage.lock_is_held(lock) or set(storage.listdir(name)) <= {lock.rsplit("/", 1)[1]}:
            continue
        removed.append(name)
        if not dry_run:
            storage.delete_tree(name)
    return removed


_MAPPING_STAGING_GRACE_SECONDS = 3600.0


def _stale_mapping_staging(storage: Storage, dry_run: bool) -> list[str]:
    """Mapping versions' staging files older than the grace, removed unless ``dry_run``.

    They sit in the store's own ``mappings`` folder on a local disk; on a bucket
    they are in a private scratch folder its process removes, so there is none.
    """
    folder = os.path.join(storage.staging_dir(""), layout.MAPPINGS)  # not staging_dir(MAPPINGS): it creates it
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    oldest_kept = time.time() - _MAPPING_STAGING_GRACE_SECONDS
    removed = []
    for name in names:
        # A version's name starts with a letter or digit: a dot-file ending .writing is only ever staging.
        if not (name.startswith(".") and name.endswith(".writing")):
            continue
        path = os.path.join(folder, name)
        with contextlib.suppress(FileNotFoundError):  # its writer finished or gave up meanwhile
            if os.path.getmtime(path) > oldest_kept:
                continue
            if not dry_run:
                os.unlink(path)
            removed.append(f"{layout.MAPPINGS}/{name}")
    return removed


def _build_of(name: str) -> str:
    """The build a file beside a unified index build belongs to.

    >>> _build_of(layout.BUILDING_PREFIX + "3fa9.labeldir") == layout.BUILDING_PREFIX + "3fa9"
    True
    """
    for suffix in layout.BUILDING_SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name
