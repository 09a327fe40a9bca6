"""An opened store: its storage, its schema, and the state of its workers and compactions.

Every verb starts from a :class:`Store`. ``open_store`` turns a path, a URL or a
:class:`StorageConfig` into one once; verbs given a Store use it as it is, so a
chain of verbs (scan, consolidate, compact, query) opens the store once. The
schema is read on first use and kept (a store's schema never changes once
written); worker and compaction state is read afresh on every call, since
other processes change it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

import duckdb
import numpy as np

from . import layout
from .config import StorageConfig, as_config
from .errors import DamagedStoreError, InvalidArgumentError, PocaduckError, SchemaMismatchError, StoreNotFoundError
from .index import attach_read_only
from .layout import Schema
from .storage import Storage, open_storage


class Store:
    """A store opened once and passed to every verb.

    >>> import tempfile, numpy as np
    >>> from pocaduck import Ingestor, Query, consolidate
    >>> store = open_store(tempfile.mkdtemp())
    >>> with Ingestor(store, worker_id=0) as ingestor:
    ...     ingestor.write(5, "b0", np.array([[1, 2, 3]]))
    >>> _ = consolidate(store)
    >>> store.kind, store.schema.columns, store.worker_states()
    ('pocaduck', ('x', 'y', 'z'), ({'0': ...}, {}))
    >>> with Query(store) as query:
    ...     query.get_points(5).tolist()
    [[1, 2, 3]]
    """

    def __init__(self, config: StorageConfig, storage: Storage):
        self.config = config
        self.storage = storage
        self._schema: Schema | None = None

    def __repr__(self) -> str:
        return f"Store({self.storage.describe('')!r})"

    @property
    def path(self) -> str:
        return self.config.base_path

    @property
    def schema(self) -> Schema | None:
        """The store's schema, or None while nothing has been written."""
        if self._schema is None:
            self._schema = layout.read_schema(self.storage)
        return self._schema

    @property
    def schema_known(self) -> bool:
        """Whether the schema was read (or given) already: asking ``schema`` then costs no request."""
        return self._schema is not None

    def remember_schema(self, schema: Schema) -> None:
        """Take ``schema`` as this store's, read by this process before for the same index version (no request).

        >>> import tempfile
        >>> store = open_store(tempfile.mkdtemp())
        >>> store.remember_schema(Schema(("x", "y", "z"), np.dtype("int32"), "string", {}))
        >>> store.schema.columns, store.schema_known
        (('x', 'y', 'z'), True)
        """
        self._schema = schema

    @property
    def kind(self) -> Literal["pocaduck", "original"] | None:
        """``"pocaduck"`` for a store of this library, ``"original"`` for one of pocaduck 0.1.x, else None."""
        try:
            if self.schema is not None:  # reads the manifest that every verb needs next anyway
                return "pocaduck"
        except PocaduckError:  # a manifest, if a damaged one: the verbs that need it say so
            return "pocaduck"
        if self.storage.exists(layout.LEGACY_INDEX) or self.storage.exists(layout.LEGACY_OPTIMIZED_INDEX):
            return "original"
        return None

    def require(self, verb: str) -> Schema:
        """The schema; refuse (before ``verb`` deletes or rewrites anything) if this is no store.

        >>> import tempfile
        >>> open_store(tempfile.mkdtemp()).require("gc")
        Traceback (most recent call last):
        ...
        pocaduck.errors.StoreNotFoundError: ... holds no pocaduck store (no pocaduck.json; it is empty): gc changes nothing there...
        """
        schema = self.schema if self.storage.root_exists() else None
        if schema is None:
            raise StoreNotFoundError(
                f"{self.storage.describe('')} holds no pocaduck store (no {layout.MANIFEST}; {self._what_is_there()}): "
                f"{verb} changes nothing there. Give the folder of a store, the one holding {layout.MANIFEST}"
            )
        return schema

    def require_or_empty(self, verb: str) -> Schema | None:
        """Like ``require``, but a folder that is absent or empty is fine too (``verb`` will create the store)."""
        if not self.storage.root_exists() or not self.storage.listdir(""):
            return None
        return self.require(verb)

    def _what_is_there(self) -> str:
        if not self.storage.root_exists():
            return "it does not exist"
        names = self.storage.listdir("")
        if not names:
            return "it is empty"
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        return f"it holds {shown}"

    def worker_states(self) -> tuple[dict[str, str], dict[str, str]]:
        """The workers: each one's last finalized session (worker → session) and the unfinished ones
        (worker → reason).

        A worker can be in both: a re-run that crashed or is still running leaves its last finalized
        session in force, which ``consolidate(ignore_unfinalized=True)`` keeps serving.
        """
        storage = self.storage
        finalized: dict[str, str] = {}
        unfinished: dict[str, str] = {}
        for worker_id in storage.listdir(layout.WORKERS):
            try:
                record = layout.read_finalized(storage, worker_id)
            except DamagedStoreError as error:
                unfinished[worker_id] = f"{error}; re-running the worker rewrites it"
                continue
            if record is not None and record.get("session") is not None:
                finalized[worker_id] = record["session"]
            with storage.lock(layout.worker_lock(worker_id)) as free:
                if not free:
                    unfinished[worker_id] = "an Ingestor is still writing it"
                    continue
            known = {None if record is None else record.get("session"), *(record or {}).get("superseded", [])}
            stray = [s for s in storage.listdir(layout.sessions_dir(worker_id)) if s not in known]
            if record is None or stray:
                unfinished[worker_id] = "it started but never called finalize() (still running, or crashed)"
        return finalized, unfinished

    def served_sessions(self) -> tuple[set[tuple[str, str]], str | None]:
        """The (worker, session) pairs the unified index in force serves, and the compaction generation it uses."""
        con = duckdb.connect(":memory:")
        try:
            attach_read_only(con, self.storage.local_copy(layout.UNIFIED_INDEX), "current")
            sessions = set(con.execute("SELECT worker_id, session_id FROM current.workers").fetchall())
            tables = con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'current' AND table_name = 'compaction'"
            ).fetchone()[0]
            generation = con.execute("SELECT generation FROM current.compaction").fetchone()[0] if tables else None
            return sessions, generation
        except (duckdb.IOException, duckdb.SerializationException, duckdb.CatalogException) as error:
            raise DamagedStoreError(
                f"the unified index {self.storage.describe(layout.UNIFIED_INDEX)} is damaged"
            ) from error
        finally:
            con.close()

    def compaction_in_force(self) -> str | None:
        """The compaction generation the unified index in force is built on, if any.

        >>> import tempfile
        >>> open_store(tempfile.mkdtemp()).compaction_in_force() is None
        True
        """
        return self.served_sessions()[1] if self.storage.exists(layout.UNIFIED_INDEX) else None


