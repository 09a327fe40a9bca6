"""The 1-billion-point store on this machine, each payload side by side, and a model for 10^10–10^11 points.

    .venv/bin/python bench/bench_scale.py                      # 10^9 points: 20-30 min on 2 shared cores
    .venv/bin/python bench/bench_scale.py --quick              # 10^7 points, a smoke run; docs left alone
    .venv/bin/python bench/bench_scale.py --payloads parquet   # only the Parquet payload
    .venv/bin/python bench/bench_scale.py --no-docs --keep     # docs left alone, the work directory kept

The store: 1,000,000 labels × 1,000 points, each label over 10 blocks (100
points per (label, block): 10^7 index rows), written as a blockwise job does,
by 8 worker processes, 2 at a time, each an ``Ingestor`` calling
``write_block`` once per block of its slab (blocks go to workers by x). Labels
are random uint64 (half ≥ 2**63) walking through a 64³ grid of 256³-voxel
blocks, their points blobs around a centre in each block (``_workloads.py``),
as uint16 voxel coordinates (a 16,384³ volume; a connectome's fits uint16).

Steps, in one run: ingest, ``consolidate``, then for each payload in
``--payloads`` a ``compact(store, payload=...)`` of the store in force and its
reads, then ``collect_garbage`` (which drops the previous compaction). Every
read is measured the same way on the store as ingested and after each
compaction, beside ``np.load`` of the same points from one ``.npy`` per label:

- *warm*: one ``Query``, ``get_points(label, use_cache=False)``, each label read
  once before, files in the page cache;
- *cold*: the page cache of every file of the store dropped
  (``posix_fadvise(POSIX_FADV_DONTNEED)``, after one ``sync``), then a new
  ``Query`` and its first ``get_points``, timed together and get_points alone;
- *new Query*: the same as cold with the files in the page cache;
- the label browser's first page: ``LabelBrowser(Query(store))`` (its count and
  first page), on a new Query.

Disk: everything goes under one work directory (``--workdir``, default under
``bench/results/``), removed at the end unless ``--keep``. Before the real
build, the same steps run on a sample of 1 % of the labels; its peak use of
the disk (sampled every second), scaled by 100, is the plan, printed with the
free disk. The 10^9 store holds the payloads that fit ``--budget-gb`` (10 GB);
those that do not are measured, with Parquet beside them, on a store of 10 %
of the labels built the same way, and said so. The run refuses to start when
the plan does not fit the free disk.

Then the model: index and label directory sizes, range reads and bytes of a
cold label read on a bucket, and consolidation time at 10^10 and 10^11 points,
from this run's measured bytes per row, the directory's geometry
(``label_directory.level_page_counts``), its measured bytes per entry and per
fence item (its pages are compressed, format 2) and the measured merge rate.

Figures are printed, saved to ``bench/results/scale.md``/``.json`` and written
into the ``bench_scale`` section of docs/benchmarks.md (not with ``--quick`` or
``--no-docs``). Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

import _report
import _workloads as workloads
import numpy as np
import pyarrow.parquet as pq

from pocaduck import Ingestor, Query, collect_garbage, compact, consolidate, create_store, open_store
from pocaduck.label_directory import ENTRY, PAGE_BYTES, level_page_counts, open_in_force

DTYPE = np.dtype("uint16")
PAYLOADS = ("parquet", "arrow")
GB = 1e9


@dataclass(frozen=True)
class Sizes:
    """The store's shape; ``--quick`` has 100× fewer labels."""

    name: str = "full"
    labels: int = 1_000_000
    blocks_per_label: int = 10
    points_per_block: int = 100
    workers: int = 8
    at_once: int = 2
    probes: int = 100
    repeats: int = 5
    sample_fraction: float = 0.01  # the plan's dry run
    subset_fraction: float = 0.1  # the store of the payloads that do not fit at full scale

    @property
    def points(self) -> int:
        return self.labels * self.blocks_per_label * self.points_per_block

    @property
    def rows(self) -> int:
        return self.labels * self.blocks_per_label


QUICK = Sizes(name="quick", labels=10_000, probes=40, repeats=3)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the workload -----------------------------------------------------------------


def write_rows(folder: str, sizes: Sizes, seed: int) -> str:
    """Every (label, block) row of the store, sorted by block, saved for the worker processes; returns the folder."""
    rng = np.random.default_rng(seed)
    labels = workloads._labels(rng, sizes.labels, below_2_63=False)
    blocks = workloads._paths(rng, sizes.labels, sizes.blocks_per_label).reshape(-1, 3).astype(np.int16)
    row_labels = np.repeat(labels, sizes.blocks_per_label)
    order = np.lexsort((blocks[:, 2], blocks[:, 1], blocks[:, 0]))
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, "labels.npy"), row_labels[order])
    np.save(os.path.join(folder, "blocks.npy"), blocks[order])
    return folder


