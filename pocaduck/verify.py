"""Check a store without changing it: its manifest, its unified index, every data file and every index row.

The quick check compares each file's size with the index and each index row
with its file's row count, and opens the label directory (its top level, and
``label_directory.json``, whose every field must agree with the index);
``deep=True`` also reads every byte: the file's checksum against the one the index recorded, every Parquet page against its
own checksum (Arrow IPC files: every record batch decoded and validated), and every page of the label directory against its checksum and
against a directory rebuilt from the index. Each problem says what rewrites the damaged part: the worker to
re-run, the compaction to rebuild from the workers' sessions, or consolidation. Nothing in the store is
written (on an object store the index is downloaded into the local cache, as a
Query does).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from . import layout
from .arguments import flag
from .config import StorageConfig
from .errors import LabelDirectoryError, PocaduckError, StoreNotFoundError
from .index import attach_read_only
from .label_directory import LabelDirectory, read_pointer, recorded_build, write_label_directory
from .pointfile import count_rows
from .storage import LocalStorage, Storage
from .store import Store, open_store

_TABLES = ("files", "point_index", "labels", "workers")
_CONSOLIDATE = "run `pocaduck consolidate STORE` to rebuild it from the worker indexes"
_REWRITE_MANIFEST = (
    "restore it from a copy, or write it again with pocaduck.create_store(STORE, columns=..., dtype=..., "
    "block_id_type=...) as the data was written"
)


@dataclass(frozen=True)
class Problem:
    """One thing found wrong: the store-relative path, what is wrong with it, and what rewrites it."""

    path: str
    what: str
    repair: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify` checked and the problems it found; ``ok`` when there are none."""

    store: str
    deep: bool
    files: int = 0
    labels: int = 0
    points: int = 0
    files_without_checksum: int = 0
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def repairs(self) -> list[str]:
        """What to do, once each: the workers to re-run, the compaction to redo, consolidation."""
        return sorted({problem.repair for problem in self.problems})

    def summary(self) -> str:
        depth = "deep: sizes, checksums and pages" if self.deep else "sizes and row ranges; --deep reads every byte"
        lines = [
            f"verified {self.store} ({depth}): {self.files:,} files, {self.labels:,} labels, "
            f"{self.points:,} points; {len(self.problems)} problem{'' if len(self.problems) == 1 else 's'}"
        ]
        if self.deep and self.files_without_checksum:
            lines.append(
                f"  {self.files_without_checksum:,} files were indexed before checksums were recorded: "
                f"only their pages were checked"
            )
        lines += [f"  {problem}" for problem in self.problems]
        lines += [f"to repair: {repair}" for repair in self.repairs]
        return "\n".join(lines)


