"""Consolidation at scale: one sorted merge against label ranges on the executor, phase by phase.

    .venv/bin/python bench/bench_consolidate.py            # 10^7 and 3x10^7 index rows; ~25 minutes on 2 cores
    .venv/bin/python bench/bench_consolidate.py --quick    # 2x10^5 and 10^6 rows, a smoke run; docs left alone
    .venv/bin/python bench/bench_consolidate.py --sizes 10000000 100000000 --no-docs

Each store is written by 8 workers (2 at a time, in processes) through
``Ingestor.write_block``: blocks of 10^6 labels holding one point each, every
label in two blocks of two workers, labels spread over all of uint64 (half
of them at or above 2^63). So an index row is one (label, block) write, as a
field-scale scan writes them, and nothing is forged. Each consolidation runs
in a process of its own (peak memory is that run's ``ru_maxrss``), in turns:
``consolidate(store)`` (one DuckDB statement, sorting on every core),
``consolidate(store, workers=1)`` and ``workers=2`` (label ranges merged as
executor tasks, then assembled). Phases come from the DEBUG log of
``pocaduck.consolidate``. Medians of ``--repeats`` turns; figures are
printed and written to ``bench/results/consolidate.md`` and its section of
``docs/benchmarks.md`` (not with ``--quick`` or ``--no-docs``). Timings are
reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import _report
import numpy as np

from pocaduck import Ingestor, collect_garbage, consolidate, open_store
from pocaduck.label_directory import read_pointer

WORKERS = 8
LABELS_PER_BLOCK = 1_000_000
SPREAD = np.uint64(0x9E3779B97F4A7C15)  # odd: label n ↦ n × SPREAD mod 2^64 is one to one, spread over uint64
PATHS = {"serial": None, "ranges, 1 worker": 1, "ranges, 2 workers": 2}


def write_worker(job: tuple[str, int, int, int]) -> None:
    """Worker ``worker`` writes its share of ``blocks`` blocks; block b holds labels b·L/2 … b·L/2 + L - 1 (mod)."""
    store, worker, blocks, labels_per_block = job
    distinct = blocks * labels_per_block // 2
    points = np.zeros((labels_per_block, 3), np.int32)
    with Ingestor(store, worker) as ingestor:
        for block in range(worker, blocks, WORKERS):
            numbers = (np.arange(labels_per_block, dtype=np.uint64) + block * labels_per_block // 2) % distinct
            ingestor.write_block(block, numbers * SPREAD, points)


def build_store(store: str, rows: int) -> float:
    labels_per_block = min(LABELS_PER_BLOCK, rows // WORKERS)
    blocks = rows // labels_per_block
    started = time.perf_counter()
    with multiprocessing.get_context("forkserver").Pool(2) as pool:
        pool.map(write_worker, [(store, worker, blocks, labels_per_block) for worker in range(WORKERS)])
    return time.perf_counter() - started


def child(store: str, workers: int | None) -> dict[str, Any]:
    """One consolidation in this process: its seconds, phases, peak memory and the sizes it wrote."""
    phases: dict[str, float] = {}

    class Phases(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if hasattr(record, "phase"):
                phases[record.phase] = phases.get(record.phase, 0.0) + record.seconds

    logger = logging.getLogger("pocaduck")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Phases())
    started = time.perf_counter()
    consolidate(store, workers=workers)
    seconds = time.perf_counter() - started
    pointer = read_pointer(open_store(store).storage)
    return {
        "seconds": seconds,
        "phases": phases,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "index_bytes": os.path.getsize(os.path.join(store, "unified_index.duckdb")),
        "directory_bytes": pointer["size"],
        "directory_entries": pointer["entries"],
    }


def run_child(store: str, workers: int | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", json.dumps({"store": store, "workers": workers})]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    collect_garbage(store)  # the index version just replaced: keeps the disk to one version
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    best = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]
    phases = {name: float(np.median([run["phases"].get(name, 0.0) for run in runs])) for name in best["phases"]}
    return {**best, "phases": phases, "all_seconds": [run["seconds"] for run in runs]}


def measure(rows: int, repeats: int, scratch: str) -> dict[str, Any]:
    store = tempfile.mkdtemp(dir=scratch, prefix=f"consolidate-{rows}-")
    ingest = build_store(store, rows)
    data_bytes = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(store) for n in names)
    print(f"{rows:,} rows: written in {ingest:.0f} s ({data_bytes / 1e9:.2f} GB)", file=sys.stderr)
    runs: dict[str, list] = {name: [] for name in PATHS}
    for turn in range(repeats):
        for name, workers in PATHS.items():
            runs[name].append(run_child(store, workers))
            print(f"  turn {turn + 1} {name}: {runs[name][-1]['seconds']:.1f} s", file=sys.stderr)
    shutil.rmtree(store)
    return {
        "rows": rows,
        "ingest_seconds": ingest,
        "store_bytes": data_bytes,
        **{n: median_run(r) for n, r in runs.items()},
    }


PHASES = [  # in the order they run
    "fetch worker indexes",
    "attach",
    "sample labels",
    "sorted insert",
    "merge ranges",
    "insert ranges",
    "summaries",
    "checkpoint",
    "label directory",
    "publish",
]
MERGE_PHASES = {"sorted insert", "merge ranges"}  # the work that label ranges spread over workers


def extrapolate(result: dict[str, Any], rows: float, workers: int) -> dict[str, float]:
    """Seconds at ``rows`` by a linear model from one measured size (see the table's note)."""
    scale, cores = rows / result["rows"], os.cpu_count() or 1
    model = {}
    for name in PATHS:
        run = result[name]
        merge = sum(seconds for phase, seconds in run["phases"].items() if phase in MERGE_PHASES)
        rest = run["seconds"] - merge
        model[name] = (merge if name == "serial" else merge * cores / workers) * scale + rest * scale
    return model


def table(results: list[dict[str, Any]], started: float) -> str:
    seen = {phase for result in results for name in PATHS for phase in result[name]["phases"]}
    phases = [phase for phase in PHASES if phase in seen] + sorted(seen - set(PHASES))
    lines = [
        "Consolidation of 8 worker indexes, one index row per (label, block) write of one point; "
        "`serial` is `consolidate(store)`, `ranges` `consolidate(store, workers=N)`. Seconds are medians of the "
        "turns (all turns in brackets); phases from the DEBUG log of `pocaduck.consolidate`.",
        "",
        "| rows | path | seconds | ratio to serial | peak memory | index | directory |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        serial = result["serial"]["seconds"]
        for name in PATHS:
            run = result[name]
            turns = ", ".join(f"{s:.1f}" for s in run["all_seconds"])
            lines.append(
                f"| {result['rows']:,} | {name} | {run['seconds']:.1f} ({turns}) | {run['seconds'] / serial:.2f}× | "
                f"{run['peak_mib']:,.0f} MiB | {run['index_bytes'] / 1e6:,.0f} MB | "
                f"{run['directory_bytes'] / 1e6:,.0f} MB |"
            )
    lines += ["", "Phases (seconds, medians):", "", "| rows | path | " + " | ".join(phases) + " |"]
    lines.append("|---:|---|" + "---:|" * len(phases))
    for result in results:
        for name in PATHS:
            values = [result[name]["phases"].get(phase) for phase in phases]
            cells = " | ".join("" if v is None else f"{v:.2f}" for v in values)
            lines.append(f"| {result['rows']:,} | {name} | {cells} |")
    largest = results[-1]
    lines += [
        "",
        f"Extrapolation to 10^10 rows from the {largest['rows']:,}-row figures, by a linear model: the merge "
        f"phase (`merge ranges`) costs its measured seconds per row × the {os.cpu_count()} cores it kept busy, "
        "divided over the workers (one core each, e.g. Dask); everything else (sampling, assembly, summaries, "
        "checkpoint, directory, publishing) stays serial at its measured seconds per row. The serial path runs on "
        "one machine like this one whatever the workers. DuckDB's sort is n log n and spills past memory, so "
        "every figure is a floor:",
        "",
        "| path | 2 workers | 64 workers | 1,024 workers |",
        "|---|---:|---:|---:|",
    ]
    models = {workers: extrapolate(largest, 1e10, workers) for workers in (2, 64, 1024)}
    for name in PATHS:
        cells = " | ".join(f"{models[w][name] / 3600:.1f} h" for w in models)
        lines.append(f"| {name} | {cells} |")
    lines += ["", _report.how_measured(started, f"ingest by 8 workers, 2 at a time: {ingest_line(results)}")]
    return "\n".join(lines)


def ingest_line(results: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{r['rows']:,} rows in {r['ingest_seconds']:.0f} s, {r['store_bytes'] / 1e9:.2f} GB" for r in results
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2x10^5 and 10^6 rows, one turn")
    parser.add_argument("--sizes", type=int, nargs="+", help="index rows of each store (default 10^7 and 3x10^7)")
    parser.add_argument("--repeats", type=int, help="turns of the three paths per size (default 3, 1 quick)")
    parser.add_argument("--scratch", default=None, help="folder for the stores (default: the system's temp folder)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    _report.add_docs_option(parser)
    args = parser.parse_args()
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(child(job["store"], job["workers"])))
        return
    docs = _report.docs_wanted(args, "bench_consolidate", "--quick" if args.quick else None)
    sizes = args.sizes or ([200_000, 1_000_000] if args.quick else [10_000_000, 30_000_000])
    repeats = args.repeats or (1 if args.quick else 3)
    started = time.perf_counter()
    results = [measure(rows, repeats, args.scratch or tempfile.gettempdir()) for rows in sizes]
    _report.publish("bench_consolidate", table(results, started), results, docs)


if __name__ == "__main__":
    main()
