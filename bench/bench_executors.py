"""Threads or processes for local workers: the same compaction, migration and scan with each, side by side.

    .venv/bin/python bench/bench_executors.py                  # all three verbs, 5 repetitions: ~4 minutes on 2 cores
    .venv/bin/python bench/bench_executors.py --quick          # smaller inputs, 3 repetitions: under a minute
    .venv/bin/python bench/bench_executors.py --verbs compact  # one verb

Every run is a fresh Python process, as ``pocaduck compact`` is, that runs the
verb twice on fresh copies of the same input: *cold* is the first run (for
processes it includes starting the forkserver and its imports), *warm* the
second (the forkserver is up, as in a notebook's second compaction). A
repetition runs processes and threads back to back, alternating which goes
first, so the load of a shared machine moves both alike. ``total`` is the
verb's wall time, ``tasks`` the part between the first "queued" and the last
final event (the executor's share: no planning, consolidation or publishing).
Reported: medians over the repetitions and threads / processes (below 1:
threads are faster). The local pool is switched through each verb's private
``_POOL``. The workloads:

* compaction: ``bench_compact``'s store (labels over 50 blocks written by 8
  workers flushing every 20,000 points), split into ``--shards`` shards (8);
* migration: the same points in the original library's layout (``worker_<i>/data``
  Parquet files of ``label, block_id, data`` rows and ``unified_index.db``),
  written directly with pyarrow and DuckDB, 8 original workers;
* scan: ``make_demo_volume`` as a memory-mapped ``.npy``, 64³ blocks, surface mode.

Markdown goes to stdout and ``bench/results/executors.md``, raw figures to
``executors.json``. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import _report
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from bench_compact import BIG_POINTS_PER_FILE, WORKERS, ingest_ours, make_workload

POOLS = ("processes", "threads")
LEGACY_ROWS_PER_FILE = 100_000


# -- inputs, made once -----------------------------------------------------------


def make_compaction_store(root: str, labels: int, seed: int) -> str:
    workload = make_workload(seed, labels)
    store = os.path.join(root, "scattered")
    ingest_ours(workload, store, BIG_POINTS_PER_FILE)
    return store


def make_legacy_store(root: str, labels: int, seed: int) -> str:
    """The original library's layout for the same kind of workload: one row per point, a ``data`` list column."""
    workload = make_workload(seed, labels)
    store = os.path.join(root, "legacy")
    ends = np.cumsum(workload["counts"])
    starts = ends - workload["counts"]
    index_rows = []
    for worker in range(WORKERS):
        writes = np.flatnonzero(workload["workers"] == worker)
        folder = os.path.join(store, f"worker_{worker}", "data")
        os.makedirs(folder)
        rows = np.concatenate([np.arange(starts[i], ends[i]) for i in writes])
        write_of_row = np.repeat(writes, workload["counts"][writes])
        for part, first in enumerate(range(0, len(rows), LEGACY_ROWS_PER_FILE)):
            chosen, owners = (
                rows[first : first + LEGACY_ROWS_PER_FILE],
                write_of_row[first : first + LEGACY_ROWS_PER_FILE],
            )
            path = os.path.join(folder, f"{worker}-{part}.parquet")
            points = workload["points"][chosen].astype(np.int64)
            data = pa.ListArray.from_arrays(
                pa.array(np.arange(0, 3 * len(chosen) + 1, 3, dtype=np.int32)), points.ravel()
            )
            labels_of_rows = workload["labels"][owners].astype(np.int64)
            blocks_of_rows = workload["blocks"][owners]
            pq.write_table(pa.table({"label": labels_of_rows, "block_id": blocks_of_rows, "data": data}), path)
            pairs, counts = np.unique(np.rec.fromarrays([labels_of_rows, blocks_of_rows]), return_counts=True)
            index_rows += [(int(p[0]), str(p[1]), path, int(c)) for p, c in zip(pairs, counts, strict=True)]
    with duckdb.connect(os.path.join(store, "unified_index.db")) as con:
        con.execute(
            "CREATE TABLE point_cloud_index (label BIGINT, block_id VARCHAR, file_path VARCHAR, point_count BIGINT)"
        )
        con.executemany("INSERT INTO point_cloud_index VALUES (?, ?, ?, ?)", index_rows)
    return store


def make_volume(root: str, edge: int, seed: int) -> str:
    from pocaduck import make_demo_volume

    path = os.path.join(root, "labels.npy")
    np.save(path, make_demo_volume(edge, seed=seed))
    return path


# -- one measured process --------------------------------------------------------


def child(spec: dict[str, Any]) -> None:
    """Run one verb on each input in turn with the given pool; print the timings as one JSON line."""
    verb, pool = spec["verb"], spec["pool"]
    # by module name: the package's ``compact`` attribute is the function
    module = importlib.import_module(
        {"compact": "pocaduck.compact", "migrate": "pocaduck.migration", "scan": "pocaduck.scan.api"}[verb]
    )
    module._POOL = pool
    runs = []
    for source, target in spec["runs"]:
        stamps: list[float] = []

        def record(event: Any, stamps: list[float] = stamps) -> None:
            stamps.append(time.perf_counter())

        started = time.perf_counter()
        if verb == "compact":
            report = module.compact(
                source, workers=spec["workers"], points_per_file=spec["points_per_file"], progress=record
            )
            points = report.points_written
        elif verb == "migrate":
            module.migrate(source, target, workers=spec["workers"], progress=record)
            points = None
        else:
            volume = np.load(source, mmap_mode="r")
            points = module.scan_volume(volume, target, block_shape=64, workers=spec["workers"], progress=record).points
        runs.append({"total_s": time.perf_counter() - started, "tasks_s": stamps[-1] - stamps[0], "points": points})
    print(json.dumps(runs))


