"""Arrow IPC payloads: a store compacted or ingested as Arrow IPC files answers exactly what its Parquet twin does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from _support import as_row_set

from pocaduck import Ingestor, Query, consolidate, create_store, make_demo_volume, scan_volume, verify
from pocaduck.cli import main as cli
from pocaduck.compact import compact
from pocaduck.errors import DataFileError, InvalidArgumentError, SchemaMismatchError
from pocaduck.gc import collect_garbage

LABELS = [0, 7, 2**63 + 1, 2**64 - 1]
BIG = 7  # over 1,024 points: its stored sample order has several levels


def points_of(worker: int, label: int, block: int) -> np.ndarray:
    rng = np.random.default_rng([worker, label % 2**32, block])
    count = 300 if label == BIG else int(rng.integers(1, 40))
    return rng.integers(0, 64, size=(count, 3)).astype(np.int32)


def ingest(store: Path, workers: range = range(2), **options) -> dict[int, list[tuple]]:
    """Two workers, six blocks each, small files; return each label's points as a multiset."""
    expected: dict[int, list[np.ndarray]] = {label: [] for label in LABELS}
    for worker in workers:
        with Ingestor(store, worker, max_points_per_file=700, **options) as ingestor:
            for block in range(6):
                for label in LABELS:
                    points = points_of(worker, label, block)
                    ingestor.write(label, f"{worker}/{block}", points)
                    expected[label].append(points)
    return {label: as_row_set(np.concatenate(parts)) for label, parts in expected.items()}


def answers(store: Path) -> dict:
    """Every read whose rows come in a promised order, kept as arrays to compare exactly."""
    with Query(store, cache_size=0) as query:
        result = {}
        for label in LABELS:
            result[label] = {
                "points": query.get_points(label),
                "block": query.get_points(label, blocks="1/3"),
                "sample": query.get_points(label, sample=50),
                "big sample": query.get_points(label, sample=2_000),
                "seeded": query.get_points(label, sample=20, seed=3),
                "chunks": np.concatenate(list(query.iter_points(label, chunk_size=128))),
                "blocks": query.get_blocks_for_label(label),
            }
        together = query.get_points(LABELS, output="arrow")
        result["together"] = together.to_pandas().to_numpy()
        result["box"] = query.get_points_in_box((8, 8, 8), (40, 40, 40)).to_pandas().to_numpy()
        result["labels in box"] = query.get_labels_in_box((0, 0, 0), (4, 4, 4))
    return result


def data_files(store: Path, under: str = "**") -> list[str]:
    return sorted(p.suffix for p in store.glob(f"{under}/part-*"))


def compacted(store: Path, payload: str) -> dict[int, list[tuple]]:
    """Ingest, consolidate and compact with small groups (so runs cross them); return what was written."""
    expected = ingest(store)
    consolidate(store)
    report = compact(store, workers=1, row_group_size=100, payload=payload)
    assert report.points_written == sum(map(len, expected.values()))
    return expected


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """The same writes ingested twice, one store compacted as Parquet, the other as Arrow IPC (read only):
    the Arrow one's path, what was written, and both stores' answers."""
    folder = tmp_path_factory.mktemp("twins")
    expected = compacted(folder / "parquet", "parquet")
    assert compacted(folder / "arrow", "arrow") == expected
    return folder / "arrow", expected, answers(folder / "parquet"), answers(folder / "arrow")


@pytest.fixture
def arrow_store(tmp_path):
    """A store of its own compacted as Arrow IPC, for a test that changes it; and what was written."""
    return tmp_path / "store", compacted(tmp_path / "store", "arrow")


def test_an_arrow_compaction_answers_exactly_what_the_parquet_one_does(twins):
    store, expected, parquet, arrow = twins
    with Query(store) as query:
        assert {Path(path).suffix for path in query.sql("SELECT path FROM files")["path"]} == {".arrow"}
    for label in LABELS:
        assert as_row_set(arrow[label]["points"]) == expected[label]
        for read, value in arrow[label].items():
            assert np.array_equal(value, parquet[label][read]), (label, read)
        assert arrow[label]["points"].flags.writeable  # a copy out of the mapped file, as Parquet's arrays are
    assert len(arrow[BIG]["sample"]) == 50 and len(arrow[BIG]["big sample"]) == 2_000
    for read in ("together", "box", "labels in box"):
        assert np.array_equal(arrow[read], parquet[read]), read


def test_a_sample_of_a_compacted_arrow_label_reads_one_range(twins, monkeypatch):
    store = twins[0]
    with Query(store, cache_size=0) as query:
        runs = []
        original = query._points.read_rows
        monkeypatch.setattr(query._points, "read_rows", lambda *args: runs.append(args[2].tolist()) or original(*args))
        query.get_points(BIG, sample=100)
    assert runs == [[1_024]]  # the first level of the stored order, not the label's 3,600 rows


def test_compacting_again_changes_nothing_another_payload_rewrites_and_gc_removes_the_old_files(arrow_store):
    store, expected = arrow_store
    assert compact(store, workers=1, row_group_size=100, payload="arrow").generation is None
    assert compact(store, workers=1).generation is not None  # Parquet, the default
    arrow_generation = next(store.glob("compacted/*/part-*.arrow")).parent.name
    assert f"compacted/{arrow_generation}" in collect_garbage(store).removed
    assert data_files(store, "compacted/*") == [".parquet"]
    assert verify(store, deep=True).ok
    with Query(store) as query:
        assert {label: as_row_set(query.get_points(label)) for label in LABELS} == expected


