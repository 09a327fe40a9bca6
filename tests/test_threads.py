"""One Query shared by many threads: every verb answers as brute force says, and close() races cleanly.

A ``ThreadPoolExecutor`` over labels, or a widget fetching in the background,
shares one Query. Before it was made safe, 4 threads got other threads' answers
(330 wrong in 3,200 calls) and raw DuckDB errors.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest
from _support import as_row_set

from pocaduck import Ingestor, Query, ReaderClosedError, StoreChangedError, collect_garbage, compact, consolidate

LABELS = [0, 7, 2**63, 2**64 - 1, 123_456_789]
CALLS = 1_200  # a few seconds; 4 threads interleave thousands of statements and reads in that many calls


@dataclass
class Written:
    """What the test wrote, the oracle every answer is checked against."""

    points: dict[int, dict[str, np.ndarray]] = field(default_factory=lambda: defaultdict(dict))

    def of(self, label: int, blocks: list[str] | None = None) -> list[tuple]:
        chosen = [p for block, p in self.points[label].items() if blocks is None or block in blocks]
        return as_row_set(np.concatenate(chosen)) if chosen else []

    def blocks(self, label: int) -> list[str]:
        return sorted(self.points[label])

    def in_box(self, lower: np.ndarray, upper: np.ndarray) -> dict[int, list[tuple]]:
        found = {}
        for label in self.points:
            rows = [row for row in self.of(label) if np.all(lower <= row) and np.all(np.array(row) < upper)]
            if rows:
                found[label] = rows
        return found


def write_store(store: str, workers: int = 2, blocks: int = 5) -> Written:
    rng = np.random.default_rng(18)
    written = Written()
    for worker in range(workers):
        with Ingestor(store, worker_id=worker, max_points_per_file=120) as ingestor:
            for block in range(blocks):
                block_id = f"{worker}/{block}"
                for label in LABELS:
                    if rng.random() < 0.7:
                        points = rng.integers(0, 64, (int(rng.integers(1, 25)), 3))
                        ingestor.write(label, block_id, points)
                        written.points[label][block_id] = points
    consolidate(store)
    return written


def checks(query: Query, written: Written) -> list:
    """One callable per (verb, label): each asks the shared query and returns None, or what was wrong."""
    labels = sorted(written.points)
    # Answers whose exact order matters are taken once, on this thread, before the threads start.
    iterated = {label: query.get_points(label) for label in labels}
    sampled = {label: query.get_points(label, sample=5, seed=label % 3) for label in labels}
    total = sum(len(written.of(label)) for label in labels)
    lower, upper = np.array([10, 10, 10]), np.array([40, 40, 40])
    in_box = written.in_box(lower, upper)

    def equal(got: object, expected: object) -> str | None:
        return None if got == expected else f"got {got!r:.200}, expected {expected!r:.200}"

    def for_label(label: int) -> list:
        blocks = written.blocks(label)[:2]
        return [
            lambda: equal(as_row_set(query.get_points(label)), written.of(label)),
            lambda: equal(as_row_set(query.get_points(label, use_cache=False)), written.of(label)),
            lambda: equal(as_row_set(query.get_points(label, blocks=blocks)), written.of(label, blocks)),
            lambda: equal(
                {k: as_row_set(v) for k, v in query.get_points([label, labels[0]]).items()},
                {label: written.of(label), labels[0]: written.of(labels[0])},
            ),
            lambda: equal(query.get_points(label, sample=5, seed=label % 3).tolist(), sampled[label].tolist()),
            lambda: equal(query.get_points(label, output="arrow").num_rows, len(written.of(label))),
            lambda: equal(query.get_point_count(label), len(written.of(label))),
            lambda: equal(query.get_blocks_for_label(label), written.blocks(label)),
            lambda: equal(
                {k: query.get_label_summary(label)[k] for k in ("label", "point_count", "block_count")},
                {"label": label, "point_count": len(written.of(label)), "block_count": len(written.blocks(label))},
            ),
            lambda: equal(
                np.concatenate(list(query.iter_points(label, chunk_size=7))).tolist(), iterated[label].tolist()
            ),
            lambda: equal(
                query.sql("SELECT point_count FROM labels WHERE label = ?", [label], output="numpy")[
                    "point_count"
                ].tolist(),
                [len(written.of(label))],
            ),
        ]

    store_wide = [
        lambda: equal(query.get_labels().tolist(), labels),
        lambda: equal(query.info()["points"], total),
        lambda: equal(query.get_labels_in_box(lower, upper).tolist(), sorted(in_box)),
        lambda: equal(
            {k: as_row_set(v) for k, v in query.get_points_in_box(lower, upper, output="numpy").items()}, in_box
        ),
        lambda: equal(query.sql("SELECT count(*) AS n FROM labels")["n"].tolist(), [len(labels)]),
    ]
    return [check for label in labels for check in for_label(label)] + store_wide


def hammer(query: Query, written: Written, calls: int = CALLS, threads: int = 4) -> list[str]:
    """Run the checks round-robin on ``threads`` threads sharing ``query``; every wrong answer or error."""
    every = checks(query, written)

    def run(i: int) -> str | None:
        check = every[i % len(every)]
        try:
            wrong = check()
        except Exception as error:  # every error is a finding here, raw or not
            return f"check {i % len(every)}: {type(error).__name__}: {error}"
        return None if wrong is None else f"check {i % len(every)}: {wrong}"

    with ThreadPoolExecutor(threads) as pool:
        return [found for found in pool.map(run, range(calls)) if found is not None]


@pytest.mark.parametrize("layout", ["ingested", "parquet", "arrow"])
def test_threads_sharing_one_query_get_right_answers_from_every_verb(store, layout):
    written = write_store(store)
    if layout != "ingested":
        compact(store, payload=layout, points_per_file=150)
    with Query(store) as query:
        assert hammer(query, written) == []


def test_close_waits_for_calls_in_progress_and_later_calls_say_the_query_was_closed(store):
    written = write_store(store)
    query = Query(store)
    every = checks(query, written)
    started = threading.Barrier(5)
    calls_before_close = threading.Semaphore(0)
    findings: list[str] = []

    def reader(offset: int) -> None:
        started.wait()
        for i in range(offset, offset + 100_000):
            try:
                wrong = every[i % len(every)]()
            except ReaderClosedError:
                return  # the one error a call racing close() may meet
            except Exception as error:
                findings.append(f"{type(error).__name__}: {error}")
                return
            if wrong is not None:
                findings.append(wrong)
            calls_before_close.release()
        findings.append("the reader never saw the query closed")

    threads = [threading.Thread(target=reader, args=(n * 7,)) for n in range(4)]
    for thread in threads:
        thread.start()
    started.wait()
    for _ in range(200):  # the readers are well under way, whatever the machine's speed
        calls_before_close.acquire()
    query.close()
    for thread in threads:
        thread.join()
    assert findings == []
    asks = [
        lambda: query.get_points(7),
        lambda: query.get_point_count(7),
        lambda: query.get_blocks_for_label(7),
        lambda: query.get_label_summary(7),
        lambda: query.get_labels(),
        lambda: query.get_labels_in_box((0, 0, 0), (9, 9, 9)),
        lambda: query.get_points_in_box((0, 0, 0), (9, 9, 9)),
        lambda: query.iter_points(7),
        lambda: query.info(),
        lambda: query.sql("SELECT 1"),
        lambda: query.db_connection,
    ]
    for ask in asks:
        with pytest.raises(ReaderClosedError, match="closed: open a new one"):
            ask()
    query.close()  # again: nothing to do


def test_a_query_closed_between_two_chunks_stops_the_iteration_with_a_clear_error(store):
    write_store(store)
    query = Query(store)
    chunks = query.iter_points(7, chunk_size=1)
    first = next(chunks)
    query.close()
    assert first.shape == (1, 3)
    with pytest.raises(ReaderClosedError):
        next(chunks)


def test_queries_of_one_index_share_one_sql_connection_and_a_new_index_gets_its_own(store):
    write_store(store)
    first, second = Query(store), Query(store)
    assert first._sandboxed() is second._sandboxed()
    before = first.sql("SELECT count(*) AS n FROM labels")["n"].item()
    with Ingestor(store, worker_id=9) as ingestor:
        ingestor.write(2**64 - 2, "9/0", np.ones((2, 3), np.int64))
    consolidate(store)
    third = Query(store)
    assert third._sandboxed() is not first._sandboxed()
    assert third.sql("SELECT count(*) AS n FROM labels")["n"].item() == before + 1
    assert first.sql("SELECT count(*) AS n FROM labels")["n"].item() == before  # the version it opened
    for query in (first, second, third):
        query.close()


def test_a_query_whose_files_gc_removed_says_the_store_changed_not_that_it_is_damaged(store):
    write_store(store)
    compact(store)
    asks = [
        lambda query: query.get_points(7, use_cache=False),
        lambda query: query.sql("SELECT count(*) FROM labels"),
        lambda query: query.get_blocks_for_label(7),
        lambda query: query.info(),
        lambda query: query.get_label_summary(7),
    ]
    for worker, ask in enumerate(asks, start=10):
        query = Query(store)
        assert query.get_point_count(7) > 0  # opened and read before the store moves on
        with Ingestor(store, worker_id=worker) as ingestor:
            ingestor.write(5, f"{worker}/0", np.ones((1, 3), np.int64))
        consolidate(store)
        compact(store)
        collect_garbage(store)
        with pytest.raises(StoreChangedError, match="open a new Query"):
            ask(query)
        query.close()
        with Query(store) as fresh:  # and a new Query reads the store as it is now
            assert fresh.get_point_count(5) == worker - 9


def test_widgets_on_threads_of_their_own_share_one_query_and_each_shows_what_was_written(store):
    from pocaduck.widgets import LabelBrowser, PointCloudViewer

    written = write_store(store)
    labels = sorted(written.points)
    counts = {label: len(written.of(label)) for label in labels}
    with Query(store) as query:
        browser, viewer = LabelBrowser(query, page_size=10), PointCloudViewer(query)
        findings: list[str] = []

        def browse() -> None:
            for i in range(60):
                least = sorted(counts.values())[i % len(counts)]
                browser.where = f"point_count >= {least}"
                shown = browser.page.column("label").to_pylist()
                expected = sorted(label for label, count in counts.items() if count >= least)
                if sorted(shown) != expected:
                    findings.append(f"browser: {shown} where {expected} have >= {least} points")

        def view() -> None:
            for i in range(60):
                label = labels[i % len(labels)]
                viewer.show(label)
                if len(viewer.positions(label)) != counts[label]:
                    findings.append(f"viewer: {len(viewer.positions(label))} points of {label}, not {counts[label]}")

        def fetch() -> None:
            findings.extend(hammer(query, written, calls=300, threads=2))

        threads = [threading.Thread(target=work) for work in (browse, view, fetch)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert findings == []
