"""Blocks re-scanned in place: a re-segmented region scanned again reads as a fresh scan of the new volume."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import uuid

import duckdb
import numpy as np
import pytest

from pocaduck import Ingestor, Query, compact, consolidate, scan_volume
from pocaduck.cli import main as cli_main
from pocaduck.errors import InvalidArgumentError, SchemaMismatchError, WorkerNotFinalizedError
from pocaduck.scan.blocks import block_id_of

SPAWN = multiprocessing.get_context("spawn")
BIG = 2**63 + 5  # labels past int64 must survive every step
BLOCK = 8
SCAN = {"block_shape": BLOCK, "mode": "all", "voxel_size": (1, 1, 1), "progress": None}
TABLES = ("point_index", "labels", "replaced_blocks")


def old_volume() -> np.ndarray:
    """A 16^3 volume of 8^3 blocks: label 3 lives only in block (0, 0, 0), which the re-segmentation removes."""
    rng = np.random.default_rng(1)
    volume = rng.choice(np.array([0, 1, 2, 2**64 - 1], np.uint64), size=(16, 16, 16))
    volume[:4, :4, :4] = 3
    return volume


def new_volume() -> np.ndarray:
    """The old volume re-segmented in blocks (0, 0, 0) and (1, 1, 1): new labels there, 3 gone."""
    volume = old_volume()
    volume[:8, :8, :8] = np.where(volume[:8, :8, :8] == 3, BIG, volume[:8, :8, :8])
    volume[:8, :8, 4:8] = 7
    volume[8:, 8:, 8:] = 0  # every point of this block disappears
    return volume


REGION = [block_id_of((0, 0, 0)), block_id_of((1, 1, 1))]


def store_contents(store) -> dict:
    """What a store serves: every label's sorted points, and its summary row."""
    with Query(store) as query:
        labels = query.get_labels().tolist()
        points = {label: np.unique(query.get_points(label), axis=0).tolist() for label in labels}
        counts = {label: query.get_point_count(label) for label in labels}
        summary = query.sql("SELECT label, point_count, block_count, min_x, max_x, min_z, max_z FROM labels")
    return {"labels": labels, "points": points, "counts": counts, "summary": summary.to_dict("list")}


def index_tables(path: str) -> dict:
    with duckdb.connect(path, read_only=True) as con:
        return {
            table: con.execute(f"SELECT * EXCLUDE (file_id) FROM {table} ORDER BY ALL").fetchall()
            if table == "point_index"
            else con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            for table in TABLES
        }


@pytest.fixture(scope="module")
def fresh_scans(tmp_path_factory) -> dict:
    """What a fresh scan of each volume serves: the brute force every re-scan must equal."""
    made = {}
    for name, volume in (("old", old_volume()), ("new", new_volume())):
        store = str(tmp_path_factory.mktemp(name) / "store")
        scan_volume(volume, store, workers=1, **SCAN)
        made[name] = store_contents(store)
    return made


def test_a_rescanned_region_reads_as_a_fresh_scan_of_the_new_volume(store, fresh_scans):
    scan_volume(old_volume(), store, workers=2, **SCAN)
    assert store_contents(store) == fresh_scans["old"]

    result = scan_volume(new_volume(), store, workers=2, blocks=REGION, **SCAN)

    assert result.blocks == 2
    served = store_contents(store)
    assert served == fresh_scans["new"]
    assert 3 not in served["labels"] and BIG in served["labels"]
    with Query(store) as query:
        replaced = query.sql("SELECT block_id, worker_id, replaced_at FROM replaced_blocks ORDER BY block_id")
        info = query.info()
    assert replaced["block_id"].tolist() == REGION
    assert all(worker.startswith("rescan-") for worker in replaced["worker_id"])
    assert info["replaced_blocks"] == 2
    assert info["last_replaced_at"] == replaced["replaced_at"].max().isoformat() + "Z"