def open_store(store: Store | StorageConfig | str | os.PathLike) -> Store:
    """Open a store once, from a path, a URL (``s3://…``, ``gs://…``, ``az://…``) or a StorageConfig.

    A Store given is returned as it is. Nothing is created: a path where no store
    is yet is fine, and the first write makes it.

    >>> import tempfile
    >>> open_store(tempfile.mkdtemp()).kind is None
    True
    """
    if isinstance(store, Store):
        return store
    config = as_config(store)
    return Store(config, open_storage(config))


def create_store(
    store: Store | StorageConfig | str | os.PathLike,
    *,
    columns: tuple[str, ...] | list[str] = ("x", "y", "z"),
    dtype: str | np.dtype = "int64",
    block_id_type: str = "string",
    payload: str | None = None,
    **metadata: Any,
) -> Schema:
    """Declare a store's schema before any write (otherwise the first write fixes it).

    ``payload`` is the format every Ingestor of the store writes: ``"parquet"``
    (the default for a new store) or ``"arrow"`` (Arrow IPC files; see the
    guide's "Parquet or Arrow IPC"). Extra keyword arguments (e.g.
    ``voxel_size=(8, 8, 33)``) are kept in the manifest for viewers and tools.
    Returns the schema in force; declaring a different schema, or another
    payload, for an existing store raises ``SchemaMismatchError``.

    >>> import tempfile
    >>> create_store(tempfile.mkdtemp(), columns=("x", "y", "z", "supervoxel"), voxel_size=[8, 8, 33]).columns
    ('x', 'y', 'z', 'supervoxel')
    """
    for key in ("voxel_size", "voxel_offset"):
        if key in metadata:
            layout.check_voxel_setting(key, metadata[key])
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(f"store metadata must be plain JSON without NaN or infinity: {error}") from error
    asked = None if payload is None else layout.check_payload(payload)
    proposed = Schema(
        layout.column_names(columns),
        layout.dtype_of(dtype),
        block_id_type,
        metadata,
        payload=asked or layout.DEFAULT_PAYLOAD,
    )
    storage = open_store(store).storage
    with layout.writing(storage, layout.MANIFEST):
        schema = layout.establish_schema(storage, proposed)
    if asked not in (None, schema.payload):
        raise SchemaMismatchError(
            f"{storage.describe(layout.MANIFEST)} declares payload {schema.payload!r}, not {asked!r}: a store's "
            f"workers all write one payload. compact(store, payload={asked!r}) rewrites it in the other format"
        )
    return schema
