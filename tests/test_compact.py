"""Compaction: the compacted store answers exactly what the scattered one did, faster, and switching is safe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import _children
import numpy as np
import pytest
from _support import as_row_set

from pocaduck import Ingestor, Query, consolidate, layout, open_store
from pocaduck.cli import main as cli
from pocaduck.compact import compact
from pocaduck.errors import (
    CompactionBusyError,
    CompactionCancelledError,
    CompactionError,
    EmptyStoreError,
    StoreNotConsolidatedError,
    StoreNotFoundError,
)
from pocaduck.gc import collect_garbage
from pocaduck.storage import LocalStorage

LABELS = [0, 7, 12345, 2**63 + 1, 2**64 - 1]


def worker_points(worker: int, label: int, block: int, columns: int = 3) -> np.ndarray:
    """Small coordinates on purpose: identical points recur, within a block and across blocks."""
    rng = np.random.default_rng([worker, label % 2**32, block])
    return rng.integers(0, 4, size=(int(rng.integers(1, 40)), columns))


def ingest(store: str, worker: int, blocks: int = 6, offset: int = 0) -> None:
    with Ingestor(store, worker, max_points_per_file=300) as ingestor:
        for block in range(blocks):
            for label in LABELS[worker % 2 :]:
                ingestor.write(label, f"{worker}/{block}", worker_points(worker + offset, label, block))


def answers(store: str) -> dict:
    """Everything a user can ask about each label, with points as multisets."""
    with Query(store, cache_size=0) as query:
        result = {"labels": query.get_labels().tolist()}
        for label in result["labels"]:
            summary = query.get_label_summary(label)
            summary.pop("file_count")  # how many files hold a label is what compaction changes
            blocks = query.get_blocks_for_label(label)
            result[label] = (
                as_row_set(query.get_points(label)),
                blocks,
                query.get_point_count(label),
                summary,
                as_row_set(query.get_points(label, blocks=blocks[:2])),
            )
        several = query.get_points(result["labels"][:3], output="pandas")
        result["several"] = sorted(map(tuple, several.to_numpy().tolist()))
        return result


def files_in_index(store: str) -> list[str]:
    with Query(store) as query:
        return query.sql("SELECT path FROM files")["path"].tolist()


def compaction_generation(store: str) -> str | None:
    return open_store(store).compaction_in_force()


@pytest.fixture
def scattered(store):
    """Four workers, each label spread over many blocks and files, consolidated."""
    for worker in range(4):
        ingest(store, worker)
    consolidate(store)
    return store


def test_compacted_store_answers_exactly_what_the_scattered_one_did(scattered):
    before = answers(scattered)
    events = []
    report = compact(scattered, workers=2, points_per_file=500, progress=events.append)
    assert report.shards > 1 and report.points_written == report.points_read
    assert answers(scattered) == before
    assert all(path.startswith(f"compacted/{report.generation}/") for path in files_in_index(scattered))
    with Query(scattered) as query:
        pieces = query.sql("SELECT count(*) AS n, count(DISTINCT (label, block_id)) AS pairs FROM point_index")
    # labels of up to 1,024 points (all of these) are one level: one index row per (label, block)
    assert pieces["n"][0] == pieces["pairs"][0], "one index row per (label, block) after compaction"
    finished = [e for e in events if e.state == "finished"]
    assert len(finished) == report.shards
    assert sum(e.points_written for e in finished) == report.points_written


def test_compacting_a_compact_store_does_nothing(scattered):
    generation = compact(scattered, workers=1).generation
    assert compact(scattered, workers=1).generation is None
    assert compaction_generation(scattered) == generation


def test_deduplication_happens_only_when_asked(scattered):
    before = answers(scattered)
    compact(scattered, workers=1)
    assert answers(scattered) == before
    with Query(scattered, cache_size=0) as query:
        first_blocks = {label: query.get_blocks_for_label(label)[0] for label in before["labels"]}
        first_block_points = {label: query.get_points(label, blocks=[first_blocks[label]]) for label in first_blocks}

    report = compact(scattered, workers=1, deduplicate=True)
    assert report.deduplicated and report.points_written < report.points_read
    with Query(scattered, cache_size=0) as query:
        for label in before["labels"]:
            assert as_row_set(query.get_points(label)) == sorted(set(before[label][0]))
            assert query.get_point_count(label) == len(set(before[label][0]))
            # the first copy of a point is kept, in block order: the first block loses only its own repeats
            kept = query.get_points(label, blocks=[first_blocks[label]])
            assert as_row_set(kept) == sorted(set(as_row_set(first_block_points[label])))


def test_integer_block_ids_and_float_columns_survive_compaction(store):
    rng = np.random.default_rng(1)
    for worker in range(3):
        with Ingestor(store, worker, max_points_per_file=100, columns=("x", "y", "z", "weight")) as ingestor:
            for block in range(8):
                for label in (3, 2**64 - 2):
                    ingestor.write(label, block * 10 + worker, rng.random((5, 4), dtype=np.float32))
    consolidate(store)
    before = answers(store)
    compact(store, workers=1, points_per_file=50)
    assert answers(store) == before
    with Query(store) as query:
        assert query.get_points(3).dtype == np.float32
        assert query.get_blocks_for_label(3) == sorted(b * 10 + w for b in range(8) for w in range(3))


def test_consolidation_keeps_the_compaction_and_adds_new_workers_beside_it(scattered):
    generation = compact(scattered, workers=1).generation
    ingest(scattered, 4)
    consolidate(scattered)
    assert compaction_generation(scattered) == generation
    new_files = [path for path in files_in_index(scattered) if not path.startswith("compacted/")]
    assert new_files and all(path.startswith("workers/4/") for path in new_files)
    with_new_worker = answers(scattered)

    report = compact(scattered, workers=1)
    assert report.generation != generation
    assert all(path.startswith(f"compacted/{report.generation}/") for path in files_in_index(scattered))
    assert answers(scattered) == with_new_worker


def test_rerunning_a_covered_worker_makes_consolidation_rebuild_from_the_sessions(scattered):
    compact(scattered, workers=1)
    ingest(scattered, 0, offset=100)  # worker 0 again, with other points
    consolidate(scattered)
    assert compaction_generation(scattered) is None
    expected_store = str(Path(scattered).with_name("expected"))
    for worker in range(4):
        ingest(expected_store, worker, offset=100 if worker == 0 else 0)
    consolidate(expected_store)
    assert answers(scattered) == answers(expected_store)


def test_readers_keep_the_layout_they_opened_until_they_reopen(scattered):
    before = answers(scattered)
    with Query(scattered, cache_size=0) as old_reader:
        old_files = old_reader.sql("SELECT path FROM files")["path"].tolist()
        compact(scattered, workers=1)
        assert old_reader.sql("SELECT path FROM files")["path"].tolist() == old_files
        for label in before["labels"]:
            assert as_row_set(old_reader.get_points(label)) == before[label][0]
    assert not any(path.startswith("compacted/") for path in old_files)
    assert all(path.startswith("compacted/") for path in files_in_index(scattered))


def test_compaction_needs_a_consolidated_store(store):
    ingest(store, 0)
    with pytest.raises(StoreNotConsolidatedError, match="consolidate"):
        compact(store, workers=1)


def test_only_one_compaction_runs_at_a_time(scattered):
    with LocalStorage(scattered).lock(layout.COMPACTION_LOCK) as free:
        assert free
        with pytest.raises(CompactionBusyError):
            compact(scattered, workers=1)
        with pytest.raises(CompactionBusyError):
            collect_garbage(scattered)


# -- killed compactions ----------------------------------------------------------

_KILL_ITSELF = """
import os, signal, sys
from pocaduck.compact import compact
finished = []
def kill_after_two(event):
    if event.state == "finished":
        finished.append(event)
        if len(finished) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
