"""Long work shows its progress where someone watches it: bars in a notebook by default, silence in scripts."""

from __future__ import annotations

import subprocess
import sys

import nbformat
import numpy as np
from nbclient import NotebookClient

from pocaduck import Ingestor, consolidate

WIDGET = "application/vnd.jupyter.widget-view+json"


def small_store(path: str) -> str:
    with Ingestor(path, worker_id=0) as ingestor:
        for block in range(3):
            ingestor.write(5, f"b{block}", np.full((4, 3), block))
    consolidate(path)
    return path


def test_compaction_draws_bars_in_a_notebook_by_default_and_none_when_asked_not_to(tmp_path):
    shown, quiet = small_store(str(tmp_path / "shown")), small_store(str(tmp_path / "quiet"))
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(f"from pocaduck import compact\nreport = compact({shown!r}, workers=1)"),
            nbformat.v4.new_code_cell(f"report = compact({quiet!r}, workers=1, progress=False)"),
        ]
    )
    NotebookClient(notebook, kernel_name="python3", timeout=300).execute()
    by_default, turned_off = (cell.outputs for cell in notebook.cells)
    assert any(WIDGET in output.get("data", {}) for output in by_default)
    assert turned_off == []


def test_a_script_stays_quiet_by_default_and_draws_bars_when_asked(tmp_path):
    quiet, shown = small_store(str(tmp_path / "quiet")), small_store(str(tmp_path / "shown"))

    def run(call: str) -> str:
        script = f"from pocaduck import compact\n{call}"
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        return done.stderr

    assert run(f"compact({quiet!r})") == ""
    assert "shard" in run(f"compact({shown!r}, progress=True)")