def ingest_worker(job: tuple[str, str, int, int, int, int]) -> dict[str, float]:
    """One worker process: an Ingestor writing its slab of blocks (by x) block by block with write_block."""
    store, rows, worker, workers, points_per_block, seed = job
    labels = np.load(os.path.join(rows, "labels.npy"), mmap_mode="r")
    blocks = np.load(os.path.join(rows, "blocks.npy"), mmap_mode="r")
    slab = blocks[:, 0].astype(np.int64) * workers // workloads.GRID == worker
    labels, blocks = np.asarray(labels[slab]), np.asarray(blocks[slab])
    rng = np.random.default_rng([seed, worker])
    keys = (blocks[:, 0].astype(np.int64) * workloads.GRID + blocks[:, 1]) * workloads.GRID + blocks[:, 2]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1], [True])))
    generate_s = 0.0
    started = time.perf_counter()
    with Ingestor(store, worker_id=worker) as ingestor:
        batch_rows = 100_000  # points generated a batch of whole blocks at a time (bounded memory)
        first = 0
        while first < len(starts) - 1:
            last = int(np.searchsorted(starts, starts[first] + batch_rows, side="right")) - 1
            last = max(last, first + 1)
            low, high = starts[first], starts[last]
            tick = time.perf_counter()
            points = workloads._blobs(rng, blocks[low:high].astype(np.int64), points_per_block).astype(DTYPE)
            point_labels = np.repeat(labels[low:high], points_per_block)
            generate_s += time.perf_counter() - tick
            for begin, end in zip(starts[first:last].tolist(), starts[first + 1 : last + 1].tolist(), strict=True):
                x, y, z = blocks[begin].tolist()
                ingestor.write_block(
                    f"{x}_{y}_{z}",
                    point_labels[(begin - low) * points_per_block : (end - low) * points_per_block],
                    points[begin - low : end - low].reshape(-1, 3),
                )
            first = last
    return {"seconds": time.perf_counter() - started, "generate_s": generate_s}


def ingest(store: str, rows: str, sizes: Sizes, seed: int) -> dict[str, Any]:
    """All workers, ``at_once`` processes at a time; the wall time includes generating the points."""
    create_store(store, dtype=DTYPE.name)
    jobs = [(store, rows, worker, sizes.workers, sizes.points_per_block, seed) for worker in range(sizes.workers)]
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=sizes.at_once, mp_context=context) as pool:
        done = list(pool.map(ingest_worker, jobs))
    return {
        "seconds": time.perf_counter() - started,
        "generate_s": sum(d["generate_s"] for d in done),
        "worker_s": [d["seconds"] for d in done],
    }


# -- the disk ------------------------------------------------------------------------


def disk_usage(root: str) -> dict[str, int]:
    """Bytes under ``root`` by part of the store, each file once (an index version hard-links the index)."""
    parts: dict[str, int] = {}
    seen: set[tuple[int, int]] = set()
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # removed while walking (a compaction's staging)
                continue
            key = (stat.st_dev, stat.st_ino)
            parts["allocated"] = parts.get("allocated", 0) + (0 if key in seen else stat.st_blocks * 512)
            if key in seen:
                continue
            seen.add(key)
            part = _part(os.path.relpath(path, root))
            parts[part] = parts.get(part, 0) + stat.st_size
    return parts


def _part(relative: str) -> str:
    top = relative.split(os.sep, 1)[0]
    name = os.path.basename(relative)
    if top == "workers":
        return "ingested payload" if name.endswith((".parquet", ".arrow")) else "worker indexes"
    if top == "compacted":
        return "compacted index" if name.endswith(".duckdb") else "compacted payload"
    if name == "label_directory.bin":
        return "label directory"
    if name == "unified_index.duckdb":
        return "unified index"
    return "other"


class DiskWatch:
    """Samples the allocated bytes under a folder five times a second in a thread, keeping the peak."""

    def __init__(self, root: str):
        self.root, self.peak = root, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def sample(self) -> int:
        used = disk_usage(self.root).get("allocated", 0)
        self.peak = max(self.peak, used)
        return used

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def drop_page_cache_file(path: str) -> None:
    """Drop one file's clean pages from the page cache."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def drop_page_cache(root: str) -> None:
    """Ask the kernel to drop every file under ``root`` from the page cache (clean pages only: sync first)."""
    for folder, _, names in os.walk(root):
        for name in names:
            drop_page_cache_file(os.path.join(folder, name))


# -- one store, its payloads ---------------------------------------------------------------


def compact_to(store: str, payload: str, arrow_compression: str | None) -> Any:
    """``compact`` as a user calls it: Parquet is the default payload, so its call names none."""
    if payload == "parquet":
        return compact(store)
    return compact(store, payload=payload, compression=arrow_compression)


def _check_compacted(store: str, payload: str, report: Any) -> None:
    """Refuse to measure a compaction that did not happen, or that left its payload in another format."""
    if report.generation is None:
        raise RuntimeError(f"compact(payload={payload!r}) found {store} already compact: nothing new to measure")
    with Query(store) as query:
        paths = query.sql("SELECT path FROM files", output="arrow").column("path").to_pylist()
    parquet = [path for path in paths if path.endswith(".parquet")]
    if (payload == "parquet") != (len(parquet) == len(paths)):
        raise RuntimeError(f"after compact(payload={payload!r}) the store's files are {paths[:3]}…: not that payload")


def percentiles(seconds: list[float]) -> dict[str, float]:
    values = np.array(seconds) * 1e3
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)), "n": len(values)}


def directory_parts(store: str) -> dict[str, int]:
    """The directory in force's bytes by part (leaves, fences, file table) and its fence items."""
    directory = open_in_force(open_store(store).storage)
    if directory is None:
        raise RuntimeError(f"{store} has no label directory in force to measure")
    parts = directory.byte_parts()
    return {
        "directory_leaf_bytes": parts["leaves"],
        "directory_fence_bytes": parts["fences"],
        "directory_fence_items": parts["fence_items"],
        "directory_table_bytes": parts["table"],
    }


