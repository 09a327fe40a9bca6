"""Compaction benchmark: get_points before and after compaction, beside the original 0.1.1 and npz-per-block files,
and the compacted store as Parquet and as Arrow IPC files beside ``np.load`` of the same points.

    .venv/bin/python bench/bench_compact.py            # about 3 minutes on 2 shared cores
    .venv/bin/python bench/bench_compact.py --quick    # smoke run, under a minute; docs left alone
    .venv/bin/python bench/bench_compact.py --bulk-only  # only the bulk reads below, about 2 minutes; docs left alone
    .venv/bin/python bench/bench_compact.py --bulk-only --bulk-row-groups 1024,2048,4096  # and Parquet row groups
    .venv/bin/python bench/bench_compact.py --bulk-only --baseline /work/main  # and the bulk reads of a checkout

Each label spans 50 distinct blocks of an 8x8x8 grid, 20 points per (label,
block), so a label has 1,000 points; blocks go to 8 workers round-robin, so
every label is written by all 8 workers, as a blockwise scan produces it. The
"probe" store (200 labels) is built by all three implementations from the
same arrays; the "throughput" store (ours only, 20x more labels) gives the
compaction rate at a more realistic size. The probe store is also compacted
as Arrow IPC files (uncompressed, LZ4, ZSTD), each a copy of the same
ingested store; their ``get_points`` and ``np.load`` of each label's points
from its own ``.npy`` file are timed side by side, label by label in turn, so
the machine's noise falls on all alike. The original runs in its own
process (same import name, its package first on ``PYTHONPATH``). The table is
printed and written to ``bench/results/compact.md`` and its section of
``docs/benchmarks.md`` (not with ``--quick`` or ``--no-docs``), raw figures to
``compact.json``. Timings are reported, never asserted.

Bulk reads: a store of 10^7 points, 10^4 labels of 10 blocks (``_workloads.small_writes``), compacted
as Parquet and as Arrow IPC; ``get_points`` of 2,000 random labels in one call, the same labels one call
each, and the floor (every file of the store read whole into numpy), taking turns in each pass.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import _report
import _workloads
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _npz_layout import NpzReader, NpzWriter
from bench_store import DEFAULT_ORIGINAL_DIR, ensure_original

from pocaduck import Ingestor, Query, compact, consolidate

GRID_BLOCKS = 8**3
BLOCK_SIZE = 64
WORKERS = 8
BLOCKS_PER_LABEL = 50
POINTS_PER_WRITE = 20
# The larger store's workers flush every 20,000 points, so each writes many files, as a lab-scale worker
# writes many 10M-point files: a label's blocks then sit in many files. The probe store keeps the default
# (one or two files per worker), the case least favourable to compaction.
BIG_POINTS_PER_FILE = 20_000
# The compacted probe store in each payload: (name, payload, compression), Parquet first as the reference.
PAYLOADS = (
    ("parquet (lz4)", "parquet", None),
    ("arrow (uncompressed)", "arrow", None),
    ("arrow (lz4)", "arrow", "lz4"),
    ("arrow (zstd)", "arrow", "zstd"),
)
NPY = "np.load, one .npy per label"
BULK_LABELS = 2_000
BULK_PAYLOADS = ("parquet", "arrow")
# The floor of a bulk read: every file of the compacted store read whole into (N, D) numpy, no index, no selection.
BULK_FLOORS = {
    "parquet": "`ParquetFile.read` of each whole file (the schema's columns), stacked to numpy",
    "arrow": "each whole file memory-mapped, its batches' points concatenated to numpy",
}

# Runs under the original package; reads the workload arrays, writes its store, times get_points.
_ORIGINAL = """
import json, sys, time
import numpy as np
from pocaduck import Ingestor, Query, StorageConfig

workload, store, probes, passes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
data = np.load(workload)
config = StorageConfig(base_path=store)
ends = np.cumsum(data["counts"])
started = time.perf_counter()
for worker in range(int(data["workers"].max()) + 1):
    ingestor = Ingestor(config, worker_id=worker)
    for i in np.flatnonzero(data["workers"] == worker):
        points = data["points"][ends[i] - data["counts"][i] : ends[i]]
        ingestor.write(int(data["labels"][i]), str(data["blocks"][i]), points)
    ingestor.finalize()