def test_a_rescan_of_a_compacted_store_drops_the_compacted_rows_of_its_blocks(store, fresh_scans):
    scan_volume(old_volume(), store, workers=1, **SCAN)
    compact(store, workers=1, progress=False)

    scan_volume(new_volume(), store, workers=1, blocks=REGION, worker_prefix="region", **SCAN)
    assert store_contents(store) == fresh_scans["new"]

    compact(store, workers=1, progress=False)  # the new generation holds the replacement: still the new volume
    assert store_contents(store) == fresh_scans["new"]
    consolidate(store)
    assert store_contents(store) == fresh_scans["new"]
    with Query(store) as query:
        assert query.info()["replaced_blocks"] == 2


def test_the_ranged_consolidation_gives_the_same_index_and_consolidating_again_changes_nothing(store):
    scan_volume(old_volume(), store, workers=1, **SCAN)
    compact(store, workers=1, progress=False)
    scan_volume(new_volume(), store, workers=1, blocks=REGION[:1], **SCAN)
    scan_volume(new_volume(), store, workers=1, blocks=REGION[1:], **SCAN)
    index = os.path.join(store, "unified_index.duckdb")
    one_statement = index_tables(index)

    consolidate(store)
    assert index_tables(index) == one_statement
    consolidate(store, workers=3)
    assert index_tables(index) == one_statement
    assert len(one_statement["replaced_blocks"]) == 2


def test_the_newest_replacement_wins_and_a_later_plain_write_is_kept_beside_it(store):
    def write(worker: str, label: int, replace: bool) -> None:
        with Ingestor(store, worker_id=worker) as ingestor:
            ingestor.write(label, "b", np.full((2, 3), label % 1000, np.int64), replace=replace)
        consolidate(store)

    def labels() -> list[int]:
        with Query(store) as query:
            return query.get_labels().tolist()

    write("first", 1, replace=False)
    with Ingestor(store, worker_id="other-block") as ingestor:
        ingestor.write(2, "c", np.zeros((1, 3), np.int64))
    write("replacement", BIG, replace=True)
    assert labels() == [2, BIG]
    write("later", 4, replace=False)  # finalized after the replacement: kept beside it
    assert labels() == [2, 4, BIG]
    with Ingestor(store, worker_id="empty") as ingestor:  # a block re-scanned to nothing
        ingestor.write_block("b", np.array([], np.uint64), np.zeros((0, 3), np.int64), replace=True)
    consolidate(store)
    assert labels() == [2]
    with Query(store) as query:
        assert query.get_point_count(BIG) == 0
        assert query.sql("SELECT worker_id FROM replaced_blocks")["worker_id"].tolist() == ["empty"]
    one_statement = index_tables(os.path.join(store, "unified_index.duckdb"))
    consolidate(store, workers=2)
    assert index_tables(os.path.join(store, "unified_index.duckdb")) == one_statement


def rescan_until_killed(store: str, block_id: int, files_published: multiprocessing.Event) -> None:
    """Replace ``block_id`` with files already published, then wait to be killed before finalize()."""
    ingestor = Ingestor(store, "rescan-killed", max_points_per_file=10)
    for offset in range(40):
        ingestor.write_block(block_id, np.array([BIG] * 5, np.uint64), np.full((5, 3), offset, np.int32), replace=True)
    files_published.set()
    threading.Event().wait()


def test_a_rescan_killed_mid_way_leaves_the_old_blocks_served(store, fresh_scans):
    scan_volume(old_volume(), store, workers=1, **SCAN)
    files_published = SPAWN.Event()
    child = SPAWN.Process(target=rescan_until_killed, args=(store, REGION[0], files_published))
    child.start()
    try:
        assert files_published.wait(timeout=120), "the re-scan never got going"
    finally:
        child.kill()
        child.join()
    assert child.exitcode == -signal.SIGKILL

    with pytest.raises(WorkerNotFinalizedError, match="rescan-killed"):
        consolidate(store)
    assert store_contents(store) == fresh_scans["old"]
    consolidate(store, ignore_unfinalized=True)
    assert store_contents(store) == fresh_scans["old"]
    with Query(store) as query:
        assert query.info()["replaced_blocks"] == 0