def store_figures(store: str) -> dict[str, Any]:
    """Index rows, labels, points, directory entries and size, bytes by part, payload files' geometry."""
    with Query(store) as query:
        info = query.info()
        files = query.sql("SELECT path FROM files", output="arrow").column("path").to_pylist()
    with open(os.path.join(store, "label_directory.json")) as pointer_file:
        pointer = json.load(pointer_file)
    parquet = [os.path.join(store, path) for path in files if path.endswith(".parquet")]
    footers = [pq.ParquetFile(path).metadata for path in parquet[:20]]
    groups = [meta.row_group(i) for meta in footers for i in range(meta.num_row_groups)]
    return {
        **{key: info[key] for key in ("labels", "points", "index_rows", "files")},
        "directory_entries": pointer["entries"],
        "directory_bytes": pointer["size"],
        "directory_top_bytes": pointer["top_bytes"],
        **directory_parts(store),
        "parts": disk_usage(store),
        "footer_bytes": float(np.mean([meta.serialized_size for meta in footers])) if footers else None,
        "row_group_bytes": float(np.mean([g.total_byte_size for g in groups])) if groups else None,
        "row_group_rows": float(np.mean([g.num_rows for g in groups])) if groups else None,
    }


def measure_reads(store: str, probes: list[int], sizes: Sizes) -> dict[str, Any]:
    """warm, cold and new-Query get_points of the probe labels, and the label browser's first page."""
    from pocaduck.widgets import LabelBrowser

    with Query(store, cache_size=0) as query:
        counts = {label: len(query.get_points(label, use_cache=False)) for label in probes}
        warm = []
        for _ in range(sizes.repeats):
            for label in probes:
                started = time.perf_counter()
                query.get_points(label, use_cache=False)
                warm.append(time.perf_counter() - started)
    new_query, cold, cold_get = [], [], []
    os.sync()
    for timings, drop in ((new_query, False), (cold, True)):  # every new Query first, while all is in the cache
        for label in probes:
            if drop:
                drop_page_cache(store)
            started = time.perf_counter()
            query = Query(store, cache_size=0)
            opened = time.perf_counter()
            query.get_points(label, use_cache=False)
            done = time.perf_counter()
            query.close()
            timings.append(done - started)
            if drop:
                cold_get.append(done - opened)
    browser, page = [], []
    for _ in range(5):
        started = time.perf_counter()
        with Query(store) as query:
            opened = LabelBrowser(query, page_size=50)
            browser.append(time.perf_counter() - started)
            started = time.perf_counter()
            opened._apply()  # what a click runs: the count and the page again (as bench_widgets.py times it)
            page.append(time.perf_counter() - started)
    return {
        "warm": percentiles(warm),
        "new_query": percentiles(new_query),
        "cold": percentiles(cold),
        "cold_get_points": percentiles(cold_get),
        "browser": percentiles(browser),
        "browser_page": percentiles(page),
        "wrong_counts": {
            str(label): n for label, n in counts.items() if n != sizes.blocks_per_label * sizes.points_per_block
        },
    }


def measure_npy(folder: str, store: str, probes: list[int], sizes: Sizes) -> dict[str, Any]:
    """np.load of each probe label's points from one .npy per label, warm and with its page cache dropped."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    with Query(store) as query:
        for label in probes:
            paths.append(os.path.join(folder, f"{label}.npy"))
            np.save(paths[-1], query.get_points(label, use_cache=False))
    for path in paths:
        np.load(path)
    warm = []
    for _ in range(sizes.repeats):
        for path in paths:
            started = time.perf_counter()
            np.load(path)
            warm.append(time.perf_counter() - started)
    os.sync()
    cold = []
    for path in paths:
        drop_page_cache_file(path)
        started = time.perf_counter()
        np.load(path)
        cold.append(time.perf_counter() - started)
    return {"warm": percentiles(warm), "cold": percentiles(cold), "bytes": os.path.getsize(paths[0])}


def build_and_measure(
    workdir: str, sizes: Sizes, payloads: list[str], seed: int, arrow_compression: str | None, reads: bool = True
) -> dict[str, Any]:
    """Build a store of ``sizes`` in ``workdir``, compact it to each payload in turn; figures and the disk's peak."""
    store = os.path.join(workdir, "store")
    result: dict[str, Any] = {"sizes": asdict(sizes), "payloads": {}}
    with DiskWatch(workdir) as watch:
        log(f"{sizes.points:,} points: writing the rows of {sizes.labels:,} labels")
        rows = write_rows(os.path.join(workdir, "rows"), sizes, seed)
        log(f"{sizes.points:,} points: ingesting with {sizes.workers} workers, {sizes.at_once} at a time")
        result["ingest"] = ingest(store, rows, sizes, seed)
        log(f"ingest {result['ingest']['seconds']:.1f} s; consolidating")
        started = time.perf_counter()
        consolidate(store)
        result["consolidate_s"] = time.perf_counter() - started
        result["peaks"] = {"ingested": watch.sample()}
        result["ingested"] = store_figures(store)
        probes = [
            int(p)
            for p in np.random.default_rng(seed + 1).choice(
                np.load(os.path.join(rows, "labels.npy")), sizes.probes, replace=False
            )
        ]
        shutil.rmtree(rows)  # needed no more: its bytes stay out of the compactions' peak
        if reads:
            log("reads of the store as ingested")
            result["ingested"]["reads"] = measure_reads(store, probes, sizes)
            result["npy"] = measure_npy(os.path.join(workdir, "npy"), store, probes, sizes)
        for payload in payloads:
            log(f"compacting to {payload}")
            report = compact_to(store, payload, arrow_compression)
            _check_compacted(store, payload, report)
            figures: dict[str, Any] = {"compact_s": report.seconds, "points_per_s": report.points_per_second}
            watch.sample()  # the old index version stays until collect_garbage: part of the peak
            figures["peak_before_gc"] = watch.peak
            figures["garbage_removed"] = len(collect_garbage(store).removed)
            figures.update(store_figures(store))
            if reads:
                log(f"reads of the {payload} payload")
                figures["reads"] = measure_reads(store, probes, sizes)
            result["payloads"][payload] = figures
            result["peaks"][payload] = watch.peak
    result["peak"] = watch.peak
    return result


