"""Versioned mappings: bodies read through a mapping beside a plain label, versions written, compared and opened.

    .venv/bin/python bench/bench_versions.py            # about 3 minutes on 2 shared cores
    .venv/bin/python bench/bench_versions.py --quick    # a 10^6-supervoxel mapping; docs left alone

One store, compacted without a mapping: 10,000 supervoxels with random uint64
ids (half ≥ 2**63); the body's 1,000 supervoxels hold 1,000 points each
(10^6), the 9,000 others 100 each, spread over 100 blocks; a plain label holds
a copy of the body's 10^6 points, written in the same blocks. Measured side by
side, in rotation, p50 of ``--passes`` calls each (``use_cache=False``):

- ``get_points(plain label)`` on ``Query(store)``;
- ``get_points(body)`` on ``Query(store, mapping=...)`` at the full mapping, at a child version
  that reassigns 1 % of the body's supervoxels to another body, and at one that merges 1 % more
  (10 supervoxels of other bodies) into it;

first on the store compacted by label, then again (all four, side by side) after
``compact(store, mapping="base")`` laid each body of the full mapping out contiguously (the children
not recompacted).

Then, in the same store: a full mapping of ``--supervoxels`` (10^7) random
supervoxels written (time, bytes; 10^8 modelled as n log n from it); a child
of 10^4 reassignments written (time, bytes); a chain of 100 children of 10
reassignments each, and ``changed_bodies`` between its two ends; a new
``Query(mapping=)`` and its first body, cold, for the small mapping and the
10^7 one (then once more: the process keeps what it read of the version),
beside a new ``Query`` and its first plain label, p50 of ``--passes`` taking
turns, each with nothing of the store
kept in the process (``clear_cache()``: the body is read by ranges of the 10^7
mapping, not resolved whole).

Writes ``bench/results/versions.md`` / ``.json`` and its section of
``docs/benchmarks.md`` (not with ``--quick`` or ``--no-docs``). Timings are
reported, never asserted.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from typing import Any

import _report
import numpy as np

from pocaduck import Ingestor, Query, changed_bodies, clear_cache, compact, consolidate, write_mapping

SUPERVOXELS = 10_000
BODY_SUPERVOXELS = 1_000
BODY_POINTS = 1_000  # per supervoxel of the body
OTHER_POINTS = 100  # per other supervoxel
BLOCKS = 100
PLAIN = 2**64 - 11  # the plain label holding a copy of the body's points


def random_ids(rng: np.random.Generator, count: int) -> np.ndarray:
    """Distinct random uint64 ids, half of them ≥ 2**63."""
    ids = np.unique(rng.integers(1, 2**64 - 16, size=int(count * 1.01) + 16, dtype=np.uint64))
    return rng.permutation(ids)[:count]


def build_store(store: str, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    supervoxels = random_ids(rng, SUPERVOXELS)
    body_members = supervoxels[:BODY_SUPERVOXELS]
    counts = np.where(np.isin(supervoxels, body_members), BODY_POINTS, OTHER_POINTS)
    block_of = rng.integers(0, BLOCKS, len(supervoxels))
    started = time.perf_counter()
    with Ingestor(store, worker_id=0) as ingestor:
        for block in range(BLOCKS):
            here = np.flatnonzero(block_of == block)
            labels = np.repeat(supervoxels[here], counts[here])
            points = rng.integers(0, 100_000, (len(labels), 3), dtype=np.int64)
            in_body = np.isin(labels, body_members)
            # The plain label: a copy of the body's points in this block, so both read the same rows from each block.
            labels = np.concatenate([labels, np.full(int(in_body.sum()), PLAIN, np.uint64)])
            points = np.concatenate([points, points[in_body]])
            ingestor.write_block(f"b{block}", labels, points)
    consolidate(store)
    compact(store, progress=False)
    return {
        "supervoxels": supervoxels,
        "body": int(body_members[0]),
        "members": body_members,
        "points": int(counts.sum()) + BODY_SUPERVOXELS * BODY_POINTS,  # the plain label holds the body's again
        "build_s": time.perf_counter() - started,
    }


def write_versions(store: str, built: dict[str, Any], rng: np.random.Generator) -> None:
    """The full mapping (bodies of 10 supervoxels, and the body) and its child moving 1 % of the body away."""
    supervoxels, members = built["supervoxels"], built["members"]
    others = supervoxels[BODY_SUPERVOXELS:]
    bodies = np.concatenate([np.full(BODY_SUPERVOXELS, built["body"], np.uint64), np.repeat(others[::10], 10)])
    write_mapping(store, "base", supervoxels, bodies[: len(supervoxels)])
    moved = rng.choice(members[1:], BODY_SUPERVOXELS // 100, replace=False)
    write_mapping(store, "edit", moved, np.full(len(moved), others[0], np.uint64), parent="base", note="1 % cleaved")
    merged = rng.choice(others, BODY_SUPERVOXELS // 100, replace=False)
    write_mapping(store, "merge", merged, np.full(len(merged), built["body"], np.uint64), parent="base", note="1 % in")


def side_by_side(store: str, body: int, passes: int) -> dict[str, dict[str, float]]:
    readers = {
        "plain": (Query(store), PLAIN),
        "base": (Query(store, mapping="base"), body),
        "edit": (Query(store, mapping="edit"), body),
        "merge": (Query(store, mapping="merge"), body),
    }
    seconds: dict[str, list[float]] = {name: [] for name in readers}
    points: dict[str, int] = {}
    try:
        for _ in range(passes):
            for name, (query, label) in readers.items():
                started = time.perf_counter()
                got = query.get_points(label, use_cache=False)
                seconds[name].append(time.perf_counter() - started)
                points[name] = len(got)
    finally:
        for query, _ in readers.values():
            query.close()
    return {name: {"p50_ms": statistics.median(s) * 1000, "points": points[name]} for name, s in seconds.items()}


def cold_first(store: str, label: int, mapping: str | None, forget: bool = True) -> float:
    """A new Query and its first label; ``forget``: with nothing of the store kept in the process (a footer, a
    directory page, a version's chain)."""
    if forget:
        clear_cache()
    started = time.perf_counter()
    with Query(store, mapping=mapping) as query:
        query.get_points(label, use_cache=False)
    return (time.perf_counter() - started) * 1000


def cold_medians(store: str, cases: dict[str, tuple[int, str | None, bool]], rounds: int) -> dict[str, float]:
    """p50 of ``cold_first`` for each case (label, mapping, forget), the cases taking turns in each round: one
    sample of a few milliseconds is at the mercy of whatever else the cores do."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (label, mapping, forget) in cases.items():
            samples[name].append(cold_first(store, label, mapping, forget))
    return {name: statistics.median(values) for name, values in samples.items()}


def big_versions(store: str, count: int, rng: np.random.Generator) -> dict[str, Any]:
    supervoxels = random_ids(rng, count)
    bodies = supervoxels[rng.integers(0, max(1, count // 10), count)]  # ~10 supervoxels a body
    results: dict[str, Any] = {"count": count}
    started = time.perf_counter()
    write_mapping(store, "big", supervoxels, bodies)
    results["full_s"] = time.perf_counter() - started
    results["full_bytes"] = os.path.getsize(os.path.join(store, "mappings", "big.parquet"))
    moved = rng.choice(supervoxels, 10_000, replace=False)
    started = time.perf_counter()
    write_mapping(store, "big-edit", moved, bodies[rng.integers(0, count, 10_000)], parent="big")
    results["child_s"] = time.perf_counter() - started
    results["child_bytes"] = os.path.getsize(os.path.join(store, "mappings", "big-edit.parquet"))
    parent = "big-edit"
    for edit in range(100):  # merges: 10 supervoxels at a time into one body
        name = f"chain-{edit}"
        merged = rng.choice(supervoxels, 10, replace=False)
        write_mapping(store, name, merged, np.full(10, supervoxels[rng.integers(count)], np.uint64), parent=parent)
        parent = name
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        changed = changed_bodies(store, "big-edit", parent)
        timings.append(time.perf_counter() - started)
    results["changed_bodies_ms"] = statistics.median(timings) * 1000
    results["changed_bodies"] = len(changed)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 10^6-supervoxel big mapping, fewer passes")
    parser.add_argument("--supervoxels", type=int, default=10_000_000, help="supervoxels of the big full mapping")
    parser.add_argument("--passes", type=int, default=15, help="reads timed per reader")
    parser.add_argument("--seed", type=int, default=0)
    _report.add_docs_option(parser)
    args = parser.parse_args()
    started = time.perf_counter()
    docs = _report.docs_wanted(args, "bench_versions", "--quick" if args.quick else None)
    count, passes = (1_000_000, 5) if args.quick else (args.supervoxels, args.passes)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-versions-") as workdir:
        store = os.path.join(workdir, "store")
        built = build_store(store, args.seed)
        write_versions(store, built, rng)
        results: dict[str, Any] = {"build_s": built["build_s"], "reads": side_by_side(store, built["body"], passes)}
        results["cold_rounds"] = passes
        started_compaction = time.perf_counter()
        compact(store, mapping="base", progress=False)
        results["compact_by_body_s"] = time.perf_counter() - started_compaction
        results["store_points"] = built["points"]
        results["reads_by_body"] = side_by_side(store, built["body"], passes)
        results["cold_ms"] = cold_medians(
            store, {"plain": (PLAIN, None, True), "edit": (built["body"], "edit", True)}, passes
        )
        results["big"] = big_versions(store, count, rng)
        # In the big mapping the body is its one supervoxel: read plain too, the mapping's cost is the difference.
        big_cases = {
            "supervoxel": (built["body"], None, True),
            "big-edit": (built["body"], "big-edit", True),
            "big-edit-again": (built["body"], "big-edit", False),  # right after the one above: its footers kept
        }
        results["cold_ms"].update(cold_medians(store, big_cases, passes))
    results["elapsed_s"] = time.perf_counter() - started
    text = render(results) + "\n" + _report.how_measured(started, f"{count:,}-supervoxel big mapping")
    _report.publish("bench_versions", text, results, docs)


def read_rows(reads: dict[str, dict[str, float]], layout: str) -> list[str]:
    """Table rows for one layout's reads, each beside the plain label read in the same rotation."""
    plain = reads["plain"]["p50_ms"]
    return [
        f"| {layout}: plain label | {reads['plain']['points']:,} | {plain:.1f} | 1.00 |",
        *(
            f"| {layout}: body of {what} | {reads[name]['points']:,} | {reads[name]['p50_ms']:.1f} | "
            f"{reads[name]['p50_ms'] / plain:.2f} |"
            for name, what in (
                ("base", "1,000 supervoxels, full mapping"),
                ("edit", "990 supervoxels, child with 1 % reassigned away, no recompaction"),
                ("merge", "1,010 supervoxels, child with 1 % merged in, no recompaction"),
            )
        ),
    ]


def render(results: dict[str, Any]) -> str:
    big, cold = results["big"], results["cold_ms"]
    count = big["count"]
    modelled = big["full_s"] * (1e8 / count) * math.log(1e8) / math.log(count)
    lines = [
        "| read (p50, `use_cache=False`) | points | ms | × plain |",
        "|---|---:|---:|---:|",
        *read_rows(results["reads"], "compacted by label"),
        *read_rows(results["reads_by_body"], 'compacted by `mapping="base"`'),
        "",
        f'Compaction by the full mapping (`compact(store, mapping="base")`, {results["store_points"]:,} points, '
        f"10,001 labels): {results['compact_by_body_s']:.1f} s.",
        "",
        "| version written or compared | seconds | bytes |",
        "|---|---:|---:|",
        f"| full mapping of {count:,} supervoxels | {big['full_s']:.2f} | {big['full_bytes']:,} |",
        f"| the same at 10⁸, modelled (n log n from the line above) | {modelled:.0f} | |",
        f"| child of 10,000 reassignments | {big['child_s']:.3f} | {big['child_bytes']:,} |",
        f"| `changed_bodies` across 100 edits (10 supervoxels each) of that mapping: "
        f"{big['changed_bodies']:,} bodies | {big['changed_bodies_ms'] / 1000:.3f} | |",
        "",
        f"| new Query and its first label, cold (p50 of {results['cold_rounds']} in rotation) | ms |",
        "|---|---:|",
        f"| `Query(store)` + plain label | {cold['plain']:.1f} |",
        f"| `Query(store, mapping=)` + body, 10⁴-supervoxel mapping and a child | {cold['edit']:.1f} |",
        f"| `Query(store)` + a supervoxel of 1,000 points as a plain label | {cold['supervoxel']:.1f} |",
        f"| `Query(store, mapping=)` + that supervoxel as a body, {count:,}-supervoxel mapping and a child | "
        f"{cold['big-edit']:.1f} |",
        f"| the same, a second Query of that version in the process (its footers kept) | {cold['big-edit-again']:.1f} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
