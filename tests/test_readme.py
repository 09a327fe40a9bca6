"""The README's quick start runs as written, on a fresh store in place of /data/my_store."""

from __future__ import annotations

import re
from pathlib import Path

from pocaduck import Query

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_quick_start_runs(tmp_path, monkeypatch):
    section = README.read_text().split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    assert '"/data/my_store"' in code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code.replace('"/data/my_store"', repr(str(tmp_path / "store"))), str(README), "exec"), namespace)
    with Query(namespace["store"]) as query:
        assert query.get_points(2**64 - 1).tolist() == [[10, 20, 30], [11, 20, 30]]
        assert query.get_points(5).tolist() == [[1, 2, 3], [7, 8, 9]]
        assert query.get_blocks_for_label(5) == ["12_4_8"]


def test_the_mappings_example_runs_after_the_quick_start(tmp_path, monkeypatch):
    text = README.read_text()
    quick_start = re.search(r"```python\n(.*?)```", text.split("## Quick start", 1)[1], re.DOTALL).group(1)
    mappings = re.search(r"```python\n(.*?)```", text.split("## Mappings", 1)[1], re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(
        compile(quick_start.replace('"/data/my_store"', repr(str(tmp_path / "store"))), str(README), "exec"), namespace
    )
    exec(compile(mappings, str(README), "exec"), namespace)
    with Query(namespace["store"], mapping="v2") as query:
        assert query.get_supervoxels(2**64 - 1).tolist() == [6, 2**64 - 1]
        assert query.get_body(6) == 2**64 - 1
        assert query.get_points(5).tolist() == [[1, 2, 3], [7, 8, 9]]
        assert sorted(map(tuple, query.get_points(2**64 - 1).tolist())) == [(4, 5, 6), (10, 20, 30), (11, 20, 30)]
    with Query(namespace["store"], mapping="v1") as query:
        assert query.get_points(5).tolist() == [[1, 2, 3], [7, 8, 9], [4, 5, 6]]
    assert namespace["changed_bodies"](namespace["store"], "v1", "v2").tolist() == [5, 2**64 - 1]


def test_the_rescan_example_runs_after_the_quick_start(tmp_path, monkeypatch):
    text = README.read_text()
    quick_start = re.search(r"```python\n(.*?)```", text.split("## Quick start", 1)[1], re.DOTALL).group(1)
    rescan = re.search(r"```python\n(.*?)```", text.split("## Blocks re-scanned in place", 1)[1], re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(
        compile(quick_start.replace('"/data/my_store"', repr(str(tmp_path / "store"))), str(README), "exec"), namespace
    )
    exec(compile(rescan, str(README), "exec"), namespace)
    with Query(namespace["store"]) as query:
        assert query.get_labels().tolist() == [5, 9, 2**64 - 1]
        assert query.get_points(5).tolist() == [[1, 2, 3]]
        assert query.get_points(2**64 - 1).tolist() == [[10, 20, 30], [11, 20, 30]]
        assert query.sql("SELECT block_id, worker_id FROM replaced_blocks").values.tolist() == [
            ["12_4_8", "fix-12_4_8"]
        ]