def test_ingestion_into_an_arrow_store_round_trips_and_consolidates_beside_a_compaction(tmp_path):
    store = tmp_path / "store"
    assert create_store(store, dtype="int32", payload="arrow").payload == "arrow"
    first = ingest(store, range(2), compression="zstd")  # every worker writes the manifest's payload
    assert json.loads((store / "pocaduck.json").read_text())["payload"] == "arrow"
    assert set(data_files(store)) == {".arrow"}
    consolidate(store)
    compact(store, workers=1)  # Parquet by default, whatever the ingestion's payload
    later = ingest(store, range(2, 3))
    consolidate(store)
    assert sorted(set(data_files(store))) == [".arrow", ".parquet"]
    assert verify(store, deep=True).ok
    with Query(store, cache_size=0) as query:
        for label in LABELS:
            assert as_row_set(query.get_points(label)) == sorted(first[label] + later[label])


def test_an_ingestor_or_a_declaration_asking_for_another_payload_is_refused(tmp_path):
    store = tmp_path / "store"
    create_store(store, payload="arrow")
    with pytest.raises(SchemaMismatchError, match="asked for payload 'parquet', but the store's manifest says 'arrow'"):
        Ingestor(store, 0, payload="parquet")
    with pytest.raises(SchemaMismatchError, match="declares payload 'arrow', not 'parquet'"):
        create_store(store, payload="parquet")
    assert create_store(store).payload == "arrow"  # no payload asked: the store's
    assert not (store / "workers" / "0" / "sessions").exists() or not os.listdir(store / "workers" / "0" / "sessions")


def test_the_first_worker_of_a_new_store_fixes_its_payload(tmp_path):
    store = tmp_path / "store"
    with Ingestor(store, 0, payload="arrow") as ingestor:
        ingestor.write(5, "b", np.ones((3, 3), np.int64))
    with Ingestor(store, 1) as ingestor:  # no payload asked: the manifest's
        assert ingestor.payload == "arrow"
        ingestor.write(5, "c", np.zeros((2, 3), np.int64))
    consolidate(store)
    assert data_files(store) == [".arrow", ".arrow"]
    with Query(store) as query:
        assert as_row_set(query.get_points(5)) == [(0, 0, 0)] * 2 + [(1, 1, 1)] * 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda store: compact(store, payload="feather"), "payload 'feather' is not one of 'parquet' or 'arrow'"),
        (lambda store: compact(store, payload="arrow", compression="snappy"), "Arrow IPC files take None or 'none'"),
        (lambda store: compact(store, compression="lz5"), "does not suit payload 'parquet'"),
        (lambda store: Ingestor(store, 0, payload="arrow", compression="brotli"), "compression 'brotli'"),
        (lambda store: Ingestor(store, 0, payload=3), "payload 3 is not one of"),
        (lambda store: create_store(store, payload="csv"), "payload 'csv'"),
    ],
)
def test_an_unknown_payload_or_a_codec_the_payload_lacks_is_refused_before_anything_is_written(tmp_path, call, message):
    store = tmp_path / "store"
    store.mkdir()
    with pytest.raises(InvalidArgumentError, match=message):
        call(store)
    assert os.listdir(store) == []


def test_a_truncated_arrow_file_gives_an_error_naming_it(arrow_store):
    store = arrow_store[0]
    (arrow_file,) = store.glob("compacted/*/part-*.arrow")
    data = arrow_file.read_bytes()
    arrow_file.write_bytes(data[: len(data) // 2])
    with Query(store) as query, pytest.raises(DataFileError, match=f"(?s){arrow_file.name}.*The store is damaged"):
        query.get_points(BIG)
    problems = verify(store).problems
    assert [problem.path for problem in problems] == [str(arrow_file.relative_to(store))]


def test_a_flipped_byte_in_an_arrow_file_is_found_by_a_deep_verify(arrow_store):
    store = arrow_store[0]
    (arrow_file,) = store.glob("compacted/*/part-*.arrow")
    data = bytearray(arrow_file.read_bytes())
    data[len(data) // 3] ^= 0xFF
    arrow_file.write_bytes(bytes(data))
    assert verify(store).ok  # sizes agree
    (problem,) = verify(store, deep=True).problems
    assert "checksum" in problem.what and problem.path.endswith(".arrow")


def test_the_command_compacts_as_arrow(tmp_path, capsys):
    store = tmp_path / "store"
    expected = ingest(store)
    consolidate(store)
    assert cli(["compact", str(store), "--payload", "arrow", "--compression", "lz4"]) == 0
    assert json.loads(capsys.readouterr().out)["files_written"] == 1
    assert cli(["compact", str(store), "--payload", "arrow", "--compression", "lz4"]) == 0
    assert "already compact" in capsys.readouterr().out
    with Query(store) as query:
        assert {label: as_row_set(query.get_points(label)) for label in LABELS} == expected


def test_a_scan_writes_the_payload_it_is_asked_for(tmp_path):
    volume = make_demo_volume(32, seed=1)
    read = {}
    for payload in ("parquet", "arrow"):
        scan_volume(volume, tmp_path / payload, block_shape=16, workers=1, payload=payload)
        assert set(data_files(tmp_path / payload)) == {f".{payload}"}
        with Query(tmp_path / payload) as query:
            read[payload] = {label: as_row_set(query.get_points(label)) for label in query.get_labels().tolist()}
    assert read["arrow"] == read["parquet"] and read["arrow"]
