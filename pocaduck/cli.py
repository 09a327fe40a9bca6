"""The ``pocaduck`` command: inspect, consolidate and read stores from a shell.

Each verb is a ``_verb_*`` function registered in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Sequence

import numpy as np
import pyarrow.parquet as pq

from . import layout
from .compact import compact
from .config import StorageConfig
from .consolidate import consolidate
from .errors import DamagedStoreError, DataFileError, PocaduckError
from .gc import collect_garbage
from .legacy import migrate
from .query import Query
from .scan import open_volume, scan_volume
from .verify import verify


def _verb_info(args: argparse.Namespace) -> None:
    with Query(StorageConfig(args.store)) as query:
        print(json.dumps(query.info(), indent=2))


def _verb_consolidate(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    path = consolidate(args.store, ignore_unfinalized=args.ignore_unfinalized)
    print(f"consolidated {args.store} into {path} in {time.perf_counter() - started:.2f} s")


def _verb_points(args: argparse.Namespace) -> None:
    with Query(StorageConfig(args.store)) as query:
        table = query.get_points(args.label, output="arrow")
    output = args.output
    if output is None:
        print(table.to_pandas().to_csv(index=False), end="")
    elif output.endswith(".npy"):
        np.save(output, np.column_stack([column.to_numpy() for column in table.columns]))
    elif output.endswith(".csv"):
        table.to_pandas().to_csv(output, index=False)
    elif output.endswith(".parquet"):
        pq.write_table(table, output)
    else:
        raise SystemExit(f"pocaduck points: cannot write {output!r}: use a .npy, .csv or .parquet file name")
    if output is not None:
        print(f"wrote {table.num_rows} points of label {args.label} to {output}", file=sys.stderr)


def _verb_compact(args: argparse.Namespace) -> None:
    report = compact(args.store, workers=args.workers, deduplicate=args.deduplicate)
    if report.generation is None:
        print(f"{args.store} is already compact")
        return
    print(json.dumps(report.to_dict(), indent=2))


def _verb_gc(args: argparse.Namespace) -> None:
    report = collect_garbage(args.store, dry_run=args.dry_run)
    for path in report.removed:
        print(("would remove " if args.dry_run else "removed ") + path)
    print(f"{len(report.removed)} unreferenced paths {'found' if args.dry_run else 'removed'}", file=sys.stderr)


def _verb_migrate(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    path = migrate(args.old, args.new)
    print(f"migrated {args.old} into {args.new} ({path}) in {time.perf_counter() - started:.2f} s")


def _verb_verify(args: argparse.Namespace) -> None:
    report = verify(args.store, deep=args.deep)
    print(report.summary())
    if not report.ok:
        in_index = any(problem.path in (layout.MANIFEST, layout.UNIFIED_INDEX) for problem in report.problems)
        raise (DamagedStoreError if in_index else DataFileError)(
            f"{len(report.problems)} problems found; to repair: {'; '.join(report.repairs)}"
        )


def _verb_scan(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as resources:
        client = None
        if args.scheduler:
            from distributed import Client

            client = resources.enter_context(Client(args.scheduler))
        result = scan_volume(
            open_volume(args.volume),
            args.store,
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
            retries=args.retries,
        )
    rates = {"voxels_per_second": result.voxels_per_second, "points_per_second": result.points_per_second}
    print(json.dumps({**dataclasses.asdict(result), **rates}, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pocaduck", description="Point clouds indexed by uint64 labels.")
    verbs = parser.add_subparsers(dest="verb", required=True)

    info = verbs.add_parser("info", help="print a store's totals and schema")
    info.add_argument("store")
    info.set_defaults(run=_verb_info)

    merge = verbs.add_parser("consolidate", help="merge the finalized worker indexes into the unified index")
    merge.add_argument("store")
    merge.add_argument("--ignore-unfinalized", action="store_true", help="skip workers that did not finalize")
    merge.set_defaults(run=_verb_consolidate)

    points = verbs.add_parser("points", help="print or save one label's points")
    points.add_argument("store")
    points.add_argument("label", type=int, help="uint64 label id")
    points.add_argument("-o", "--output", help="file to write: .npy, .csv or .parquet (default: CSV to stdout)")
    points.set_defaults(run=_verb_points)

    compaction = verbs.add_parser("compact", help="rewrite the store so each label's points are contiguous")
    compaction.add_argument("store")
    compaction.add_argument("--workers", type=int, help="local worker processes (default: one per CPU)")
    compaction.add_argument("--deduplicate", action="store_true", help="keep one copy of identical points per label")
    compaction.set_defaults(run=_verb_compact)

    garbage = verbs.add_parser("gc", help="remove files no index refers to any more (old compactions, old sessions)")
    garbage.add_argument("store")
    garbage.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    garbage.set_defaults(run=_verb_gc)

    check = verbs.add_parser("verify", help="check the index and every data file; exit 1 naming what to re-run")
    check.add_argument("store")
    check.add_argument("--deep", action="store_true", help="also read every byte: file and Parquet page checksums")
    check.set_defaults(run=_verb_verify)

    migration = verbs.add_parser("migrate", help="convert a store written by the original pocaduck 0.1.x")
    migration.add_argument("old", help="the original store (worker_*/, unified_index.db)")
    migration.add_argument("new", help="where to write the store in this library's layout")
    migration.set_defaults(run=_verb_migrate)
    ints = lambda text: tuple(int(v) for v in text.split(","))  # noqa: E731
    numbers = lambda text: tuple(float(v) for v in text.split(","))  # noqa: E731
    scan = verbs.add_parser("scan", help="scan a 3D label volume (.npy or zarr, indexed z, y, x) into a store")
    scan.add_argument("volume", help="a .npy file or a zarr array path")
    scan.add_argument("store")
    scan.add_argument("--workers", type=int, default=4, help="parallel workers (default 4)")
    scan.add_argument("--block-shape", type=ints, default=(64,), help="Z,Y,X or one size for all axes (default 64)")
    scan.add_argument("--mode", choices=("all", "surface", "sample"), default="surface", help="default surface")
    scan.add_argument(
        "--voxel-size", type=numbers, default=(1.0,), help="Z,Y,X in physical units, kept in the manifest"
    )
    scan.add_argument("--voxel-offset", type=ints, default=(0,), help="Z,Y,X voxel index of the volume's first voxel")
    scan.add_argument("--ignore-label", type=lambda t: None if t == "none" else int(t), default=0, help="or 'none'")
    scan.add_argument("--sample-cap", type=int, default=1000, help="sample mode: points per label per block")
    scan.add_argument("--seed", type=int, default=0, help="sample mode: random seed")
    scan.add_argument("--retries", type=int, default=0, help="re-run a failed worker this many times")
    scan.add_argument("--resume", action="store_true", help="keep workers a previous run of this scan finished")
    scan.add_argument("--no-consolidate", action="store_true", help="leave consolidation for later")
    scan.add_argument("--no-progress", action="store_true", help="no progress bars")
    scan.add_argument("--scheduler", help="run on this Dask scheduler (address) instead of local processes")
    scan.set_defaults(run=_verb_scan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except PocaduckError as error:
        print(f"pocaduck {args.verb}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