# -- the plan ------------------------------------------------------------------------


def plan(workdir: str, sizes: Sizes, payloads: list[str], seed: int, budget: float, arrow_compression: str | None):
    """Run the steps on a sample, scale its peak: which payloads the full store holds, and what the rest needs."""
    sample = replace(sizes, labels=max(100, int(sizes.labels * sizes.sample_fraction)), probes=5)
    folder = os.path.join(workdir, "sample")
    measured = build_and_measure(folder, sample, payloads, seed, arrow_compression, reads=False)
    shutil.rmtree(folder)
    scale = sizes.points / sample.points
    peaks = {stage: peak * scale for stage, peak in measured["peaks"].items()}
    fitting = 0  # the longest run of payloads, in order, whose peak fits the budget
    while fitting < len(payloads) and peaks[payloads[fitting]] <= budget:
        fitting += 1
    full, rest = payloads[:fitting], payloads[fitting:]
    full_peak = peaks[full[-1]] if full else peaks["ingested"]
    subset_peak = measured["peak"] * scale * sizes.subset_fraction if rest else 0.0
    return {
        "sample_points": sample.points,
        "scale": scale,
        "predicted_peaks": peaks,
        "full_payloads": full,
        "moved_payloads": rest,
        "subset_payloads": ["parquet", *[p for p in rest if p != "parquet"]] if rest else [],
        "full_peak": full_peak,
        "subset_peak": subset_peak,
        "bytes_per_point": {stage: peak / measured["ingested"]["points"] for stage, peak in measured["peaks"].items()},
    }


# -- the model -----------------------------------------------------------------------