Ingestor.consolidate_indexes(config)
ingest_seconds = time.perf_counter() - started
query = Query(config, cache_size=0)
query.get_points(probes[0], use_cache=False)
seconds = []
for _ in range(passes):
    for label in probes:
        t = time.perf_counter(); points = query.get_points(label, use_cache=False); seconds.append(time.perf_counter() - t)
print(json.dumps({"seconds": seconds, "ingest_seconds": ingest_seconds, "points": len(points)}))
"""


def make_workload(seed: int, label_count: int) -> dict[str, np.ndarray]:
    """Writes (label, block, worker, points) in the order each worker scans its blocks."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(2**62, size=label_count, replace=False).astype(np.uint64)
    blocks = np.stack([rng.choice(GRID_BLOCKS, BLOCKS_PER_LABEL, replace=False) for _ in range(label_count)])
    write_labels = np.repeat(labels, BLOCKS_PER_LABEL)
    write_blocks = blocks.reshape(-1)
    order = np.lexsort((write_labels, write_blocks, write_blocks % WORKERS))
    write_labels, write_blocks = write_labels[order], write_blocks[order]
    origins = np.stack(np.unravel_index(write_blocks, (8, 8, 8)), axis=1) * BLOCK_SIZE
    voxels = np.stack([rng.choice(BLOCK_SIZE**3, POINTS_PER_WRITE, replace=False) for _ in range(len(order))])
    offsets = np.stack(np.unravel_index(voxels, (BLOCK_SIZE,) * 3), axis=2)
    points = (origins[:, None, :] + offsets).astype(np.int32).reshape(-1, 3)
    return {
        "labels": write_labels,
        "blocks": np.array([f"{b // 64}_{b // 8 % 8}_{b % 8}" for b in write_blocks]),
        "workers": (write_blocks % WORKERS).astype(np.int32),
        "counts": np.full(len(order), POINTS_PER_WRITE, np.int64),
        "points": points,
    }


def writes_of(workload: dict[str, np.ndarray], worker: int):
    ends = np.cumsum(workload["counts"])
    for i in np.flatnonzero(workload["workers"] == worker):
        points = workload["points"][ends[i] - workload["counts"][i] : ends[i]]
        yield int(workload["labels"][i]), str(workload["blocks"][i]), points


def ingest_ours(workload: dict[str, np.ndarray], store: str, max_points_per_file: int = 10_000_000) -> float:
    started = time.perf_counter()
    for worker in range(WORKERS):
        with Ingestor(store, worker, max_points_per_file=max_points_per_file) as ingestor:
            for label, block, points in writes_of(workload, worker):
                ingestor.write(label, block, points)
    consolidate(store)
    return time.perf_counter() - started


def ingest_npz(workload: dict[str, np.ndarray], root: str) -> float:
    started = time.perf_counter()
    writer = NpzWriter(root)
    for worker in range(WORKERS):
        for label, block, points in writes_of(workload, worker):
            writer.write(label, block, points)
    return time.perf_counter() - started


def time_reads(get_points, probes: list[int], passes: int) -> list[float]:
    get_points(probes[0])  # open files and warm the page cache once
    seconds = []
    for _ in range(passes):
        for label in probes:
            started = time.perf_counter()
            get_points(label)
            seconds.append(time.perf_counter() - started)
    return seconds


def time_ours(store: str, probes: list[int], passes: int) -> dict[str, Any]:
    with Query(store, cache_size=0) as query:
        seconds = time_reads(query.get_points, probes, passes)
        shape = query.info()
    return {"seconds": seconds, "files": shape["files"], "index_rows": shape["index_rows"]}


