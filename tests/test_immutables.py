"""A process keeps what never changes in an index version, and still sees the next version at once.

A new Query in a process that read the store before asks only which index is in force (the pointer and the
index's version); directory pages and point-file footers come from the process's cache while that index is
in force, and never once another is.
"""

from __future__ import annotations

import contextlib
import gc as gc_module
import multiprocessing
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from _object_servers import s3_without_auth
from _support import as_row_set

from pocaduck import Ingestor, Query, clear_cache, collect_garbage, consolidate, create_store, open_store
from pocaduck._immutables import IMMUTABLES
from pocaduck._opening import remembered_opening
from pocaduck.label_directory import LabelDirectory, kept_directory, open_in_force
from pocaduck.layout import LABEL_DIRECTORY_POINTER, UNIFIED_INDEX
from pocaduck.storage import FsspecStorage, LocalStorage


@pytest.fixture(scope="module")
def s3():
    with s3_without_auth("pocaduck-immutables") as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def location(request, tmp_path, monkeypatch):
    monkeypatch.setenv("POCADUCK_CACHE_DIR", str(tmp_path / "cache"))
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3").config(request.node.name.replace("[", "-").rstrip("]"))


def write(store, worker: int, value: int, labels=range(5)) -> None:
    with Ingestor(store, worker_id=worker) as ingestor:
        for label in labels:
            ingestor.write(label, f"b{worker}", np.full((4, 3), [label, worker, value], np.int32))


def test_a_new_query_of_the_same_index_opens_no_file_again_and_sees_a_newer_index_at_once(location, monkeypatch):
    create_store(location, dtype="int32", payload="arrow")
    write(location, 0, 1)
    consolidate(location)
    opened = []
    kind = LocalStorage if isinstance(location, str) else FsspecStorage
    real_open = kind.open_input
    monkeypatch.setattr(
        kind, "open_input", lambda self, path, size=None: opened.append(path) or real_open(self, path, size)
    )
    with Query(location) as query:
        assert query.get_points(3).tolist() == [[3, 0, 1]] * 4
    assert len(opened) == 1
    with Query(location) as query:  # the same index in force: the file opened before, footer read
        assert query.get_points(4).tolist() == [[4, 0, 1]] * 4
    assert len(opened) == 1

    write(location, 1, 2)  # another worker adds points to label 3, published by a new consolidation
    consolidate(location)
    with Query(location) as query:
        assert as_row_set(query.get_points(3)) == sorted([(3, 0, 1)] * 4 + [(3, 1, 2)] * 4)
        assert query.get_labels().tolist() == [0, 1, 2, 3, 4]


def test_a_file_replaced_under_its_name_is_read_anew_once_a_new_index_is_in_force(location, tmp_path):
    """Paths are never reused within an index version; across versions the cache must not trust a name."""
    create_store(location, dtype="int32", payload="arrow")
    write(location, 0, 1)
    consolidate(location)
    storage = open_store(location).storage
    ((path, _, size),) = open_in_force(storage).files.values()
    with Query(location) as query:
        assert query.get_points(2).tolist() == [[2, 0, 1]] * 4  # footer (and, on a bucket, the bytes) kept

    other = str(tmp_path / "other")  # the same writes with other values: a file of the same size
    create_store(other, dtype="int32", payload="arrow")
    write(other, 0, 7)
    consolidate(other)
    ((other_path, _, other_size),) = open_in_force(LocalStorage(other)).files.values()
    assert other_size == size
    replacement = tmp_path / "replacement"
    with open(os.path.join(other, other_path), "rb") as source:
        replacement.write_bytes(source.read())
    storage.publish(str(replacement), path)
    consolidate(location)  # a new index version in force, naming the same file

    with Query(location) as query:
        assert query.get_points(2).tolist() == [[2, 0, 7]] * 4


def test_a_query_on_a_bucket_asks_the_manifest_the_pointer_and_the_index_version_at_once(s3, monkeypatch):
    config = s3.config("at-once")
    write(config, 0, 1)
    consolidate(config)
    IMMUTABLES.clear()  # as in a fresh process, which asks the manifest too
    opening = {"pocaduck.json", LABEL_DIRECTORY_POINTER, UNIFIED_INDEX}
    together = threading.Barrier(len(opening), timeout=60)  # each waits for the others: one at a time never meet
    asked = []

    def waiting(real):
        def call(self, path, *args):
            if path in opening and len(asked) < len(opening):
                asked.append(path)
                together.wait()
            return real(self, path, *args)

        return call

    monkeypatch.setattr(FsspecStorage, "read_bytes", waiting(FsspecStorage.read_bytes))
    monkeypatch.setattr(FsspecStorage, "version", waiting(FsspecStorage.version))
    with Query(config) as query:
        assert query.get_points(3).tolist() == [[3, 0, 1]] * 4
    assert sorted(asked) == sorted(opening)


def kept_pages_dropped(location) -> LabelDirectory:
    """The directory this process keeps for the store's last index, its pages forgotten: a lookup reads again."""
    _, opening = remembered_opening(open_store(location))
    directory = kept_directory(opening.store_key, opening.pointer)
    directory._pages.clear()
    return directory


