"""The real pocaduck==0.1.1, installed from the registry and run in a child process, for the tests that read its
stores (tests/test_legacy.py, tests/browser/test_original_store_in_browser.py; fixtures in tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

# Runs under the original package (same import name: it comes first on PYTHONPATH).
_ORIGINAL = """
import sys
import numpy as np
from pocaduck import Ingestor, Query, StorageConfig

mode, store, out, dtype, consolidations = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
config = StorageConfig(base_path=store)
written = {}
if mode == "write":
    rng = np.random.default_rng(0)
    labels, blocks, counts, points = [], [], [], []
    for worker in range(3):
        ingestor = Ingestor(config, worker_id=worker, max_points_per_file=150)
        for block in range(5):
            for label in (1, 42, 2**62 + 5):
                values = rng.integers(0, 5, size=(int(rng.integers(1, 30)), 3))  # repeats on purpose
                if dtype != "int64":
                    values = (values + rng.random(values.shape)).astype(dtype)
                ingestor.write(label, f"{worker}_{block}", values)
                labels.append(label); blocks.append(f"{worker}_{block}"); counts.append(len(values)); points.append(values)
        ingestor.finalize()
    for _ in range(consolidations):
        Ingestor.consolidate_indexes(config)
    written = dict(written_labels=np.array(labels, np.uint64), written_blocks=np.array(blocks),
                   written_counts=np.array(counts), written_points=np.concatenate(points))
query = Query(config)
answers = {"labels": np.sort(query.get_labels()), "missing": query.get_points(99)}
for label in answers["labels"].tolist():
    answers[f"points_{label}"] = query.get_points(label)
    answers[f"blocks_{label}"] = np.array(sorted(query.get_blocks_for_label(label)))
    answers[f"count_{label}"] = np.array(query.get_point_count(label))
np.savez(out, **written, **answers)
"""


def install_original(target: Path) -> str:
    """pocaduck==0.1.1 from the registry into ``target`` (its dependencies are ours); skip if it cannot be had."""
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), "pocaduck==0.1.1"],
        capture_output=True,
        text=True,
    )
    if install.returncode != 0:
        reason = f"cannot install pocaduck==0.1.1 from the registry: {install.stderr.strip()[-300:]}"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI has the registry: a silent skip there would hide the drop-in tests
        pytest.skip(reason)
    return str(target)


def run_original(package: str, mode: str, store: Path, dtype: str = "int64", consolidations: int = 1) -> dict:
    """Run the original library in a child process; return what it wrote and what its Query answered.

    ``mode`` is "write" (write and consolidate a store, then answer) or "answer" (only answer).
    """
    out = store.with_name(f"{store.name}-{mode}-answers.npz")
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_ORIGINAL), mode, str(store), str(out), dtype, str(consolidations)],
        env={**os.environ, "PYTHONPATH": package},
        cwd=store.parent,
        check=True,
        capture_output=True,
        timeout=120,
    )
    with np.load(out) as saved:
        return dict(saved)


def files_and_times(store: Path) -> dict[str, float]:
    """Every path under ``store`` with its modification time: equal before and after means nothing changed."""
    return {str(p): p.stat().st_mtime_ns for p in store.rglob("*")}
