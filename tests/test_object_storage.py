"""Stores in object storage: the same round trip as on disk, against real servers on loopback.

S3 is moto in server mode (with signed requests checked against one IAM key),
GCS is gcp-storage-emulator, Azure is Azurite (skipped when it is not installed).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import tempfile
import uuid
from unittest import mock

import duckdb
import numpy as np
import pytest

# The GCS emulator speaks only the JSON API, not gcsfs's experimental gRPC bucket-type
# lookup; this must be set before gcsfs is first imported.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from _object_servers import S3Server, azurite, azurite_command, gcs_emulator
from _support import as_row_set, worker_points
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_property import check_round_trip, workloads
from test_threads import hammer, write_store

from pocaduck import (
    Ingestor,
    Query,
    StorageConfig,
    compact,
    consolidate,
    create_store,
    label_directory,
    make_demo_volume,
    open_store,
    scan_volume,
    verify,
)
from pocaduck._immutables import IMMUTABLES
from pocaduck.cli import main
from pocaduck.consolidate import UnifiedIndexBuild
from pocaduck.errors import (
    LabelDirectoryError,
    PocaduckError,
    SchemaMismatchError,
    StorageAccessError,
    StorageUnavailableError,
    UnsupportedStorageError,
)
from pocaduck.label_directory import level_page_counts, open_in_force
from pocaduck.storage import _fsspec as fsspec_storage
from pocaduck.storage import open_storage

LABELS = [3, 2**63, 2**64 - 1]


@pytest.fixture(scope="module")
def s3():
    server = S3Server()
    server.start()
    server.enable_auth()
    server.client().create_bucket(Bucket=server.bucket)
    yield server
    server.disable_auth()
    server.stop()


@pytest.fixture(autouse=True)
def private_folders(tmp_path, monkeypatch):
    """Each test gets its own index cache and its own temp folder, to check what is left behind."""
    monkeypatch.setenv("POCADUCK_CACHE_DIR", str(tmp_path / "cache"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


@pytest.fixture
def s3_store(s3, request):
    return s3.config(request.node.name)


@pytest.mark.parametrize("layout", ["ingested", "arrow"])
def test_threads_sharing_one_query_of_a_bucket_store_get_right_answers(s3_store, layout):
    """A bucket's file objects keep a position: threads reading one file must not move each other's."""
    written = write_store(s3_store)
    if layout != "ingested":
        compact(s3_store, payload=layout, points_per_file=150)
    with Query(s3_store) as query:
        assert hammer(query, written, calls=400) == []


def ingest(config: StorageConfig, worker: int, blocks: range) -> dict[int, list[tuple]]:
    """Write LABELS in ``blocks`` with tiny files; return what each label should read back."""
    expected: dict[int, list[tuple]] = {}
    with Ingestor(config, worker_id=worker, max_points_per_file=60) as ingestor:
        for block in blocks:
            for label in LABELS:
                points = worker_points(worker, label, block)
                ingestor.write(label, f"{worker}/{block}", points)
                expected.setdefault(label, []).extend(as_row_set(points))
    return {label: sorted(rows) for label, rows in expected.items()}


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(workloads(), st.sampled_from([64, 256, label_directory.PAGE_BYTES]), st.sampled_from(["parquet", "arrow"]))
def test_every_label_returns_exactly_what_was_written_through_a_bucket(s3, workload, page_bytes, payload):
    """The round-trip property of test_property.py, with the label directory and the files read by ranges from S3."""
    with mock.patch.object(label_directory, "PAGE_BYTES", page_bytes):  # small pages: trees of several levels
        check_round_trip(s3.config(f"property-{uuid.uuid4().hex}"), *workload, payload=payload)


def test_consolidation_uploads_the_unified_index_once_and_copies_its_version_on_the_server(s3, s3_store):
    ingest(s3_store, 0, range(2))
    before = len(s3.requests)
    consolidate(s3_store)
    writes = [
        request
        for request in s3.requests[before:]
        if request.method == "PUT" and request.path.split("?")[0].endswith("/unified_index.duckdb")
    ]
    uploads = [request.path for request in writes if request.copy_source is None]
    copies = [request for request in writes if request.copy_source is not None]
    assert uploads == [f"/{s3.bucket}/{s3_store.base_path.split('/', 3)[3]}/unified_index.duckdb"]
    assert len(copies) == 1 and copies[0].copy_source.endswith("/unified_index.duckdb")
    assert "/index_versions/" in copies[0].path
    objects = s3.client()
    key = uploads[0].split("/", 2)[2]
    version = copies[0].path.split("?")[0].split("/", 2)[2]
    read = [objects.get_object(Bucket=s3.bucket, Key=k)["Body"].read() for k in (key, version)]
    assert read[0] == read[1]
    with Query(s3_store) as query:
        assert query.get_labels().tolist() == sorted(LABELS)


def merged(*parts: dict[int, list[tuple]]) -> dict[int, list[tuple]]:
    return {label: sorted(row for part in parts for row in part.get(label, [])) for label in LABELS}


def test_ingest_consolidate_query_on_s3(s3, s3_store, private_folders):
    expected = merged(ingest(s3_store, 0, range(4)), ingest(s3_store, 1, range(4, 7)))
    assert Ingestor.consolidate_indexes(s3_store) == f"{s3_store.base_path}/unified_index.duckdb"

    with Query(s3_store) as query:
        assert query.get_labels().tolist() == LABELS
        for label in LABELS:
            assert as_row_set(query.get_points(label)) == expected[label]
            assert query.get_point_count(label) == len(expected[label])
        assert query.get_blocks_for_label(LABELS[0]) == [
            f"{w}/{b}" for w, bs in ((0, range(4)), (1, range(4, 7))) for b in bs
        ]
        assert query.info()["workers"] == 2
    keys = s3.object_keys(s3_store.base_path.split("/", 3)[3])
    assert not [key for key in keys if ".tmp" in key or "building" in key]
    # Staging folders go with the storage objects that made them; a reference cycle (a traceback kept by a
    # finished writer thread's future, say) can hold one until Python's next cycle collection.
    gc.collect()
    assert os.listdir(private_folders) == [f"pocaduck-locks-{os.getuid()}"]  # staging folders are gone


def test_verify_on_s3_finds_a_missing_and_a_flipped_object_and_writes_nothing(s3, s3_store):
    ingest(s3_store, 0, range(4))
    ingest(s3_store, 1, range(4, 7))
    Ingestor.consolidate_indexes(s3_store)
    assert verify(s3_store, deep=True).ok
    prefix = s3_store.base_path.split("/", 3)[3]
    data = [key for key in s3.object_keys(prefix) if key.endswith(".parquet")]
    missing = next(key for key in data if "/workers/0/" in key)
    flipped = next(key for key in data if "/workers/1/" in key)
    client = s3.client()
    client.delete_object(Bucket=s3.bucket, Key=missing)
    body = bytearray(client.get_object(Bucket=s3.bucket, Key=flipped)["Body"].read())
    body[len(body) // 2] ^= 0x01
    client.put_object(Bucket=s3.bucket, Key=flipped, Body=bytes(body))
    before = len(s3.requests)
    report = verify(s3_store, deep=True)
    assert {r.method for r in s3.requests[before:]} <= {"GET", "HEAD"}
    assert [(p.what.split()[0], p.repair) for p in report.problems] == [
        ("missing", "re-run worker '0', then consolidate"),
        ("checksum", "re-run worker '1', then consolidate"),
    ]


def test_verify_on_s3_finds_a_label_directory_pointer_with_a_wrong_size(s3, s3_store):
    expected = ingest(s3_store, 0, range(2))
    consolidate(s3_store)
    key = s3_store.base_path.split("/", 3)[3] + "/label_directory.json"
    client = s3.client()
    pointer = json.loads(client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    client.put_object(Bucket=s3.bucket, Key=key, Body=json.dumps({**pointer, "size": pointer["size"] + 1}).encode())
    (problem,) = verify(s3_store).problems
    assert problem.path == "label_directory.json" and "gives size" in problem.what
    with pytest.raises(LabelDirectoryError, match="pocaduck consolidate"), Query(s3_store) as query:
        query.get_points(LABELS[0])
    consolidate(s3_store)  # the repair both name
    with Query(s3_store) as query:
        assert as_row_set(query.get_points(LABELS[0])) == expected[LABELS[0]]


def test_a_query_sees_a_new_consolidation_and_reuses_an_unchanged_index(s3, s3_store):
    first = ingest(s3_store, 0, range(2))
    Ingestor.consolidate_indexes(s3_store)

    store = f"/{s3.bucket}/{s3_store.base_path.split('/', 3)[3]}/"

    def downloads() -> int:  # of the index in force, or of the copy of it a Query fetches from its index version
        paths = [r.path.split("?")[0] for r in s3.requests if r.method == "GET"]
        return sum(path.startswith(store) and path.endswith("/unified_index.duckdb") for path in paths)

    with Query(s3_store) as query:
        assert as_row_set(query.get_points(LABELS[0])) == first[LABELS[0]]
        assert query.get_point_count(LABELS[0]) == len(first[LABELS[0]])
    assert downloads() == 0  # points and counts come through the label directory
    for _ in range(2):
        with Query(s3_store) as query:
            query.get_labels()
        assert downloads() == 1  # fetched when first needed, then reused while unchanged

    second = ingest(s3_store, 1, range(2, 4))
    Ingestor.consolidate_indexes(s3_store)
    with Query(s3_store) as query:
        assert as_row_set(query.get_points(LABELS[0])) == merged(first, second)[LABELS[0]]
        assert query.info()["workers"] == 2


def test_a_large_index_download_shows_a_bar_or_a_log_line(s3_store, monkeypatch, tmp_path, capsys, caplog):
    ingest(s3_store, 0, range(1))
    consolidate(s3_store)
    monkeypatch.setattr(fsspec_storage, "_PROGRESS_FROM_BYTES", 0)  # every download counts as large
    with Query(s3_store) as query:
        query.get_labels()
    assert f"downloading {s3_store.base_path}/index_versions/" in capsys.readouterr().err  # tqdm's bar
    for module in ("tqdm", "tqdm.auto"):  # tqdm not installed
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setenv("POCADUCK_CACHE_DIR", str(tmp_path / "empty-cache"))
    caplog.set_level("INFO", logger="pocaduck")
    with Query(s3_store) as query:
        query.get_labels()
    assert f"downloading {s3_store.base_path}/index_versions/" in caplog.text


def test_get_points_reads_only_the_rows_it_needs(s3, s3_store, monkeypatch):
    # As in a file too large to be read whole on first use, or to have its footer in the tail read with it.
    monkeypatch.setattr(fsspec_storage, "_WHOLE_FILE_BYTES", 0)
    monkeypatch.setattr(fsspec_storage, "_TAIL_BYTES", 0)
    with Ingestor(s3_store, worker_id=0, row_group_size=100) as ingestor:
        for label in range(50):
            ingestor.write(label, "b0", np.full((100, 3), label))
    Ingestor.consolidate_indexes(s3_store)
    with Query(s3_store) as query:
        before = len(s3.requests)
        assert query.get_points(7, use_cache=False).tolist() == [[7, 7, 7]] * 100
        first = [(r.method, r.path.rsplit("/", 1)[-1]) for r in s3.requests[before:]]
        before = len(s3.requests)
        query.get_points(8, use_cache=False)
        second = [(r.method, r.path.rsplit("/", 1)[-1]) for r in s3.requests[before:]]
    # The directory's page holding the label and the file's footer (asked together, so in either order), then the
    # label's row group: no HEAD, no listing.
    data = ("GET", "part-000000.parquet")
    assert sorted(first[:2]) == sorted([("GET", "label_directory.bin"), data]) and first[2:] == [data]
    assert second == [data]  # the page and the footer are kept while the Query is open


def test_a_small_file_is_read_whole_once_and_a_large_one_has_its_footer_read_in_one_request(s3, s3_store, monkeypatch):
    create_store(s3_store, payload="arrow")  # whose reader asks the footer's length, then the footer
    with Ingestor(s3_store, worker_id=0, row_group_size=100) as ingestor:
        for label in range(50):
            ingestor.write(label, "b0", np.full((100, 3), label))
    Ingestor.consolidate_indexes(s3_store)

    def data_requests(labels: list[int]) -> list[str | None]:
        before = len(s3.requests)
        with Query(s3_store) as query:
            for label in labels:
                assert query.get_points(label, use_cache=False).tolist() == [[label] * 3] * 100
        return [r.byte_range for r in s3.requests[before:] if r.path.endswith(".arrow")]

    (whole,) = data_requests([7, 8])  # one GET of all of it, and label 8 read from it
    ((_, _, size),) = open_in_force(open_storage(s3_store)).files.values()
    assert whole == f"bytes=0-{size - 1}"
    assert data_requests([10]) == []  # a new Query of the same index version: the process kept the file
    IMMUTABLES.clear()
    monkeypatch.setattr(fsspec_storage, "_WHOLE_FILE_BYTES", 0)
    monkeypatch.setattr(fsspec_storage, "_TAIL_BYTES", size // 2)
    tail, rows = data_requests([9])  # footer from the tail, then the label's row group: two requests, not three
    assert tail == f"bytes={size - size // 2}-{size - 1}" and rows != tail


def write_one_file(config: StorageConfig, labels: int) -> None:
    """``labels`` labels over two blocks each, all in one file of one worker."""
    with Ingestor(config, worker_id=0, max_points_per_file=10**7) as ingestor:
        for block in range(2):
            for label in range(labels):
                ingestor.write(label, f"b{block}", np.full((3, 3), [label, block, 0]))
    consolidate(config)


def cold_read(s3, config: StorageConfig, label: int) -> list:
    """The requests of a new Query's first get_points, each as (method, object name, ranged?, bytes sent)."""
    before = len(s3.requests)
    with Query(config) as query:
        assert query.get_points(label).tolist() == [[label, 0, 0]] * 3 + [[label, 1, 0]] * 3
    prefix = f"/{s3.bucket}/{config.base_path.split('/', 3)[3]}/"
    return [
        (r.method, r.path.split("?")[0].removeprefix(prefix), r.byte_range is not None, r.bytes_sent)
        for r in s3.requests[before:]
    ]


