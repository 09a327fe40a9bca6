"""Every public verb refuses a bad count, size, seed, flag or key with InvalidArgumentError naming the argument.

The table below is the whole coverage: each row is a verb, one of its
arguments and the values it must refuse. Each call is made against one small
consolidated store (and output paths beside it), and nothing in that folder
may change: a verb checks its arguments before it creates a file or starts a
task.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest

from pocaduck import (
    Ingestor,
    InvalidArgumentError,
    PointCloudDataset,
    Query,
    collect_garbage,
    compact,
    consolidate,
    create_store,
    export_neuroglancer,
    migrate,
    scan_volume,
    verify,
)

NAN = float("nan")
LABEL = 7

# What each kind of argument must refuse. None is refused only where the argument has no default meaning.
POSITIVE = [0, -1, "2", 2.5, NAN, True, False, None]
OPTIONAL_POSITIVE = [0, -1, "2", 2.5, NAN, True, False]
NON_NEGATIVE = [-1, "2", 1.5, NAN, True, None]
SEED = [-1, 2**64, "1", 1.5, NAN, True]
FLAG = [None, 0, 1, "yes", NAN]
SECONDS = [0, -1, "10", NAN, float("inf"), True]
LABELS_ASKED = [-1, 2**64, "5", 2.5, NAN, True, None]
OUTPUT = ["csv", None, 1]
CORNER = [None, "000", 5, (0, NAN, 0), (0, 0), (True, 0, 0)]
PROGRESS = ["bars", "TQDM", 0, 1, 0.5]

# verb -> how to call it with one keyword argument; ``place`` holds the store, an output path and open readers.
VERBS: dict[str, Callable[..., object]] = {
    "consolidate": lambda place, **given: consolidate(place.store, **given),
    "compact": lambda place, **given: compact(place.store, **given),
    "collect_garbage": lambda place, **given: collect_garbage(place.store, **given),
    "verify": lambda place, **given: verify(place.store, **given),
    "export_neuroglancer": lambda place, **given: export_neuroglancer(place.store, place.out, **given),
    "migrate": lambda place, **given: migrate(place.store, place.out, **given),
    "scan_volume": lambda place, **given: scan_volume(np.ones((4, 4, 4), np.uint8), place.out, **given),
    "create_store": lambda place, **given: create_store(place.out, **given),
    "Ingestor": lambda place, **given: Ingestor(place.store, "new-worker", **given),
    "Ingestor.write": lambda place, **given: place.ingestor.write(
        **{"label": 1, "block_id": "b", "points": np.zeros((1, 3), np.int64), **given}
    ),
    "Ingestor.write_block": lambda place, **given: place.ingestor.write_block(
        "b", **{"labels": np.array([1]), "points": np.zeros((1, 3), np.int64), **given}
    ),
    "Query": lambda place, **given: Query(place.store, **given),
    "Query.get_points": lambda place, **given: place.query.get_points(**{"label": LABEL, **given}),
    "Query.iter_points": lambda place, **given: place.query.iter_points(**{"label": LABEL, **given}),
    "Query.get_points_in_box": lambda place, **given: place.query.get_points_in_box(
        **{"lower": (0, 0, 0), "upper": (9, 9, 9), **given}
    ),
    "Query.sql": lambda place, **given: place.query.sql(**{"statement": "SELECT 1", **given}),
    "PointCloudDataset": lambda place, **given: PointCloudDataset(place.store, **given),
}

CASES = [
    ("consolidate", "workers", OPTIONAL_POSITIVE),
    ("consolidate", "retries", NON_NEGATIVE),
    ("consolidate", "ignore_unfinalized", FLAG),
    ("consolidate", "from_sessions", FLAG),
    ("consolidate", "progress", PROGRESS),
    ("compact", "workers", OPTIONAL_POSITIVE),
    ("compact", "points_per_file", POSITIVE),
    ("compact", "row_group_size", POSITIVE),
    ("compact", "progress", PROGRESS),
    ("compact", "retries", NON_NEGATIVE),
    ("compact", "deduplicate", FLAG),
    ("collect_garbage", "dry_run", FLAG),
    ("verify", "deep", FLAG),
    ("export_neuroglancer", "workers", OPTIONAL_POSITIVE),
    ("export_neuroglancer", "retries", NON_NEGATIVE),
    ("export_neuroglancer", "shard_bytes", POSITIVE),
    ("export_neuroglancer", "points_per_cell", POSITIVE),
    ("export_neuroglancer", "labels", [[-1], ["x"], [1.5], []]),
    ("export_neuroglancer", "progress", PROGRESS),
    ("export_neuroglancer", "mapping", [5, "../x", "", True]),
    ("migrate", "workers", OPTIONAL_POSITIVE),
    ("migrate", "max_points_per_file", POSITIVE),
    ("migrate", "progress", PROGRESS),
    ("scan_volume", "block_shape", [0, -1, (4, 0, 4), (4, 4), "4", 2.5, NAN, True, None]),
    ("scan_volume", "voxel_size", [0, (1, -1, 1), (1, NAN, 1), "1", True, None]),
    ("scan_volume", "voxel_offset", [(0, 1.5, 0), NAN, "0", None]),
    ("scan_volume", "workers", POSITIVE),
    ("scan_volume", "mode", ["edges", None, 3]),
    ("scan_volume", "sample_cap", POSITIVE),
    ("scan_volume", "seed", NON_NEGATIVE),
    ("scan_volume", "ignore_label", SEED),
    ("scan_volume", "retries", NON_NEGATIVE),
    ("scan_volume", "max_points_per_file", POSITIVE),
    ("scan_volume", "tile_bytes", POSITIVE),
    ("scan_volume", "report_interval", [-1, "0.25", NAN, True, None]),
    ("scan_volume", "consolidate", FLAG),
    ("scan_volume", "resume", FLAG),
    ("scan_volume", "background", FLAG),
    ("scan_volume", "progress", PROGRESS),
    ("create_store", "voxel_size", [(1, 0, 1), (NAN, 1, 1), "111", True]),
    ("Ingestor", "max_points_per_file", POSITIVE),
    ("Ingestor", "max_bytes_per_file", POSITIVE),
    ("Ingestor", "row_group_size", POSITIVE),
    ("Ingestor.write", "label", LABELS_ASKED),
    ("Ingestor.write", "points", [[[1, 2, 3]], np.zeros(3), np.array([[NAN, 0.0, 0.0]]), None]),
    ("Ingestor.write_block", "labels", [[1], np.array([-1]), np.array([1.5]), np.array([1, 2]), None]),
    ("Ingestor.write_block", "points", [np.array([[NAN, 0.0, 0.0]]), np.zeros(3), None]),
    ("Query", "threads", OPTIONAL_POSITIVE),
    ("Query", "cache_size", NON_NEGATIVE),
    ("Query.get_points", "label", LABELS_ASKED),
    ("Query.get_points", "sample", OPTIONAL_POSITIVE),
    ("Query.get_points", "seed", SEED),
    ("Query.get_points", "output", OUTPUT),
    ("Query.iter_points", "label", LABELS_ASKED),
    ("Query.iter_points", "chunk_size", OPTIONAL_POSITIVE),
    ("Query.iter_points", "batch_size", OPTIONAL_POSITIVE),
    ("Query.get_points_in_box", "lower", CORNER),
    ("Query.get_points_in_box", "upper", CORNER),
    ("Query.get_points_in_box", "labels", [-1, 2**64, "x", [1.5]]),
    ("Query.get_points_in_box", "output", OUTPUT),
    ("Query.sql", "statement", [None, 5, b"SELECT 1"]),
    ("Query.sql", "params", ["abc", 5, {1}]),
    ("Query.sql", "timeout", SECONDS),
    ("Query.sql", "output", OUTPUT),
    ("PointCloudDataset", "sample", POSITIVE),
    ("PointCloudDataset", "seed", SEED),
    ("PointCloudDataset", "labels", [[-1], ["x"], [2**64]]),
]


def _cases() -> list:
    return [
        pytest.param(verb, argument, value, id=f"{verb}-{argument}={value!r}")
        for verb, argument, values in CASES
        for value in values
    ]


def _listing(folder: str) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder`` with its size and modification time."""
    found = {}
    for root, folders, files in os.walk(folder):
        for name in folders + files:
            path = os.path.join(root, name)
            status = os.stat(path)
            found[os.path.relpath(path, folder)] = (status.st_size, status.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A consolidated store of two labels, an output path beside it, a Query, and an Ingestor on an empty store."""
    root = tmp_path_factory.mktemp("arguments")
    store = str(root / "store")
    with Ingestor(store, "a") as ingestor:
        ingestor.write(LABEL, "b0", np.array([[1, 2, 3], [4, 5, 6]]))
        ingestor.write(LABEL + 1, "b0", np.array([[7, 8, 9]]))
    consolidate(store)
    with (
        Query(store) as query,
        Ingestor(str(root / "scratch"), "s") as scratch,
    ):
        yield SimpleNamespace(root=str(root), store=store, out=str(root / "out"), query=query, ingestor=scratch)


def test_the_table_names_every_verb_it_calls():
    assert {verb for verb, _, _ in CASES} == set(VERBS)


@pytest.mark.parametrize(("verb", "argument", "value"), _cases())
def test_a_bad_argument_is_refused_by_name_before_anything_changes(place, verb, argument, value):
    before = _listing(place.root)
    writes = place.ingestor.stats.writes
    with pytest.raises(InvalidArgumentError) as refused:
        VERBS[verb](place, **{argument: value})
    assert argument in str(refused.value), f"the message does not name {argument}: {refused.value}"
    assert _listing(place.root) == before
    assert place.ingestor.stats.writes == writes
