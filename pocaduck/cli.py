"""The ``pocaduck`` command: inspect, consolidate and read stores from a shell.

Each verb is a ``_verb_*`` function registered in :func:`build_parser`. A verb
reports failure by raising: :func:`main` turns any exception into one line on
stderr, ``pocaduck VERB: what is wrong; what to do``, with exit status 1 (2 for
a wrong command line, caught by argparse types before anything runs; 130 when
interrupted). ``pocaduck --debug VERB ...`` prints the traceback too. Warnings
are printed once the verb succeeds, one line each, ``pocaduck VERB: warning: ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import layout
from .compact import compact
from .config import StorageConfig, redact_url
from .consolidate import consolidate
from .errors import DamagedStoreError, DataFileError, PocaduckError
from .gc import collect_garbage
from .mapping import changed_bodies, list_mappings, write_mapping
from .migration import migrate
from .neuroglancer import export_neuroglancer
from .query import Query
from .scan import open_volume, scan_volume
from .store import Store, open_store
from .verify import verify


def _store(args: argparse.Namespace, path: str | None = None) -> Store:
    """The store named on the command line (``path``, else STORE), with any credentials given as options."""
    return open_store(StorageConfig.from_args(args, args.store if path is None else path))


def _verb_info(args: argparse.Namespace) -> None:
    with Query(_store(args), mapping=args.mapping) as query:
        print(json.dumps(query.info(), indent=2))


def _verb_consolidate(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    path = consolidate(
        _store(args),
        ignore_unfinalized=args.ignore_unfinalized,
        from_sessions=args.from_sessions,
        workers=args.workers,
    )
    print(f"consolidated {args.store} into {path} in {time.perf_counter() - started:.2f} s")


def _verb_points(args: argparse.Namespace) -> None:
    with Query(_store(args), mapping=args.mapping) as query:
        table = query.get_points(args.label, output="arrow", sample=args.sample, seed=args.seed)
    _write_table(table, args.output, f"points of label {args.label}")


def _verb_labels_in_box(args: argparse.Namespace) -> None:
    with Query(_store(args), mapping=args.mapping) as query:
        labels = query.get_labels_in_box(args.lower, args.upper)
    print("\n".join(map(str, labels.tolist())), end="\n" if len(labels) else "")
    print(f"{len(labels)} labels in the box", file=sys.stderr)


def _verb_points_in_box(args: argparse.Namespace) -> None:
    with Query(_store(args), mapping=args.mapping) as query:
        table = query.get_points_in_box(args.lower, args.upper, output="arrow")
    _write_table(table, args.output, "points in the box")


def _verb_mapping_write(args: argparse.Namespace) -> None:
    version = write_mapping(_store(args), args.name, args.file, parent=args.parent, note=args.note)
    kind = "full mapping" if version.parent is None else f"child of {version.parent}"
    print(f"wrote mapping {version.name} ({kind}): {version.assignments} assignments to {version.bodies} bodies")


def _verb_mapping_list(args: argparse.Namespace) -> None:
    for version in list_mappings(_store(args)):
        print(json.dumps(version.to_dict(), ensure_ascii=False))


def _verb_mapping_diff(args: argparse.Namespace) -> None:
    bodies = changed_bodies(_store(args), args.old, args.new)
    print("\n".join(map(str, bodies.tolist())), end="\n" if len(bodies) else "")
    print(f"{len(bodies)} bodies changed between {args.old} and {args.new}", file=sys.stderr)


def _write_table(table: pa.Table, output: str | None, what: str) -> None:
    """CSV on stdout without ``output``, else the file its suffix names (``_output_file`` checked it)."""
    if output is None:
        print(table.to_pandas().to_csv(index=False), end="")
    elif output.endswith(".npy"):
        np.save(output, np.column_stack([column.to_numpy() for column in table.columns]))
    elif output.endswith(".csv"):
        table.to_pandas().to_csv(output, index=False)
    else:  # .parquet: _output_file let nothing else through
        pq.write_table(table, output)
    if output is not None:
        print(f"wrote {table.num_rows} {what} to {output}", file=sys.stderr)


def _verb_compact(args: argparse.Namespace) -> None:
    report = compact(
        _store(args),
        workers=args.workers,
        deduplicate=args.deduplicate,
        payload=args.payload,
        compression=args.compression,
        mapping=args.mapping,
    )
    if report.generation is None:
        print(f"{args.store} is already compact")
        return
    print(json.dumps(report.to_dict(), indent=2))


def _verb_gc(args: argparse.Namespace) -> None:
    report = collect_garbage(_store(args), dry_run=args.dry_run)
    for path in report.removed:
        print(("would remove " if args.dry_run else "removed ") + path)
    print(f"{len(report.removed)} unreferenced paths {'found' if args.dry_run else 'removed'}", file=sys.stderr)


def _verb_migrate(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    path = migrate(_store(args, args.old), _store(args, args.new), workers=args.workers)
    print(f"migrated {args.old} into {args.new} ({path}) in {time.perf_counter() - started:.2f} s")


def _verb_verify(args: argparse.Namespace) -> None:
    report = verify(_store(args), deep=args.deep)
    print(report.summary())
    if not report.ok:
        in_index = any(problem.path in (layout.MANIFEST, layout.UNIFIED_INDEX) for problem in report.problems)
        count = len(report.problems)
        raise (DamagedStoreError if in_index else DataFileError)(
            f"{count} problem{'' if count == 1 else 's'} found; to repair: {'; '.join(report.repairs)}"
        )


@contextlib.contextmanager
def _dask_client(args: argparse.Namespace) -> Iterator[object]:
    """A Dask client on ``--scheduler`` for the verb's duration, or None to use local workers."""
    if not args.scheduler:
        yield None
        return
    from distributed import Client

    with Client(args.scheduler) as client:
        yield client


