"""Store benchmark: this pocaduck, the original pocaduck 0.1.1 and per-block .npz files, side by side, in one run.

    .venv/bin/python bench/bench_store.py              # full run, about 10-15 minutes on 2 cores
    .venv/bin/python bench/bench_store.py --quick      # smoke run, about a minute; docs left alone
    .venv/bin/python bench/bench_store.py --no-docs    # full run, docs left alone

Every phase (ingest, query, consolidate) of every implementation runs in its own
process on the same seeded workloads (see ``_workloads.py``). The original is
installed once with ``pip install --no-deps --target`` into a cache folder and
imported from there through ``PYTHONPATH``; its dependencies come from this venv.
The markdown table is printed and written to ``bench/results/store.md`` and to
its section of ``docs/benchmarks.md``, a summary of it to the README's (not with
``--quick`` or ``--no-docs``); the raw figures go to ``bench/results/store.json``.
Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import _report

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ORIGINAL_VERSION = "0.1.1"
DEFAULT_ORIGINAL_DIR = os.path.join(os.path.expanduser("~"), ".cache", "pocaduck-bench", f"original-{ORIGINAL_VERSION}")
KINDS = {"cold": "cold", "new_reader": "new Query + first get_points (close() not timed)", "warm": "warm"}
NAMES = {"ours": "this pocaduck", "original": f"original {ORIGINAL_VERSION}", "npz": "npz per (label, block)"}


@dataclass(frozen=True)
class Sizes:
    """How big each workload is; ``--quick`` shrinks all of them."""

    name: str = "full"
    small_writes: int = 10_000
    original_small_writes: tuple[int, ...] = (300, 1_000, 3_000, 10_000)
    large_writes: int = 200
    original_large_writes: int = 10
    points_per_large_write: int = 100_000
    consolidation_workers: int = 64
    consolidation_rows: int = 100_000
    scale_points: tuple[int, int] = (10_000_000, 100_000_000)
    scale_workers: int = 8
    repeats: int = 5
    attempts: int = 5  # this shared machine's noise moves single ingest runs by up to 2x
    original_timeout_s: float = 420.0


QUICK = Sizes(
    name="quick",
    original_small_writes=(300, 1_000),
    large_writes=20,
    original_large_writes=2,
    consolidation_workers=8,
    consolidation_rows=10_000,
    scale_points=(1_000_000, 10_000_000),
    repeats=3,
    attempts=1,
    original_timeout_s=60.0,
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_original(target: str) -> str:
    """Install ``pocaduck==0.1.1`` without dependencies into ``target`` unless it is there already."""
    if not os.path.exists(os.path.join(target, "pocaduck", "__init__.py")):
        log(f"installing pocaduck=={ORIGINAL_VERSION} into {target}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                target,
                f"pocaduck=={ORIGINAL_VERSION}",
            ],
            check=True,
        )
    return target


class PhaseRunner:
    """Starts ``_phase.py`` in a fresh process with the right ``pocaduck`` on its path."""

    def __init__(self, workdir: str, original_dir: str):
        self.workdir = workdir
        self.import_roots = {"ours": REPO, "original": original_dir, "npz": None}

    def store(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def _command(self, implementation: str, phase: str, params: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        root = self.import_roots[implementation]
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if root is not None:
            env["PYTHONPATH"] = root
            params = {**params, "expect_pocaduck_under": os.path.join(root, "pocaduck")}
        body = json.dumps({"implementation": implementation, "phase": phase, **params})
        return [sys.executable, os.path.join(HERE, "_phase.py"), body], env

    def run(self, implementation: str, phase: str, timeout: float | None = None, **params: Any) -> dict[str, Any]:
        """The phase's figures, or ``{"timed_out": seconds}`` when it ran out of time."""
        command, env = self._command(implementation, phase, params)
        log(f"{implementation}: {phase} {params.get('workload', '')}")
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            log(f"{implementation}: {phase} stopped after {timeout:.0f} s")
            return {"timed_out": timeout}
        if done.returncode != 0:
            raise RuntimeError(f"{implementation} {phase} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def run_together(self, implementation: str, phase: str, param_sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run several processes of one phase at once (e.g. one per core) and wait for all."""
        processes = []
        for params in param_sets:
            command, env = self._command(implementation, phase, params)
            processes.append(
                subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        results = []
        for process in processes:
            stdout, stderr = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"{implementation} {phase} failed:\n{stderr[-3000:]}")
            results.append(json.loads(stdout.strip().splitlines()[-1]))
        return results


# -- measurements ----------------------------------------------------------------


def ingest_and_query(runner: PhaseRunner, implementation: str, name: str, workload: dict, sizes: Sizes, **options):
    """Ingest a workload into a new store, then (when it has probes) time the probe queries on it."""
    timeout = options.pop("timeout", None)
    query = options.pop("query", True)
    store = runner.store(f"{implementation}-{name}")
    ingested = runner.run(implementation, "ingest", timeout=timeout, store=store, workload=workload, **options)
    result = {"ingest": ingested}
    if query and "timed_out" not in ingested and ingested["probes"]:
        result["query"] = runner.run(
            implementation,
            "query",
            store=store,
            probes=ingested["probes"],
            expected_points=ingested["expected_points"],
            warmup_label=ingested["warmup_label"],
            repeats=sizes.repeats,
            cached=implementation == "ours",
            compare_unverified=implementation == "ours",
        )
    shutil.rmtree(store, ignore_errors=True)
    return result


def measure(runner: PhaseRunner, sizes: Sizes, seed: int) -> dict[str, Any]:
    results: dict[str, Any] = {"small": {}, "original_small": {}, "large": {}, "scale": {}}
    small = {"kind": "small", "seed": seed, "writes": sizes.small_writes}
    for implementation in ("ours", "npz"):
        results["small"][implementation] = ingest_and_query(
            runner, implementation, "small", small, sizes, attempts=sizes.attempts
        )
    results["original_small"] = measure_original_growth(runner, small, sizes)

    large = {
        "kind": "large",
        "seed": seed + 1,
        "writes": sizes.large_writes,
        "points_per_write": sizes.points_per_large_write,
    }
    for implementation in ("ours", "npz"):
        results["large"][implementation] = ingest_and_query(
            runner, implementation, "large", large, sizes, attempts=sizes.attempts
        )
    results["large"]["original"] = ingest_and_query(
        runner,
        "original",
        "large",
        {**large, "writes": sizes.original_large_writes},
        sizes,
        timeout=sizes.original_timeout_s,
    )

    results["consolidation"] = measure_consolidation(runner, sizes, seed + 2)

    for points in sizes.scale_points:
        scale = {"kind": "scale", "seed": seed + 3, "points": points}
        results["scale"][str(points)] = {
            implementation: ingest_and_query(
                runner, implementation, f"scale-{points}", scale, sizes, workers=sizes.scale_workers
            )
            for implementation in ("ours", "npz")
        }
    return results


def measure_original_growth(runner: PhaseRunner, small: dict[str, Any], sizes: Sizes) -> dict[str, Any]:
    """The original at growing write counts; stop before a run its quadratic cost says would pass the cap."""
    outcomes: dict[str, Any] = {}
    previous: tuple[int, float] | None = None
    for write_count in sizes.original_small_writes:
        if previous is not None:
            expected_s = previous[1] * (write_count / previous[0]) ** 2
            if expected_s > sizes.original_timeout_s:
                log(f"original: skipping {write_count:,} writes, about {expected_s:.0f} s by its quadratic growth")
                outcomes[str(write_count)] = {"ingest": {"skipped": expected_s}}
                break
        limited = {**small, "limit": write_count}
        outcome = ingest_and_query(
            runner, "original", f"small-{write_count}", limited, sizes, timeout=sizes.original_timeout_s
        )
        outcomes[str(write_count)] = outcome
        if "timed_out" in outcome["ingest"]:
            break
        previous = (write_count, outcome["ingest"]["ingest_s"])
    return outcomes


def measure_consolidation(runner: PhaseRunner, sizes: Sizes, seed: int) -> dict[str, Any]:
    """Build many worker indexes with real Ingestors (two processes at once), then time one consolidation."""
    store = runner.store("ours-consolidation")
    workers = list(range(sizes.consolidation_workers))
    halves = [workers[0::2], workers[1::2]]
    log(f"ours: building {len(workers)} worker indexes of {sizes.consolidation_rows:,} rows")
    started = time.perf_counter()
    runner.run_together(
        "ours",
        "index_rows",
        [{"store": store, "worker_ids": half, "rows": sizes.consolidation_rows, "seed": seed} for half in halves],
    )
    build_s = time.perf_counter() - started
    timed = runner.run("ours", "consolidate", store=store, attempts=sizes.attempts)
    shutil.rmtree(store, ignore_errors=True)
    return {"workers": len(workers), "rows": sizes.consolidation_rows, "build_s": build_s, **timed}


# -- the table ---------------------------------------------------------------------


def rate(count: float, seconds: float | None) -> str:
    return "—" if not seconds else f"{count / seconds:,.0f}"


def millions(count: float, seconds: float | None) -> str:
    return "—" if not seconds else f"{count / seconds / 1e6:,.2f} M"


def mib(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} MiB"


def size(outcome: dict[str, Any]) -> str:
    return (
        f"{outcome['bytes'] / outcome['points']:.1f} B/point: {outcome['bytes'] / 2**20:,.1f} MiB "
        f"({outcome['allocated_bytes'] / 2**20:,.1f} allocated)"
    )


def latency(figures: dict[str, float] | None) -> str:
    return "—" if not figures else f"{figures['p50']:.2f} / {figures['p95']:.2f}"


def memory(phase: dict[str, Any]) -> str:
    """Peak RSS of the phase's process, and how much of it came on top of the generated input."""
    return f"{phase['peak_rss_mib']:,.0f} MiB (+{phase['peak_rss_mib'] - phase['input_rss_mib']:,.0f})"


def largest_original(results: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    finished = [(int(n), r) for n, r in results["original_small"].items() if "ingest_s" in r["ingest"]]
    return max(finished, key=lambda item: item[0]) if finished else None


def cell(outcome: dict[str, Any] | None, render) -> str:
    if outcome is None:
        return "not run"
    if "timed_out" in outcome:
        return f"> {outcome['timed_out']:.0f} s (stopped)"
    if "skipped" in outcome:
        return f"skipped (≈ {outcome['skipped']:.0f} s expected)"
    return render(outcome)


def render(results: dict[str, Any], sizes: Sizes) -> tuple[str, dict[str, Any]]:
    small, large = results["small"], results["large"]
    original = largest_original(results)
    original_writes, original_small = original if original else (0, None)
    rows: list[tuple[str, str, str, str]] = []

    def add(figure: str, render_cell, ours, orig, npz) -> None:
        rows.append((figure, cell(ours, render_cell), cell(orig, render_cell), cell(npz, render_cell)))

    small_ingest = {k: small[k]["ingest"] for k in ("ours", "npz")}
    orig_ingest = original_small["ingest"] if original_small else None
    note = f" (original: {original_writes:,} writes)"
    add(
        f"ingest {sizes.small_writes:,} writes × 100 points: writes/s per worker{note}",
        lambda r: rate(r["writes"], r["ingest_s"]),
        small_ingest["ours"],
        orig_ingest,
        small_ingest["npz"],
    )
    add(
        "… points/s per worker",
        lambda r: millions(r["points"], r["ingest_s"]),
        small_ingest["ours"],
        orig_ingest,
        small_ingest["npz"],
    )
    add(
        "… peak RSS of the ingest process (+ above the input)",
        memory,
        small_ingest["ours"],
        orig_ingest,
        small_ingest["npz"],
    )
    add(
        "… bytes on disk per point, total (allocated)",
        size,
        small_ingest["ours"],
        orig_ingest,
        small_ingest["npz"],
    )
    add(
        "… consolidation, 1 worker (s)",
        lambda r: "—" if r["consolidate_s"] is None else f"{r['consolidate_s']:.3f}",
        small_ingest["ours"],
        orig_ingest,
        small_ingest["npz"],
    )

    large_ingest = {k: large[k]["ingest"] for k in ("ours", "original", "npz")}
    note = f" (original: {sizes.original_large_writes} writes)"
    add(
        f"ingest {sizes.large_writes} writes × {sizes.points_per_large_write:,} points: points/s per worker{note}",
        lambda r: millions(r["points"], r["ingest_s"]),
        *large_ingest.values(),
    )
    add(
        "… points/s per worker, slowest – fastest attempt",
        lambda r: (
            f"{millions(r['points'], max(r['ingest_s_each']))} – {millions(r['points'], min(r['ingest_s_each']))}"
        ),
        *large_ingest.values(),
    )
    add("… writes/s per worker", lambda r: rate(r["writes"], r["ingest_s"]), *large_ingest.values())
    add("… peak RSS of the ingest process (+ above the input)", memory, *large_ingest.values())
    add("… bytes on disk per point, total (allocated)", size, *large_ingest.values())

    consolidation = results["consolidation"]
    rows.append(
        (
            f"consolidation, {consolidation['workers']} workers × {consolidation['rows']:,} index rows (s)",
            f"{consolidation['consolidate_s']:.2f}",
            "not run (its ingest is quadratic)",
            "n/a (no index)",
        )
    )

    orig_query = original_small.get("query") if original_small else None
    for span in ("1", "10", "100"):
        for kind in ("cold", "new_reader", "warm") if span == "10" else ("cold", "warm"):
            label = f"get_points, label over {span} block{'s' if span != '1' else ''} ({int(span) * 100:,} points), "
            label += f"{KINDS[kind]}, p50 / p95 (ms)"
            values = [
                latency(source["spans"].get(span, {}).get(kind)) if source else "not run"
                for source in (small["ours"].get("query"), orig_query, small["npz"].get("query"))
            ]
            rows.append((label, *values))
    ours_query = small["ours"]["query"]
    rows.append(
        (
            "… ours with its cache on, repeated call p50 / p95 (ms), 10 blocks",
            latency(ours_query["spans"]["10"].get("cached")),
            "",
            "",
        )
    )
    rows.append(
        (
            "… ours without page checksum verification, warm p50 / p95 (ms), 10 blocks (verified: the warm row)",
            latency(ours_query["spans"]["10"].get("warm_unverified")),
            "",
            "",
        )
    )
    add("… peak RSS of the query process (+ above start)", memory, ours_query, orig_query, small["npz"].get("query"))

    scale_points = [int(p) for p in results["scale"]]
    for points in scale_points:
        stores = results["scale"][str(points)]
        for kind in ("cold", "new_reader", "warm"):
            rows.append(
                (
                    f"{points / 1e6:,.0f} M-point store: get_points 1,000 points over 10 blocks, {KINDS[kind]}, "
                    "p50 / p95 (ms)",
                    latency(stores["ours"]["query"]["spans"]["10"][kind]),
                    "not built (quadratic ingest)",
                    latency(stores["npz"]["query"]["spans"]["10"][kind]),
                )
            )
        rows.append(
            (
                "… warm without page checksum verification, p50 / p95 (ms)",
                latency(stores["ours"]["query"]["spans"]["10"].get("warm_unverified")),
                "",
                "",
            )
        )
        rows.append(
            (
                f"… building it: {sizes.scale_workers} workers ingest / consolidate (s), bytes on disk",
                f"{stores['ours']['ingest']['ingest_s']:.1f} / {stores['ours']['ingest']['consolidate_s']:.2f}, "
                f"{stores['ours']['ingest']['bytes'] / 2**20:,.0f} MiB",
                "",
                f"{stores['npz']['ingest']['ingest_s']:.1f} / —, {stores['npz']['ingest']['bytes'] / 2**20:,.0f} MiB",
            )
        )
    growth = {}
    for implementation in ("ours", "npz"):
        p50s = [results["scale"][str(p)][implementation]["query"]["spans"]["10"]["warm"]["p50"] for p in scale_points]
        growth[implementation] = p50s[1] / p50s[0]
    rows.append(
        (
            f"growth of that warm p50, {scale_points[0] / 1e6:,.0f} M → {scale_points[1] / 1e6:,.0f} M points",
            f"{growth['ours']:.2f}×",
            "",
            f"{growth['npz']:.2f}×",
        )
    )

    lines = [f"| figure | {NAMES['ours']} | {NAMES['original']} | {NAMES['npz']} |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    text = "\n".join(lines)
    text += "\n\n" + original_growth_table(results, small_ingest["ours"], sizes)
    targets = evaluate_targets(results, sizes, original, growth)
    text += "\n\n**Targets**, as the script judged them in this run:\n\n"
    if sizes.name == "quick":
        text += "**Quick run: the sizes are reduced, so these verdicts are only indicative.**\n\n"
    text += "| target | measured | |\n|---|---|---|\n"
    text += "\n".join(f"| {t['target']} | {t['measured']} | {'met' if t['met'] else 'MISSED'} |" for t in targets)
    text += "\n\n" + notes(results, sizes)
    return text, {"targets": targets, "growth": growth}


def original_growth_table(results: dict[str, Any], ours_small: dict[str, Any], sizes: Sizes) -> str:
    lines = [
        "Ingest rate as writes grow (100-point writes, one worker):",
        "",
        "| implementation | writes | seconds | writes/s |",
        "|---|---|---|---|",
    ]
    for write_count, outcome in results["original_small"].items():
        ingest = outcome["ingest"]
        if "timed_out" in ingest:
            lines.append(f"| {NAMES['original']} | {int(write_count):,} | > {ingest['timed_out']:.0f} (stopped) | — |")
        elif "skipped" in ingest:
            lines.append(
                f"| {NAMES['original']} | {int(write_count):,} | not run: ≈ {ingest['skipped']:.0f} expected "
                f"(quadratic), over the {sizes.original_timeout_s:.0f} s cap | — |"
            )
        else:
            lines.append(
                f"| {NAMES['original']} | {int(write_count):,} | {ingest['ingest_s']:.2f} | "
                f"{rate(ingest['writes'], ingest['ingest_s'])} |"
            )
    lines.append(
        f"| {NAMES['ours']} | {ours_small['writes']:,} | {ours_small['ingest_s']:.3f} | "
        f"{rate(ours_small['writes'], ours_small['ingest_s'])} |"
    )
    return "\n".join(lines)


def evaluate_targets(results, sizes: Sizes, original, growth) -> list[dict[str, Any]]:
    ours_small = results["small"]["ours"]["ingest"]
    ours_rate = ours_small["writes"] / ours_small["ingest_s"]
    targets = []
    if original:
        write_count, outcome = original
        original_rate = outcome["ingest"]["writes"] / outcome["ingest"]["ingest_s"]
        targets.append(
            {
                "target": "≥ 100× the original's ingest rate, 100-point writes",
                "measured": f"{ours_rate / original_rate:,.0f}× ({ours_rate:,.0f} writes/s on {ours_small['writes']:,} "
                f"writes vs {original_rate:,.0f} on the original's {write_count:,}; its rate falls further "
                f"as writes grow)",
                "met": ours_rate / original_rate >= 100,
            }
        )
    targets.append(
        {
            "target": "≥ 30,000 writes/s per worker (100-point writes)",
            "measured": f"{ours_rate:,.0f}",
            "met": ours_rate >= 30_000,
        }
    )
    ours_large = results["large"]["ours"]["ingest"]
    points_rate = ours_large["points"] / ours_large["ingest_s"]
    targets.append(
        {
            "target": "≥ 20 M points/s per worker (100,000-point writes)",
            "measured": f"{points_rate / 1e6:.2f} M",
            "met": points_rate >= 20e6,
        }
    )
    small_store, big_store = (str(p) for p in sizes.scale_points)
    ours_warm = results["scale"][small_store]["ours"]["query"]["spans"]["10"]["warm"]["p50"]
    npz_warm = results["scale"][small_store]["npz"]["query"]["spans"]["10"]["warm"]["p50"]
    store_name = f"{sizes.scale_points[0] / 1e6:,.0f} M-point store"
    targets.append(
        {
            "target": f"get_points 1,000 points / 10 blocks ≤ 2 ms p50 (warm, cache off), {store_name}",
            "measured": f"{ours_warm:.2f} ms",
            "met": ours_warm <= 2,
        }
    )
    targets.append(
        {
            "target": f"… faster than the npz layout, {store_name}",
            "measured": f"{ours_warm:.2f} vs {npz_warm:.2f} ms",
            "met": ours_warm < npz_warm,
        }
    )
    targets.append(
        {
            "target": "… growing ≤ 2× when the store grows 10×",
            "measured": f"{growth['ours']:.2f}× ({store_name} → {int(big_store) / 1e6:,.0f} M)",
            "met": growth["ours"] <= 2,
        }
    )
    consolidation = results["consolidation"]
    targets.append(
        {
            "target": "consolidation of 64 workers × 100,000 index rows ≤ 5 s",
            "measured": f"{consolidation['consolidate_s']:.2f} s on {consolidation['workers']} × "
            f"{consolidation['rows']:,}",
            "met": consolidation["consolidate_s"] <= 5,
        }
    )
    return targets


def notes(results: dict[str, Any], sizes: Sizes) -> str:
    mismatches = [
        (name, m)
        for name, source in [("ours", results["small"]["ours"]), ("npz", results["small"]["npz"])]
        for m in source.get("query", {}).get("mismatches", [])
    ]
    original = largest_original(results)
    original_mismatches = original[1].get("query", {}).get("mismatches", []) if original else []
    new_readers = results["small"]["ours"]["query"]["spans"]["10"]["new_reader"]["n"]
    return "\n".join(
        [
            "Notes:",
            "- Data: int32 x, y, z; labels are neuron-like paths through 256³-voxel blocks, points clustered per block; "
            "writes in block order. Labels span the whole uint64 range (half ≥ 2**63) except for the original, which "
            "overflows there: it gets the same data with the top bit of every label cleared.",
            "- Each phase runs in its own process. writes/s and points/s include finalize (the last flush); ours and "
            f"npz: median of {sizes.attempts} attempt(s) on fresh stores (consolidation too); the original: one attempt. "
            "Peak RSS is ru_maxrss of that process; '+' is what it grew above the generated input.",
            "- All get_points rows of a store run in one process that has opened a reader once already (imports, "
            "first-use set-up), on the same probe labels. cold = a new Query (reader), its first get_points and its "
            f"close(), timed together; new Query + first get_points = the same calls, close() not timed; both over "
            f"≥ 50 readers ({new_readers} for ours, 10 blocks), the probe labels in turn, no other reader open meanwhile. warm = one "
            f"Query, label read once before, {sizes.repeats} calls per label. ours runs with cache_size=0 except "
            "the 'cache on' row. Files are in the OS page cache in all (just written).",
            "- ours verifies Parquet page checksums on every read; the 'without page checksum verification' rows are "
            "a second reader with it off (Query(verify_checksums=False)), taking turns with the first on each repeat.",
            f"- The original is quadratic in writes (a DataFrame concat per write): it runs at growing write counts "
            f"({', '.join(results['original_small'])}) with a {sizes.original_timeout_s:.0f} s cap per run; the "
            "rows marked with its write count come from its largest finished run, whose store keeps every probe "
            "label. Its get_points returns np.unique(points), so labels with repeated voxels come back shorter.",
            f"- Point counts that differed from what was written: ours/npz {mismatches or 'none'}; "
            f"original {len(original_mismatches)} labels (np.unique).",
        ]
    )


def readme_summary(results: dict[str, Any], sizes: Sizes) -> str:
    """The README's lines of figures from this run: ingest, consolidation, get_points warm and on a new Query."""
    ingest = results["small"]["ours"]["ingest"]
    writes_per_s = ingest["writes"] / ingest["ingest_s"]
    original = largest_original(results)
    versus = ""
    if original:
        versus = f", {writes_per_s / (original[1]['ingest']['writes'] / original[1]['ingest']['ingest_s']):,.0f}× "
        versus += f"the original {ORIGINAL_VERSION} (whose ingest is quadratic)"
    consolidation = results["consolidation"]
    points = sizes.scale_points[0]
    figures = results["scale"][str(points)]["ours"]["query"]["spans"]["10"]
    return "\n".join(
        [
            f"- Ingest: {writes_per_s:,.0f} writes/s per worker for 100-point writes{versus}; consolidating "
            f"{consolidation['workers']} × {consolidation['rows']:,} index rows: {consolidation['consolidate_s']:.1f} s.",
            f"- `get_points` of a 1,000-point label over 10 blocks, {points / 1e6:,.0f} M-point store, p50: "
            f"{figures['warm']['p50']:.2f} ms warm; {figures['new_reader']['p50']:.1f} ms for a new `Query` and its "
            "first `get_points`.",
            f"- Verifying page checksums on every read: {figures['warm']['p50']:.2f} ms p50 warm, "
            f"{figures['warm_unverified']['p50']:.2f} ms without.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (about a minute)")
    parser.add_argument("--seed", type=int, default=20_260_101)
    parser.add_argument("--workdir", help="where to build the stores (default: a new temporary folder)")
    parser.add_argument("--original-cap", type=float, help="seconds allowed per run of the original")
    parser.add_argument("--original-dir", default=DEFAULT_ORIGINAL_DIR, help="install folder of the original")
    _report.add_docs_option(parser)
    args = parser.parse_args()
    started = time.perf_counter()
    docs = _report.docs_wanted(
        args, "bench_store", "--quick" if args.quick else None, files=(_report.DOCS, _report.README)
    )
    sizes = QUICK if args.quick else Sizes()
    if args.original_cap is not None:
        sizes = replace(sizes, original_timeout_s=args.original_cap)
    original_dir = ensure_original(args.original_dir)
    workdir = tempfile.mkdtemp(prefix="pocaduck-bench-", dir=args.workdir)
    try:
        results = measure(PhaseRunner(workdir, original_dir), sizes, args.seed)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text, summary = render(results, sizes)
    text += "\n\n" + _report.how_measured(started, f"seed {args.seed}")
    raw = {"sizes": asdict(sizes), "seed": args.seed, "results": results, **summary}
    _report.publish("bench_store", text, raw, docs)
    if docs:
        _report.write_section(_report.README, "bench_store", readme_summary(results, sizes))


if __name__ == "__main__":
    main()
