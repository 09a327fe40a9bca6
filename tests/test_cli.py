"""The `pocaduck` command as a shell user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pocaduck import Ingestor

POINTS = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
LABEL = 2**64 - 2


def pocaduck(*args, check=True):
    return subprocess.run(
        [sys.executable, "-m", "pocaduck.cli", *args], capture_output=True, text=True, check=check, timeout=120
    )


@pytest.fixture
def written_store(store):
    with Ingestor(store, 0) as ingestor:
        ingestor.write(LABEL, "b0", POINTS[:1])
        ingestor.write(LABEL, "b1", POINTS[1:])
    return store


def test_consolidate_then_info(written_store):
    assert "consolidated" in pocaduck("consolidate", written_store).stdout
    info = json.loads(pocaduck("info", written_store).stdout)
    assert info["labels"] == 1 and info["points"] == 2 and info["columns"] == ["x", "y", "z"]


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".parquet"])
def test_points_to_a_file(written_store, tmp_path, suffix):
    pocaduck("consolidate", written_store)
    target = str(tmp_path / f"points{suffix}")
    pocaduck("points", written_store, str(LABEL), "-o", target)
    if suffix == ".npy":
        saved = np.load(target)
    elif suffix == ".csv":
        saved = pd.read_csv(target).to_numpy()
    else:
        saved = pq.read_table(target).to_pandas().to_numpy()
    assert sorted(saved.tolist()) == POINTS.tolist()


def test_points_to_stdout(written_store):
    pocaduck("consolidate", written_store)
    assert pocaduck("points", written_store, str(LABEL)).stdout.splitlines() == ["x,y,z", "1,2,3", "4,5,6"]


def test_errors_are_one_clear_line_and_a_failing_exit_code(written_store, tmp_path):
    result = pocaduck("info", written_store, check=False)
    assert result.returncode == 1
    assert "has not been consolidated yet" in result.stderr and "Traceback" not in result.stderr
    result = pocaduck("points", str(tmp_path / "missing"), "1", check=False)
    assert result.returncode == 1 and "does not exist" in result.stderr


def test_a_label_that_is_not_a_number(written_store):
    result = pocaduck("points", written_store, "abc", check=False)
    assert result.returncode == 2 and "invalid int value: 'abc'" in result.stderr