def _verb_scan(args: argparse.Namespace) -> None:
    with _dask_client(args) as client:
        result = scan_volume(
            open_volume(args.volume),
            _store(args),
            block_shape=args.block_shape,
            workers=args.workers,
            mode=args.mode,
            client=client,
            progress=None if args.no_progress else "tqdm",
            ignore_label=args.ignore_label,
            sample_cap=args.sample_cap,
            seed=args.seed,
            voxel_size=args.voxel_size,
            voxel_offset=args.voxel_offset,
            consolidate=not args.no_consolidate,
            resume=args.resume,
            payload=args.payload,
            retries=args.retries,
            blocks=args.blocks,
            worker_prefix=args.worker_prefix,
        )
    rates = {"voxels_per_second": result.voxels_per_second, "points_per_second": result.points_per_second}
    print(json.dumps({**dataclasses.asdict(result), **rates}, indent=2))


def _verb_export_neuroglancer(args: argparse.Namespace) -> None:
    with _dask_client(args) as client:
        report = export_neuroglancer(
            _store(args),
            StorageConfig.from_args(args, args.out),
            labels=args.labels,
            workers=args.workers,
            client=client,
            progress=None if args.no_progress else "tqdm",
            retries=args.retries,
            mapping=args.mapping,
        )
    print(json.dumps(report.to_dict(), indent=2))
    print(
        f"open it in neuroglancer as precomputed://{report.out} (served over HTTP or from its bucket)", file=sys.stderr
    )


class _Parser(argparse.ArgumentParser):
    """An argument parser whose complaint is one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see {self.prog} --help\n")


def _block_ids(text: str) -> list[int]:
    """An argparse type: comma-separated integer block ids (their range is checked against the volume later)."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs integer block ids separated by commas, got {text!r}") from None


