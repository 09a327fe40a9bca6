"""Every notebook in notebooks/ runs top to bottom in a fresh kernel, as a new user runs it, without an error.

They run in a copy of the folder (their stores are written beside them), with
no demo store built beforehand: the first notebook that needs it builds it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))


def problems_in(notebook: nbformat.NotebookNode) -> list[str]:
    """Error outputs and tracebacks printed to stderr, with the cell they came from."""
    found = []
    for number, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                found.append(f"cell {number}: {output.ename}: {output.evalue}")
            elif output.output_type == "stream" and output.name == "stderr" and "Traceback" in output.text:
                found.append(f"cell {number} printed a traceback:\n{output.text}")
    return found


def run_notebook(path: Path, timeout: int = 300) -> nbformat.NotebookNode:
    """Execute a notebook in its own folder with the python3 kernel; return it with its outputs."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": path.parent}},
    )
    client.execute()
    return notebook


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A copy of notebooks/ without any store in it, shared by the notebooks like a user's checkout."""
    folder = tmp_path_factory.mktemp("notebooks")
    for path in NOTEBOOKS.iterdir():
        if path.suffix in (".ipynb", ".py"):
            shutil.copy(path, folder / path.name)
    return folder


def test_there_are_the_six_notebooks_with_outputs_cleared_and_a_kernel():
    assert [name[:3] for name in NAMES] == ["01_", "02_", "03_", "04_", "05_", "06_"]
    for name in NAMES:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata.kernelspec.name == "python3"  # else JupyterLab asks which kernel to start
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(not cell.outputs and cell.execution_count is None for cell in code), f"{name} has outputs"


@pytest.mark.parametrize("name", NAMES)
def test_the_notebook_runs_top_to_bottom_without_errors(workspace, name):
    notebook = run_notebook(workspace / name)
    assert problems_in(notebook) == []
