"""Space, samples and big labels: box queries, samples and the dataset, beside the whole-label read.

    .venv/bin/python bench/bench_queries.py            # 10^8 points; about 10 minutes on 2 shared cores
    .venv/bin/python bench/bench_queries.py --quick    # 10^7 points, a couple of minutes; docs left alone

One synthetic store: a 2048^3-voxel volume cut into 16^3 blocks of 128 voxels,
points uniform inside each block (int32), labelled by 64-voxel cells shifted by
half a cell, so a label crosses up to 8 blocks; the slab x < 10 % of the
volume is one giant label (about 10 % of the points: 10 M at full size). It is
measured as ingested (one worker, consolidated), after ``compact`` and after ``compact(payload="arrow")``.

- *sample*: ``get_points(giant, sample=1024)`` p50/p95 beside ``get_points(giant)``;
- *box*: 20 boxes of 1 % of the volume at random places: ``get_labels_in_box``
  p50, ``get_points_in_box`` points returned per second (median over boxes);
- *dataset*: ``PointCloudDataset(store, sample=1024)`` items per second in this
  process, item by item (twice: a second epoch finds each label's place remembered)
  and in batches of 32 (``__getitems__``), seed None and 0.

Writes ``bench/results/queries.md`` / ``.json`` and its section of
``docs/benchmarks.md`` (not with ``--quick`` or ``--no-docs``). Timings are
reported, never asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import _report
import numpy as np

from pocaduck import Ingestor, PointCloudDataset, Query, compact, consolidate

VOLUME = 2048
BLOCK = 128
CELL = 64
GIANT = 2**64 - 7  # a label above 2**63, as real ids are
GIANT_SLAB = VOLUME // 10


LAYOUTS = {"ingested": "as ingested", "compacted": "compacted, Parquet", "arrow": "compacted, Arrow IPC"}


def labels_of(points: np.ndarray) -> np.ndarray:
    """The synthetic segmentation: 64-voxel cells offset by 32, and the giant label's slab."""
    cells = (points + CELL // 2) // CELL
    per_axis = VOLUME // CELL + 1
    labels = ((cells[:, 0] * per_axis + cells[:, 1]) * per_axis + cells[:, 2] + 1).astype(np.uint64)
    labels[points[:, 0] < GIANT_SLAB] = GIANT
    return labels


def build(store: str, points_total: int, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    blocks = VOLUME // BLOCK
    per_block = points_total // blocks**3
    with Ingestor(store, worker_id=0) as ingestor:
        for block in range(blocks**3):
            origin = np.array(np.unravel_index(block, (blocks,) * 3)) * BLOCK
            rng = np.random.default_rng([seed, block])
            points = (origin + rng.integers(0, BLOCK, (per_block, 3))).astype(np.int32)
            ingestor.write_block(block, labels_of(points), points)
    consolidate(store)
    return {"points": per_block * blocks**3, "ingest_s": time.perf_counter() - started}


def timed(action: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    action()  # opens files, warms the page cache
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = action()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def ms(seconds: list[float]) -> dict[str, float]:
    values = np.array(seconds) * 1e3
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)), "n": len(values)}


def measure_samples(store: str, quick: bool) -> dict[str, Any]:
    with Query(store, cache_size=0) as query:
        count = query.get_point_count(GIANT)
        sample, _ = timed(lambda: query.get_points(GIANT, sample=1024), 50 if quick else 300)
        # the first ask of a label in a Query also looks up where it sits in the index
        first_ask, _ = timed(
            lambda: query._stored_runs.clear() or query.get_points(GIANT, sample=1024), 50 if quick else 300
        )
        whole, _ = timed(lambda: query.get_points(GIANT), 3 if quick else 5)
        seeded, _ = timed(lambda: query.get_points(GIANT, sample=1024, seed=1), 3 if quick else 5)
        streamed, _ = timed(lambda: sum(len(chunk) for chunk in query.iter_points(GIANT)), 2 if quick else 3)
    return {
        "label_points": count,
        "sample": ms(sample),
        "sample_first_ask": ms(first_ask),
        "whole": ms(whole),
        "seeded": ms(seeded),
        "iter_points": ms(streamed),
    }


