"""Requests and bytes per get_points on an S3 store, counted by the server: cold reads, and before/after compaction.

    .venv/bin/python bench/bench_requests.py              # about 1.5 minutes on 2 shared cores
    .venv/bin/python bench/bench_requests.py --quick      # smoke run, about a minute; leaves the docs alone
    .venv/bin/python bench/bench_requests.py --no-docs    # full sizes, docs left alone
    .venv/bin/python bench/bench_requests.py --large      # adds a 10^7-row store: about 3 minutes in all

    .venv/bin/python bench/bench_requests.py --round-trips-only --baseline /work/main   # round trips, old and new

*Round trips* (the first table): moto behind a proxy that adds ``--latency``
(100 ms) to every request (``_latency.py``); a fresh process opens a Query and
reads a 20-point label (cold), then, after another Query was opened and closed,
a new Query reads another label (warm). The round trips are the longest chain
of requests each sent after the one before was answered, from the proxy's log;
wall / latency says the same from the clock. ``--baseline CHECKOUT`` runs the
same children with another pocaduck beside this one, runs alternating.

The stores are written to moto's S3 server on loopback (the one the tests use,
``tests/_object_servers.py``), which logs every request it answers with the
bytes of its response (status line, headers and body): the counts are the
server's, not the client's.

*Cold read*: a new ``Query(store)`` and its first ``get_points``, with nothing
in the local cache, on stores of 10^5 and 10^6 index rows (one per (label,
block) write): labels over 10 of 1,000 blocks, 2 points per write, 8 workers
(block b goes to worker b mod 8) flushing a file every 250,000 points. Each
store is read as written (a label then sits in ~8 files), compacted (one file),
and as a store consolidated before label directories reads (its
``label_directory.json`` removed: the whole index is downloaded first). The
stores are written locally, copied into the bucket, then consolidated there,
so their index, its version and its label directory are the bucket's own.

*Before and after compaction* (the earlier table): each label spans 50 blocks
of an 8x8x8 grid with 20 points per block (1,000 points); blocks go to 8
workers round-robin, and each worker flushes a file every 5,000 points, so a
label is scattered over many files of every worker, as a blockwise scan leaves
it. Counted once the unified index is in the local cache:

- *open*: the requests of ``Query(store)``;
- *cold*: one ``get_points`` in a fresh Query (Parquet footers not yet read);
- *warm*: one ``get_points`` in a Query that already read the footers of the
  files it touches (footers stay cached while a Query is open).

The tables are printed and written to ``bench/results/requests.md``, raw
figures to ``requests.json``, and into its section of ``docs/benchmarks.md``
(see ``_report.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import _report  # noqa: E402
from _latency import LatencyProxy, sequential_round_trips  # noqa: E402
from _object_servers import S3Server  # noqa: E402

from pocaduck import Ingestor, Query, StorageConfig, compact, consolidate  # noqa: E402
from pocaduck.storage import open_storage  # noqa: E402

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


COLD_BLOCKS = 1_000
COLD_BLOCKS_PER_LABEL = 10
COLD_POINTS_PER_WRITE = 2
COLD_POINTS_PER_FILE = 250_000


def write_cold_store(folder: str, rows: int) -> None:
    """``rows`` (label, block) writes: label l in blocks (37 l + 101 k) mod 1,000 for k < 10, 8 workers."""
    labels = np.arange(rows // COLD_BLOCKS_PER_LABEL, dtype=np.uint64)
    row_labels = np.repeat(labels, COLD_BLOCKS_PER_LABEL)
    row_blocks = (row_labels * 37 + np.tile(np.arange(COLD_BLOCKS_PER_LABEL) * 101, len(labels))) % COLD_BLOCKS
    order = np.lexsort((row_labels, row_blocks))
    row_labels, row_blocks = row_labels[order], row_blocks[order]
    block_starts = np.searchsorted(row_blocks, np.arange(COLD_BLOCKS + 1))
    for worker in range(WORKERS):
        with Ingestor(folder, worker_id=worker, max_points_per_file=COLD_POINTS_PER_FILE) as ingestor:
            for block in range(worker, COLD_BLOCKS, WORKERS):
                mine = row_labels[block_starts[block] : block_starts[block + 1]]
                point_labels = np.repeat(mine, COLD_POINTS_PER_WRITE)
                points = np.column_stack([point_labels % 1000, np.full(len(point_labels), block), point_labels // 1000])
                ingestor.write_block(int(block), point_labels, points.astype(np.int32))
    consolidate(folder)


def copy_into_bucket(server: S3Server, folder: str, prefix: str) -> Any:
    """Copy a local store into the bucket, then consolidate it there (its index and directory, the bucket's own)."""
    config = server.config(prefix)
    storage = open_storage(config)
    for root, _, names in os.walk(folder):
        relative = os.path.relpath(root, folder)
        if relative.startswith("index_versions"):
            continue
        for name in names:
            if name.startswith(".") or name == "label_directory.json":
                continue
            path = name if relative == "." else f"{relative}/{name}"
            storage._fs.put_file(os.path.join(root, name), storage._full(path))
    consolidate(config)
    return config


def cold_reads(server: S3Server, config: Any, probes: list[int], cache: str) -> dict[str, Any]:
    """Requests and bytes of a new Query and its first get_points per probe label, the local cache empty each time.

    Each is split by what was read: the label directory (and its pointer), the index (downloaded), the Parquet
    files, and the rest (the manifest, the index's version).
    """
    reads = []
    for label in probes:
        shutil.rmtree(cache, ignore_errors=True)
        before = len(server.requests)
        started = time.perf_counter()
        with Query(config) as query:
            query.get_points(label)
        seconds = time.perf_counter() - started
        answered = server.requests[before:]
        read: dict[str, Any] = {"seconds": seconds, "kinds": Counter(_kind(request) for request in answered)}
        for part in ("all", *_PARTS):
            mine = [r for r in answered if part == "all" or _part(r) == part]
            read[part] = (len(mine), sum(r.bytes_sent for r in mine))
        reads.append(read)
    summary: dict[str, Any] = {
        "probes": len(reads),
        "seconds_p50": float(np.median([r["seconds"] for r in reads])),
        "kinds": dict(sum((r["kinds"] for r in reads), Counter())),
    }
    for part in ("all", *_PARTS):
        summary[part] = {
            "requests_p50": float(np.median([r[part][0] for r in reads])),
            "requests_max": max(r[part][0] for r in reads),
            "bytes_p50": float(np.median([r[part][1] for r in reads])),
            "bytes_max": max(r[part][1] for r in reads),
        }
    return summary


_PARTS = ("directory", "index", "data", "other")


def _part(request: Any) -> str:
    name = request.path.split("?")[0].rsplit("/", 1)[-1]
    if name in ("label_directory.bin", "label_directory.json"):
        return "directory"
    if name.endswith(".duckdb") and request.method == "GET":
        return "index"
    return "data" if name.endswith(".parquet") else "other"


def measure_cold(server: S3Server, rows: int, probe_count: int, seed: int) -> dict[str, Any]:
    """Cold reads on one store size: scattered, compacted, and without its label directory."""
    cache = os.environ["POCADUCK_CACHE_DIR"]
    rng = np.random.default_rng(seed)
    probes = [int(p) for p in rng.choice(rows // COLD_BLOCKS_PER_LABEL, probe_count, replace=False)]
    result: dict[str, Any] = {"rows": rows}
    with tempfile.TemporaryDirectory(prefix="pocaduck-bench-cold-") as scratch:
        folder = os.path.join(scratch, "store")
        write_cold_store(folder, rows)
        with Query(folder) as query:
            result["index_rows"] = query.info()["index_rows"]
        scattered = copy_into_bucket(server, folder, f"cold-{rows}")
        result["scattered"] = cold_reads(server, scattered, probes, cache)
        result["scattered"].update(_sizes(scattered))
        storage = open_storage(scattered)
        pointer = storage.read_bytes("label_directory.json")
        storage.delete_tree("label_directory.json")  # as a store consolidated before label directories
        result["without directory"] = cold_reads(server, scattered, probes[:3], cache)
        storage.write_bytes("label_directory.json", pointer)
        compact(folder, workers=1)
        compacted = copy_into_bucket(server, folder, f"cold-{rows}-compacted")
        result["compacted"] = cold_reads(server, compacted, probes, cache)
        result["compacted"].update(_sizes(compacted))
    return result


def _sizes(config: Any) -> dict[str, int]:
    """Bytes of the unified index and of the label directory in force, and the directory's entries."""
    storage = open_storage(config)
    pointer = json.loads(storage.read_bytes("label_directory.json"))
    return {"index_size": storage.size("unified_index.duckdb"), "directory_size": pointer["size"], **pointer}


def render_cold(results: list[dict[str, Any]]) -> str:
    probes = results[0]["scattered"]["probes"]
    lines = [
        "Cold read on S3 (moto on loopback): a new Query and its first get_points, nothing in the local cache; "
        f"median (max) of {probes} probe labels ({results[0]['without directory']['probes']} without a directory), "
        f"each over {COLD_BLOCKS_PER_LABEL} blocks ({COLD_BLOCKS_PER_LABEL * COLD_POINTS_PER_WRITE} points); bytes "
        "are whole responses, headers included. Other = the manifest and a HEAD of the index (its version).",
        "",
        "| index rows | unified index | label directory (entries) | store | requests | bytes | label directory: "
        "requests, bytes | index downloaded | Parquet files: requests, bytes | other | time p50 |",
        "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        for layout_name in ("scattered", "compacted", "without directory"):
            row = result[layout_name]
            sizes = result["scattered" if layout_name == "without directory" else layout_name]
            directory = (
                "—"
                if layout_name == "without directory"
                else f"{sizes['directory_size'] / 1e6:.2f} MB ({sizes['entries']:,})"
            )
            every, listing, index, data, other = (row[part] for part in ("all", *_PARTS))
            lines.append(
                f"| {result['index_rows']:,} | {sizes['index_size'] / 1e6:.1f} MB | {directory} | {layout_name} | "
                f"{every['requests_p50']:.0f} ({every['requests_max']}) | {_kb(every)} | "
                f"{listing['requests_p50']:.0f}, {_kb(listing)} | {_kb(index)} | "
                f"{data['requests_p50']:.0f}, {_kb(data)} | {other['requests_p50']:.0f}, {_kb(other)} | "
                f"{row['seconds_p50'] * 1e3:.0f} ms |"
            )
    return "\n".join(lines) + "\n"


def _kb(part: dict[str, Any]) -> str:
    return f"{part['bytes_p50'] / 1e3:,.0f} KB ({part['bytes_max'] / 1e3:,.0f})"


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
        pass  # the first Query reads the manifest and the label directory's pointer once, like any later one
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
        f"{len(results['probes'])} probe labels; points found through the label directory (the index is not "
        "fetched).",
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


ROUND_TRIP_PHASES = ("cold", "warm")


def round_trip_child(spec: dict[str, Any]) -> None:
    """In a fresh process: a cold Query + get_points, then (after another Query opened and closed) a warm one.

    Prints each phase's ``time.time()`` bounds, so the parent finds the phase's requests in the proxy's log.
    """
    import aiobotocore.session  # noqa: F401  (libraries' import time is no round trip: out of the phases)
    import s3fs  # noqa: F401

    config = StorageConfig(spec["url"], **spec["options"])
    phases = {}
    started = time.time()
    with Query(config) as query:
        query.get_points(spec["labels"][0])
    phases["cold"] = (started, time.time())
    with Query(config) as query:
        query.get_points(spec["labels"][1])
    started = time.time()
    with Query(config) as query:
        query.get_points(spec["labels"][2])
    phases["warm"] = (started, time.time())
    print(json.dumps(phases))


def round_trips(
    proxy: LatencyProxy, config: Any, labels: list[int], repeats: int, codes: dict[str, str | None]
) -> dict[str, Any]:
    """Wall time, requests and sequential round trips of each phase of :func:`round_trip_child`, median of runs.

    ``codes`` names each pocaduck to run the children with: a checkout's folder put first on their PYTHONPATH,
    or None for this one. Their runs alternate, so load on the machine falls on both alike.
    """
    import subprocess

    options = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "base_path"}
    options["s3_endpoint_url"] = proxy.endpoint_url
    runs: dict[tuple[str, str], list[tuple[float, int, int]]] = {}
    for run in range(repeats):
        picked = [labels[(3 * run + k) % len(labels)] for k in range(3)]
        spec = {"url": config.base_path, "options": options, "labels": picked}
        for code, folder in codes.items():
            environment = {**os.environ, "POCADUCK_CACHE_DIR": tempfile.mkdtemp(prefix="pocaduck-bench-cache-")}
            if folder is not None:
                environment["PYTHONPATH"] = os.pathsep.join([folder, environment.get("PYTHONPATH", "")])
            output = subprocess.run(
                [sys.executable, __file__, "--round-trip-child", json.dumps(spec)],
                check=True,
                capture_output=True,
                text=True,
                env=environment,
            ).stdout
            shutil.rmtree(environment["POCADUCK_CACHE_DIR"], ignore_errors=True)
            for phase, (start, end) in json.loads(output.splitlines()[-1]).items():
                requests = proxy.between(start, end)
                trips = sequential_round_trips([(r.start, r.end) for r in requests])
                runs.setdefault((code, phase), []).append((end - start, len(requests), trips))
    return {
        code: {
            phase: {
                "seconds_p50": float(np.median([r[0] for r in runs[code, phase]])),
                "requests_p50": float(np.median([r[1] for r in runs[code, phase]])),
                "round_trips_p50": float(np.median([r[2] for r in runs[code, phase]])),
                "round_trips_max": max(r[2] for r in runs[code, phase]),
            }
            for phase in ROUND_TRIP_PHASES
        }
        for code in codes
    }


def measure_round_trips(
    server: S3Server, rows: int, latency: float, repeats: int, seed: int, codes: dict[str, str | None]
) -> dict[str, Any]:
    """Round trips of a cold and a warm label read through the latency proxy, as ingested and compacted (Arrow)."""
    labels = [int(p) for p in np.random.default_rng(seed).choice(rows // COLD_BLOCKS_PER_LABEL, 3 * repeats, False)]
    result: dict[str, Any] = {"rows": rows, "latency": latency}
    upstream = server.endpoint_url.removeprefix("http://")
    with (
        tempfile.TemporaryDirectory(prefix="pocaduck-bench-trips-") as scratch,
        LatencyProxy(upstream, latency) as proxy,
    ):
        folder = os.path.join(scratch, "store")
        write_cold_store(folder, rows)
        ingested = copy_into_bucket(server, folder, f"trips-{rows}")
        result["as ingested"] = round_trips(proxy, ingested, labels, repeats, codes)
        compact(folder, workers=1, payload="arrow")
        compacted = copy_into_bucket(server, folder, f"trips-{rows}-compacted")
        result["compacted"] = round_trips(proxy, compacted, labels, repeats, codes)
    return result


def render_round_trips(result: dict[str, Any]) -> str:
    latency_ms = result["latency"] * 1e3
    lines = [
        f"Round trips on S3 (moto on loopback) behind a proxy adding {latency_ms:.0f} ms to every request; "
        f"{result['rows']:,} index rows, labels over {COLD_BLOCKS_PER_LABEL} blocks "
        f"({COLD_BLOCKS_PER_LABEL * COLD_POINTS_PER_WRITE} points). *Cold*: a new Query and its first get_points "
        "in a fresh process; *warm*: a new Query and another label's get_points in a process that opened and "
        "closed a Query before. Round trips: the longest chain of requests each sent after the one before was "
        "answered (from the proxy's log), and wall time / latency. Medians of the runs.",
        "",
        "| store | read | pocaduck | wall | requests | sequential round trips | wall / latency |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for store in ("as ingested", "compacted"):
        for phase in ROUND_TRIP_PHASES:
            for code, rows in result[store].items():
                lines.append(_round_trip_row(store, phase, code, rows[phase], result["latency"]))
    return "\n".join(lines) + "\n"


def _round_trip_row(store: str, phase: str, code: str, row: dict[str, Any], latency: float) -> str:
    return (
        f"| {store} | {phase} | {code} | {row['seconds_p50'] * 1e3:.0f} ms | {row['requests_p50']:.0f} | "
        f"{row['round_trips_p50']:.0f} (max {row['round_trips_max']}) | "
        f"{row['seconds_p50'] / latency:.1f} |"
    )


def round_trips_table(args: argparse.Namespace) -> str:
    """The round-trip table alone, on its own server (``--round-trips-only``)."""
    server = S3Server()
    server.start()
    server.enable_auth()
    server.client().create_bucket(Bucket=server.bucket)
    try:
        rows, repeats = (10**5, 3) if args.quick else (10**6, 5)
        codes = {"this": None, **({"baseline": args.baseline} if args.baseline else {})}
        return render_round_trips(measure_round_trips(server, rows, args.latency, repeats, args.seed, codes))
    finally:
        server.disable_auth()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer labels and probes, smaller stores")
    parser.add_argument("--large", action="store_true", help="add a store of 10^7 index rows to the cold reads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the proxy adds to every request")
    parser.add_argument("--round-trips-only", action="store_true", help="only the round-trip table; docs left alone")
    parser.add_argument("--baseline", help="a pocaduck checkout whose round trips to show beside these")
    parser.add_argument("--round-trip-child", help=argparse.SUPPRESS)
    _report.add_docs_option(parser)
    args = parser.parse_args()
    if args.round_trip_child:
        round_trip_child(json.loads(args.round_trip_child))
        return
    started = time.perf_counter()
    if args.round_trips_only:
        print(round_trips_table(args))
        return
    docs = _report.docs_wanted(args, "bench_requests", "--quick" if args.quick else None)
    labels, probe_count = (40, 10) if args.quick else (200, 40)
    cold_sizes = [10**4, 10**5] if args.quick else [10**5, 10**6] + ([10**7] if args.large else [])
    os.environ["POCADUCK_CACHE_DIR"] = tempfile.mkdtemp(prefix="pocaduck-bench-cache-")
    server = S3Server()
    server.start()
    server.enable_auth()
    server.client().create_bucket(Bucket=server.bucket)
    try:
        results: dict[str, Any] = {
            "cold": [measure_cold(server, rows, 5 if args.quick else 15, args.seed) for rows in cold_sizes]
        }
        codes = {"this": None, **({"baseline": args.baseline} if args.baseline else {})}
        trip_rows, trip_repeats = (10**5, 3) if args.quick else (10**6, 5)
        results["round trips"] = measure_round_trips(server, trip_rows, args.latency, trip_repeats, args.seed, codes)
        config = write_store(server, "requests", labels, args.seed)
        probes = np.random.default_rng(args.seed + 1).choice(np.arange(1, labels + 1), probe_count, replace=False)
        results.update({"labels": labels, "probes": [int(p) for p in probes]})
        results["before compaction"] = count_layout(server, config, results["probes"])
        compact(config, workers=1)
        results["after compaction"] = count_layout(server, config, results["probes"])
    finally:
        server.disable_auth()
        server.stop()
        shutil.rmtree(os.environ["POCADUCK_CACHE_DIR"], ignore_errors=True)
    text = (
        render_round_trips(results["round trips"])
        + "\n"
        + render_cold(results["cold"])
        + "\n"
        + render(results)
        + "\n"
        + _report.how_measured(started, f"seed {args.seed}")
    )
    _report.publish("bench_requests", text, results, docs)


if __name__ == "__main__":
    main()