def _integer(least: int, below: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``least`` (and below ``below``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least or (below is not None and value >= below):
            span = f"of at least {least}" if below is None else f"from {least} to {below - 1}"
            raise argparse.ArgumentTypeError(f"needs an integer {span}, got {text!r}")
        return value

    return parse


_label = _integer(0, below=2**64)


def _per_axis(kind: type[int] | type[float], positive: bool) -> Callable[[str], tuple]:
    """An argparse type: one finite value for every axis, or three as ``Z,Y,X``."""

    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) not in (1, 3) or not all(math.isfinite(v) and (v > 0 or not positive) for v in values):
            what = ("positive " if positive else "") + ("integer" if kind is int else "number")
            raise argparse.ArgumentTypeError(f"needs one {what} or three as Z,Y,X, got {text!r}")
        return values

    return parse


def _corner(text: str) -> tuple[float | int, ...]:
    """An argparse type: a box corner as comma-separated finite numbers, ``X,Y,Z``."""
    try:
        values = tuple(int(v) if v.strip().lstrip("+-").isdigit() else float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"needs a corner of finite numbers as X,Y,Z, got {text!r}")
    return values


def _output_file(text: str) -> str:
    """An argparse type: a .npy, .csv or .parquet file in a folder that exists, checked before the store is read."""
    if not text.endswith((".npy", ".csv", ".parquet")):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: use a .npy, .csv or .parquet file name")
    folder = os.path.dirname(text) or "."
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"the folder {folder!r} does not exist; create it first")
    return text


def _add_output(verb: argparse.ArgumentParser) -> None:
    verb.add_argument(
        "-o", "--output", type=_output_file, help="file to write: .npy, .csv or .parquet (default: CSV to stdout)"
    )


def _add_mapping(verb: argparse.ArgumentParser) -> None:
    verb.add_argument("--mapping", help="read bodies of this mapping version (see `pocaduck mapping list`)")


