"""The `pocaduck` command as a shell user runs it."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import pocaduck.cli as cli_module
from pocaduck import Ingestor, Query

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


def test_consolidate_by_label_ranges_gives_the_same_answers(written_store):
    assert "consolidated" in pocaduck("consolidate", written_store, "--workers", "2").stdout
    info = json.loads(pocaduck("info", written_store).stdout)
    assert info["labels"] == 1 and info["points"] == 2


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


@pytest.mark.parametrize("label", ["abc", "-1", str(2**64)])
def test_a_label_that_is_not_a_uint64(written_store, label):
    result = pocaduck("points", written_store, label, check=False)
    assert_one_line_error(result, "points", 2, "argument label", "from 0 to 18446744073709551615", repr(label))


# Every failure below must leave one line on stderr, `pocaduck VERB: what is wrong; what to do`,
# exit 2 when the command line is wrong and 1 when running it failed, and leave the store as it was.


@pytest.fixture
def consolidated_store(written_store):
    pocaduck("consolidate", written_store)
    return written_store


def assert_one_line_error(result, verb: str, returncode: int, *words: str) -> str:
    assert result.returncode == returncode, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pocaduck {verb}: "), result.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


def assert_still_queryable(store):
    with Query(store) as query:
        assert sorted(query.get_points(LABEL).tolist()) == POINTS.tolist()


def test_points_into_a_missing_folder_is_refused_before_reading(consolidated_store, tmp_path):
    target = tmp_path / "missing" / "points.npy"
    result = pocaduck("points", consolidated_store, str(LABEL), "-o", str(target), check=False)
    assert_one_line_error(result, "points", 2, "-o/--output", "does not exist", "create it first")
    assert not target.parent.exists()
    assert_still_queryable(consolidated_store)


def test_points_into_an_unknown_file_type_is_refused(consolidated_store, tmp_path):
    result = pocaduck("points", consolidated_store, str(LABEL), "-o", str(tmp_path / "points.txt"), check=False)
    assert_one_line_error(result, "points", 2, ".npy, .csv or .parquet")


@pytest.mark.parametrize(
    ("verb", "option", "value"),
    [
        ("scan", "--workers", "0"),
        ("scan", "--block-shape", "0"),
        ("scan", "--block-shape", "32,0,32"),
        ("scan", "--block-shape", "32,32"),
        ("scan", "--retries", "-1"),
        ("scan", "--sample-cap", "0"),
        ("scan", "--voxel-size", "8,-8,8"),
        ("compact", "--workers", "-1"),
        ("compact", "--workers", "0"),
        ("consolidate", "--workers", "0"),
    ],
)
def test_counts_and_sizes_out_of_range_are_usage_errors(consolidated_store, tmp_path, verb, option, value):
    volume = tmp_path / "labels.npy"
    np.save(volume, np.ones((4, 4, 4), np.uint32))
    new_store = tmp_path / "scanned"
    target = [str(volume), str(new_store)] if verb == "scan" else [consolidated_store]
    result = pocaduck(verb, *target, f"{option}={value}", check=False)
    assert_one_line_error(result, verb, 2, option, value)
    assert "Traceback" not in result.stderr and not new_store.exists()
    assert_still_queryable(consolidated_store)


@pytest.mark.parametrize("name", ["missing.npy", "missing.zarr", "notes.txt"])
def test_scan_of_a_volume_that_is_missing_or_not_a_volume(tmp_path, name):
    (tmp_path / "notes.txt").write_text("not a volume")
    result = pocaduck("scan", str(tmp_path / name), str(tmp_path / "store"), "--no-progress", check=False)
    assert_one_line_error(result, "scan", 1, name, "a .npy file or a zarr array")
    assert not (tmp_path / "store").exists()


def test_scan_into_a_store_path_that_is_a_file(tmp_path):
    volume, occupied = tmp_path / "labels.npy", tmp_path / "occupied"
    np.save(volume, np.ones((4, 4, 4), np.uint32))
    occupied.write_text("someone's file")
    result = pocaduck("scan", str(volume), str(occupied), "--no-progress", check=False)
    assert_one_line_error(result, "scan", 1, str(occupied), "is a file")
    assert occupied.read_text() == "someone's file"


def _damage(index_path, how: str) -> None:
    if how == "garbage":
        index_path.write_bytes(b"this is not a database" * 100)
    else:
        with open(index_path, "r+b") as index:
            index.truncate(1000)


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_a_damaged_index_is_one_line_and_consolidate_rebuilds_it(consolidated_store, how):
    index = Path(consolidated_store) / "unified_index.duckdb"
    _damage(index, how)
    damaged = index.read_bytes()
    line = assert_one_line_error(
        pocaduck("info", consolidated_store, check=False), "info", 1, "unified_index.duckdb", "pocaduck consolidate"
    )
    assert "Traceback" not in line and index.read_bytes() == damaged
    pocaduck("consolidate", consolidated_store)  # the advice given: the workers' sessions rebuild the index
    assert json.loads(pocaduck("info", consolidated_store).stdout)["points"] > 0


def test_an_unexpected_error_is_one_line_with_a_hint_to_debug(consolidated_store, monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("something no check foresaw")

    monkeypatch.setattr(cli_module, "_verb_info", broken)  # stands for a bug: no PocaduckError
    assert cli_module.main(["info", consolidated_store]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("pocaduck info: RuntimeError: something no check foresaw") and "pocaduck --debug" in line


def test_debug_shows_the_traceback_then_the_same_line(consolidated_store):
    _damage(Path(consolidated_store) / "unified_index.duckdb", "garbage")
    result = pocaduck("--debug", "info", consolidated_store, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback") and result.stderr.splitlines()[-1].startswith("pocaduck info: ")


def _file_size_limit(limit: int):
    """A child process whose writes fail with EFBIG past ``limit`` bytes, as on a full disk; no root needed."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer instead of failing the write
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_consolidating_onto_a_full_disk_fails_in_one_line_and_keeps_the_old_index(consolidated_store):
    with Ingestor(consolidated_store, 1) as ingestor:
        ingestor.write(7, "b0", POINTS)
    result = subprocess.run(
        [sys.executable, "-m", "pocaduck.cli", "consolidate", consolidated_store],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_file_size_limit(20_000),
    )
    assert_one_line_error(result, "consolidate", 1, "too large")
    assert_still_queryable(consolidated_store)


def test_an_interrupt_exits_130_with_one_line(store):
    many = np.arange(3 * 400_000, dtype=np.int64).reshape(-1, 3)  # several MB of CSV: far more than a pipe holds
    with Ingestor(store, 0) as ingestor:
        ingestor.write(LABEL, "b0", many)
    pocaduck("consolidate", store)
    child = subprocess.Popen(
        [sys.executable, "-m", "pocaduck.cli", "points", store, str(LABEL)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout.read(1) == b"x"  # it is printing, and blocks on the full pipe until we read on
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130
    assert stderr.decode().splitlines() == ["pocaduck points: interrupted; run the same command again to finish"]