compact(sys.argv[1], workers=1, points_per_file=200, progress=kill_after_two)
"""


def run_child(code: str, store: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), store], capture_output=True, text=True, timeout=120
    )


def test_a_killed_compaction_leaves_readers_on_the_old_layout_and_resumes(scattered):
    before = answers(scattered)
    files_before = files_in_index(scattered)
    child = run_child(_KILL_ITSELF, scattered)
    assert child.returncode == -signal.SIGKILL
    assert files_in_index(scattered) == files_before
    assert answers(scattered) == before

    report = compact(scattered, workers=1, points_per_file=200)
    assert report.shards_reused == 2 and report.shards > 2
    assert answers(scattered) == before
    assert all(path.startswith("compacted/") for path in files_in_index(scattered))


def test_a_script_without_the_main_guard_compacts(scattered, tmp_path):
    """Shards run in threads: a plain script needs no `if __name__ == "__main__":`, unlike worker processes."""
    before = answers(scattered)
    script = tmp_path / "compact_it.py"
    script.write_text(
        f"from pocaduck import compact\nprint(compact({scattered!r}, workers=2, points_per_file=500).shards)\n"
    )
    child = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert child.returncode == 0, child.stderr
    assert int(child.stdout) > 1
    assert answers(scattered) == before
    assert all(path.startswith("compacted/") for path in files_in_index(scattered))


def test_every_shard_reports_while_it_runs(scattered):
    events = []
    report = compact(scattered, workers=2, points_per_file=500, progress=events.append)
    shards = sorted({event.worker_id for event in events})
    assert len(shards) == report.shards > 2
    for shard in shards:
        mine = [event for event in events if event.worker_id == shard]
        assert [event.state for event in mine] == ["queued", "running", "finished"]
        assert mine[-1].points_written > 0 and mine[-1].blocks_done == mine[-1].blocks_total == 1
    first_finished = next(i for i, event in enumerate(events) if event.state == "finished")
    assert all(event.state == "queued" for event in events[: report.shards]), "every shard is queued first"
    assert first_finished < max(i for i, event in enumerate(events) if event.state == "running"), (
        "shards run while others finish: the running events come from the shards, not from the end of the run"
    )


def test_a_stopped_compaction_keeps_the_old_layout_and_a_rerun_resumes_exactly(scattered):
    before = answers(scattered)
    files_before = files_in_index(scattered)
    stop = threading.Event()
    events = []

    def stop_after_the_first_shard(event):
        events.append(event)
        if event.state == "finished":
            stop.set()

    with pytest.raises(CompactionCancelledError, match="run it again with the same settings: it resumes"):
        compact(scattered, workers=2, points_per_file=200, progress=stop_after_the_first_shard, stop=stop)
    cancelled = {event.worker_id for event in events if event.state == "failed" and event.error == "cancelled"}
    finished = {event.worker_id for event in events if event.state == "finished"}
    assert cancelled and finished and not cancelled & finished
    assert files_in_index(scattered) == files_before
    assert answers(scattered) == before

    report = compact(scattered, workers=2, points_per_file=200)
    assert report.shards_reused == len(finished) and report.shards == len(finished) + len(cancelled)
    assert answers(scattered) == before
    assert all(path.startswith(f"compacted/{report.generation}/") for path in files_in_index(scattered))


def test_ctrl_c_stops_a_compaction_and_a_rerun_resumes_exactly(scattered):
    before = answers(scattered)
    child = _children.start("compact_until_interrupted", scattered)
    try:
        _children.read_until(child, lambda lines: "finished" in lines)
        child.send_signal(signal.SIGINT)
        lines = _children.read_until(child, lambda lines: bool(lines) and lines[-1] in ("interrupted", "compacted"))
    finally:
        child.kill()
        child.wait()
    assert lines[-1] == "interrupted"
    assert answers(scattered) == before

    report = compact(scattered, workers=2, points_per_file=200)
    assert 1 <= report.shards_reused < report.shards
    assert answers(scattered) == before


def move_a_data_file_away(store: str) -> tuple[Path, Path]:
    with Query(store) as query:
        path = Path(store) / query.sql("SELECT path FROM files ORDER BY path LIMIT 1")["path"][0]
    away = path.with_name(path.name + ".away")
    path.rename(away)
    return path, away


def test_a_failing_shard_is_retried_when_retries_allow(scattered):
    before = answers(scattered)
    path, away = move_a_data_file_away(scattered)
    events = []

    def put_it_back_when_a_shard_is_queued_again(event):
        events.append(event)
        if event.state == "queued" and any(e.worker_id == event.worker_id for e in events[:-1]) and away.exists():
            away.rename(path)

    report = compact(
        scattered, workers=2, points_per_file=500, retries=1, progress=put_it_back_when_a_shard_is_queued_again
    )
    assert not away.exists(), "no shard failed: the test moved the wrong file"
    assert len([event for event in events if event.state == "finished"]) == report.shards
    assert not [event for event in events if event.state == "failed"]
    assert answers(scattered) == before


def test_a_failing_shard_fails_the_compaction_with_its_error_and_a_rerun_resumes(scattered):
    before = answers(scattered)
    path, away = move_a_data_file_away(scattered)
    with pytest.raises(
        CompactionError,
        match=r"(?s)compaction shard \d+ failed: .*Fix the cause, then run the compaction again: it resumes",
    ):
        compact(scattered, workers=2, points_per_file=500)
    away.rename(path)
    assert answers(scattered) == before
    compact(scattered, workers=2, points_per_file=500)
    assert answers(scattered) == before


def test_shards_run_on_a_dask_client(scattered):
    distributed = pytest.importorskip("distributed")
    before = answers(scattered)
    events = []
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        report = compact(scattered, client=client, points_per_file=500, progress=events.append)
    assert answers(scattered) == before
    assert sorted(e.worker_id for e in events if e.state == "finished") == sorted(
        e.worker_id for e in events if e.state == "queued"
    )
    assert len([e for e in events if e.state == "finished"]) == report.shards


def test_a_failing_shard_names_itself(scattered):
    with Query(scattered) as query:
        victim = query.sql("SELECT path FROM files LIMIT 1")["path"][0]
    os.unlink(os.path.join(scattered, victim))
    with pytest.raises(CompactionError, match="shard"):
        compact(scattered, workers=1)


# -- garbage collection ----------------------------------------------------------


def test_gc_removes_only_what_no_index_refers_to(scattered):
    first = compact(scattered, workers=1).generation
    ingest(scattered, 4)
    consolidate(scattered)
    second = compact(scattered, workers=1).generation
    sessions = sorted(str(p.relative_to(scattered)) for p in Path(scattered).glob("workers/*/sessions/*"))

    versions = sorted(p.relative_to(scattered).as_posix() for p in Path(scattered).glob("index_versions/*"))
    in_force = "index_versions/" + json.loads((Path(scattered) / "label_directory.json").read_text())["build"]
    assert len(versions) == 4 and in_force in versions  # one per consolidation, compactions included

    dry = collect_garbage(scattered, dry_run=True)
    assert dry.removed == [f"compacted/{first}"] + [path for path in versions if path != in_force]
    assert (Path(scattered) / "compacted" / first).exists()

    assert collect_garbage(scattered).removed == dry.removed
    assert not (Path(scattered) / "compacted" / first).exists()
    assert [p.relative_to(scattered).as_posix() for p in Path(scattered).glob("index_versions/*")] == [in_force]
    assert (Path(scattered) / "compacted" / second / "index.duckdb").exists()
    assert sorted(str(p.relative_to(scattered)) for p in Path(scattered).glob("workers/*/sessions/*")) == sessions
    after = answers(scattered)
    consolidate(scattered)  # the generation in force and every finalized session are still there
    assert answers(scattered) == after
    assert collect_garbage(scattered).removed == [in_force]  # the version of the index just replaced


def test_gc_removes_superseded_sessions_once_the_index_moved_on(scattered):
    old_session = next(Path(scattered).glob("workers/1/sessions/*")).relative_to(scattered).as_posix()
    ingest(scattered, 1, offset=100)
    assert collect_garbage(scattered).removed == [], "the unified index still reads the old session"
    consolidate(scattered)
    assert [path for path in collect_garbage(scattered).removed if "index_versions/" not in path] == [old_session]
    with Query(scattered) as query:
        assert query.get_point_count(7) > 0


def test_cli_compacts_and_collects_garbage(scattered, capsys):
    before = answers(scattered)
    assert cli(["compact", scattered, "--workers", "1"]) == 0
    assert '"points_written"' in capsys.readouterr().out
    assert cli(["compact", scattered, "--workers", "1"]) == 0
    assert "already compact" in capsys.readouterr().out
    assert cli(["gc", scattered, "--dry-run"]) == 0
    assert answers(scattered) == before


def test_gc_and_compact_refuse_a_folder_that_is_not_a_store_and_delete_nothing(tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "compacted" / "holiday").mkdir(parents=True)
    (folder / "compacted" / "holiday" / "beach.jpg").write_bytes(b"jpeg")
    (folder / ".unified_index.duckdb.building-1").write_bytes(b"not ours")
    before = sorted(str(p) for p in folder.rglob("*"))
    for verb in (collect_garbage, compact):
        with pytest.raises(StoreNotFoundError, match=r"holds no pocaduck store \(no pocaduck.json; it holds "):
            verb(str(folder))
    assert cli(["gc", str(folder)]) == 1
    assert "Give the folder of a store" in capsys.readouterr().err
    assert sorted(str(p) for p in folder.rglob("*")) == before


def test_a_full_disk_fails_the_compaction_clearly_and_the_store_answers_as_before(scattered):
    before = answers(scattered)
    child = _children.start("under_file_size_limit", "compact", scattered, str(16 * 1024))
    outcome = json.loads(_children.read_until(child, bool)[0])
    child.wait()
    assert outcome["type"] == "StoreWriteError"
    assert scattered in outcome["message"] and "Nothing published was changed" in outcome["message"]
    assert "Free space" in outcome["message"] and "run the compaction again" in outcome["message"]
    assert answers(scattered) == before
    assert compaction_generation(scattered) is None


def test_compacting_when_every_last_run_finalized_empty_says_so_and_the_index_stays(store):
    with Ingestor(store, 1) as ingestor:
        ingestor.write(0, "b", np.zeros((1, 3), np.int64))
    consolidate(store)
    Ingestor(store, 1).finalize()  # a re-run that found nothing to write
    with pytest.raises(EmptyStoreError, match="no finalized worker data"):
        compact(store, workers=1)
    with Query(store) as query:
        assert query.get_points(0).tolist() == [[0, 0, 0]]