def measure(verb: str, pool: str, source: str, workdir: str, workers: int, points_per_file: int) -> list[dict]:
    """Two runs of ``verb`` in one new process (cold, then warm), each on an input of its own."""
    runs, made = [], []
    for attempt in ("cold", "warm"):
        target = os.path.join(workdir, f"{verb}-{pool}-{attempt}")
        made.append(target)
        if verb == "compact":  # compaction rewrites its store: each run gets a fresh copy
            shutil.copytree(source, target)
            runs.append((target, None))
        else:
            runs.append((source, target))
    spec = {"verb": verb, "pool": pool, "runs": runs, "workers": workers, "points_per_file": points_per_file}
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{verb} with {pool} failed:\n{done.stderr}")
    for target in made:
        shutil.rmtree(target, ignore_errors=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the comparison ----------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller inputs, 3 repetitions")
    parser.add_argument("--repeats", type=int, help="repetitions (default 5, 3 with --quick)")
    parser.add_argument("--workers", type=int, default=2, help="local workers (default 2)")
    parser.add_argument("--verbs", default="compact,migrate,scan", help="comma-separated: compact, migrate, scan")
    parser.add_argument("--labels", type=int, help="labels of 1,000 points (default 4,000, 1,000 with --quick)")
    parser.add_argument("--edge", type=int, help="edge of the scanned volume (default 256, 192 with --quick)")
    parser.add_argument("--shards", type=int, default=8, help="compaction shards (default 8)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    _report.add_docs_option(parser)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    custom = args.quick or args.labels or args.edge or args.verbs != "compact,migrate,scan"
    docs = _report.docs_wanted(args, "bench_executors", "not the published sizes" if custom else None)
    repeats = args.repeats or (3 if args.quick else 5)
    labels, edge = (1_000, 192) if args.quick else (4_000, 256)
    labels, edge = args.labels or labels, args.edge or edge
    verbs = [verb.strip() for verb in args.verbs.split(",")]
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "workers": args.workers,
        "repeats": repeats,
        "labels": labels,
        "volume_edge": edge,
        "shards": args.shards,
        "verbs": {},
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-executors-") as workdir:
        for verb in verbs:
            points_per_file = labels * 1_000 // args.shards  # bench_compact's labels hold 1,000 points each
            source = {
                "compact": lambda: make_compaction_store(workdir, labels, args.seed),
                "migrate": lambda: make_legacy_store(workdir, labels, args.seed),
                "scan": lambda: make_volume(workdir, edge, args.seed),
            }[verb]()
            figures: dict[str, list] = {pool: [] for pool in POOLS}
            for repeat in range(repeats):
                order = POOLS if repeat % 2 == 0 else POOLS[::-1]
                for pool in order:
                    figures[pool].append(measure(verb, pool, source, workdir, args.workers, points_per_file))
                print(f"{verb}: repetition {repeat + 1} of {repeats} done", file=sys.stderr)
            results["verbs"][verb] = figures
    results["elapsed_s"] = time.perf_counter() - started
    text = render(results) + "\n" + _report.how_measured(started, f"seed {args.seed}")
    _report.publish("bench_executors", text, results, docs)


def median(figures: list[list[dict]], run: int, key: str) -> float:
    return float(np.median([runs[run][key] for runs in figures]))


def render(results: dict[str, Any]) -> str:
    lines = [
        f"## Local workers: threads vs processes ({results['workers']} workers, median of {results['repeats']} "
        "repetitions, seconds)",
        "",
        "| verb | run | part | processes | threads | threads / processes | paired |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for verb, figures in results["verbs"].items():
        for run, name in enumerate(("cold", "warm")):
            for key, part in (("total_s", "total"), ("tasks_s", "tasks")):
                by_pool = {pool: median(figures[pool], run, key) for pool in POOLS}
                ratio = by_pool["threads"] / by_pool["processes"]
                paired = np.median(
                    [t[run][key] / p[run][key] for p, t in zip(figures["processes"], figures["threads"], strict=True)]
                )
                lines.append(
                    f"| {verb} | {name} | {part} | {by_pool['processes']:.2f} | {by_pool['threads']:.2f} | "
                    f"{ratio:.2f} | {paired:.2f} |"
                )
    lines += [
        "",
        f"Inputs: {results['labels']:,} labels of 1,000 points (compaction: {results['shards']} shards; migration: "
        f"{WORKERS} original workers), a {results['volume_edge']}³ volume for the scan. Machine: "
        f"{results['machine']}; whole run {results['elapsed_s']:.0f} s. *paired*: the median of each "
        "repetition's own ratio (its two runs went back to back).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
