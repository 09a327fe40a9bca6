"""Neuroglancer export benchmark: points/s exported with 1 and 2 local workers (threads), files written, and reading one label
back through neuroglancer's AnnotationReader beside Query.get_points; and, through a mapping, a full export of
a version beside updating that export to a child version that merges two bodies.

    .venv/bin/python bench/bench_export.py            # about 2 minutes on 2 shared cores
    .venv/bin/python bench/bench_export.py --quick    # smoke run; docs left alone

The store is the demo volume (synthetic neurons) scanned with its surface
points, as the notebooks' store but larger. The export uses the default shard
size (256 MB), so at this size each index is one shard; files per 10^6 points
falls as stores grow (10^9 points make a few hundred files). The table is
printed and written to ``bench/results/export.md`` and its section of
``docs/benchmarks.md`` (not with ``--quick`` or ``--no-docs``), raw figures to
``export.json``. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

import _report

from pocaduck import Query, export_neuroglancer, make_demo_volume, scan_volume, write_mapping
from pocaduck.neuroglancer.plan import DEFAULT_SHARD_BYTES


def timed_reads(read, passes: int) -> dict[str, float]:
    """The first call's time and the median of the next ``passes``, in ms."""
    started = time.perf_counter()
    read()
    first = time.perf_counter() - started
    seconds = []
    for _ in range(passes):
        started = time.perf_counter()
        read()
        seconds.append(time.perf_counter() - started)
    return {"first_ms": first * 1000, "p50_ms": statistics.median(seconds) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller volume")
    parser.add_argument("--size", type=int, default=320, help="voxels per side of the demo volume")
    parser.add_argument("--passes", type=int, default=20, help="reads timed per reader")
    parser.add_argument("--repeats", type=int, default=3, help="full exports and updates timed through a mapping")
    _report.add_docs_option(parser)
    args = parser.parse_args()
    started = time.perf_counter()
    docs = _report.docs_wanted(args, "bench_export", "--quick" if args.quick else None)
    size = 96 if args.quick else args.size
    results: dict[str, Any] = {"volume": size, "repeats": args.repeats}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as workdir:
        store = os.path.join(workdir, "store")
        scan_volume(make_demo_volume(size, seed=0), store, workers=2, voxel_size=(8, 8, 8))
        with Query(store) as query:
            info = query.info()
            label = int(query.sql("SELECT label FROM labels ORDER BY point_count DESC LIMIT 1").label[0])
            results.update(points=info["points"], labels=info["labels"], label=label)
            results["label_points"] = query.get_point_count(label)
            results["get_points"] = timed_reads(lambda: query.get_points(label, use_cache=False), args.passes)
        for workers in (1, 2):
            report = export_neuroglancer(store, os.path.join(workdir, f"ng{workers}"), workers=workers)
            results[f"workers_{workers}"] = report.to_dict()
        import tensorstore as ts
        from neuroglancer.read_precomputed_annotations import AnnotationReader

        exported = os.path.join(workdir, "ng1")
        reader = AnnotationReader(f"file://{exported}")
        results["annotation_reader"] = timed_reads(lambda: reader.relationships["label"][label], args.passes)
        sharded = ts.KvStore.open(
            {
                "driver": "neuroglancer_uint64_sharded",
                "base": f"file://{exported}/label/",
                "metadata": reader.metadata["relationships"][0]["sharding"],
            }
        ).result()
        key = label.to_bytes(8, "big")
        results["tensorstore"] = timed_reads(lambda: sharded.read(key).result().value, args.passes)
        results["mapping"] = mapping_figures(store, workdir, args.repeats)
    results["elapsed_s"] = time.perf_counter() - started
    text = render(results) + "\n" + _report.how_measured(started, f"{size}^3 demo volume")
    _report.publish("bench_export", text, results, docs)


def mapping_figures(store: str, workdir: str, repeats: int) -> list[dict[str, Any]]:
    """Seconds of a full export of mapping version v1, beside updating it to v2 (the largest label merged into
    the second largest: one changed body, one removed), alternating, medians of ``repeats`` each (2 threads);
    with the default shards (at this size one per index) and with 4 MB shards."""
    with Query(store) as query:
        labels = query.sql("SELECT label FROM labels ORDER BY point_count DESC", output="numpy")["label"]
    write_mapping(store, "bench-v1", labels, labels)
    write_mapping(store, "bench-v2", labels[:1], labels[1:2], parent="bench-v1")
    figures = []
    for shard_bytes in (DEFAULT_SHARD_BYTES, 4 * 2**20):
        settings = {"workers": 2, "progress": False, "shard_bytes": shard_bytes}
        base = os.path.join(workdir, f"mapped-{shard_bytes}")
        export_neuroglancer(store, base, mapping="bench-v1", **settings)
        full, update = [], []
        for repeat in range(repeats):
            full.append(export_neuroglancer(store, f"{base}-full{repeat}", mapping="bench-v1", **settings))
            copy = shutil.copytree(base, f"{base}-update{repeat}")
            before = _report_files(copy)
            update.append(export_neuroglancer(store, copy, mapping="bench-v2", **settings))
            after = _report_files(copy)
        rewritten = sum(after.get(name) != digest for name, digest in before.items()) + len(after.keys() - before)
        figures.append({
            "shard_mb": shard_bytes / 2**20,
            "full_s": statistics.median(r.seconds for r in full),
            "update_s": statistics.median(r.seconds for r in update),
            "files": full[0].files,
            "rewritten": rewritten - 1,  # pocaduck_export.json is always rewritten
            "merged": [int(labels[0]), int(labels[1])],
        })  # fmt: skip
    return figures


def _report_files(folder: str) -> dict[str, str]:
    """Every file under ``folder`` and a hash of its bytes."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as file:
                found[os.path.relpath(path, folder)] = hashlib.sha256(file.read()).hexdigest()
    return found


def render(results: dict[str, Any]) -> str:
    one, two = results["workers_1"], results["workers_2"]
    per_million = one["files"] / (results["points"] / 1e6)
    lines = [
        f"Store: the {results['volume']}³ demo volume's surface, {results['points']:,} points of "
        f"{results['labels']} labels.",
        "",
        "| export | seconds | points/s | files | MB | files per 10⁶ points |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {workers} thread{'s' if workers > 1 else ''} | {r['seconds']:.1f} | {r['points_per_second']:,} | "
            f"{r['files']} | {r['bytes'] / 1e6:.0f} | {per_million:.1f} |"
            for workers, r in ((1, one), (2, two))
        ),
        "",
        f"One label's points (label {results['label']}, {results['label_points']:,} points, the largest):",
        "",
        "| reader | first read ms | p50 ms (warm) |",
        "|---|---:|---:|",
        f"| neuroglancer `AnnotationReader.relationships['label'][label]` | "
        f"{results['annotation_reader']['first_ms']:.1f} | {results['annotation_reader']['p50_ms']:.1f} |",
        f"| tensorstore read of the label's bytes (what a viewer fetches, undecoded) | "
        f"{results['tensorstore']['first_ms']:.1f} | {results['tensorstore']['p50_ms']:.1f} |",
        f"| `Query.get_points(label, use_cache=False)` | {results['get_points']['first_ms']:.1f} | "
        f"{results['get_points']['p50_ms']:.1f} |",
    ]
    mapped = results.get("mapping")
    if mapped:
        lines += [
            "",
            f"Through a mapping (`mapping=`, 2 threads, medians of {results['repeats']}): a full export of version "
            f"v1, beside updating that export to v2, where label {mapped[0]['merged'][0]} (the largest) is merged "
            f"into {mapped[0]['merged'][1]} (2 changed bodies):",
            "",
            "| shards | full export s | update s | update / full | files rewritten by the update |",
            "|---|---:|---:|---:|---:|",
            *(
                f"| {m['shard_mb']:g} MB | {m['full_s']:.2f} | {m['update_s']:.2f} | "
                f"{m['update_s'] / m['full_s']:.3f} | {m['rewritten']} of {m['files']} |"
                for m in mapped
            ),
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