@pytest.mark.parametrize("garbage_collected", [False, True])
def test_a_query_started_from_memory_reads_the_index_published_since_even_when_its_guess_read_the_old_one(
    location, monkeypatch, garbage_collected
):
    """On a bucket a new Query starts from the index the process saw last and reads that index's directory page
    while it checks which index is in force; a newer one in force wins, whichever thread asks first."""
    create_store(location, dtype="int32", payload="arrow")
    write(location, 0, 1)
    consolidate(location)
    with Query(location) as query:
        assert query.get_points(3).tolist() == [[3, 0, 1]] * 4
    old = kept_pages_dropped(location)

    write(location, 1, 2, labels=range(3, 8))  # label 3 gains points, 5 to 7 are new
    consolidate(location)
    if garbage_collected:
        collect_garbage(location)  # the old directory is gone too: the guess fails, which is no error
    looked_up = []
    real_lookup = LabelDirectory.lookup
    monkeypatch.setattr(
        LabelDirectory, "lookup", lambda self, labels: looked_up.append(self is old) or real_lookup(self, labels)
    )
    expected = {
        label: sorted([(label, 0, 1)] * 4 * (label < 5) + [(label, 1, 2)] * 4 * (label >= 3)) for label in range(8)
    }
    with Query(location) as query, ThreadPoolExecutor(4) as pool:
        answers = {
            label: as_row_set(points)
            for label, points in zip(range(8), pool.map(query.get_points, range(8)), strict=True)
        }
    assert answers == expected
    on_bucket = not isinstance(location, str)
    assert any(looked_up) == on_bucket  # the old index's page was read on the guess, and its answer not used
    assert bool(old._pages) == (on_bucket and not garbage_collected)


FIRST_READS = {
    "get_points": lambda query: query.get_points(4).tolist() == [[4, 0, 1]] * 4,
    "get_point_count": lambda query: query.get_point_count(4) == 4,
    "iter_points": lambda query: np.concatenate(list(query.iter_points(4, chunk_size=3))).tolist() == [[4, 0, 1]] * 4,
}


@pytest.mark.parametrize("verb", FIRST_READS)
def test_a_new_query_on_a_bucket_asks_nothing_until_its_first_read_then_the_page_with_the_index_version(
    s3, monkeypatch, verb
):
    config = s3.config(f"guessed-{verb}")
    write(config, 0, 1)
    consolidate(config)
    with Query(config) as query:
        query.get_points(1)
    directory = kept_pages_dropped(config)
    together = threading.Barrier(2, timeout=60)  # the index version and the page meet only if asked at once
    asked = []

    def recording(real):
        def call(self, path, *args):
            asked.append(path)
            if path in (UNIFIED_INDEX, directory.path) and len(asked) <= 3:
                together.wait()
            return real(self, path, *args)

        return call

    for name in ("read_bytes", "read_range", "version", "size", "exists"):
        monkeypatch.setattr(FsspecStorage, name, recording(getattr(FsspecStorage, name)))
    with Query(config) as query:
        assert asked == []
        assert FIRST_READS[verb](query)
    assert sorted(asked[:3]) == sorted([LABEL_DIRECTORY_POINTER, UNIFIED_INDEX, directory.path])


def read_in_child(store: str, queue) -> None:
    held = len(IMMUTABLES._entries)
    with Query(store) as query:
        queue.put((held, query.get_points(3).tolist()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_starts_with_nothing_kept_and_reads_right(tmp_path):
    store = str(tmp_path / "store")
    write(store, 0, 1)
    consolidate(store)
    with Query(store) as query:
        query.get_points(3)
    assert len(IMMUTABLES._entries) > 0
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=read_in_child, args=(store, queue))
    child.start()
    held, points = queue.get(timeout=120)
    child.join(timeout=120)
    assert held == 0 and points == [[3, 0, 1]] * 4 and child.exitcode == 0


def test_threads_opening_queries_at_once_share_the_process_cache_and_read_right(location):
    create_store(location, dtype="int32", payload="arrow")
    for worker in range(3):
        write(location, worker, worker + 10, labels=range(worker, worker + 8))
    consolidate(location)
    expected = {
        label: sorted(
            (label, worker, worker + 10) for worker in range(3) if worker <= label < worker + 8 for _ in range(4)
        )
        for label in range(10)
    }

    def reader(seed: int) -> list[int]:
        wrong = []
        for label in np.random.default_rng(seed).integers(0, 10, 15).tolist():
            with Query(location, cache_size=0) as query:
                if as_row_set(query.get_points(label)) != expected[label]:
                    wrong.append(label)
        return wrong

    with ThreadPoolExecutor(6) as pool:
        assert [label for wrong in pool.map(reader, range(6)) for label in wrong] == []


def open_files_under(folder: str) -> list[str]:
    """The files of ``folder`` this process holds open (its descriptors and memory maps, as Linux lists them)."""
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            held.add(os.readlink(f"/proc/self/fd/{fd}"))
    with open("/proc/self/maps") as maps:
        held.update(line.split(maxsplit=5)[-1].strip() for line in maps if len(line.split()) > 5)
    return sorted(path for path in held if path.startswith(folder + os.sep) and not path.endswith(".lock"))


@pytest.mark.parametrize("payload", ["parquet", "arrow"])
def test_a_closed_query_s_files_stay_open_for_the_next_until_clear_cache(tmp_path, monkeypatch, payload):
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs Linux's /proc to list the files this process holds open")
    monkeypatch.setenv("POCADUCK_CACHE_DIR", str(tmp_path / "cache"))
    store = str(tmp_path / "store")
    create_store(store, payload=payload)
    write(store, 0, 1)
    consolidate(store)
    with Query(store) as query:
        query.get_points(3)
    assert any(path.endswith(f".{payload}") for path in open_files_under(store))  # kept for the next Query
    clear_cache()
    gc_module.collect()
    assert [path for path in open_files_under(store) if path.endswith(f".{payload}")] == []
    with Query(store) as query:  # read again from the start
        assert query.get_points(3).tolist() == [[3, 0, 1]] * 4
