"""Stores written by the real pocaduck==0.1.1: Query reads them as the original did, migrate converts them exactly."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from _original import files_and_times, run_original
from _support import as_row_set

from pocaduck import Ingestor, Query, compact, consolidate
from pocaduck.cli import main as cli
from pocaduck.errors import InvalidArgumentError, LegacyStoreError, ReadOnlySQLError, StoreNotFoundError
from pocaduck.legacy import LegacyQuery
from pocaduck.migration import migrate


def assert_answers_like_the_original(query, original: dict) -> None:
    assert query.get_labels().tolist() == original["labels"].tolist()
    for label in original["labels"].tolist():
        points = query.get_points(label)
        assert points.dtype == original[f"points_{label}"].dtype
        assert np.array_equal(points, original[f"points_{label}"])
        assert sorted(query.get_blocks_for_label(label)) == original[f"blocks_{label}"].tolist()
        assert query.get_point_count(label) == int(original[f"count_{label}"])
    missing = query.get_points(99)
    assert missing.shape == original["missing"].shape and missing.dtype == original["missing"].dtype


@pytest.mark.parametrize(("dtype", "consolidations"), [("int64", 1), ("float32", 1), ("int64", 2)])
def test_query_reads_an_original_store_and_answers_as_the_original_did(original_stores, dtype, consolidations):
    store, original = original_stores(dtype, consolidations)
    untouched = files_and_times(store)
    with Query(str(store)) as query:
        assert isinstance(query, LegacyQuery) and not query.using_optimized_data
        assert_answers_like_the_original(query, original)
    assert files_and_times(store) == untouched, "reading an original store must not change it"


def written_by_label(original: dict) -> dict[int, tuple[list, list, int]]:
    """What the original was given, per label: points (multiset), blocks, count."""
    ends = np.cumsum(original["written_counts"])
    pieces = np.split(original["written_points"], ends[:-1])
    truth: dict[int, tuple[list, set, int]] = {}
    for label, block, points in zip(
        original["written_labels"].tolist(), original["written_blocks"], pieces, strict=True
    ):
        rows, blocks, _ = truth.get(label, ([], set(), 0))
        truth[label] = (rows + as_row_set(points), blocks | {str(block)}, len(rows) + len(points))
    return {label: (sorted(rows), sorted(blocks), count) for label, (rows, blocks, count) in truth.items()}


@pytest.mark.parametrize(("dtype", "consolidations"), [("float32", 1), ("int64", 2)])
def test_migrate_converts_every_stored_row_exactly(original_stores, tmp_path, dtype, consolidations):
    store, original = original_stores(dtype, consolidations)
    new_store = str(tmp_path / "migrated")
    migrate(str(store), new_store)
    truth = written_by_label(original)
    with Query(new_store) as query:
        assert not isinstance(query, LegacyQuery)
        assert query.schema.dtype == np.dtype(dtype)
        assert query.get_labels().tolist() == sorted(truth)
        for label, (rows, blocks, count) in truth.items():
            assert as_row_set(query.get_points(label)) == rows  # every row, no de-duplication
            assert query.get_blocks_for_label(label) == blocks
            assert query.get_point_count(label) == count  # the true count, even if the original double-counted
        assert query.sql("SELECT bool_and(starts_with(checksum, 'crc32:')) AS ok FROM files")["ok"][0]
        migrated = {label: as_row_set(query.get_points(label)) for label in truth}

    migrate(str(store), new_store)  # running it again (e.g. after an interruption) gives the same store
    compact(new_store, workers=1)
    with Query(new_store) as query:
        assert {label: as_row_set(query.get_points(label)) for label in truth} == migrated


def everything_stored(store: str) -> dict:
    """Each label's points in the order they come back, its blocks, and every index row but the file it names."""
    with Query(store) as query:
        labels = query.get_labels().tolist()
        return {
            "points": {label: query.get_points(label).tolist() for label in labels},
            "blocks": {label: query.get_blocks_for_label(label) for label in labels},
            "rows": query.sql("SELECT * EXCLUDE (file_id) FROM point_index ORDER BY ALL").values.tolist(),
            "workers": query.sql("SELECT worker_id FROM workers ORDER BY ALL")["worker_id"].tolist(),
        }