def test_info_prints_how_many_blocks_were_replaced_and_when(store, capsys):
    scan_volume(old_volume(), store, workers=1, **SCAN)
    assert cli_main(["info", store]) == 0
    assert json.loads(capsys.readouterr().out)["replaced_blocks"] == 0
    scan_volume(new_volume(), store, workers=1, blocks=REGION, **SCAN)
    assert cli_main(["info", store]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["replaced_blocks"] == 2 and info["last_replaced_at"].endswith("Z")


def tree(folder: str) -> list[tuple[str, int]]:
    return sorted(
        (os.path.join(root, name), os.stat(os.path.join(root, name)).st_mtime_ns)
        for root, _, names in os.walk(folder)
        for name in names
    )


@pytest.fixture(scope="module")
def scanned_once(tmp_path_factory) -> str:
    """A scanned store that the tests of refused input share: each checks that it stays as it was."""
    store = str(tmp_path_factory.mktemp("scanned") / "store")
    scan_volume(old_volume(), store, workers=1, **SCAN)
    return store


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ([block_id_of((2, 0, 0))], r"outside this volume's grid"),
        ([block_id_of((0, 0, 2))], r"outside this volume's grid"),
        ([-1], r"block id -1 \(negative\)"),
        (np.array([2**63], np.uint64), r"ids are below 2\*\*63"),
        ([], r"non-empty list"),
        (["0"], r"non-empty list of integer block ids"),
        ([[0]], r"non-empty list"),
        ([0.0], r"non-empty list"),
    ],
)
def test_bad_block_ids_are_refused_before_anything_is_written(scanned_once, blocks, message):
    store = scanned_once
    before = tree(store)
    with pytest.raises(InvalidArgumentError, match=message):
        scan_volume(new_volume(), store, workers=1, blocks=blocks, **SCAN)
    assert tree(store) == before


def test_a_rescan_needs_a_scanned_store_and_a_prefix_of_its_own(tmp_path, store):
    empty = str(tmp_path / "empty")
    with pytest.raises(InvalidArgumentError, match="holds no scan"):
        scan_volume(new_volume(), empty, workers=1, blocks=REGION, **SCAN)
    assert not os.path.exists(os.path.join(empty, "workers"))
    scan_volume(old_volume(), store, workers=1, **SCAN)
    before = tree(store)
    with pytest.raises(InvalidArgumentError, match="other than 'scan'"):
        scan_volume(new_volume(), store, workers=1, blocks=REGION, worker_prefix="scan", **SCAN)
    with pytest.raises(InvalidArgumentError, match="pass it with blocks"):
        scan_volume(new_volume(), store, workers=1, worker_prefix="region", **SCAN)
    assert tree(store) == before


def test_write_block_refuses_a_bad_replace_flag_and_a_block_id_of_another_type(store):
    with Ingestor(store, worker_id=0) as ingestor:
        ingestor.write(1, 5, np.zeros((1, 3), np.int64))
    with Ingestor(store, worker_id="r") as ingestor:
        with pytest.raises(InvalidArgumentError, match="replace must be True or False"):
            ingestor.write_block(5, np.array([2], np.uint64), np.ones((1, 3), np.int64), replace="yes")
        with pytest.raises(SchemaMismatchError, match="int64 block ids"):
            ingestor.write_block("5", np.array([], np.uint64), np.zeros((0, 3), np.int64), replace=True)
        assert ingestor.stats.writes == 0
    consolidate(store)
    with Query(store) as query:
        assert query.get_labels().tolist() == [1]
        assert query.info()["replaced_blocks"] == 0


def test_a_rescan_on_a_bucket(fresh_scans):
    from _object_servers import s3_without_auth  # moto's IAM users are the process's: keep to a bucket of our own

    with s3_without_auth("pocaduck-rescan") as server:
        config = server.config(f"rescan-{uuid.uuid4().hex}")
        scan_volume(old_volume(), config, workers=1, **SCAN)
        assert store_contents(config) == fresh_scans["old"]
        scan_volume(new_volume(), config, workers=1, blocks=REGION, **SCAN)
        assert store_contents(config) == fresh_scans["new"]
        compact(config, workers=1, progress=False)
        assert store_contents(config) == fresh_scans["new"]
        with Query(config) as query:
            assert query.info()["replaced_blocks"] == 2