def time_original(original_dir: str, workload_file: str, store: str, probes: list[int], passes: int) -> dict:
    env = {**os.environ, "PYTHONPATH": original_dir}
    command = [sys.executable, "-c", _ORIGINAL, workload_file, store, json.dumps(probes), str(passes)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_side_by_side(readers: dict[str, Any], probes: list[int], passes: int) -> dict[str, list[float]]:
    """Each reader's get_points of every probe label, the readers taking turns on each label."""
    for read in readers.values():
        read(probes[0])  # open files and warm the page cache once
    seconds: dict[str, list[float]] = {name: [] for name in readers}
    for _ in range(passes):
        for label in probes:
            for name, read in readers.items():
                started = time.perf_counter()
                read(label)
                seconds[name].append(time.perf_counter() - started)
    return seconds


def compare_payloads(ours: str, workdir: str, probes: list[int], passes: int, workers: int) -> dict[str, Any]:
    """Compact copies of the ingested store in every payload; time them beside np.load of the same points."""
    stores = {}
    for name, payload, compression in PAYLOADS:
        stores[name] = os.path.join(workdir, f"payload-{payload}-{compression}")
        shutil.copytree(ours, stores[name])
    results: dict[str, Any] = {}
    for name, payload, compression in PAYLOADS:
        report = compact(stores[name], workers=workers, points_per_file=10**7, payload=payload, compression=compression)
        results[name] = {"compaction": report.to_dict(), "bytes": report.bytes_written}
    queries = {name: Query(stores[name], cache_size=0) for name in stores}
    npy = os.path.join(workdir, "npy")
    os.makedirs(npy)
    npy_bytes = 0
    for label in probes:
        np.save(os.path.join(npy, f"{label}.npy"), queries[PAYLOADS[0][0]].get_points(label))
        npy_bytes += os.path.getsize(os.path.join(npy, f"{label}.npy"))
    readers = {name: functools.partial(query.get_points, use_cache=False) for name, query in queries.items()}
    readers[NPY] = lambda label: np.load(os.path.join(npy, f"{label}.npy"))
    try:
        for name, seconds in time_side_by_side(readers, probes, passes).items():
            results.setdefault(name, {})["seconds"] = seconds
        results[PAYLOADS[0][0]].update(files=queries[PAYLOADS[0][0]].info()["files"])
    finally:
        for query in queries.values():
            query.close()
    results[NPY].update(bytes_probes=npy_bytes, labels=len(probes))
    return results


def build_bulk_stores(workdir: str, seed: int, write_count: int, workers: int) -> tuple[dict[str, str], np.ndarray]:
    """``write_count`` writes of 100 points (10-block labels, ``_workloads.small_writes``), ingested by one worker
    block by block, compacted once as Parquet and once as Arrow IPC: each payload's store, and every label."""
    workload = _workloads.small_writes(seed, write_count=write_count)
    ingested = os.path.join(workdir, "bulk-ingested")
    with Ingestor(ingested, worker_id=0) as ingestor:
        for block, writes in itertools.groupby(workload.writes, key=lambda write: write.block_id):
            writes = list(writes)
            labels = np.array([write.label for write in writes], np.uint64)  # typed first: half are >= 2**63
            points = np.concatenate([write.points for write in writes])
            ingestor.write_block(block, np.repeat(labels, [len(write.points) for write in writes]), points)
    consolidate(ingested)
    stores = {}
    for payload in BULK_PAYLOADS:
        stores[payload] = os.path.join(workdir, f"bulk-{payload}")
        shutil.copytree(ingested, stores[payload])
        compact(stores[payload], workers=workers, payload=payload)
    return stores, np.unique(np.array([write.label for write in workload.writes], np.uint64))


def read_whole_files(paths: list[str], payload: str, columns: list[str]) -> int:
    """The floor of a bulk read: every point of these files as (N, D) numpy arrays; returns the points read."""
    points = 0
    for path in paths:
        if payload == "arrow":
            reader = pa.ipc.open_file(pa.memory_map(path))
            batches = [reader.get_batch(i).column(2).values.to_numpy() for i in range(reader.num_record_batches)]
            whole = np.concatenate(batches).reshape(-1, len(columns))
        else:
            # ParquetFile.read, as queries open files: pq.read_table goes through datasets, 2.5x slower here
            table = pq.ParquetFile(path).read(columns=columns)
            whole = np.column_stack([column.to_numpy() for column in table.columns])
        points += len(whole)
    return points


def each_alone(query: Query, labels: list[int]) -> list[np.ndarray]:
    return [query.get_points(label) for label in labels]


CHILD_ROUNDS = 3  # rounds of the bulk readers in each process of --baseline
BATCH_POINTS = 100_000  # iter_points(labels, batch_size=...): the bounded-memory way to read the same labels


def in_batches(query: Query, labels: list[int]) -> int:
    return sum(len(points) for batch in query.iter_points(labels, batch_size=BATCH_POINTS) for points in batch.values())


def compare_bulk(stores: dict[str, str], all_labels: np.ndarray, count: int, seed: int, passes: int) -> dict[str, Any]:
    """``get_points`` of ``count`` random labels in one call, and one label at a time, beside the floor.

    Every reader of both payloads takes its turn in each pass, so the machine's noise falls on all alike.
    """
    labels = np.random.default_rng(seed).choice(all_labels, count, replace=False)
    asked = [int(label) for label in labels]
    queries = {payload: Query(store, cache_size=0) for payload, store in stores.items()}
    try:
        readers = {}
        for payload, query in queries.items():
            paths = [os.path.join(stores[payload], path) for path in query.sql("SELECT path FROM files")["path"]]
            readers[payload, "one call"] = functools.partial(query.get_points, asked)
            readers[payload, "loop"] = functools.partial(each_alone, query, asked)
            readers[payload, "batches"] = functools.partial(in_batches, query, asked)
            readers[payload, "floor"] = functools.partial(read_whole_files, paths, payload, list(query.schema.columns))
        points = {payload: query.get_points(asked) for payload, query in queries.items()}
        returned = {payload: sum(map(len, by_label.values())) for payload, by_label in points.items()}
        stored = {payload: readers[payload, "floor"]() for payload in queries}
        seconds: dict[tuple[str, str], list[float]] = {reader: [] for reader in readers}
        for _ in range(passes):
            for reader, read in readers.items():
                started = time.perf_counter()
                read()
                seconds[reader].append(time.perf_counter() - started)
    finally:
        for query in queries.values():
            query.close()
    return {
        "labels": len(asked),
        "store_labels": len(all_labels),
        "passes": passes,
        **{
            payload: {
                "points_returned": returned[payload],
                "points_stored": stored[payload],
                **{way: seconds[payload, way] for way in ("one call", "loop", "batches", "floor")},
            }
            for payload in stores
        },
    }


def bulk_child(spec: str) -> None:
    """In a fresh process (whichever pocaduck its PYTHONPATH gives): the bulk readers taking turns after a warm-up,
    ``CHILD_ROUNDS`` times; their seconds printed."""
    stores, asked = json.loads(spec)
    queries = {payload: Query(store, cache_size=0) for payload, store in stores.items()}
    readers = {}
    for payload, query in queries.items():
        paths = [os.path.join(stores[payload], path) for path in query.sql("SELECT path FROM files")["path"]]
        readers[f"{payload} one call"] = functools.partial(query.get_points, asked)
        readers[f"{payload} loop"] = functools.partial(each_alone, query, asked)
        readers[f"{payload} floor"] = functools.partial(read_whole_files, paths, payload, list(query.schema.columns))
        query.get_points(asked)  # files opened, pages mapped, as in a warm Query
    seconds: dict[str, list[float]] = {reader: [] for reader in readers}
    for _ in range(CHILD_ROUNDS):
        for reader, read in readers.items():
            started = time.perf_counter()
            read()
            seconds[reader].append(time.perf_counter() - started)
    for query in queries.values():
        query.close()
    print(json.dumps(seconds))


def compare_codes(
    stores: dict[str, str], all_labels: np.ndarray, count: int, seed: int, passes: int, baseline: str
) -> dict[str, Any]:
    """The bulk readers of this pocaduck and of the checkout ``baseline``, each pass a fresh process per code.

    The codes alternate pass by pass, so the machine's load falls on both alike; the floor is the same read in
    both and is pooled.
    """
    asked = [int(label) for label in np.random.default_rng(seed).choice(all_labels, count, replace=False)]
    codes = {"this": None, "baseline": baseline}
    seconds: dict[str, dict[str, list[float]]] = {code: {} for code in codes}
    for _ in range(passes):
        for code, folder in codes.items():
            environment = dict(os.environ)
            if folder is not None:
                environment["PYTHONPATH"] = os.pathsep.join([folder, environment.get("PYTHONPATH", "")])
            output = subprocess.run(
                [sys.executable, __file__, "--bulk-child", json.dumps([stores, asked])],
                check=True,
                capture_output=True,
                text=True,
                env=environment,
            ).stdout
            for reader, taken in json.loads(output.splitlines()[-1]).items():
                seconds[code].setdefault(reader, []).extend(taken)
    with Query(stores["arrow"], cache_size=0) as query:
        returned = sum(map(len, query.get_points(asked).values()))
        stored = int(query.sql("SELECT sum(point_count) AS points FROM labels")["points"][0])
    return {"checkout": baseline, "passes": passes, "points_returned": returned, "points_stored": stored, **seconds}


def render_codes(compared: dict[str, Any]) -> list[str]:
    """One row per payload and code: the one call beside the loop and the pooled floor."""
    returned, stored = compared["points_returned"], compared["points_stored"]
    lines = [
        f"This pocaduck and the one at {compared['checkout']} (*baseline*): `get_points` of {returned:,} points in one "
        f"call, a fresh process per code and pass, codes alternating, {CHILD_ROUNDS} rounds of the readers taking "
        f"turns in each; medians of all rounds of {compared['passes']} passes",
        "",
        "| payload | pocaduck | one call ms | one call, M points/s | one call / floor | one call / loop |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for payload in BULK_PAYLOADS:
        floor = float(np.median([t for code in ("this", "baseline") for t in compared[code][f"{payload} floor"]]))
        for code in ("baseline", "this"):
            one_call = float(np.median(compared[code][f"{payload} one call"]))
            loop = float(np.median(compared[code][f"{payload} loop"]))
            lines.append(
                f"| {payload} | {code} | {one_call * 1e3:.1f} | {returned / one_call / 1e6:.1f} "
                f"| **{(returned / one_call) / (stored / floor):.2f}x** | {loop / one_call:.2f}x |"
            )
    return lines


def compare_row_groups(
    workdir: str, all_labels: np.ndarray, sizes: list[int], count: int, seed: int, passes: int, workers: int
) -> dict[str, Any]:
    """The bulk store compacted as Parquet once per row group size: what smaller groups cost and give.

    Per size: compaction seconds, bytes and footer bytes of the files, ``get_points`` of ``count`` random labels
    in one call, the whole files read (the floor, at that size and at the default's 8,192 rows) and one label's
    p50; every size takes its turn in each pass.
    """
    ingested = os.path.join(workdir, "bulk-ingested")
    asked = [int(label) for label in np.random.default_rng(seed).choice(all_labels, count, replace=False)]
    singles = [int(label) for label in np.random.default_rng(seed + 1).choice(all_labels, 200, replace=False)]
    sizes = sorted({*sizes, 8_192})
    figures: dict[int, dict[str, Any]] = {}
    queries, paths = {}, {}
    for size in sizes:
        store = os.path.join(workdir, f"row-groups-{size}")
        shutil.copytree(ingested, store)
        started = time.perf_counter()
        compact(store, workers=workers, payload="parquet", row_group_size=size)
        queries[size] = Query(store, cache_size=0)
        paths[size] = [os.path.join(store, path) for path in queries[size].sql("SELECT path FROM files")["path"]]
        figures[size] = {
            "compact_s": time.perf_counter() - started,
            "bytes": sum(os.path.getsize(path) for path in paths[size]),
            "footer_bytes": sum(pq.ParquetFile(path).metadata.serialized_size for path in paths[size]),
            "one call": [],
            "floor": [],
            "single p50": [],
        }
    try:
        columns = list(queries[sizes[0]].schema.columns)
        for _ in range(passes):
            for size in sizes:
                started = time.perf_counter()
                returned = sum(map(len, queries[size].get_points(asked).values()))
                figures[size]["one call"].append(time.perf_counter() - started)
                started = time.perf_counter()
                stored = read_whole_files(paths[size], "parquet", columns)
                figures[size]["floor"].append(time.perf_counter() - started)
                figures[size]["single p50"].append(
                    percentiles_ms(time_reads(queries[size].get_points, singles, 1))["p50"]
                )
    finally:
        for query in queries.values():
            query.close()
    return {"labels": count, "points_returned": returned, "points_stored": stored, "sizes": figures}


def render_row_groups(study: dict[str, Any]) -> list[str]:
    """One row per row group size; the floor of the default size is the reference all sizes are held to."""
    sizes = study["sizes"]
    default_floor = float(np.median(sizes[8_192]["floor"]))
    lines = [
        f"Parquet row group sizes: `get_points` of {study['labels']:,} labels ({study['points_returned']:,} points) "
        f"in one call; floor: every file read whole ({study['points_stored']:,} points)",
        "",
        "| rows per group | one call ms | one call / own floor | one call / 8,192-row floor | single label p50 ms "
        "| files MB | footers KB | compaction s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, row in sorted(sizes.items()):
        one_call, floor = float(np.median(row["one call"])), float(np.median(row["floor"]))
        share = study["points_returned"] / study["points_stored"]
        lines.append(
            f"| {size:,} | {one_call * 1e3:.1f} | {share * floor / one_call:.2f}x | {share * default_floor / one_call:.2f}x "
            f"| {float(np.median(row['single p50'])):.3f} | {row['bytes'] / 1e6:.1f} | {row['footer_bytes'] / 1e3:.0f} "
            f"| {row['compact_s']:.1f} |"
        )
    return lines


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    values = np.array(seconds) * 1e3
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)), "n": len(values)}