# Bytes a format-1 directory stores per entry and per fence item, pages uncompressed: the model's defaults.
FIXED_ENTRY_BYTES = ENTRY.itemsize + 4 / ((PAGE_BYTES - 4) // ENTRY.itemsize)
FIXED_KEY_BYTES = 8 + 4 / ((PAGE_BYTES - 4) // 8)


def directory_geometry(
    entries: int,
    files: int,
    table_bytes_per_file: float,
    page_bytes: int = PAGE_BYTES,
    entry_bytes: float = FIXED_ENTRY_BYTES,
    key_bytes: float = FIXED_KEY_BYTES,
) -> dict[str, Any]:
    """Size, levels, top and page reads of a label directory of ``entries`` over ``files`` files.

    The tree's shape is label_directory's (``level_page_counts``: pages of a fixed item count); its
    pages are compressed, so their bytes come from a measured directory: ``entry_bytes`` per leaf
    entry and ``key_bytes`` per fence item (a fence page's or the root's), CRCs included. The top
    holds the root's items, the file table, the page count and bytes of every level and a 48-byte
    trailer. The defaults are format 1's uncompressed pages.

    >>> directory_geometry(10**6, 1, 0.0)["levels"], directory_geometry(10**8, 1, 0.0)["levels"]
    (1, 2)
    """
    counts = level_page_counts(entries, page_bytes)
    top = counts[0] * key_bytes + files * table_bytes_per_file + 16 * len(counts) + 48
    return {
        "entries": entries,
        "levels": len(counts),
        "bytes": entries * entry_bytes + sum(counts[1:]) * key_bytes + top,
        "top_bytes": top,
        "page_bytes": page_bytes,
        "leaf_read_bytes": min(entries, (page_bytes - 4) // ENTRY.itemsize) * entry_bytes,
        "fence_read_bytes": (page_bytes - 4) // 8 * key_bytes,
    }


def cold_read(geometry: dict[str, Any], data_requests: int, data_bytes: float) -> tuple[int, float]:
    """Requests and bytes of a new Query's first label on a bucket: what bench_requests.py counts, by part.

    2 others (the manifest, a HEAD of the index for its version), the pointer
    (label_directory.json, ~0.2 KB), the top, one page per level, then the data.
    """
    requests, transferred = directory_read(geometry)
    return 2 + requests + data_requests, 2 * _RESPONSE + transferred + data_bytes


_RESPONSE = 600  # bytes of a small response with its headers (the pointer, the manifest, a HEAD)
_HEADERS = 500  # bytes of a ranged response's status line and headers (moto), beside its body


def directory_read(geometry: dict[str, Any]) -> tuple[int, float]:
    """Requests and bytes of finding one label in a directory: the pointer, the top, one page per level
    (full pages: an upper bound), each range with its response's headers."""
    fences = max(geometry["levels"] - 1, 0) * geometry["fence_read_bytes"]
    leaves = geometry["leaf_read_bytes"] if geometry["levels"] else 0
    ranges = (1 + geometry["levels"]) * _HEADERS
    return 2 + geometry["levels"], _RESPONSE + geometry["top_bytes"] + fences + leaves + ranges


def model(result: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    """Index, directory, cold bucket reads and consolidation at 10^10 and 10^11 points, from this run's figures."""
    ingested = result["ingested"]
    compacted = result["payloads"].get("parquet")
    rows, points = ingested["index_rows"], ingested["points"]
    index_per_row = ingested["parts"]["unified index"] / rows
    entries_per_row = ingested["directory_entries"] / rows
    table_per_file = _table_bytes(ingested)
    merge_rate = rows / result["consolidate_s"]
    out: dict[str, Any] = {
        "index_bytes_per_row": index_per_row,
        "entries_per_row": entries_per_row,
        "table_bytes_per_file": table_per_file,
        "item_bytes": _item_bytes(ingested),
        "merge_rows_per_s": merge_rate,
        "points_per_row": points / rows,
        "rows": [],
    }
    if compacted:
        out["compacted_index_bytes_per_row"] = compacted["parts"]["unified index"] / rows
        out["entries_per_label"] = compacted["directory_entries"] / compacted["labels"]
        out["points_per_file"] = compacted["points"] / compacted["files"]
        straddle = 1 + sizes.blocks_per_label * sizes.points_per_block / compacted["row_group_rows"]
        # bench_requests.py counts 3 GETs per Parquet file of a compacted label (the footer's length, the
        # footer, the row groups in one range); bytes: the footer and the row groups a 1,000-point label touches.
        out["data_requests"] = 3
        out["data_bytes"] = compacted["footer_bytes"] + straddle * compacted["row_group_bytes"]
        out["compacted_table_bytes_per_file"] = _table_bytes(compacted)
        out["compacted_item_bytes"] = _item_bytes(compacted)
    for field_points in (10**10, 10**11):
        field_rows = round(field_points / out["points_per_row"])
        ingest_files = field_points / (points / ingested["files"])
        as_ingested = directory_geometry(
            round(field_rows * entries_per_row), round(ingest_files), table_per_file, **out["item_bytes"]
        )
        for labels in (10**6, 10**7, 10**8):
            row: dict[str, Any] = {
                "points": field_points,
                "rows": field_rows,
                "labels": labels,
                "index_bytes": field_rows * index_per_row,
                "directory_as_ingested": as_ingested,
                "consolidate_s": field_rows / merge_rate,
            }
            row["cold_as_ingested_directory"] = cold_read(as_ingested, 0, 0)
            if compacted:
                files = round(field_points / out["points_per_file"])
                geometry = directory_geometry(
                    round(labels * out["entries_per_label"]),
                    files,
                    out["compacted_table_bytes_per_file"],
                    **out["compacted_item_bytes"],
                )
                row["compacted_index_bytes"] = field_rows * out["compacted_index_bytes_per_row"]
                row["directory_compacted"] = geometry
                row["cold_compacted"] = cold_read(geometry, out["data_requests"], out["data_bytes"])
            out["rows"].append(row)
    # bench_requests.py --large, its compacted cold stores (run of 2026-12-07, format 2): 10^6 and 10^7 rows of
    # 10-block labels in one compacted file, so 10^5 and 10^6 directory entries of consecutive labels, directories
    # of 2,068 and 21,645 bytes; in all 8 requests, of which the directory 3 (2.1 KB, then 2.2 KB). Their bytes
    # per entry and per fence item, measured on the 10^6-row store (LabelDirectory.byte_parts: 1,892 bytes of
    # leaves, 37 of fences for 37 fence items, a 75-byte file table), predict both.
    out["cross_check"] = []
    requests_store = {"entry_bytes": 1_892 / 10**5, "key_bytes": 37 / 37}
    for check_rows, entries, measured_size, measured_bytes in (
        (10**6, 10**5, 2_068, 2.1e3),
        (10**7, 10**6, 21_645, 2.2e3),
    ):
        geometry = directory_geometry(entries, 1, 75.0, **requests_store)
        requests, transferred = directory_read(geometry)
        out["cross_check"].append(
            {
                "rows": check_rows,
                "requests": cold_read(geometry, 3, 0)[0],
                "measured_requests": 8,
                "directory_size": geometry["bytes"],
                "measured_directory_size": measured_size,
                "directory_requests": requests,
                "directory_bytes": transferred,
                "measured_directory_requests": 3,
                "measured_directory_bytes": measured_bytes,
            }
        )
    return out


def _table_bytes(figures: dict[str, Any]) -> float:
    """Bytes per file of the directory's file table, as measured."""
    return figures["directory_table_bytes"] / max(figures["files"], 1)


def _item_bytes(figures: dict[str, Any]) -> dict[str, float]:
    """The measured bytes per leaf entry and per fence item of a directory: ``directory_geometry``'s sizes."""
    return {
        "entry_bytes": figures["directory_leaf_bytes"] / max(figures["directory_entries"], 1),
        "key_bytes": figures["directory_fence_bytes"] / max(figures["directory_fence_items"], 1),
    }


# -- the report ------------------------------------------------------------------------


def _ms(figures: dict[str, float] | None) -> str:
    return "—" if not figures else f"{figures['p50']:.2f} / {figures['p95']:.2f}"


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value / 1e6:,.1f} MB"


def _power(value: float) -> str:
    exponent = round(np.log10(value))
    return f"10^{exponent}" if 10**exponent == value else f"{value:,.0f}"


def render(results: dict[str, Any], sizes: Sizes, arrow_compression: str | None) -> str:
    full, subset = results["full"], results.get("subset")
    stores = [("", full)] + ([(" (subset)", subset)] if subset else [])
    columns: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for note, store in stores:
        points = f"{_power(store['ingested']['points'])} points"
        columns.append((f"as ingested, {points}", store["ingested"], store))
        for payload, figures in store["payloads"].items():
            name = "Parquet" if payload == "parquet" else f"Arrow IPC ({arrow_compression or 'uncompressed'})"
            columns.append((f"{name} compacted, {points}{note}", figures, store))
    lines = [
        f"{_power(sizes.points)} points: {sizes.labels:,} labels × {sizes.blocks_per_label} blocks × "
        f"{sizes.points_per_block} points (uint16 x, y, z), {sizes.workers} worker processes {sizes.at_once} at a "
        f"time; {sizes.probes} probe labels of {sizes.blocks_per_label * sizes.points_per_block:,} points; ms "
        "p50 / p95.",
        "",
        "| figure | " + " | ".join(name for name, _, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]

    def add(figure: str, render_cell) -> None:
        lines.append(f"| {figure} | " + " | ".join(render_cell(f, s) for _, f, s in columns) + " |")

    add("ingest (s), 8 workers 2 at a time", lambda f, s: f"{s['ingest']['seconds']:.0f}" if f is s["ingested"] else "")
    add(
        "… of the workers' time, generating the points",
        lambda f, s: f"{s['ingest']['generate_s'] / sum(s['ingest']['worker_s']):.0%}" if f is s["ingested"] else "",
    )
    add("consolidation (s)", lambda f, s: f"{s['consolidate_s']:.1f}" if f is s["ingested"] else "")
    add("compaction (s)", lambda f, s: f"{f['compact_s']:.0f}" if "compact_s" in f else "")
    add(
        "payload on disk, bytes per point",
        lambda f, s: _payload_cell(f),
    )
    add(
        "unified index (bytes per row)",
        lambda f, s: f"{_mb(f['parts']['unified index'])} ({f['parts']['unified index'] / f['index_rows']:.1f})",
    )
    add("label directory (entries)", lambda f, s: f"{_mb(f['directory_bytes'])} ({f['directory_entries']:,})")
    add("files", lambda f, s: f"{f['files']:,}")
    add("get_points warm (same Query, use_cache=False)", lambda f, s: _ms(f.get("reads", {}).get("warm")))
    add("… np.load of the same points, warm", lambda f, s: _ms(s.get("npy", {}).get("warm")))
    add("… ratio of the p50s", lambda f, s: _ratio(f, s, "warm"))
    add("get_points cold: new Query + get_points, page cache dropped", lambda f, s: _ms(f.get("reads", {}).get("cold")))
    add("… of which get_points", lambda f, s: _ms(f.get("reads", {}).get("cold_get_points")))
    add("… np.load of the same points, cold", lambda f, s: _ms(s.get("npy", {}).get("cold")))
    add("… ratio of the p50s (get_points alone)", lambda f, s: _ratio(f, s, "cold"))
    add("new Query + first get_points (files cached)", lambda f, s: _ms(f.get("reads", {}).get("new_query")))
    add("label browser: new Query + first page (count + 50 rows)", lambda f, s: _ms(f.get("reads", {}).get("browser")))
    add("… the first page again, same browser", lambda f, s: _ms(f.get("reads", {}).get("browser_page")))
    text = "\n".join(lines)
    text += "\n\n" + render_targets(results)
    text += "\n\n" + render_plan(results)
    text += "\n\n" + render_model(results["model"])
    wrong = {name: f["reads"]["wrong_counts"] for name, f, _ in columns if f.get("reads", {}).get("wrong_counts")}
    if wrong:
        text += f"\n\n**Point counts that differed from what was written:** {wrong}"
    return text


def _payload_cell(figures: dict[str, Any]) -> str:
    part = "compacted payload" if "compact_s" in figures else "ingested payload"
    return f"{_gb(figures['parts'][part])} ({figures['parts'][part] / figures['points']:.2f})"


def _ratio(figures: dict[str, Any], store: dict[str, Any], kind: str) -> str:
    reads, npy = figures.get("reads"), store.get("npy")
    if not reads or not npy:
        return "—"
    ours = reads["cold_get_points" if kind == "cold" else "warm"]["p50"]
    return f"{ours / npy[kind]['p50']:.1f}×"


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Issue 11's local targets, judged on this run's p50s: (target, measured, met)."""
    judged = []
    for note, store in (("", results["full"]), (" (subset)", results.get("subset"))):
        if not store:
            continue
        where = f"{_power(store['ingested']['points'])}-point store{note}"
        ingested = store["ingested"]["reads"]
        judged.append(
            (
                f"Parquet as ingested, warm get_points ≤ 2 ms, {where}",
                f"{ingested['warm']['p50']:.2f} ms",
                ingested["warm"]["p50"] <= 2,
            )
        )
        for payload, figures in store["payloads"].items():
            warm, new_query = figures["reads"]["warm"]["p50"], figures["reads"]["new_query"]["p50"]
            if payload == "parquet":
                judged.append((f"Parquet compacted, warm get_points ≤ 1 ms, {where}", f"{warm:.2f} ms", warm <= 1))
            else:
                ratio = warm / store["npy"]["warm"]["p50"]
                judged.append((f"Arrow IPC, warm get_points ≤ 3× np.load, {where}", f"{ratio:.1f}×", ratio <= 3))
            judged.append(
                (f"new Query + first get_points ≤ 3 ms, {payload}, {where}", f"{new_query:.2f} ms", new_query <= 3)
            )
    return judged


def render_targets(results: dict[str, Any]) -> str:
    lines = ["| target (p50) | measured | |", "|---|---:|---|"]
    lines += [f"| {target} | {measured} | {'met' if met else 'MISSED'} |" for target, measured, met in targets(results)]
    return "\n".join(lines)


def render_plan(results: dict[str, Any]) -> str:
    planned = results["plan"]
    subset = results.get("subset")
    lines = [
        f"Disk: planned from a dry run of the same steps on {planned['sample_points']:,} points, scaled ×"
        f"{planned['scale']:,.0f}: {_gb(planned['full_peak'])} at peak for the "
        f"{'+'.join(planned['full_payloads']) or 'as-ingested'} store (budget {results['budget'] / GB:g} GB, "
        f"{results['free_at_start'] / GB:.0f} GB free at the start); measured peak {_gb(results['full']['peak'])}."
    ]
    if subset:
        lines.append(
            f"{' and '.join(planned['moved_payloads'])}: would not fit the budget at full scale beside "
            f"what precedes it (predicted peaks {', '.join(f'{k} {_gb(v)}' for k, v in planned['predicted_peaks'].items())}): "
            f"measured, with Parquet beside it, on a store of {_power(subset['ingested']['points'])} points built the same "
            f"way (peak {_gb(subset['peak'])}); its bytes per point and per row are those to expect on the full store."
        )
    return "\n".join(lines)


def render_model(figures: dict[str, Any]) -> str:
    lines = [
        "**Model for 10^10 and 10^11 points.** Assumptions: the shape measured here scales (its "
        f"{figures['points_per_row']:.0f} points per (label, block) row, so 10^8 and 10^9 index rows; "
        f"{figures['index_bytes_per_row']:.1f} bytes per unified index row as ingested"
        + (
            f", {figures['compacted_index_bytes_per_row']:.1f} compacted"
            if "compacted_index_bytes_per_row" in figures
            else ""
        )
        + f"; {figures['entries_per_row']:.2f} directory entries per row as ingested"
        + (
            f", {figures['entries_per_label']:.3f} per label compacted, {figures['points_per_file'] / 1e6:.1f} M points "
            "per compacted file"
            if "entries_per_label" in figures
            else ""
        )
        + f"); directory sizes from label_directory's tree ({PAGE_BYTES // 1024} KiB pages before compression, "
        "level_page_counts) with the bytes per entry and per fence item measured on this run's directories "
        + _item_figures(figures)
        + " and its file table's measured bytes per file; consolidation at the merge rate "
        f"measured here ({figures['merge_rows_per_s'] / 1e6:.1f} M rows/s, one process: linear, so optimistic for a "
        "sort of 10^9 rows). A cold read on a bucket: the manifest, a HEAD of the index, the pointer, the "
        "directory's top, one page per level, then the data (compacted: one file, "
        + (
            f"3 GETs, {figures['data_bytes'] / 1e3:.0f} KB: its footer and the row groups of a 1,000-point label)."
            if "data_bytes" in figures
            else "not measured)."
        )
        + " Labels: the field's 10^6–10^8.",
        "",
        "| points | index rows | labels | unified index | directory as ingested: entries, size, levels | compacted directory: entries, size, levels | cold label read, compacted: requests, bytes | consolidation |",
        "|---|---:|---:|---:|---|---|---|---:|",
    ]
    for row in figures["rows"]:
        ingested = row["directory_as_ingested"]
        compacted = row.get("directory_compacted")
        index = _gb(row["index_bytes"]) + (f" ({_gb(row['compacted_index_bytes'])} compacted)" if compacted else "")
        lines.append(
            f"| {_power(row['points'])} | {_power(row['rows'])} | {_power(row['labels'])} | {index} | "
            f"{ingested['entries'] / 1e6:,.0f} M, {_gb(ingested['bytes'])}, {ingested['levels']} | "
            + (
                f"{compacted['entries'] / 1e6:,.0f} M, {_gb(compacted['bytes'])}, {compacted['levels']} | "
                f"{row['cold_compacted'][0]}, {row['cold_compacted'][1] / 1e3:,.0f} KB (top {compacted['top_bytes'] / 1e3:,.0f} KB) | "
                if compacted
                else "— | — | "
            )
            + f"{row['consolidate_s'] / 60:,.0f} min |"
        )
    checks = "; ".join(
        f"{check['rows']:,} rows: {check['requests']} requests in all by the formula ({check['measured_requests']} "
        f"measured), a directory of {check['directory_size'] / 1e3:.1f} KB ({check['measured_directory_size'] / 1e3:.1f} "
        f"KB measured), read in {check['directory_requests']} requests and {check['directory_bytes'] / 1e3:.1f} KB "
        f"({check['measured_directory_requests']} and {check['measured_directory_bytes'] / 1e3:.1f} KB measured)"
        for check in figures["cross_check"]
    )
    lines += [
        "",
        f"Cross-check of the formula against the counts of `bench_requests.py --large` (its compacted stores, "
        f"published above; their bytes per entry and per fence item measured on the 10^6-row one): {checks}.",
    ]
    return "\n".join(lines)


def _item_figures(figures: dict[str, Any]) -> str:
    """The measured stored bytes per directory entry and fence item, as ingested and compacted."""
    parts = [("as ingested", figures.get("item_bytes")), ("compacted", figures.get("compacted_item_bytes"))]
    return (
        "("
        + ", ".join(
            f"{name} {item['entry_bytes']:.1f} B per entry, {item['key_bytes']:.1f} B per fence item"
            for name, item in parts
            if item
        )
        + f"; uncompressed: {ENTRY.itemsize} and 8)"
    )


def _gb(value: float) -> str:
    return f"{value / GB:,.1f} GB" if value >= 1e8 else f"{value / 1e6:,.1f} MB"


# -- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^7 points: a smoke run; docs left alone")
    parser.add_argument("--payloads", default=",".join(PAYLOADS), help="payloads to compact to, in order")
    parser.add_argument("--arrow-compression", choices=("none", "lz4", "zstd"), default="none")
    parser.add_argument("--workdir", help="where the stores go (default: a new folder under bench/results/)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--budget-gb", type=float, default=10.0, help="disk the run may use at peak")
    parser.add_argument("--seed", type=int, default=20_261_128)
    _report.add_docs_option(parser)
    args = parser.parse_args()
    payloads = [p.strip() for p in args.payloads.split(",") if p.strip()]
    unknown = sorted(set(payloads) - set(PAYLOADS))
    if unknown or not payloads:
        parser.error(f"--payloads takes a comma-separated list of {', '.join(PAYLOADS)}; got {args.payloads!r}")
    arrow_compression = None if args.arrow_compression == "none" else args.arrow_compression
    started = time.perf_counter()
    docs = _report.docs_wanted(args, "bench_scale", "--quick" if args.quick else None)
    sizes = QUICK if args.quick else Sizes()
    budget = args.budget_gb * GB
    parent = args.workdir or str(_report.RESULTS)
    os.makedirs(parent, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="scale-", dir=parent)
    log(f"work directory {workdir}")
    results: dict[str, Any] = {"sizes": asdict(sizes), "budget": budget, "payloads": payloads}
    try:
        results["free_at_start"] = shutil.disk_usage(workdir).free
        results["plan"] = planned = plan(workdir, sizes, payloads, args.seed, budget, arrow_compression)
        need = max(planned["full_peak"], planned["subset_peak"])
        free = shutil.disk_usage(workdir).free
        print(
            f"bench_scale: {sizes.points:,} points need {planned['full_peak'] / GB:.1f} GB of disk at peak "
            f"({'+'.join(planned['full_payloads']) or 'as ingested only'})"
            + (
                f", then {planned['subset_peak'] / GB:.1f} GB for {'+'.join(planned['subset_payloads'])} on "
                f"{sizes.subset_fraction:.0%} of the labels"
                if planned["subset_payloads"]
                else ""
            )
            + f"; {free / GB:.1f} GB free under {workdir}; budget {budget / GB:g} GB",
            file=sys.stderr,
            flush=True,
        )
        if need > free * 0.95 or need > budget:
            raise SystemExit(
                f"bench_scale: not enough disk: the run needs {need / GB:.1f} GB at peak, {free / GB:.1f} GB are free "
                f"and the budget is {budget / GB:g} GB. Free some space, give --workdir on a larger disk, or raise "
                "--budget-gb. The store was not built."
            )
        results["full"] = build_and_measure(
            os.path.join(workdir, "full"), sizes, planned["full_payloads"], args.seed, arrow_compression
        )
        if planned["subset_payloads"]:
            shutil.rmtree(os.path.join(workdir, "full", "store"))  # the budget holds one store at a time
            subset = replace(sizes, labels=int(sizes.labels * sizes.subset_fraction))
            results["subset"] = build_and_measure(
                os.path.join(workdir, "subset"), subset, planned["subset_payloads"], args.seed, arrow_compression
            )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["model"] = model(results["full"], sizes)
    text = render(results, sizes, arrow_compression)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    text += "\n\n" + _report.how_measured(started, f"seed {args.seed}; load average at the end {load}")
    _report.publish("bench_scale", text, results, docs)


if __name__ == "__main__":
    main()