def test_an_empty_replacement_opened_before_the_store_had_a_schema_still_empties_the_block(store):
    replacing = Ingestor(store, worker_id="opened-first")  # the store has no schema yet
    with Ingestor(store, worker_id="scan") as ingestor:
        ingestor.write_block("b", np.array([BIG, 1], np.uint64), np.zeros((2, 3), np.int64))
        ingestor.write_block("c", np.array([1], np.uint64), np.ones((1, 3), np.int64))
    with pytest.raises(SchemaMismatchError, match="string block ids"):
        replacing.write_block(5, np.array([], np.uint64), np.zeros((0, 3), np.int64), replace=True)
    replacing.write_block("b", np.array([], np.uint64), np.zeros((0, 3), np.int64), replace=True)
    replacing.finalize()
    consolidate(store)
    with Query(store) as query:
        assert query.get_labels().tolist() == [1]
        assert query.get_points(1).tolist() == [[1, 1, 1]]
        assert query.get_blocks_for_label(1) == ["c"]


def test_the_scan_verb_rescans_blocks(tmp_path, store, fresh_scans, capsys):
    np.save(tmp_path / "old.npy", old_volume())
    np.save(tmp_path / "new.npy", new_volume())
    common = ["--mode", "all", "--block-shape", str(BLOCK), "--workers", "1", "--no-progress"]
    assert cli_main(["scan", str(tmp_path / "old.npy"), store, *common]) == 0
    capsys.readouterr()
    assert cli_main(["scan", str(tmp_path / "new.npy"), store, *common, "--blocks", ",".join(map(str, REGION))]) == 0
    assert json.loads(capsys.readouterr().out)["blocks"] == 2
    assert store_contents(store) == fresh_scans["new"]
    with pytest.raises(SystemExit) as usage_error:  # refused by the argument parser
        cli_main(["scan", str(tmp_path / "new.npy"), store, *common, "--blocks", "1,x"])
    assert usage_error.value.code == 2
    assert "integer block ids" in capsys.readouterr().err


def test_rerunning_the_replacing_worker_without_replace_withdraws_the_replacement(store):
    with Ingestor(store, worker_id="scan") as ingestor:
        ingestor.write(1, "b", np.zeros((1, 3), np.int64))
    with Ingestor(store, worker_id="fix") as ingestor:
        ingestor.write(BIG, "b", np.ones((1, 3), np.int64), replace=True)
    consolidate(store)
    compact(store, workers=1, progress=False)
    with Query(store) as query:
        assert query.get_labels().tolist() == [BIG]
    with Ingestor(store, worker_id="fix") as ingestor:  # the same worker again, a plain write this time
        ingestor.write(2, "c", np.ones((1, 3), np.int64))
    consolidate(store)
    with Query(store) as query:
        assert query.get_labels().tolist() == [1, 2]
        assert query.info()["replaced_blocks"] == 0


def test_in_surface_mode_rescanning_the_blocks_around_the_region_too_reads_as_a_fresh_scan(tmp_path, store):
    rng = np.random.default_rng(2)
    old = np.repeat(rng.choice(np.array([0, 4, 2**64 - 2], np.uint64), size=(6, 6, 6)), 4, axis=0)
    old = np.repeat(np.repeat(old, 4, axis=1), 4, axis=2)  # 24^3 of 4^3 cubes: surfaces everywhere
    new = old.copy()
    new[2:8, 2:8, 2:8] = BIG  # inside block (0, 0, 0), up to its faces toward (1, *, *), (*, 1, *), (*, *, 1)
    surface = {**SCAN, "mode": "surface"}
    fresh = str(tmp_path / "fresh")
    scan_volume(new, fresh, workers=1, **surface)
    scan_volume(old, store, workers=1, **surface)

    scan_volume(new, store, workers=1, blocks=[block_id_of((0, 0, 0))], **surface)
    assert store_contents(store) != store_contents(fresh)  # the voxels beside the region changed surface too

    around = [block_id_of((z, y, x)) for z in (0, 1) for y in (0, 1) for x in (0, 1)]
    scan_volume(new, store, workers=1, blocks=around, **surface)
    assert store_contents(store) == store_contents(fresh)
