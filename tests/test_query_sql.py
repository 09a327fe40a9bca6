"""Query.sql answers SELECTs over the index tables, and nothing else: no files, no settings, no endless statements."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pocaduck import Ingestor, InvalidArgumentError, Query, QueryTimeoutError, ReadOnlySQLError, SQLError, consolidate

# 12 copies of a 40-row table: 40**12 rows to compare, which no machine finishes.
RUNAWAY = (
    "SELECT count(*) FROM "
    + ", ".join(f"point_index t{i}" for i in range(12))
    + " WHERE hash("
    + " + ".join(f"t{i}.row_offset" for i in range(12))
    + ") = 0"  # a hash: no statistics can prove it false and skip the join, as they can a sum of offsets
)


# What the store holds, for the brute-force answers: label -> its point count, each point (label, label, label)
# in block b{label % 4}.
POINTS = {label: label % 3 + 1 for label in range(1, 41)}


def block_of(label: int) -> str:
    return f"b{label % 4}"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    store = str(tmp_path_factory.mktemp("sql") / "store")
    with Ingestor(store, "w0") as ingestor:
        for label, count in POINTS.items():
            ingestor.write(label, block_of(label), np.full((count, 3), label))
    consolidate(store)
    return store


@pytest.fixture
def query(store):
    with Query(store) as query:
        yield query


def still_answers(query: Query) -> None:
    assert query.get_labels().tolist() == list(range(1, 41))
    assert query.get_points(7).tolist() == [[7, 7, 7], [7, 7, 7]]


def test_a_runaway_statement_is_stopped_at_its_timeout(query):
    with pytest.raises(QueryTimeoutError, match=r"stopped after 0.5 s"):
        query.sql(RUNAWAY, timeout=0.5)
    still_answers(query)
    assert query.sql("SELECT count(*) AS n FROM labels", timeout=60)["n"].tolist() == [40]


@pytest.mark.parametrize("timeout", [0, -1, "10"])
def test_a_timeout_must_be_a_positive_number(query, timeout):
    with pytest.raises(InvalidArgumentError, match="timeout must be a positive finite number"):
        query.sql("SELECT 1", timeout=timeout)


_INTERRUPTED = """
import sys
from pocaduck import Query
query = Query(sys.argv[1])
try:
    print("running", flush=True)
    query.sql(sys.argv[2])
except KeyboardInterrupt:
    print("KeyboardInterrupt", query.sql("SELECT count(*) AS n FROM labels")["n"].tolist(), flush=True)
"""


def test_sigint_stops_a_running_statement_with_keyboard_interrupt(store):
    """What Jupyter's interrupt button sends to the kernel."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_INTERRUPTED), store, RUNAWAY], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "running"
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=120)  # a safety net only: the statement itself would run for ages
    finally:
        child.kill()
    assert out.rstrip().endswith("KeyboardInterrupt [40]")  # after DuckDB's progress bar, if it drew one


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM glob('*')",
        "SELECT * FROM read_csv('.tmp/x.csv')",
        "SELECT * FROM '.tmp/x.csv'",
        "PRAGMA database_list",
        "SHOW labels",
        "DESCRIBE labels",
        "SUMMARIZE labels",
        "SELECT * FROM duckdb_databases()",
        "SELECT * FROM pragma_database_list",
        "SELECT current_setting('temp_directory')",
        "SELECT * FROM labels WHERE label IN (SELECT 1 FROM glob('*'))",
        "WITH duckdb_settings AS (SELECT * FROM duckdb_settings) SELECT * FROM duckdb_settings",
        "SELECT * FROM (WITH x AS (SELECT 1) SELECT 1), duckdb_settings",
        "SELECT * FROM system.main.duckdb_settings",
        "SELECT * FROM query('SELECT 1')",
        "SELECT pg_get_viewdef(1)",
    ],
)
def test_files_settings_and_metadata_are_out_of_reach(store, query, tmp_path, monkeypatch, statement):
    monkeypatch.chdir(tmp_path)
    os.makedirs(".tmp")  # where DuckDB's default temp directory is, which external access = false still opens
    with open(".tmp/x.csv", "w") as secret:
        secret.write("a\n1\n")
    with pytest.raises(ReadOnlySQLError, match=r"only a single SELECT statement is allowed here, reading the index"):
        query.sql(statement)
    still_answers(query)


@pytest.mark.parametrize(
    ("statement", "parameter", "columns", "expected"),
    [
        (
            "SELECT label, point_count FROM labels WHERE point_count > ? ORDER BY point_count DESC, label",
            1,
            ["label", "point_count"],
            sorted(((label, n) for label, n in POINTS.items() if n > 1), key=lambda row: (-row[1], row[0])),
        ),
        (
            "SELECT l.label, count(*) AS n FROM labels l JOIN point_index p USING (label) WHERE l.label > ? GROUP BY ALL",
            30,
            ["label", "n"],
            [(label, 1) for label in range(31, 41)],  # one write, one index row per label
        ),
        (
            "WITH big AS (SELECT * FROM labels WHERE label > ?) SELECT b.* FROM big b JOIN point_index USING (label)",
            37,
            ["label", "point_count", "min_x", "max_z"],
            [(label, POINTS[label], label, label) for label in (38, 39, 40)],
        ),
        (
            "SELECT * FROM point_cloud_index WHERE label IN (SELECT label FROM labels WHERE point_count > ?)",
            2,
            ["label", "block_id", "point_count"],
            [(label, block_of(label), 3) for label, n in POINTS.items() if n > 2],
        ),
        (
            "SELECT label, row_number() OVER (ORDER BY label DESC) AS r FROM store_index.labels WHERE label > ? QUALIFY r < 3",
            35,
            ["label", "r"],
            [(39, 2), (40, 1)],
        ),
        (
            "WITH RECURSIVE r(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r, workers",
            1,
            ["n", "worker_id", "point_count"],
            [(n, "w0", sum(POINTS.values())) for n in (1, 2, 3)],
        ),
    ],
)
def test_what_notebooks_and_the_browser_use_keeps_working(query, statement, parameter, columns, expected):
    rows = list(query.sql(statement, [parameter])[columns].itertuples(index=False, name=None))
    assert (rows if "ORDER BY point_count" in statement else sorted(rows)) == expected


@pytest.mark.parametrize("output", ["pandas", "numpy", "arrow"])
def test_parameters_pick_the_rows_in_every_output(query, output):
    statement = "SELECT label, point_count FROM labels WHERE point_count = ? AND label > ? ORDER BY label"
    result = query.sql(statement, [3, 20], output=output)
    columns = result.to_pydict() if output == "arrow" else {name: list(result[name]) for name in result}
    chosen = [label for label, n in POINTS.items() if n == 3 and label > 20]
    assert chosen and columns == {"label": chosen, "point_count": [3] * len(chosen)}


@pytest.mark.parametrize(
    ("statement", "message"),
    [("SELEC label FROM labels", "syntax error"), ("SELECT no_such_column FROM labels", "no_such_column")],
)
def test_duckdb_complaints_are_sql_errors_with_its_message(query, statement, message):
    with pytest.raises(SQLError, match=message):
        query.sql(statement)
    still_answers(query)