def run_compaction(store: str, workers: int, points_per_file: int) -> dict[str, Any]:
    return compact(store, workers=workers, points_per_file=points_per_file).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller stores, fewer passes")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="compaction worker processes")
    parser.add_argument("--original-dir", default=DEFAULT_ORIGINAL_DIR)
    parser.add_argument("--bulk-only", action="store_true", help="only the bulk reads of many labels in one call")
    parser.add_argument(
        "--baseline", help="a pocaduck checkout whose bulk reads to time beside these (fresh processes)"
    )
    parser.add_argument("--bulk-child", help=argparse.SUPPRESS)
    parser.add_argument(
        "--bulk-row-groups",
        metavar="SIZES",
        help="also compact the bulk store as Parquet with these rows per group (e.g. 1024,2048) and compare",
    )
    _report.add_docs_option(parser)
    args = parser.parse_args()
    if args.bulk_child:
        bulk_child(args.bulk_child)
        return
    started = time.perf_counter()
    exploratory = "--quick" if args.quick else "--bulk-only" if args.bulk_only else None
    docs = _report.docs_wanted(args, "bench_compact", exploratory)
    probe_labels, big_labels, passes = (60, 400, 2) if args.quick else (200, 4_000, 5)
    results: dict[str, Any] = {"seed": args.seed, "compaction_workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="bench-compact-") as workdir:
        stores, all_labels = build_bulk_stores(workdir, args.seed, 10_000 if args.quick else 100_000, args.workers)
        # A fifth of the labels, as 2,000 of the full store's 10^4: most row groups hold a label asked.
        count, bulk_passes = (200, 3) if args.quick else (BULK_LABELS, 7)
        results["bulk"] = compare_bulk(stores, all_labels, count, args.seed, bulk_passes)
        if args.baseline:
            results["codes"] = compare_codes(stores, all_labels, count, args.seed, bulk_passes, args.baseline)
        if args.bulk_row_groups:
            sizes = [int(size) for size in args.bulk_row_groups.split(",")]
            results["row_groups"] = compare_row_groups(
                workdir, all_labels, sizes, count, args.seed, bulk_passes, args.workers
            )
        if not args.bulk_only:
            measure_compaction(results, workdir, args, probe_labels, big_labels, passes)
    results["elapsed_s"] = time.perf_counter() - started
    text = render(results) + "\n" + _report.how_measured(started, f"seed {args.seed}")
    _report.publish("bench_compact", text, results, docs)


def measure_compaction(
    results: dict[str, Any], workdir: str, args: argparse.Namespace, probe_labels: int, big_labels: int, passes: int
) -> None:
    """The probe and throughput stores: get_points before and after compaction, beside the original and npz."""
    original_dir = ensure_original(args.original_dir)
    workload = make_workload(args.seed, probe_labels)
    workload_file = os.path.join(workdir, "workload.npz")
    np.savez(workload_file, **workload)
    writers_per_label = [
        len(np.unique(workload["workers"][workload["labels"] == label])) for label in np.unique(workload["labels"])[:50]
    ]
    probes = [int(label) for label in np.unique(workload["labels"])[:100]]
    results["probe_store"] = {
        "labels": probe_labels,
        "points": int(workload["counts"].sum()),
        "min_workers_per_label": int(min(writers_per_label)),
    }

    ours = os.path.join(workdir, "ours")
    results["ours_ingest_s"] = ingest_ours(workload, ours)
    results["before"] = time_ours(ours, probes, passes)
    results["payloads"] = compare_payloads(ours, workdir, probes, passes, args.workers)
    results["compaction"] = run_compaction(ours, args.workers, 10**7)
    results["after"] = time_ours(ours, probes, passes)
    npz = os.path.join(workdir, "npz")
    results["npz_ingest_s"] = ingest_npz(workload, npz)
    results["npz"] = {"seconds": time_reads(NpzReader(npz, dtype="int32").get_points, probes, passes)}
    results["original"] = time_original(original_dir, workload_file, os.path.join(workdir, "original"), probes, passes)

    big = make_workload(args.seed + 1, big_labels)
    big_store = os.path.join(workdir, "big")
    results["big_store"] = {"labels": big_labels, "points": int(big["counts"].sum())}
    results["big_ingest_s"] = ingest_ours(big, big_store, BIG_POINTS_PER_FILE)
    big_probes = [int(label) for label in np.unique(big["labels"])[:: max(1, big_labels // 100)]]
    results["big_before"] = time_ours(big_store, big_probes, passes)
    results["big_compaction"] = run_compaction(big_store, args.workers, int(big["counts"].sum()) // 4)
    results["big_after"] = time_ours(big_store, big_probes, passes)


def render(results: dict[str, Any]) -> str:
    compaction = render_compaction(results) + "\n" if "before" in results else ""
    row_groups = "\n" + "\n".join(render_row_groups(results["row_groups"])) + "\n" if "row_groups" in results else ""
    if "codes" in results:
        row_groups = "\n" + "\n".join(render_codes(results["codes"])) + "\n" + row_groups
    return compaction + "\n".join(render_bulk(results["bulk"])) + "\n" + row_groups


def render_bulk(bulk: dict[str, Any]) -> list[str]:
    """Many labels in one ``get_points`` call beside a loop of single calls and the floor: whole files to numpy."""

    def rate(payload: str, way: str) -> float:
        points = bulk[payload]["points_stored" if way == "floor" else "points_returned"]
        return points / float(np.median(bulk[payload][way])) / 1e6

    def seconds(payload: str, way: str) -> float:
        return float(np.median(bulk[payload][way]))

    rows = [
        f"| {payload} | {rate(payload, 'one call'):.1f} | {rate(payload, 'loop'):.1f} "
        f"| {rate(payload, 'batches'):.1f} | {rate(payload, 'floor'):.1f} "
        f"| **{rate(payload, 'one call') / rate(payload, 'floor'):.2f}x** "
        f"| {seconds(payload, 'one call') / seconds(payload, 'floor'):.2f}x "
        f"| {rate(payload, 'one call') / rate(payload, 'loop'):.2f}x | {BULK_FLOORS[payload]} |"
        for payload in BULK_PAYLOADS
    ]
    parquet = bulk["parquet"]
    return [
        f"#### Many labels in one call: `get_points` of {bulk['labels']:,} random labels, compacted stores",
        "",
        f"{parquet['points_stored']:,} points, {bulk['store_labels']:,} labels of 10 blocks "
        f"(`_workloads.small_writes`), compacted as Parquet and as Arrow IPC; {bulk['labels']:,} random labels "
        f"({parquet['points_returned']:,} points) in one call (numpy output), and one label at a time, beside the "
        f"floor: every file of the store read whole into numpy; *batches*: the same labels streamed by "
        f"`iter_points(labels, batch_size={BATCH_POINTS:,})`, in bounded memory. Medians of {bulk['passes']} passes, all readers "
        "taking turns in each pass (warm Query, points cache off, page cache warm). A Parquet read decodes whole "
        "row groups of 8,192 rows, and with a fifth of the labels asked most groups hold one: its one call costs "
        "about as much as reading every file, so it stays near the share of points asked times the floor.",
        "",
        "| payload | one call, M points/s | loop of single calls | batches | floor | one call / floor "
        "| one call's time / reading every file | one call / loop | floor read |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows,
    ]


def render_compaction(results: dict[str, Any]) -> str:
    before, after = percentiles_ms(results["before"]["seconds"]), percentiles_ms(results["after"]["seconds"])
    npz, original = percentiles_ms(results["npz"]["seconds"]), percentiles_ms(results["original"]["seconds"])
    big_before, big_after = (
        percentiles_ms(results["big_before"]["seconds"]),
        percentiles_ms(results["big_after"]["seconds"]),
    )
    probe, big = results["probe_store"], results["big_store"]
    rows = [
        (
            "ours, before compaction",
            before,
            f"{results['before']['files']} files, {results['before']['index_rows']} index rows",
        ),
        (
            "ours, after compaction",
            after,
            f"{results['after']['files']} files, {results['after']['index_rows']} index rows",
        ),
        ("original 0.1.1, un-optimized", original, "its `optimize` script is not in the registry package"),
        ("npz per (label, block)", npz, f"{BLOCKS_PER_LABEL} files per label"),
    ]
    lines = [
        f"#### get_points of a 1,000-point label spanning {BLOCKS_PER_LABEL} blocks written by {probe['min_workers_per_label']}+ workers",
        "",
        f"Probe store: {probe['labels']} labels, {probe['points']:,} points; p50/p95 over {before['n']} reads "
        "(points cache off, page cache warm, files kept open).",
        "",
        "| layout | p50 ms | p95 ms | shape |",
        "|---|---:|---:|---|",
        *(f"| {name} | {f['p50']:.3f} | {f['p95']:.3f} | {shape} |" for name, f, shape in rows),
        "",
        f"Compaction speed-up (p50): **{before['p50'] / after['p50']:.1f}x**; "
        f"vs the original: {original['p50'] / after['p50']:.0f}x; vs npz: {npz['p50'] / after['p50']:.1f}x.",
        "",
        f"#### Larger store (ours): {big['labels']:,} labels, {big['points']:,} points, "
        f"workers flushing every {BIG_POINTS_PER_FILE:,} points",
        "",
        "| | p50 ms | p95 ms | shape |",
        "|---|---:|---:|---|",
        f"| before compaction | {big_before['p50']:.3f} | {big_before['p95']:.3f} | "
        f"{results['big_before']['files']} files, {results['big_before']['index_rows']} index rows |",
        f"| after compaction | {big_after['p50']:.3f} | {big_after['p95']:.3f} | "
        f"{results['big_after']['files']} files, {results['big_after']['index_rows']} index rows |",
        "",
        f"Speed-up (p50): **{big_before['p50'] / big_after['p50']:.1f}x**.",
        "",
        f"Compaction throughput ({results['compaction_workers']} worker processes; shards: "
        f"{results['compaction']['shards']} / {results['big_compaction']['shards']}): "
        f"probe store {results['compaction']['points_per_second']:,} points/s "
        f"({results['compaction']['seconds']:.2f} s), larger store "
        f"{results['big_compaction']['points_per_second']:,} points/s ({results['big_compaction']['seconds']:.2f} s).",
        "",
        f"Ingestion of the probe store: ours {results['ours_ingest_s']:.1f} s, original {results['original']['ingest_seconds']:.1f} s, "
        f"npz {results['npz_ingest_s']:.1f} s.",
        "",
        *render_payloads(results["payloads"], probe["points"]),
    ]
    return "\n".join(lines) + "\n"


def render_payloads(payloads: dict[str, Any], points: int) -> list[str]:
    """The compacted probe store in each payload beside np.load: bytes on disk and get_points, side by side."""
    npy = percentiles_ms(payloads[NPY]["seconds"])
    rows = []
    for name, *_ in PAYLOADS:
        figures = percentiles_ms(payloads[name]["seconds"])
        size = payloads[name]["bytes"]
        rows.append(
            f"| {name} | {size / 2**20:.2f} MiB ({size / points:.1f} B/point) | {figures['p50'] * 1e3:.0f} | "
            f"{figures['p95'] * 1e3:.0f} | **{figures['p50'] / npy['p50']:.2f}x** |"
        )
    return [
        "#### Parquet or Arrow IPC: the compacted probe store, get_points beside np.load of the same points",
        "",
        f"The same ingested store compacted in each payload; {npy['n']} reads each of 1,000-point labels, "
        "the readers taking turns label by label (warm Query, points cache off, page cache warm). "
        "Bytes: the compacted point files.",
        "",
        "| compacted payload | bytes on disk | p50 µs | p95 µs | p50 / np.load |",
        "|---|---:|---:|---:|---:|",
        *rows,
        f"| {NPY} | {payloads[NPY]['bytes_probes'] / 2**20:.2f} MiB for the {payloads[NPY]['labels']} labels read | "
        f"{npy['p50'] * 1e3:.0f} | {npy['p95'] * 1e3:.0f} | 1.00x |",
    ]


if __name__ == "__main__":
    main()