def verify(storage_config: Store | StorageConfig | str | os.PathLike, deep: bool = False) -> VerifyReport:
    """Check a consolidated store's manifest, index and data files; report every problem found.

    >>> import tempfile, numpy as np
    >>> from pocaduck import Ingestor, consolidate
    >>> store = tempfile.mkdtemp()
    >>> with Ingestor(store, worker_id="a") as ingestor:
    ...     ingestor.write(7, "block-0", np.zeros((2, 3), np.int32))
    >>> _ = consolidate(store)
    >>> report = verify(store, deep=True)
    >>> report.ok, report.files, report.labels, report.points
    (True, 1, 1, 2)
    """
    deep = flag(deep, "deep")
    store = open_store(storage_config)
    storage = store.storage
    if not storage.root_exists():
        raise StoreNotFoundError(f"no store at {store.path}")
    report: dict[str, Any] = {"store": store.path, "deep": deep}
    problems = _check_manifest(storage)
    if not storage.exists(layout.UNIFIED_INDEX):
        problems.append(Problem(layout.UNIFIED_INDEX, "missing: the store was never consolidated", _CONSOLIDATE))
        return VerifyReport(**report, problems=tuple(problems))
    con = duckdb.connect(":memory:")
    try:
        try:
            attach_read_only(con, storage.local_copy(layout.UNIFIED_INDEX), "store_index")
            present = {
                name
                for (name,) in con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = 'store_index'"
                ).fetchall()
            }
        except duckdb.Error as error:
            problems.append(Problem(layout.UNIFIED_INDEX, f"cannot be opened: {error}", _CONSOLIDATE))
            return VerifyReport(**report, problems=tuple(problems))
        absent = [name for name in _TABLES if name not in present]
        if absent:
            problems.append(Problem(layout.UNIFIED_INDEX, f"has no table {', '.join(absent)}", _CONSOLIDATE))
            return VerifyReport(**report, problems=tuple(problems))
        files = con.sql("SELECT * FROM store_index.files ORDER BY file_id").to_arrow_table().to_pylist()
        for row in files:
            what = _check_file(storage, row, deep)
            if what is not None:
                problems.append(Problem(row["path"], what, layout.rewrite_advice(row["path"])))
        problems += _check_row_ranges(con)
        problems += _check_index_version(storage, con, deep)
        (report["labels"],) = con.execute("SELECT count(*) FROM store_index.labels").fetchone()
        (points,) = con.execute("SELECT coalesce(sum(point_count), 0) FROM store_index.point_index").fetchone()
    finally:
        con.close()
    return VerifyReport(
        **report,
        files=len(files),
        points=int(points),
        files_without_checksum=sum(row.get("checksum") is None for row in files),
        problems=tuple(problems),
    )


def _check_manifest(storage: Storage) -> list[Problem]:
    if not storage.exists(layout.MANIFEST):
        return [Problem(layout.MANIFEST, "missing", _REWRITE_MANIFEST)]
    try:
        layout.read_schema(storage)
    except (ValueError, KeyError, TypeError, PocaduckError) as error:
        return [Problem(layout.MANIFEST, f"unreadable: {error!r}", _REWRITE_MANIFEST)]
    return []


def _check_file(storage: Storage, row: dict[str, Any], deep: bool) -> str | None:
    """What is wrong with one file the index lists, or None."""
    path = row["path"]
    try:
        size = storage.size(path)
    except FileNotFoundError:
        return "missing"
    if size != row["byte_size"]:
        return f"is {size:,} bytes, the index records {row['byte_size']:,} (truncated or replaced)"
    if not deep:
        return None
    data = storage.read_bytes(path)
    recorded = row.get("checksum")
    if recorded is not None and layout.checksum([data]) != recorded:
        return f"checksum {layout.checksum([data])} differs from the {recorded} recorded when it was written"
    try:
        rows = count_rows(path, data)
    except (OSError, pa.ArrowException) as error:
        return f"unreadable: {error}"
    if rows != row["row_count"]:
        return f"holds {rows:,} rows, the index records {row['row_count']:,}"
    return None


def _check_row_ranges(con: duckdb.DuckDBPyConnection) -> list[Problem]:
    """Index rows whose range is negative or reaches past their file's rows, or whose file is not listed."""
    rows = con.execute(
        "SELECT p.file_id, any_value(f.path), any_value(f.row_count), count(*), min(p.label), "
        "max(p.row_offset + p.point_count) "
        "FROM store_index.point_index p LEFT JOIN store_index.files f USING (file_id) "
        "WHERE f.file_id IS NULL OR p.row_offset < 0 OR p.point_count < 0 OR p.row_offset + p.point_count > f.row_count "
        "GROUP BY p.file_id ORDER BY p.file_id"
    ).fetchall()
    problems = []
    for file_id, path, row_count, count, label, reach in rows:
        if path is None:
            what = f"{count:,} index rows (label {label} first) name file id {file_id}, which the index does not list"
            problems.append(Problem(layout.UNIFIED_INDEX, what, _CONSOLIDATE))
        else:
            what = (
                f"{count:,} index rows (label {label} first) lie outside its {row_count:,} rows "
                f"(reaching row {reach:,}, or negative)"
            )
            problems.append(Problem(path, what, layout.rewrite_advice(path)))
    return problems


