"""Run one measured phase of one implementation in this process and print its figures as one JSON line.

``bench_store.py`` starts a fresh process per phase so that peak memory and
cold figures belong to that phase alone. Peak memory is ``ru_maxrss`` of this
process (Linux: KiB); ``input_rss_mib`` is the resident size once the
workload is generated, so ``peak - input`` is what the implementation itself
needed.

    python bench/_phase.py '{"phase": "ingest", "implementation": "ours", ...}'
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
from typing import Any

import _workloads as workloads
import numpy as np
from _implementations import IMPLEMENTATIONS

_PAGE = os.sysconf("SC_PAGE_SIZE")
_MIB = 2**20
NEW_READERS = 50  # at least this many new readers per probe span, for a p95 worth reading


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE / _MIB


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def disk_usage(root: str) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of every file under ``root``."""
    apparent = allocated = 0
    for folder, _, names in os.walk(root):
        for name in names:
            stat = os.stat(os.path.join(folder, name))
            apparent += stat.st_size
            allocated += stat.st_blocks * 512
    return apparent, allocated


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    values = np.array(seconds) * 1e3
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)), "n": len(values)}


def make_workload(spec: dict[str, Any], below_2_63: bool) -> workloads.Workload:
    kind = spec["kind"]
    if kind == "small":
        workload = workloads.small_writes(spec["seed"], below_2_63, spec["writes"])
    elif kind == "large":
        workload = workloads.large_writes(spec["seed"], spec["writes"], spec["points_per_write"], below_2_63)
    elif kind == "scale":
        workload = workloads.scale_store(spec["seed"], spec["points"], below_2_63)
    else:
        raise ValueError(f"unknown workload kind {kind!r}")
    if spec.get("limit") is not None:
        workload = workloads.probes_first(workload, spec["limit"])
    return workload


def ingest_writes(impl: Any, store: str, slabs: list[list[workloads.Write]]) -> None:
    for worker_id, slab in enumerate(slabs):
        writer = impl.open_writer(store, worker_id)
        for write in slab:
            writer.write(write.label, write.block_id, write.points)
        writer.finalize()