def test_a_cold_label_read_costs_the_same_few_requests_and_bytes_whatever_the_store_size(s3, s3_store):
    reads = {}
    for labels in (300, 12_000):
        config = s3.config(f"{s3_store.base_path.split('/', 3)[3]}-{labels}")
        write_one_file(config, labels)
        reads[labels] = cold_read(s3, config, labels // 2)
    for labels, requests in reads.items():
        (build,) = {name.split("/")[1] for _, name, _, _ in requests if name.startswith("index_versions/")}
        directory = f"index_versions/{build}/label_directory.bin"
        # The manifest, the pointer to the directory (with its top level inside), the index's version (a HEAD,
        # never its content), all three at once; one page of the directory; then the Parquet footer and the
        # label's row group, or all of a small file.
        shown = [(method, name, ranged) for method, name, ranged, _ in requests]
        assert sorted(shown[:3]) == [
            ("GET", "label_directory.json", True),
            ("GET", "pocaduck.json", True),
            ("HEAD", "unified_index.duckdb", False),
        ], labels
        # The store has one file: its footer (or all of it) is asked with the page, at once, in either order.
        (data_file,) = {name for _, name, _ in shown if name.endswith(".parquet")}
        rest = shown[3:]
        assert rest.count(("GET", directory, True)) == 1 and len(rest) in (2, 3), labels
        assert set(rest) == {("GET", directory, True), ("GET", data_file, True)}, labels
        directory_bytes = sum(sent for _, name, _, sent in requests if name == directory)
        assert directory_bytes < 64 * 1024 + 4096, (labels, directory_bytes)  # one page of 64 KiB and a small top
        # The page, the pointer with the top, and a small file whole (one round trip rather than two), or a
        # large one's footer and row group: bounded whatever the size of the store.
        assert sum(sent for *_, sent in requests) < 64 * 1024 + fsspec_storage._WHOLE_FILE_BYTES + 16_384, labels
    # 40 times more labels: the same requests, and the top level grows by a few bytes per page.
    assert len(reads[300]) == len(reads[12_000])


def test_each_level_of_the_directory_costs_one_more_ranged_get(s3, s3_store, monkeypatch):
    monkeypatch.setattr(label_directory, "PAGE_BYTES", 100)  # 4 entries or 12 keys a page
    directory_gets = {}
    for labels in (100, 1_000):
        config = s3.config(f"{s3_store.base_path.split('/', 3)[3]}-{labels}")
        write_one_file(config, labels)
        requests = cold_read(s3, config, labels - 1)
        gets = [name for method, name, _, _ in requests if name.endswith("label_directory.bin")]
        directory_gets[labels] = len(gets)
        assert len(requests) == 4 + len(gets)  # the manifest, the pointer, the index's HEAD, the small file whole
    # 100 labels: one fence page, one leaf page (the top comes in the pointer); 1,000: a second fence level,
    # so one GET more.
    assert level_page_counts(100, 100) == [3, 25] and level_page_counts(1000, 100) == [2, 21, 250]
    assert directory_gets == {100: 2, 1_000: 3}


def test_ranged_reads_on_every_backend(s3_store, gcs_store, azure_store, tmp_path):
    for config in (s3_store, gcs_store, azure_store, StorageConfig(str(tmp_path / "local"))):
        storage = open_storage(config)
        storage.write_bytes("ranged", bytes(range(200)))
        assert storage.read_range("ranged", 10, 5) == bytes(range(10, 15))
        assert storage.read_range("ranged", 195, 50) == bytes(range(195, 200)), config
        assert storage.read_range("ranged", 200, 10) == b"", config
        assert storage.read_range("ranged", 500, 10) == b"", config
        with pytest.raises(FileNotFoundError):
            storage.read_range("absent", 0, 10)


def test_a_wrong_secret_key_is_refused_clearly_and_nothing_is_written(s3, s3_store):
    wrong = s3.config(s3_store.base_path.split("/", 3)[3], s3_secret_access_key="not-the-secret-1234")
    with pytest.raises(StorageAccessError) as refused, Ingestor(wrong, worker_id=0) as ingestor:
        ingestor.write(1, "b", np.zeros((2, 3), np.int64))
    message = str(refused.value)
    assert s3_store.base_path in message and "credentials" in message
    assert "not-the-secret-1234" not in message and s3.secret_access_key not in message
    with pytest.raises(StorageAccessError):
        Query(wrong)
    assert s3.object_keys(s3_store.base_path.split("/", 3)[3]) == []


def test_a_server_that_disappears_mid_ingestion_fails_clearly_and_a_rerun_makes_the_store_exact(s3, s3_store):
    finished = ingest(s3_store, 0, range(3))
    try:
        with pytest.raises(PocaduckError) as gone, Ingestor(s3_store, worker_id=1, max_points_per_file=60) as ingestor:
            for block in range(20):
                if block == 5:
                    s3.stop()
                for label in LABELS:
                    ingestor.write(label, f"1/{block}", worker_points(1, label, block))
    finally:
        s3.start()
    # The Ingestor may raise it directly or as the cause of the write that failed in the background.
    assert isinstance(gone.value, StorageUnavailableError) or isinstance(gone.value.__cause__, StorageUnavailableError)
    assert "could not be reached" in str(gone.value) and s3_store.base_path in str(gone.value)

    expected = merged(finished, ingest(s3_store, 1, range(20)))
    Ingestor.consolidate_indexes(s3_store)
    with Query(s3_store) as query:
        for label in LABELS:
            assert as_row_set(query.get_points(label)) == expected[label]
    prefix = s3_store.base_path.split("/", 3)[3]
    sessions = {key.split("/")[4] for key in s3.object_keys(f"{prefix}/workers/1") if "/sessions/" in key}
    assert len(sessions) == 1  # the interrupted run's files were discarded by the re-run


def test_racing_workers_agree_on_one_manifest_through_a_conditional_put(s3_store):
    one, other = open_storage(s3_store), open_storage(s3_store)
    assert one.create_exclusive("claim", b"one") is True
    assert other.create_exclusive("claim", b"other") is False
    assert other.read_bytes("claim") == b"one"
    create_store(s3_store, columns=("x", "y", "z"), dtype="int64")
    with pytest.raises(SchemaMismatchError):
        create_store(s3_store, columns=("x", "y", "z"), dtype="float32")


def test_credentials_never_show_in_reprs_errors_logs_or_the_manifest(s3, s3_store, caplog):
    caplog.set_level(logging.DEBUG)
    secret = s3.secret_access_key
    ingest(s3_store, 0, range(1))
    Ingestor.consolidate_indexes(s3_store)
    with Query(s3_store) as query:
        shown = [repr(s3_store), repr(open_storage(s3_store)), repr(query.info()), str(query.storage_config)]
    wrong = s3.config("anything", s3_secret_access_key="not-the-secret-5678")
    with pytest.raises(StorageAccessError) as refused:
        Query(wrong)
    shown.append(str(refused.value))
    shown.append(open_storage(s3_store).read_bytes("pocaduck.json").decode())
    for text in shown:
        assert secret not in text and s3.access_key_id not in text and "not-the-secret" not in text
    assert not [r for r in caplog.records if secret in r.getMessage() or "not-the-secret" in r.getMessage()]


def test_the_usual_environment_variables_are_enough_for_the_library_and_the_command(s3, s3_store, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_access_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3.region)
    plain = s3_store.base_path  # a bare URL: no keywords at all
    with Ingestor(plain, worker_id=0) as ingestor:
        ingestor.write(5, "b", np.ones((4, 3), np.int32))
    Ingestor.consolidate_indexes(plain)
    with Query(plain) as query:
        assert query.get_points(5).tolist() == [[1, 1, 1]] * 4
    assert main(["info", plain]) == 0
    assert '"points": 4' in capsys.readouterr().out
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-9012")
    assert main(["info", plain]) == 1
    refusal = capsys.readouterr().err
    assert "access refused" in refusal and "not-the-secret-9012" not in refusal


def test_the_command_takes_credentials_as_options_for_every_verb(s3, s3_store, monkeypatch, capsys):
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    with Ingestor(s3_store, worker_id=0) as ingestor:
        ingestor.write(5, "b", np.ones((4, 3), np.int32))
    plain = s3_store.base_path
    options = [
        *("--s3-endpoint-url", s3.endpoint_url, "--s3-region", s3.region),
        *("--s3-access-key-id", s3.access_key_id, "--s3-secret-access-key", s3.secret_access_key),
    ]
    for verb in (["consolidate"], ["info"], ["points"], ["compact", "--workers", "1"], ["verify"], ["gc"]):
        arguments = [verb[0], plain, *(["5"] if verb[0] == "points" else []), *verb[1:], *options]
        assert main(arguments) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.count("1,1,1") == 4  # the CSV rows of `points`
    with Query(s3_store) as query:
        assert query.get_points(5).tolist() == [[1, 1, 1]] * 4
        assert query.sql("SELECT count(*) AS n FROM files WHERE path LIKE 'compacted/%'")["n"][0] == 1


@pytest.mark.parametrize(
    ("url", "package", "location"),
    [
        ("s3://bucket/a/store", "s3fs", "s3://bucket/a/store/x"),
        ("gs://bucket/store", "gcsfs", "gs://bucket/store/x"),
        ("gcs://bucket/store", "gcsfs", "gcs://bucket/store/x"),
        ("az://container/store", "adlfs", "az://container/store/x"),
        ("azure://container/store", "adlfs", "az://container/store/x"),
    ],
)
def test_every_url_spelling_of_the_original_names_the_same_objects(url, package, location):
    pytest.importorskip(package)
    config = StorageConfig(url, gcs_credentials="anon", azure_storage_connection_string=_OFFLINE_AZURE)
    storage = open_storage(config)
    assert storage.describe("x") == location
    assert storage._full("x") == location.split("://", 1)[1]


_OFFLINE_AZURE = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:9/a;"


def test_an_unknown_scheme_says_what_is_supported():
    with pytest.raises(UnsupportedStorageError, match="s3://, gs:// or az://"):
        open_storage(StorageConfig("ftp://host/store"))


@pytest.fixture(scope="module")
def gcs_store():
    pytest.importorskip("gcp_storage_emulator")
    pytest.importorskip("gcsfs")
    with gcs_emulator("pocaduck-gcs"):
        yield StorageConfig("gs://pocaduck-gcs/store", gcs_project_id="test", gcs_credentials="anon")


def test_ingest_consolidate_query_on_gcs(gcs_store):
    expected = merged(ingest(gcs_store, 0, range(3)), ingest(gcs_store, 1, range(3, 5)))
    Ingestor.consolidate_indexes(gcs_store)
    assert_found_through_the_directory(gcs_store, expected)
    with Query(gcs_store) as query:
        assert query.get_labels().tolist() == LABELS
        for label in LABELS:
            assert as_row_set(query.get_points(label)) == expected[label]


def assert_found_through_the_directory(config: StorageConfig, expected: dict[int, list[tuple]]) -> None:
    """A new Query reads every label through the label directory in force, without the index."""
    directory = open_in_force(open_storage(config))
    assert directory is not None
    assert {label: int(directory.lookup([label])["point_count"].sum()) for label in LABELS} == {
        label: len(rows) for label, rows in expected.items()
    }
    with Query(config, cache_size=0) as query:
        for label in LABELS:
            assert as_row_set(query.get_points(label)) == expected[label]
            assert query.get_point_count(label) == len(expected[label])
        assert query._index is None  # the index was never fetched


def test_compaction_on_s3_answers_the_same_with_one_get_per_label(s3, s3_store):
    expected = merged(ingest(s3_store, 0, range(3)), ingest(s3_store, 1, range(3, 6)))
    Ingestor.consolidate_indexes(s3_store)
    with Query(s3_store) as query:
        blocks = {label: query.get_blocks_for_label(label) for label in LABELS}
    assert compact(s3_store, workers=1).points_written == sum(len(rows) for rows in expected.values())
    with Query(s3_store) as query:
        query.get_points(LABELS[0], use_cache=False)  # reads the compacted file's footer once
        for label in LABELS:
            before = len(s3.requests)
            assert as_row_set(query.get_points(label, use_cache=False)) == expected[label]
            # At most the label's rows; none once a small file was read whole.
            assert [r.method for r in s3.requests[before:]] in ([], ["GET"])
            assert query.get_blocks_for_label(label) == blocks[label]


def test_a_volume_scan_into_s3_stores_what_a_local_scan_stores(s3_store, tmp_path):
    volume = make_demo_volume(32, seed=4)
    scan_volume(volume, s3_store, block_shape=16, workers=2)
    scan_volume(volume, str(tmp_path / "local"), block_shape=16, workers=1)
    with Query(s3_store) as remote, Query(str(tmp_path / "local")) as local:
        labels = local.get_labels()
        assert remote.get_labels().tolist() == labels.tolist() and len(labels) > 3
        for label in labels:
            assert as_row_set(remote.get_points(label)) == as_row_set(local.get_points(label))


def test_a_query_whose_server_goes_away_says_so_and_works_again_when_it_is_back(s3, s3_store):
    expected = ingest(s3_store, 0, range(2))
    Ingestor.consolidate_indexes(s3_store)
    with Query(s3_store) as query:
        s3.stop()
        try:
            with pytest.raises(StorageUnavailableError, match="could not be reached"):
                query.get_points(LABELS[0])
        finally:
            s3.start()
        assert as_row_set(query.get_points(LABELS[0])) == expected[LABELS[0]]


@pytest.fixture(scope="module")
def azure_connection_string():
    pytest.importorskip("adlfs")
    if azurite_command() is None:
        message = "Azurite is not installed (make azurite, or npm install azurite)"
        if os.environ.get("CI"):
            pytest.fail(message)  # make test installs it: missing in CI means the Azure tests never ran
        pytest.skip(message)
    with azurite("pocaduck") as connection_string:
        yield connection_string


def test_ingest_consolidate_compact_query_on_azure(azure_connection_string):
    config = StorageConfig("az://pocaduck/store", azure_storage_connection_string=azure_connection_string)
    expected = merged(ingest(config, 0, range(3)), ingest(config, 1, range(3, 5)))
    Ingestor.consolidate_indexes(config)
    assert_found_through_the_directory(config, expected)
    report = compact(config, workers=1)
    total = sum(len(rows) for rows in expected.values())
    assert report.generation is not None and report.points_read == report.points_written == total
    assert open_store(config).served_sessions()[1] == report.generation  # the compacted files are what is served
    assert_found_through_the_directory(config, expected)
    with Query(config) as query:
        for label in LABELS:
            assert as_row_set(query.get_points(label)) == expected[label]
    storage = open_storage(config)
    assert (storage.create_exclusive("claim", b"one"), storage.create_exclusive("claim", b"two")) == (True, False)


def test_a_wrong_azure_key_is_refused_clearly(azure_connection_string):
    wrong_key = "A" * 86 + "=="
    config = StorageConfig(
        "az://pocaduck/refused",
        azure_storage_connection_string=azure_connection_string.replace(
            _account_key(azure_connection_string), wrong_key
        ),
    )
    with pytest.raises(StorageAccessError) as refused:
        Query(config)
    assert wrong_key not in str(refused.value) and "az://pocaduck/refused" in str(refused.value)


@pytest.fixture
def azure_store(azure_connection_string, request):
    return StorageConfig(f"az://pocaduck/{request.node.name}", azure_storage_connection_string=azure_connection_string)


def _account_key(connection_string: str) -> str:
    return dict(part.split("=", 1) for part in connection_string.split(";") if part)["AccountKey"]


def test_a_rebuilt_index_of_the_same_size_is_still_fetched_again(s3_store):
    storage = open_storage(s3_store)
    sizes = []
    for value in (1, 2):
        with Ingestor(s3_store, worker_id=0) as ingestor:
            ingestor.write(9, "b", np.full((5, 3), value))
        Ingestor.consolidate_indexes(s3_store)
        sizes.append(len(storage.read_bytes("unified_index.duckdb")))
        with Query(s3_store) as query:
            assert query.get_points(9).tolist() == [[value] * 3] * 5
    assert sizes[0] == sizes[1]  # so only the ETag could tell the two indexes apart


def test_an_older_view_published_last_on_s3_keeps_the_worker_that_finished_in_between(s3_store):
    first = ingest(s3_store, 0, range(2))
    consolidate(s3_store)
    opened = open_store(s3_store)
    with UnifiedIndexBuild(opened) as older:
        older.fill(opened.schema, opened.worker_states()[0], None)  # sees worker 0 only
        second = ingest(s3_store, 1, range(2, 4))
        consolidate(s3_store)
        assert older.publish()  # the conditional PUT is refused; the newer index serves all it has
    with Query(s3_store) as query:
        assert query.info()["workers"] == 2
    with UnifiedIndexBuild(opened) as full, UnifiedIndexBuild(opened) as partial:
        full.fill(opened.schema, opened.worker_states()[0], None)
        partial.fill(opened.schema, {"0": opened.worker_states()[0]["0"]}, None)
        assert partial.publish()
        assert not full.publish()  # started from the index partial replaced: refused
    with Query(s3_store) as query:
        assert query.info()["workers"] == 1
    assert_directory_in_step(s3_store)
    consolidate(s3_store)
    with Query(s3_store) as query:
        for label in LABELS:
            assert as_row_set(query.get_points(label)) == merged(first, second)[label]
    assert_directory_in_step(s3_store)


def assert_directory_in_step(config: StorageConfig) -> None:
    """Readers use a label directory, and it counts each label's points as the index in force does."""
    storage = open_storage(config)
    directory = open_in_force(storage)
    assert directory is not None
    with duckdb.connect(storage.local_copy("unified_index.duckdb"), read_only=True) as index:
        counts = dict(index.execute("SELECT label, point_count FROM labels").fetchall())
    assert {label: directory.point_count(label) for label in counts} == counts


def test_an_arrow_compaction_reads_through_the_bucket_by_ranges(s3, s3_store, monkeypatch):
    # As a file too large to be read whole, with its batches before the tail read with the footer.
    monkeypatch.setattr(fsspec_storage, "_WHOLE_FILE_BYTES", 0)
    monkeypatch.setattr(fsspec_storage, "_TAIL_BYTES", 0)
    expected = merged(ingest(s3_store, 0, range(3)), ingest(s3_store, 1, range(3, 6)))
    Ingestor.consolidate_indexes(s3_store)
    compact(s3_store, workers=1, payload="arrow", compression="zstd")
    assert verify(s3_store, deep=True).ok
    with Query(s3_store) as query:
        query.get_points(LABELS[0], use_cache=False)  # reads the compacted file's footer once
        for label in LABELS:
            before = len(s3.requests)
            assert as_row_set(query.get_points(label, use_cache=False)) == expected[label]
            assert [r.method for r in s3.requests[before:]] == ["GET"]  # one ranged read: the batch holding it
        assert as_row_set(np.concatenate(list(query.iter_points(LABELS[1], chunk_size=7)))) == expected[LABELS[1]]