def test_migrating_with_two_workers_gives_exactly_what_one_worker_gives(original_stores, tmp_path):
    store, _ = original_stores("float32", 1)
    migrate(str(store), str(tmp_path / "one"), workers=1)
    events = []
    migrate(str(store), str(tmp_path / "two"), workers=2, progress=events.append)
    assert everything_stored(str(tmp_path / "two")) == everything_stored(str(tmp_path / "one"))

    workers = everything_stored(str(tmp_path / "two"))["workers"]
    assert sorted({event.worker_id for event in events}) == workers and len(workers) == 3
    for worker_id in workers:
        mine = [event for event in events if event.worker_id == worker_id]
        assert mine[0].state == "queued" and mine[-1].state == "finished"
        running = [event.blocks_done for event in mine if event.state == "running"]
        assert running == list(range(mine[-1].blocks_total + 1)), "a running event as it starts, then one per file"
    with Query(str(tmp_path / "two")) as query:
        total = int(query.sql("SELECT sum(point_count) AS n FROM point_index")["n"][0])
    assert sum(event.points_written for event in events if event.state == "finished") == total


def test_migrating_on_a_dask_client_gives_the_same_store(original_stores, tmp_path):
    distributed = pytest.importorskip("distributed")
    store, _ = original_stores("float32", 1)
    migrate(str(store), str(tmp_path / "here"), workers=1)
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        migrate(str(store), str(tmp_path / "on-dask"), client=client)
    assert everything_stored(str(tmp_path / "on-dask")) == everything_stored(str(tmp_path / "here"))


def test_cli_migrates_and_the_result_answers_like_the_original_minus_its_quirks(original_stores, tmp_path, capsys):
    store, original = original_stores()
    new_store = str(tmp_path / "migrated")
    assert cli(["migrate", str(store), new_store]) == 0
    assert cli(["info", new_store]) == 0
    assert '"labels": 3' in capsys.readouterr().out
    with Query(new_store) as query:
        for label in original["labels"].tolist():
            deduplicated_int64 = np.unique(query.get_points(label).astype(np.int64), axis=0)
            assert np.array_equal(deduplicated_int64, original[f"points_{label}"])


def make_optimized(store: Path) -> None:
    """An ``optimized/`` folder as the original's ``optimize_point_cloud.py`` writes it (it is not in the package)."""
    folder = store / "optimized" / "optimize_0"
    folder.mkdir(parents=True)
    with Query(str(store)) as query:  # the un-optimized data, read as the original optimizer reads it
        labels = query.get_labels().tolist()
        per_label = {label: query.get_points(label) for label in labels}
    rows = []
    for part, chosen in enumerate((labels[:2], labels[2:])):
        path = folder / f"optimized_{part}.parquet"
        frame = pd.DataFrame(
            {
                "label": np.concatenate([np.full(len(per_label[lab]), lab, np.int64) for lab in chosen]),
                "data": [row for lab in chosen for row in per_label[lab]],
            }
        )
        frame.to_parquet(path, index=False)
        rows += [(lab, str(path), len(per_label[lab])) for lab in chosen]
    with duckdb.connect(str(store / "optimized" / "optimized_index.db")) as con:
        con.execute("CREATE TABLE point_cloud_index (label BIGINT, file_path VARCHAR, point_count BIGINT)")
        con.executemany("INSERT INTO point_cloud_index VALUES (?, ?, ?)", rows)


def test_optimized_original_stores_are_read_as_the_original_reads_them(original_package, original_stores, tmp_path):
    source, _ = original_stores()
    store = tmp_path / "store"
    shutil.copytree(source, store)
    make_optimized(store)
    original = run_original(original_package, "answer", store)
    with Query(str(store)) as query:
        assert query.using_optimized_data
        assert query.get_blocks_for_label(1) == []
        assert_answers_like_the_original(query, {**original, **{k: np.array([]) for k in original if "blocks_" in k}})

    migrate(str(store), str(tmp_path / "with_blocks"))  # the un-optimized data is there: blocks are kept
    with Query(str(tmp_path / "with_blocks")) as query:
        assert query.get_blocks_for_label(1) != []

    os.unlink(store / "unified_index.db")  # only optimized data left: migrated without block ids
    migrate(str(store), str(tmp_path / "from_optimized"))
    with Query(str(tmp_path / "from_optimized")) as query:
        assert query.get_blocks_for_label(1) == [""]
        assert np.array_equal(np.unique(query.get_points(1), axis=0), original["points_1"])


def test_migrate_refuses_what_is_not_an_original_store(tmp_path):
    with pytest.raises(LegacyStoreError, match="original pocaduck"):
        migrate(str(tmp_path), str(tmp_path / "new"))


