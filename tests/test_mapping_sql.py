"""SQL through a mapping speaks bodies: ``labels`` has a row per body, summed and bounded over its supervoxels'
points, ``mapping`` pairs each stored supervoxel with its body, and the supervoxel tables stay under clear names;
a Query without a mapping answers SQL as before."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pocaduck import Ingestor, Query, ReadOnlySQLError, consolidate, write_mapping

# Supervoxel -> its points' blocks; each point is (supervoxel % 1000, block number, row) so bounds are known.
SUPERVOXELS = [1, 2, 3, 40, 2**63 - 1, 2**63, 2**63 + 5, 2**64 - 1]
ROOT = {1: 40, 2: 40, 2**63: 2**64 - 2, 2**63 + 5: 2**64 - 2, 2**64 - 1: 2**64 - 2}  # 40 and 2**64-2 are bodies
MERGE = {3: 40, 2**63 - 1: 40}  # the child: two more supervoxels join body 40


def points_of(supervoxel: int, block: int) -> np.ndarray:
    count = 1 + (supervoxel + block) % 4
    return np.array([[supervoxel % 1000, block, row] for row in range(count)], dtype=np.int64)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    store = str(tmp_path_factory.mktemp("mapping-sql") / "store")
    with Ingestor(store, worker_id=0) as ingestor:
        for supervoxel in SUPERVOXELS:
            for block in range(1 + supervoxel % 3):
                ingestor.write(supervoxel, f"b{block}", points_of(supervoxel, block))
    consolidate(store)
    write_mapping(store, "root", list(ROOT), list(ROOT.values()))
    write_mapping(store, "merged", list(MERGE), list(MERGE.values()), parent="root")
    return store


def brute_force(assignments: dict[int, int]) -> dict[int, dict]:
    """Each body's row of ``labels``, from the points written."""
    rows: dict[int, dict] = {}
    for supervoxel in SUPERVOXELS:
        body = assignments.get(supervoxel, supervoxel)
        blocks = range(1 + supervoxel % 3)
        points = np.concatenate([points_of(supervoxel, block) for block in blocks])
        row = rows.setdefault(body, {"points": [], "supervoxels": set(), "blocks": set()})
        row["points"].append(points)
        row["supervoxels"].add(supervoxel)
        row["blocks"].update(f"b{block}" for block in blocks)
    expected = {}
    for body, row in rows.items():
        points = np.concatenate(row["points"])
        low, high = points.min(axis=0).tolist(), points.max(axis=0).tolist()
        expected[body] = {
            "point_count": len(points),
            "supervoxel_count": len(row["supervoxels"]),
            "block_count": len(row["blocks"]),
            **{f"min_{c}": v for c, v in zip("xyz", low, strict=True)},
            **{f"max_{c}": v for c, v in zip("xyz", high, strict=True)},
        }
    return expected


@pytest.mark.parametrize(("version", "assignments"), [("root", ROOT), ("merged", {**ROOT, **MERGE})])
def test_labels_lists_bodies_summed_over_their_supervoxels(store, version, assignments):
    with Query(store, mapping=version) as query:
        table = query.sql("SELECT * FROM labels ORDER BY label", output="arrow").to_pylist()
        labels = query.get_labels().tolist()
    expected = brute_force(assignments)
    assert [row["label"] for row in table] == sorted(expected) == labels  # ids past 2**63 exact, as UBIGINT
    for row in table:
        assert {name: row[name] for name in expected[row["label"]]} == expected[row["label"]]
    assert table[-1]["label"] == 2**64 - 2 and table[-1]["supervoxel_count"] == 3


def test_mapping_pairs_every_stored_supervoxel_with_its_body(store):
    with Query(store, mapping="merged") as query:
        pairs = query.sql("SELECT supervoxel, body FROM mapping ORDER BY supervoxel", output="arrow").to_pylist()
        joined = query.sql(
            "SELECT m.body AS label, sum(p.point_count)::BIGINT AS n FROM point_index p "
            "JOIN mapping m ON m.supervoxel = p.label WHERE m.body = ? GROUP BY m.body",
            [2**64 - 2],
            output="arrow",
        ).to_pylist()
        body_points = len(query.get_points(2**64 - 2))
    assignments = {**ROOT, **MERGE}
    assert pairs == [{"supervoxel": s, "body": assignments.get(s, s)} for s in SUPERVOXELS]
    assert joined == [{"label": 2**64 - 2, "n": body_points}]


def test_supervoxel_tables_stay_under_clear_names_and_plain_sql_is_unchanged(store):
    with Query(store) as plain:
        plain_labels = plain.sql("SELECT * FROM labels ORDER BY label", output="arrow")
        plain_tables = plain._tables
    with Query(store, mapping="merged") as query:
        supervoxel_labels = query.sql("SELECT * FROM supervoxel_labels ORDER BY label", output="arrow")
        point_rows = query.sql("SELECT count(*) AS n FROM point_index", output="arrow")["n"].to_pylist()
    assert supervoxel_labels.equals(plain_labels)
    assert plain_labels["label"].to_pylist() == SUPERVOXELS
    assert "supervoxel_count" not in plain_labels.column_names and "mapping" not in plain_tables
    assert point_rows == [sum(1 + s % 3 for s in SUPERVOXELS)]


def test_sql_through_a_mapping_is_still_read_only(store):
    with Query(store, mapping="root") as query, pytest.raises(ReadOnlySQLError):
        query.sql("SELECT * FROM store_index.labels")


def test_threads_sharing_one_mapped_query_sql_get_right_answers(store):
    expected = brute_force({**ROOT, **MERGE})
    with Query(store, mapping="merged") as query:

        def check(i: int) -> bool:
            body = sorted(expected)[i % len(expected)]
            if i % 2:
                found = query.sql("SELECT point_count FROM labels WHERE label = ?", [body], output="arrow")
                return found["point_count"].to_pylist() == [expected[body]["point_count"]]
            cursor = query.db_connection
            (count,) = cursor.execute("SELECT supervoxel_count FROM labels WHERE label = ?", [body]).fetchone()
            cursor.close()
            return count == expected[body]["supervoxel_count"]

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(check, range(80)))


def test_threads_opening_queries_of_one_version_share_one_set_of_body_tables(store):
    expected = brute_force({**ROOT, **MERGE})

    def total(_: int) -> tuple[int, int]:
        with Query(store, mapping="merged") as query:
            found = query.sql("SELECT sum(point_count)::BIGINT AS n, count(*) AS bodies FROM labels", output="arrow")
            return found["n"][0].as_py(), found["bodies"][0].as_py()

    with ThreadPoolExecutor(4) as pool:
        answers = set(pool.map(total, range(12)))
    assert answers == {(sum(row["point_count"] for row in expected.values()), len(expected))}
