"""Requests per ``get_points`` on an S3 store, counted by the server: before and after compaction.

    .venv/bin/python bench/bench_requests.py              # about a minute on 2 shared cores
    .venv/bin/python bench/bench_requests.py --quick      # smoke run, under a minute; leaves the docs alone
    .venv/bin/python bench/bench_requests.py --no-docs    # full sizes, docs left alone

The store is written to moto's S3 server on loopback (the one the tests use,
``tests/_object_servers.py``), which logs every request it answers: the counts
are the server's, not the client's. Each label spans 50 blocks of an 8x8x8
grid with 20 points per block (1,000 points); blocks go to 8 workers
round-robin, and each worker flushes a file every 5,000 points, so a label is
scattered over many files of every worker, as a blockwise scan leaves it.

Counted once the unified index is in the local cache:

- *open*: the requests of ``Query(store)`` (manifest, index freshness check);
- *cold*: one ``get_points`` in a fresh Query (Parquet footers not yet read);
- *warm*: one ``get_points`` in a Query that already read the footers of the
  files it touches (footers stay cached while a Query is open).

The table is printed and written to ``bench/results/requests.md``, raw
figures to ``requests.json``, and into its section of ``docs/benchmarks.md``
(see ``_report.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import _report  # noqa: E402
from _object_servers import S3Server  # noqa: E402

from pocaduck import Ingestor, Query, compact, consolidate  # noqa: E402

GRID = 8
WORKERS = 8
BLOCKS_PER_LABEL = 50
POINTS_PER_BLOCK = 20
POINTS_PER_FILE = 5_000


def write_store(server: S3Server, prefix: str, labels: int, seed: int) -> Any:
    """Ingest ``labels`` labels, each over BLOCKS_PER_LABEL random blocks, with WORKERS workers."""
    config = server.config(prefix)
    rng = np.random.default_rng(seed)
    blocks_of = [rng.choice(GRID**3, BLOCKS_PER_LABEL, replace=False) for _ in range(labels)]
    for worker in range(WORKERS):
        with Ingestor(config, worker_id=worker, max_points_per_file=POINTS_PER_FILE) as ingestor:
            for block in range(worker, GRID**3, WORKERS):
                for label, blocks in enumerate(blocks_of, start=1):
                    if block in blocks:
                        points = rng.integers(0, 64, size=(POINTS_PER_BLOCK, 3), dtype=np.int32) + block * 64
                        ingestor.write(label, f"block-{block}", points)
    consolidate(config)
    return config


def counted(server: S3Server, action: Any) -> tuple[Any, Counter]:
    """What ``action()`` returns, and the requests the server answered meanwhile, by method."""
    before = len(server.requests)
    result = action()
    return result, Counter(_kind(request) for request in server.requests[before:])


def _kind(request: Any) -> str:
    """GET of an object, LIST (a GET on the bucket), HEAD, PUT..."""
    return "LIST" if request.method == "GET" and "list-type=" in request.path else request.method


def count_layout(server: S3Server, config: Any, probes: list[int]) -> dict[str, Any]:
    """Request counts of opening a Query and of cold and warm get_points, per probe label."""
    with Query(config):
        pass  # puts the unified index in the local cache
    opened: list[Counter] = []
    cold: list[Counter] = []
    for label in probes:
        query, opening = counted(server, lambda: Query(config))
        with query:
            opened.append(opening)
            cold.append(counted(server, lambda q=query, lab=label: q.get_points(lab, use_cache=False))[1])
    with Query(config) as query:
        for label in probes:
            query.get_points(label, use_cache=False)
        warm = [counted(server, lambda q=query, lab=label: q.get_points(lab, use_cache=False))[1] for label in probes]
        files = query.info()["files"]
    return {"files": files, "open": _summary(opened), "cold": _summary(cold), "warm": _summary(warm)}


def _summary(counts: list[Counter]) -> dict[str, Any]:
    gets = np.array([c["GET"] for c in counts])
    others = Counter()
    for count in counts:
        others |= Counter({kind: n for kind, n in count.items() if kind != "GET"})  # the most of each kind
    return {"get_p50": float(np.median(gets)), "get_max": int(gets.max()), "others": dict(others)}


def _others(summary: dict[str, Any]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(summary["others"].items())) or "none"


def render(results: dict[str, Any]) -> str:
    lines = [
        f"Requests per get_points on S3 (moto on loopback), {results['labels']} labels of "
        f"{BLOCKS_PER_LABEL * POINTS_PER_BLOCK} points over {BLOCKS_PER_LABEL} blocks, {WORKERS} workers, "
        f"{len(results['probes'])} probe labels; unified index already cached locally.",
        "",
        "| layout | files | Query open | cold get_points: GETs p50 (max) | warm get_points: GETs p50 (max) "
        "| other requests in get_points |",
        "| --- | ---: | --- | ---: | ---: | --- |",
    ]
    for name in ("before compaction", "after compaction"):
        row = results[name]
        opening = f"{row['open']['get_p50']:.0f} GET, {_others(row['open'])}"
        lines.append(
            f"| {name} | {row['files']} | {opening} | {row['cold']['get_p50']:.0f} ({row['cold']['get_max']}) | "
            f"{row['warm']['get_p50']:.0f} ({row['warm']['get_max']}) | "
            f"cold: {_others(row['cold'])}; warm: {_others(row['warm'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer labels and probes")
    parser.add_argument("--seed", type=int, default=0)
    _report.add_docs_option(parser)
    args = parser.parse_args()
    started = time.perf_counter()
    docs = _report.docs_wanted(args, "bench_requests", "--quick" if args.quick else None)
    labels, probe_count = (40, 10) if args.quick else (200, 40)
    os.environ.setdefault("POCADUCK_CACHE_DIR", tempfile.mkdtemp(prefix="pocaduck-bench-cache-"))
    server = S3Server()
    server.start()
    server.enable_auth()
    server.client().create_bucket(Bucket=server.bucket)
    try:
        config = write_store(server, "requests", labels, args.seed)
        probes = np.random.default_rng(args.seed + 1).choice(np.arange(1, labels + 1), probe_count, replace=False)
        results: dict[str, Any] = {"labels": labels, "probes": [int(p) for p in probes]}
        results["before compaction"] = count_layout(server, config, results["probes"])
        compact(config, workers=1)
        results["after compaction"] = count_layout(server, config, results["probes"])
    finally:
        server.disable_auth()
        server.stop()
    text = render(results) + "\n" + _report.how_measured(started, f"seed {args.seed}")
    _report.publish("bench_requests", text, results, docs)


if __name__ == "__main__":
    main()