def _check_index_version(storage: Storage, con: duckdb.DuckDBPyConnection, deep: bool) -> list[Problem]:
    """The index version the index names: ``label_directory.json`` naming it, its copy of the index, its label
    directory intact and (deep) equal to the index's rows."""
    build = recorded_build(con, "store_index")
    if build is None:
        what = (
            "names no label directory (consolidated before pocaduck wrote them): readers on a bucket download it whole"
        )
        return [Problem(layout.UNIFIED_INDEX, what, _CONSOLIDATE)]
    fields = ("entries", "size", "top_bytes")  # what the pointer repeats of the directory the index records
    row = con.execute(f"SELECT {', '.join(fields)} FROM store_index.label_directory").fetchone()
    recorded = dict(zip(fields, row, strict=True))
    problems = _check_pointer(storage, build, recorded)
    copy, name = layout.index_version_index(build), layout.index_version_directory(build)
    try:
        size, expected_size = storage.size(copy), storage.size(layout.UNIFIED_INDEX)
        if size != expected_size:
            problems.append(Problem(copy, f"is {size:,} bytes, the index in force {expected_size:,}", _CONSOLIDATE))
        elif deep and layout.checksum([storage.read_bytes(copy)]) != layout.checksum(
            [storage.read_bytes(layout.UNIFIED_INDEX)]
        ):
            problems.append(Problem(copy, "differs from the index in force", _CONSOLIDATE))
    except FileNotFoundError:
        problems.append(Problem(copy, "missing", _CONSOLIDATE))
    if not storage.exists(name):
        return [*problems, Problem(name, "missing", _CONSOLIDATE)]
    try:
        directory = LabelDirectory.open(storage, name)
        if directory.entry_count != recorded["entries"]:
            what = f"holds {directory.entry_count:,} entries, the index records {recorded['entries']:,}"
            return [*problems, Problem(name, what, _CONSOLIDATE)]
        disagreement = _disagreement(directory, con) if deep else None
        if disagreement:
            problems.append(Problem(name, disagreement, _CONSOLIDATE))
    except LabelDirectoryError as error:
        problems.append(Problem(name, f"unreadable ({error})", _CONSOLIDATE))
    return problems


def _check_pointer(storage: Storage, build: str, recorded: dict[str, int]) -> list[Problem]:
    """``label_directory.json`` naming the index in force and giving its directory's ``recorded`` counts."""
    path = layout.LABEL_DIRECTORY_POINTER
    try:
        pointer = read_pointer(storage)
    except LabelDirectoryError as error:
        return [Problem(path, f"unreadable ({error})", _CONSOLIDATE)]
    if pointer is None:
        return [Problem(path, "missing: readers read the whole index", _CONSOLIDATE)]
    if pointer["build"] != build or pointer["index_version"] != storage.version(layout.UNIFIED_INDEX):
        return [Problem(path, "names another index than the one in force: readers read the whole index", _CONSOLIDATE)]
    return [
        Problem(path, f"gives {name} {pointer[name]:,}, the index in force records {value:,}", _CONSOLIDATE)
        for name, value in recorded.items()
        if pointer[name] != value
    ]


def _disagreement(directory: LabelDirectory, con: duckdb.DuckDBPyConnection) -> str | None:
    """How ``directory`` differs from the one the index gives (its files, its entries), or None."""
    with tempfile.TemporaryDirectory(prefix="pocaduck-verify-") as scratch:
        con.execute("USE store_index")
        try:
            write_label_directory(con, os.path.join(scratch, "expected"), page_bytes=directory.page_bytes)
        finally:
            con.execute("USE memory")
        expected = LabelDirectory.open(LocalStorage(scratch), "expected")
        if directory.files != expected.files:
            return "lists other files than the index"
        for found, wanted in zip(directory.entries(), expected.entries(), strict=True):
            if not np.array_equal(found, wanted):
                label = found["label"][np.argmax(found != wanted)] if len(found) == len(wanted) else found["label"][0]
                return f"disagrees with the index, from label {label} on"
    return None