def test_migrate_writes_only_into_a_new_empty_or_its_own_earlier_target(original_stores, tmp_path):
    store, _ = original_stores("int64", 1)
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me")
    with pytest.raises(StoreNotFoundError, match=r"holds no pocaduck store .*thesis\.tex"):
        migrate(str(store), str(other))
    assert os.listdir(other) == ["thesis.tex"]

    unrelated = tmp_path / "unrelated"
    with Ingestor(str(unrelated), 0) as ingestor:
        ingestor.write(5, "b", np.ones((2, 3), np.int64))
    consolidate(str(unrelated))
    with pytest.raises(InvalidArgumentError, match="already holds a pocaduck store"):
        migrate(str(store), str(unrelated))
    with Query(str(unrelated)) as query:
        assert query.get_labels().tolist() == [5]


@pytest.mark.parametrize("optimized", [False, True], ids=["plain", "optimized"])
def test_the_widgets_browse_render_and_describe_an_original_store(
    original_package, original_stores, tmp_path, optimized
):
    from pocaduck.widgets import Explorer, LabelBrowser, PointCloudViewer

    store, original = original_stores()
    if optimized:
        store = tmp_path / "store"
        shutil.copytree(original_stores()[0], store)
        make_optimized(store)
        original = run_original(original_package, "answer", store)
    untouched = files_and_times(store)
    labels = original["labels"].tolist()
    counts = {label: int(original[f"count_{label}"]) for label in labels}

    browser = LabelBrowser(str(store), page_size=len(labels))
    assert browser.total_rows == len(labels)
    page = browser.page.to_pylist()
    assert {row["label"]: row["point_count"] for row in page} == counts
    assert [row["point_count"] for row in page] == sorted(counts.values(), reverse=True)  # largest first
    browser.where = f"label = {labels[0]}"
    assert [row["label"] for row in browser.page.to_pylist()] == [labels[0]]

    with Query(str(store)) as query:
        with pytest.raises(ReadOnlySQLError):
            query.sql("SELECT * FROM glob('*')")
        viewer = PointCloudViewer(query)
        viewer.show(labels[:2])
        assert viewer.labels == labels[:2]
        assert viewer.total_points == sum(len(original[f"points_{label}"]) for label in labels[:2])

    explorer = Explorer(str(store))
    explorer.browser.selected_labels = [labels[0]]
    assert explorer.viewer.labels == [labels[0]]
    assert f"<code>{labels[0]}</code>" in explorer.details.value
    assert f"{counts[labels[0]]:,}" in explorer.details.value
    assert files_and_times(store) == untouched, "the widgets must not change an original store"


def test_an_original_store_samples_and_says_to_migrate_for_boxes_and_streaming(original_stores):
    store, original = original_stores()
    label = int(original["labels"][0])
    with Query(str(store)) as query:
        everything = query.get_points(label)
        chosen = query.get_points(label, sample=3)
        assert len(chosen) == min(3, len(everything))
        assert set(as_row_set(chosen)) <= set(as_row_set(everything))
        assert np.array_equal(chosen, query.get_points(label, sample=3))
        assert list(query.get_points([label], sample=3, seed=1)) == [label]
        for ask in (
            lambda: query.get_labels_in_box((0, 0, 0), (9, 9, 9)),
            lambda: query.get_points_in_box((0, 0, 0), (9, 9, 9)),
            lambda: query.iter_points(label),
        ):
            with pytest.raises(LegacyStoreError, match="pocaduck migrate"):
                ask()


def test_threads_sharing_one_query_of_an_original_store_get_what_one_thread_gets(original_stores):
    store, _ = original_stores()
    with Query(str(store)) as query:
        labels = query.get_labels().tolist()
        asks = [
            ask
            for label in labels
            for ask in (
                lambda label=label: query.get_points(label).tolist(),
                lambda label=label: query.get_points(label, use_cache=False).tolist(),
                lambda label=label: query.get_point_count(label),
                lambda label=label: query.get_blocks_for_label(label),
                lambda label=label: query.get_label_summary(label),
                lambda label=label: query.sql("SELECT * FROM labels WHERE label = ?", [label]).to_dict("records"),
            )
        ]
        expected = [ask() for ask in asks]  # one thread's answers, which the tests above hold to the original's

        def wrong(i: int) -> str | None:
            try:
                got = asks[i % len(asks)]()
            except Exception as error:
                return f"{type(error).__name__}: {error}"
            return None if got == expected[i % len(asks)] else f"ask {i % len(asks)} got {got!r:.100}"

        with ThreadPoolExecutor(4) as pool:
            assert [found for found in pool.map(wrong, range(800)) if found] == []