def ingest(impl: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Write a workload (one worker after another), then consolidate; time both (median of ``attempts``)."""
    started = time.perf_counter()
    workload = make_workload(params["workload"], impl.below_2_63)
    generated_s = time.perf_counter() - started
    slabs = workloads.split_by_worker(workload.writes, params.get("workers", 1))
    warmup = params["store"] + "-warmup"  # imports and first-use set-up stay out of the timing
    ingest_writes(impl, warmup, [workload.writes[:20]])
    shutil.rmtree(warmup)
    input_rss = current_rss_mib()

    attempts = params.get("attempts", 1)  # the last attempt's store is kept for the queries
    ingest_times, consolidate_times = [], []
    for attempt in range(attempts):
        store = params["store"] if attempt == attempts - 1 else f"{params['store']}-attempt{attempt}"
        started = time.perf_counter()
        ingest_writes(impl, store, slabs)
        ingest_times.append(time.perf_counter() - started)
        if impl.consolidates and params.get("consolidate", True):
            started = time.perf_counter()
            impl.consolidate(store)
            consolidate_times.append(time.perf_counter() - started)
        if store != params["store"]:
            shutil.rmtree(store)
    apparent, allocated = disk_usage(params["store"])
    probe_labels = {label for labels in workload.probes.values() for label in labels}
    expected: dict[int, int] = {}
    for write in workload.writes:
        if write.label in probe_labels:
            expected[write.label] = expected.get(write.label, 0) + len(write.points)
    filler = next((w.label for w in workload.writes if w.label not in probe_labels), None)
    return {
        "writes": len(workload.writes),
        "points": workload.point_count,
        "workers": len(slabs),
        "generate_s": generated_s,
        "ingest_s": float(np.median(ingest_times)),
        "ingest_s_each": ingest_times,
        "consolidate_s": float(np.median(consolidate_times)) if consolidate_times else None,
        "bytes": apparent,
        "allocated_bytes": allocated,
        "input_rss_mib": input_rss,
        "probes": {str(span): labels for span, labels in workload.probes.items()},
        "expected_points": {str(label): count for label, count in expected.items()},
        "warmup_label": filler,
    }


def _timed_get(reader: Any, label: int) -> tuple[float, int]:
    started = time.perf_counter()
    points = reader.get_points(label)
    return time.perf_counter() - started, len(points)


def query(impl: Any, params: dict[str, Any]) -> dict[str, Any]:
    """get_points latency per probe span, on the same labels of the same store, in this already-warm process.

    - new_reader: a new reader and its first call, ``close()`` not timed (what opening a Query costs a
      caller that opens one per request); cold: the same calls with ``close()`` timed too. Both go over
      the labels as many times as it takes to reach NEW_READERS readers;
    - warm: one reader, each label read once before, ``repeats`` calls per label.
    """
    store, repeats = params["store"], params["repeats"]
    expected = params["expected_points"]
    if params.get("warmup_label") is not None:
        reader = impl.open_reader(store)
        reader.get_points(params["warmup_label"])
        reader.close()
    input_rss = current_rss_mib()
    results: dict[str, Any] = {"input_rss_mib": input_rss, "spans": {}, "mismatches": []}
    for span, labels in params["probes"].items():
        # No other reader is open meanwhile, so nothing a reader holds open can serve the new ones.
        cold, new_reader = [], []
        for round_number in range(-(-NEW_READERS // len(labels))):
            for label in labels:
                started = time.perf_counter()
                reader = impl.open_reader(store)
                _, returned = _timed_get(reader, label)
                new_reader.append(time.perf_counter() - started)
                reader.close()
                cold.append(time.perf_counter() - started)
                if round_number == 0 and returned != expected[str(label)]:
                    results["mismatches"].append(
                        {"label": label, "returned": returned, "expected": expected[str(label)]}
                    )
        # With compare_unverified, a second reader skips page checksum verification; the two take turns
        # on every repeat, so the machine's load moves both figures alike.
        readers = {"warm": impl.open_reader(store)}
        if params.get("compare_unverified"):
            readers["warm_unverified"] = impl.open_reader(store, verify_checksums=False)
        warm: dict[str, list[float]] = {kind: [] for kind in readers}
        for label in labels:
            for reader in readers.values():
                reader.get_points(label)
            for _ in range(repeats):
                for kind, reader in readers.items():
                    warm[kind].append(_timed_get(reader, label)[0])
        for reader in readers.values():
            reader.close()
        figures = {
            "cold": percentiles_ms(cold),
            "new_reader": percentiles_ms(new_reader),
            **{kind: percentiles_ms(times) for kind, times in warm.items()},
        }
        if params.get("cached"):
            reader = impl.open_reader(store, cache_size=len(labels))
            for label in labels:
                reader.get_points(label)
            figures["cached"] = percentiles_ms([_timed_get(reader, label)[0] for label in labels])
            reader.close()
        results["spans"][span] = figures
    return results


def index_rows(impl: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Build many worker indexes of one-point writes (for the consolidation figure); no consolidation."""
    started = time.perf_counter()
    for worker_id in params["worker_ids"]:
        writer = impl.open_writer(params["store"], worker_id)
        for write in workloads.tiny_index_rows(params["seed"], worker_id, params["rows"]):
            writer.write(write.label, write.block_id, write.points)
        writer.finalize()
    return {"build_s": time.perf_counter() - started}


def consolidate(impl: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Time consolidations of a store whose workers are all finalized (it rebuilds the same index each time)."""
    input_rss = current_rss_mib()
    times = []
    for _ in range(params.get("attempts", 1)):
        started = time.perf_counter()
        impl.consolidate(params["store"])
        times.append(time.perf_counter() - started)
    return {"consolidate_s": float(np.median(times)), "consolidate_s_each": times, "input_rss_mib": input_rss}


PHASES = {"ingest": ingest, "query": query, "index_rows": index_rows, "consolidate": consolidate}


def main() -> None:
    params = json.loads(sys.argv[1])
    impl = IMPLEMENTATIONS[params["implementation"]]
    if params.get("expect_pocaduck_under"):
        import pocaduck

        if not os.path.abspath(pocaduck.__file__).startswith(params["expect_pocaduck_under"]):
            raise RuntimeError(f"imported {pocaduck.__file__}, expected one under {params['expect_pocaduck_under']}")
    result = PHASES[params["phase"]](impl, params)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