def measure_boxes(store: str, quick: bool, seed: int) -> dict[str, Any]:
    edge = round(VOLUME * 0.01 ** (1 / 3))
    corners = np.random.default_rng(seed).integers(0, VOLUME - edge, (5 if quick else 20, 3))
    labels_ms, rates, points, found = [], [], [], []
    with Query(store, cache_size=0) as query:
        query.get_labels_in_box(tuple(corners[0]), tuple(corners[0] + edge))
        for corner in corners:
            lower, upper = tuple(int(v) for v in corner), tuple(int(v + edge) for v in corner)
            started = time.perf_counter()
            labels = query.get_labels_in_box(lower, upper)
            labels_ms.append((time.perf_counter() - started) * 1e3)
            started = time.perf_counter()
            table = query.get_points_in_box(lower, upper)
            rates.append(table.num_rows / (time.perf_counter() - started))
            points.append(table.num_rows)
            found.append(len(labels))
    return {
        "edge": edge,
        "boxes": len(corners),
        "labels_ms_p50": float(np.median(labels_ms)),
        "labels_ms_p95": float(np.percentile(labels_ms, 95)),
        "points_per_s_p50": float(np.median(rates)),
        "points_per_box_p50": float(np.median(points)),
        "labels_per_box_p50": float(np.median(found)),
    }


