"""What replacing blocks costs consolidation, side by side in one run.

    .venv/bin/python bench/bench_rescan.py                       # 2x10^6 index rows, 1 % of blocks re-scanned
    .venv/bin/python bench/bench_rescan.py --rows 500000 --repeats 3 --baseline /path/to/main/checkout

A store of ``--rows`` index rows is written by 8 workers through
``Ingestor.write_block`` (blocks of 10^4 labels, one point each, labels over
all of uint64). Then, in turns, each consolidation runs in a process of its own:

* ``no replacement, one statement``: this checkout on the store as written;
* ``baseline``: the code at ``--baseline`` (a checkout of main, if given) on the same store, and
  ``baseline, re-scanned`` on a copy where one re-scan worker replaced ``--replaced`` of the blocks
  (new labels, half the points), which that code merges as plain writes;
* this checkout on the re-scanned copy: ``one statement`` (``consolidate(store)``) and
  ``ranges on 2 workers`` (``consolidate(store, workers=2)``), the latter on the store as written too.

Medians of ``--repeats`` turns and their ratios to the first (``no replacement, one statement``), for the whole consolidation and for
its merge (the sorted insert, or the range tasks: where replaced rows are dropped), are printed and written
to ``bench/results/rescan.md`` / ``.json`` and their section of ``docs/benchmarks.md`` (not with
``--no-docs``). Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import _report
import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

from pocaduck import Ingestor  # noqa: E402

WORKERS = 8
LABELS_PER_BLOCK = 10_000
SPREAD = np.uint64(0x9E3779B97F4A7C15)

CHILD = """
import json, logging, sys, time
sys.path.insert(0, sys.argv[1])
from pocaduck import consolidate
phases = {}
class Phases(logging.Handler):
    def emit(self, record):
        if hasattr(record, "phase"):
            phases[record.phase] = phases.get(record.phase, 0.0) + record.seconds
logger = logging.getLogger("pocaduck")
logger.setLevel(logging.DEBUG)
logger.addHandler(Phases())
started = time.perf_counter()
consolidate(sys.argv[2], workers=None if sys.argv[3] == "none" else int(sys.argv[3]), progress=False)
print(json.dumps({"total": time.perf_counter() - started, "merge": phases.get("sorted insert", 0.0)
                  + phases.get("merge ranges", 0.0)}))
"""


def write_store(store: str, rows: int) -> int:
    blocks = rows // LABELS_PER_BLOCK
    points = np.zeros((LABELS_PER_BLOCK, 3), np.int32)
    for worker in range(WORKERS):
        with Ingestor(store, worker) as ingestor:
            for block in range(worker, blocks, WORKERS):
                labels = np.arange(LABELS_PER_BLOCK, dtype=np.uint64) + np.uint64(block * LABELS_PER_BLOCK // 2)
                ingestor.write_block(block, labels * SPREAD, points)
    return blocks


def rescan(store: str, blocks: int, share: float) -> int:
    replaced = np.linspace(0, blocks - 1, max(1, int(blocks * share))).round().astype(int)
    points = np.ones((LABELS_PER_BLOCK // 2, 3), np.int32)
    with Ingestor(store, "rescan-bench") as ingestor:
        for block in np.unique(replaced).tolist():
            labels = np.arange(LABELS_PER_BLOCK // 2, dtype=np.uint64) + np.uint64(2**63 + block * LABELS_PER_BLOCK)
            ingestor.write_block(block, labels, points, replace=True)
    return len(np.unique(replaced))


def consolidation_seconds(code: str, store: str, workers: int | None) -> dict[str, float]:
    """One consolidation in a process of its own: its seconds in all, and in the merge (where rows are dropped)."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, code, store, "none" if workers is None else str(workers)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def render(times: dict[str, list[dict[str, float]]], rows: int, blocks: int, replaced: int) -> str:
    reference = {
        key: statistics.median(turn[key] for turn in times["no replacement, one statement"])
        for key in ("total", "merge")
    }
    lines = [
        f"{rows:,} index rows in {blocks:,} blocks; re-scanned: {replaced} of them replaced. Medians of "
        f"{len(times['no replacement, one statement'])} turns, each consolidation in a process of its own.",
        "",
        "| consolidation | seconds | × the first row | merge, seconds | × |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, turns in times.items():
        total, merge = (statistics.median(turn[key] for turn in turns) for key in ("total", "merge"))
        lines.append(
            f"| {name} | {total:.2f} | {total / reference['total']:.2f} | {merge:.2f} | "
            f"{merge / reference['merge']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--replaced", type=float, default=0.01, help="share of the blocks re-scanned")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", help="a checkout of main to compare with (its pocaduck package)")
    _report.add_docs_option(parser)
    args = parser.parse_args()
    started = time.perf_counter()
    docs = _report.docs_wanted(args, "bench_rescan")
    folder = tempfile.mkdtemp(prefix="bench-rescan-")
    try:
        store = os.path.join(folder, "store")
        blocks = write_store(store, args.rows)
        rescanned = os.path.join(folder, "rescanned")
        shutil.copytree(store, rescanned)
        replaced = rescan(rescanned, blocks, args.replaced)
        runs = {"no replacement, one statement": (HERE, store, None)}
        if args.baseline:
            runs |= {"baseline": (args.baseline, store, None), "baseline, re-scanned": (args.baseline, rescanned, None)}
        runs |= {
            "re-scanned, one statement": (HERE, rescanned, None),
            "no replacement, ranges on 2 workers": (HERE, store, 2),
            "re-scanned, ranges on 2 workers": (HERE, rescanned, 2),
        }
        times: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
        for _ in range(args.repeats):  # in turns, so a load that comes and goes weighs on every run alike
            for name, (code, path, workers) in runs.items():
                times[name].append(consolidation_seconds(code, path, workers))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    text = render(times, args.rows, blocks, replaced) + "\n\n" + _report.how_measured(started)
    _report.publish("bench_rescan", text, times, docs)


if __name__ == "__main__":
    main()