def build_parser() -> argparse.ArgumentParser:
    """The ``pocaduck`` argument parser: ``--debug``, then a verb and its arguments.

    >>> args = build_parser().parse_args(["--debug", "gc", "/data/store", "--dry-run"])
    >>> args.debug, args.verb, args.store, args.dry_run
    (True, 'gc', '/data/store', True)
    """
    parser = _Parser(prog="pocaduck", description="Point clouds indexed by uint64 labels.")
    parser.add_argument("--debug", action="store_true", help="print the traceback of a failure (goes before the verb)")
    verbs = parser.add_subparsers(dest="verb", required=True)
    credentials = argparse.ArgumentParser(add_help=False)  # every verb takes them, after the verb
    StorageConfig.add_storage_args(credentials, base_path=False)

    info = verbs.add_parser("info", parents=[credentials], help="print a store's totals and schema")
    info.add_argument("store")
    _add_mapping(info)
    info.set_defaults(run=_verb_info)

    merge = verbs.add_parser(
        "consolidate", parents=[credentials], help="merge the finalized worker indexes into the unified index"
    )
    merge.add_argument("store")
    merge.add_argument("--ignore-unfinalized", action="store_true", help="skip workers that did not finalize")
    merge.add_argument(
        "--from-sessions", action="store_true", help="index the workers' own files, not the compaction in force"
    )
    merge.add_argument(
        "--workers",
        type=_integer(1),
        help="merge label ranges in this many threads (default: one DuckDB sort, the fastest on one machine)",
    )
    merge.set_defaults(run=_verb_consolidate)

    points = verbs.add_parser("points", parents=[credentials], help="print or save one label's points")
    points.add_argument("store")
    points.add_argument("label", type=_label, help="uint64 label id (a body with --mapping)")
    _add_mapping(points)
    _add_output(points)
    points.add_argument("--sample", type=_integer(1), help="only this many points, a uniform deterministic sample")
    points.add_argument(
        "--seed", type=_integer(0, below=2**64), help="with --sample: another sample per seed (reads the whole label)"
    )
    points.set_defaults(run=_verb_points)

    in_box = verbs.add_parser(
        "labels-in-box", parents=[credentials], help="print the labels with a point in a box, one per line"
    )
    boxed = verbs.add_parser(
        "points-in-box", parents=[credentials], help="print or save every point in a box, with its label"
    )
    for verb in (in_box, boxed):
        verb.add_argument("store")
        verb.add_argument("lower", type=_corner, help="X0,Y0,Z0: the box's lower corner, inside it")
        verb.add_argument("upper", type=_corner, help="X1,Y1,Z1: the upper corner, outside it (lower <= p < upper)")
        _add_mapping(verb)
    in_box.set_defaults(run=_verb_labels_in_box)
    _add_output(boxed)
    boxed.set_defaults(run=_verb_points_in_box)

    compaction = verbs.add_parser(
        "compact", parents=[credentials], help="rewrite the store so each label's points are contiguous"
    )
    compaction.add_argument("store")
    compaction.add_argument("--workers", type=_integer(1), help="shards written at once (default: one per CPU)")
    compaction.add_argument("--deduplicate", action="store_true", help="keep one copy of identical points per label")
    compaction.add_argument(
        "--payload",
        choices=tuple(layout.PAYLOADS),
        default=layout.DEFAULT_PAYLOAD,
        help="file format: parquet (default; compressed, smaller) or arrow (Arrow IPC, read as memory-mapped slices)",
    )
    compaction.add_argument(
        "--compression",
        help="codec (default: lz4 for parquet, none for arrow; arrow also takes lz4 and zstd)",
    )
    compaction.add_argument(
        "--mapping", help="lay each body of this mapping version out contiguously (see `pocaduck mapping list`)"
    )
    compaction.set_defaults(run=_verb_compact)

    garbage = verbs.add_parser(
        "gc", parents=[credentials], help="remove files no index refers to any more (old compactions, old sessions)"
    )
    garbage.add_argument("store")
    garbage.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    garbage.set_defaults(run=_verb_gc)

    check = verbs.add_parser(
        "verify", parents=[credentials], help="check the index and every data file; exit 1 naming what to re-run"
    )
    check.add_argument("store")
    check.add_argument("--deep", action="store_true", help="also read every byte: file and Parquet page checksums")
    check.set_defaults(run=_verb_verify)

    migration = verbs.add_parser(
        "migrate", parents=[credentials], help="convert a store written by the original pocaduck 0.1.x"
    )
    migration.add_argument("old", help="the original store (worker_*/, unified_index.db)")
    migration.add_argument("new", help="where to write the store in this library's layout")
    migration.add_argument(
        "--workers", type=_integer(1), default=1, help="original workers converted at once, in processes (default 1)"
    )
    migration.set_defaults(run=_verb_migrate)
    scan = verbs.add_parser(
        "scan", parents=[credentials], help="scan a 3D label volume (.npy or zarr, indexed z, y, x) into a store"
    )
    scan.add_argument("volume", help="a .npy file or a zarr array path")
    scan.add_argument("store")
    scan.add_argument("--workers", type=_integer(1), default=4, help="parallel workers (default 4)")
    scan.add_argument(
        "--block-shape",
        type=_per_axis(int, positive=True),
        default=(64,),
        help="Z,Y,X or one size for all axes (default 64)",
    )
    scan.add_argument("--mode", choices=("all", "surface", "sample"), default="surface", help="default surface")
    scan.add_argument(
        "--voxel-size",
        type=_per_axis(float, positive=True),
        default=(1.0,),
        help="Z,Y,X in physical units, kept in the manifest",
    )
    scan.add_argument(
        "--voxel-offset",
        type=_per_axis(int, positive=False),
        default=(0,),
        help="Z,Y,X voxel index of the volume's first voxel",
    )
    scan.add_argument("--ignore-label", type=lambda t: None if t == "none" else _label(t), default=0, help="or 'none'")
    scan.add_argument("--sample-cap", type=_integer(1), default=1000, help="sample mode: points per label per block")
    scan.add_argument("--seed", type=_integer(0), default=0, help="sample mode: random seed")
    scan.add_argument("--retries", type=_integer(0), default=0, help="re-run a failed worker this many times")
    scan.add_argument("--resume", action="store_true", help="keep workers a previous run of this scan finished")
    scan.add_argument(
        "--payload", choices=tuple(layout.PAYLOADS), help="workers' file format in a new store (default: parquet)"
    )
    scan.add_argument(
        "--blocks",
        type=_block_ids,
        help="re-scan only these block ids (ID,ID,...: gz << 42 | gy << 21 | gx) of a scanned store, replacing them",
    )
    scan.add_argument("--worker-prefix", help="with --blocks: the re-scan's worker ids (default rescan-<time>-...)")
    scan.add_argument("--no-consolidate", action="store_true", help="leave consolidation for later")
    scan.add_argument("--no-progress", action="store_true", help="no progress bars")
    scan.add_argument("--scheduler", help="run on this Dask scheduler (address) instead of local processes")
    scan.set_defaults(run=_verb_scan)

    mapping = verbs.add_parser("mapping", help="versioned supervoxel-to-body mappings: write, list, diff")
    mapping_verbs = mapping.add_subparsers(dest="mapping_verb", required=True)
    written = mapping_verbs.add_parser(
        "write", parents=[credentials], help="write a mapping version from a file (Parquet, CSV or DVID text)"
    )
    written.add_argument("store")
    written.add_argument("name", help="the new version's name (letters, digits, '.', '_', '-')")
    written.add_argument("file", help="two columns, supervoxel and body: .parquet, .csv, or whitespace-separated text")
    written.add_argument("--parent", help="the file holds only the changes to this version (merges, cleaves)")
    written.add_argument("--note", help="a note kept in the version's history")
    written.set_defaults(run=_verb_mapping_write)
    listed = mapping_verbs.add_parser("list", parents=[credentials], help="print every version, one JSON line each")
    listed.add_argument("store")
    listed.set_defaults(run=_verb_mapping_list)
    diff = mapping_verbs.add_parser(
        "diff", parents=[credentials], help="print the bodies whose supervoxels differ between two versions"
    )
    diff.add_argument("store")
    diff.add_argument("old")
    diff.add_argument("new")
    diff.set_defaults(run=_verb_mapping_diff)

    export = verbs.add_parser(
        "export-neuroglancer",
        parents=[credentials],
        help="write a store as neuroglancer precomputed point annotations (sharded), resumable",
    )
    export.add_argument("store")
    export.add_argument("out", help="a new or empty folder, or a bucket URL; re-run the same command to resume")
    export.add_argument(
        "--labels", type=_label, nargs="+", help="only these labels (default: all; bodies with --mapping)"
    )
    export.add_argument(
        "--mapping",
        help="export the bodies of this mapping version; into an export of an older version, update only what changed",
    )
    export.add_argument("--workers", type=_integer(1), help="local worker threads (default: one per CPU)")
    export.add_argument("--scheduler", help="run on this Dask scheduler (address) instead of local threads")
    export.add_argument("--retries", type=_integer(0), default=0, help="re-run a failed task this many times")
    export.add_argument("--no-progress", action="store_true", help="no progress bars")
    export.set_defaults(run=_verb_export_neuroglancer)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status: 0, 1 when it failed, 2 for a wrong command line, 130 if interrupted.

    >>> main(["info", "/no/such/store"])  # stderr: pocaduck info: no store at /no/such/store: ...
    1
    """
    args = build_parser().parse_args(argv)
    # Warnings are held, not shown with Python's class name and source line: a failure prints only its one line.
    with warnings.catch_warnings(record=True) as caught:
        try:
            args.run(args)
        except KeyboardInterrupt:
            return _report(args, "interrupted; run the same command again to finish", 130)
        except PocaduckError as error:
            return _report(args, str(error), 1)
        except Exception as error:  # unforeseen (a DuckDB or disk error, a bug): one line, the traceback on request
            hint = f"re-run as `pocaduck --debug {args.verb} ...` to see where it failed"
            return _report(args, f"{type(error).__name__}: {error}; {hint}", 1)
    for message in dict.fromkeys(str(warning.message) for warning in caught):
        print(f"pocaduck {args.verb}: warning: {redact_url(' '.join(message.splitlines()))}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace, message: str, status: int) -> int:
    """Print the exception being handled as one line (after its traceback with ``--debug``), minus URL passwords."""
    if args.debug:
        sys.stderr.write(redact_url(traceback.format_exc()))
    print(f"pocaduck {args.verb}: {redact_url(' '.join(message.splitlines()))}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