def measure_dataset(store: str, quick: bool, seed: int) -> dict[str, Any]:
    results = {}
    for name, seed_value in (("seed None", None), ("seed 0", 0)):
        dataset = PointCloudDataset(store, sample=1024, seed=seed_value)
        items = np.random.default_rng(seed).integers(0, len(dataset), 300 if quick else 2000)
        if seed_value is not None:
            items = items[: len(items) // 4]
        dataset[0]  # opens the Query
        single, again = (_items_per_second(dataset, items) for _ in range(2))  # a second epoch: places are known
        dataset.close()  # batches start from a new Query, which knows no label's place yet
        dataset[0]
        started = time.perf_counter()
        for start in range(0, len(items), 32):
            dataset.__getitems__(items[start : start + 32].tolist())
        batched = len(items) / (time.perf_counter() - started)
        results[name] = {
            "items_per_s": single,
            "items_per_s_again": again,
            "batched_items_per_s": batched,
            "labels": len(dataset),
        }
        dataset.close()
    return results


def _items_per_second(dataset: PointCloudDataset, items: np.ndarray) -> float:
    started = time.perf_counter()
    for i in items.tolist():
        dataset[i]
    return len(items) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10^7 points instead of 10^8")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2, help="compaction worker processes")
    _report.add_docs_option(parser)
    args = parser.parse_args()
    started = time.perf_counter()
    docs = _report.docs_wanted(args, "bench_queries", "--quick" if args.quick else None)
    results: dict[str, Any] = {"seed": args.seed}
    with tempfile.TemporaryDirectory(prefix="bench-queries-") as workdir:
        store = os.path.join(workdir, "store")
        results["store"] = build(store, 10**7 if args.quick else 10**8, args.seed)
        print(f"built {results['store']}", flush=True)
        for layout in LAYOUTS:
            if layout != "ingested":  # Parquet first, then the same store rewritten as Arrow IPC
                payload = "arrow" if layout == "arrow" else "parquet"
                results[f"compaction_{layout}"] = compact(store, workers=args.workers, payload=payload).to_dict()
            with Query(store) as query:
                results[layout] = {"index_rows": query.info()["index_rows"], "files": query.info()["files"]}
            results[layout]["samples"] = measure_samples(store, args.quick)
            results[layout]["boxes"] = measure_boxes(store, args.quick, args.seed)
            results[layout]["dataset"] = measure_dataset(store, args.quick, args.seed)
            print(f"{layout}: {results[layout]}", flush=True)
    results["elapsed_s"] = time.perf_counter() - started
    results["load_average"] = os.getloadavg()  # the machine is shared: say how busy it was
    load = ", ".join(f"{value:.1f}" for value in results["load_average"])
    text = render(results) + "\n" + _report.how_measured(started, f"seed {args.seed}; load average at the end {load}")
    _report.publish("bench_queries", text, results, docs)


def render(results: dict[str, Any]) -> str:
    store = results["store"]
    measured = [results[layout] for layout in LAYOUTS]
    giant = results["compacted"]["samples"]["label_points"]
    header = "| | " + " | ".join(LAYOUTS.values()) + " |"
    rule = "|---|" + "---:|" * len(LAYOUTS)

    def row(name: str, cell: Callable[[dict[str, Any]], str]) -> str:
        return f"| {name} | " + " | ".join(cell(each) for each in measured) + " |"

    def ms_row(name: str, field: str) -> str:
        return row(name, lambda each: f"{each['samples'][field]['p50']:.2f} / {each['samples'][field]['p95']:.2f}")

    compactions = "; ".join(
        f"{LAYOUTS[layout]}: {results[layout]['files']} files, {results[layout]['index_rows']:,} index rows, "
        f"compaction {results[f'compaction_{layout}']['seconds']:.0f} s"
        for layout in LAYOUTS
        if layout != "ingested"
    )
    boxes = results["compacted"]["boxes"]
    lines = [
        f"Store: {store['points']:,} int32 points in a {VOLUME}³ volume, {(VOLUME // BLOCK) ** 3:,} blocks of "
        f"{BLOCK}³; the giant label holds {giant:,} points. As ingested: {results['ingested']['files']} files, "
        f"{results['ingested']['index_rows']:,} index rows; {compactions} (Arrow: the Parquet store rewritten).",
        "",
        header.replace("| |", "| giant label, ms p50 / p95 |", 1),
        rule,
        ms_row("`get_points(label, sample=1024)`, label asked before in this Query", "sample"),
        ms_row("`get_points(label, sample=1024)`, first ask (index lookup included)", "sample_first_ask"),
        ms_row("`get_points(label)`, the whole label", "whole"),
        ms_row("`get_points(label, sample=1024, seed=1)` (reads the whole label)", "seeded"),
        ms_row("`iter_points(label)`, every chunk of 10⁶", "iter_points"),
        "",
        f"Boxes of 1 % of the volume ({boxes['edge']}³ voxels, {boxes['boxes']} places; median "
        f"{boxes['points_per_box_p50']:,.0f} points and {boxes['labels_per_box_p50']:,.0f} labels per box):",
        "",
        header,
        rule,
        row(
            "`get_labels_in_box` p50 / p95 (ms)",
            lambda each: f"{each['boxes']['labels_ms_p50']:.1f} / {each['boxes']['labels_ms_p95']:.1f}",
        ),
        row(
            "`get_points_in_box`, points returned per second (median)",
            lambda each: f"{each['boxes']['points_per_s_p50'] / 1e6:.1f} M",
        ),
        "",
        f"`PointCloudDataset(store, sample=1024)` over {results['compacted']['dataset']['seed None']['labels']:,} "
        "labels, one process, items per second:",
        "",
        header,
        rule,
    ]
    for name in ("seed None", "seed 0"):
        for what, field in (
            ("`ds[i]`, first pass", "items_per_s"),
            ("`ds[i]`, the same items again", "items_per_s_again"),
            ("batches of 32 (`__getitems__`)", "batched_items_per_s"),
        ):
            lines.append(
                row(f"`{name}`, {what}", lambda each, name=name, field=field: f"{each['dataset'][name][field]:,.0f}")
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
