"""Every notebook in notebooks/ runs top to bottom in a fresh kernel, as a new user runs it, without an error,
and prints what its stores hold.

They run in a copy of the folder (their stores are written beside them), with
no demo store built beforehand: the first notebook that needs it builds it. The
numbers a notebook prints (labels, points, labels a filter picks) are compared
with the volume it scanned or with the store it wrote, read here on our own.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from pocaduck import Query, make_demo_volume
from pocaduck.scan.blocks import block_id_of

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


def test_there_are_the_seven_notebooks_with_outputs_cleared_and_a_kernel():
    assert [name[:3] for name in NAMES] == ["01_", "02_", "03_", "04_", "05_", "06_", "07_"]
    for name in NAMES:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        assert notebook.metadata.kernelspec.name == "python3"  # else JupyterLab asks which kernel to start
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(not cell.outputs and cell.execution_count is None for cell in code), f"{name} has outputs"


@pytest.mark.parametrize("name", NAMES)
def test_the_notebook_runs_top_to_bottom_without_errors_and_prints_what_its_stores_hold(workspace, name):
    notebook = run_notebook(workspace / name)
    assert problems_in(notebook) == []
    CHECKS[name[:2]](printed(notebook), workspace)


def printed(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook printed, one cell after another."""
    return "\n".join(
        output.text
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.output_type == "stream" and output.name == "stdout"
    )


def number(pattern: str, text: str) -> int:
    """The integer the pattern's group finds in ``text`` (thousands separators allowed)."""
    found = re.search(pattern, text)
    assert found, f"{pattern!r} is not in what the notebook printed:\n{text}"
    return int(found.group(1).replace(",", ""))


def points_by_label(store: Path) -> dict[int, np.ndarray]:
    with Query(store) as query:
        return query.get_points(query.get_labels().tolist())


def labels_in(volume: np.ndarray) -> set[int]:
    return set(np.unique(volume).tolist()) - {0}


def check_quick_start(out: str, workspace: Path) -> None:
    volume = make_demo_volume(128, seed=0)
    store = points_by_label(workspace / "quickstart_store")
    assert number(r": (\d+) labels, ", out) == len(labels_in(volume)) and set(store) == labels_in(volume)
    assert number(r"wrote ([\d,]+) points", out) == sum(len(points) for points in store.values())
    biggest = max(store, key=lambda label: len(store[label]))
    assert number(rf"label {biggest}: ([\d,]+) points", out) == len(store[biggest])


def check_browse_labels(out: str, workspace: Path) -> None:
    store = points_by_label(workspace / "demo_store")
    assert set(store) == labels_in(make_demo_volume(192, seed=0))
    wide = [label for label, points in store.items() if np.ptp(points[:, 0]) > 150]
    assert number(r"(\d+) labels match", out) == len(wide)
    inside = [label for label, points in store.items() if points.min() >= 0 and points.max() <= 1024 // 8]
    assert number(r"selected (\d+) labels", out) == len(inside) > 0


def check_render_neurons(out: str, workspace: Path) -> None:
    voxels = np.bincount(np.unique(make_demo_volume(128, seed=0), return_inverse=True)[1].ravel())[1:]
    assert number(r"of ([\d,]+) points", out) == voxels.max()  # every voxel of the largest label
    assert number(r"showing ([\d,]+) of", out) == 5_000  # the budget


def check_scale_out(out: str, workspace: Path) -> None:
    store = points_by_label(workspace / "dask_store")
    total = sum(len(points) for points in store.values())
    assert number(r"(\d+) blocks →", out) == (128 // 16) ** 3
    assert number(r"→ ([\d,]+) points", out) == total == number(r"compacted ([\d,]+) points", out)
    assert number(r"(\d+) labels, identical points: True", out) == len(labels_in(make_demo_volume(128, seed=0)))


def check_your_own_data(out: str, workspace: Path) -> None:
    assert number(r"(\d+) labels;", out) == len(labels_in(make_demo_volume((64, 128, 128), seed=7)))
    assert "same labels as from zarr: True" in out
    rng = np.random.default_rng(0)  # the old store's rows, drawn as the notebook draws them
    written = {label: sum(len(rng.integers(0, 64, size=(int(rng.integers(5, 20)), 3))) for _ in range(2))
               for label in (17, 42, 2**40 + 3)}  # fmt: skip
    assert number(r"label 42: \((\d+), 3\) points", out) == written[42]
    assert number(r"Query (\d+) labels,", out) == 3 and number(r"labels, (\d+) points", out) == sum(written.values())


def check_neuroglancer(out: str, workspace: Path) -> None:
    store = points_by_label(workspace / "demo_store")
    assert number(r"([\d,]+) points of \d+ labels", out) == sum(len(points) for points in store.values())
    assert number(r"points of (\d+) labels", out) == len(store)
    biggest = max(store, key=lambda label: len(store[label]))
    exported = number(rf"label {biggest}: ([\d,]+) points", out)
    assert exported == number(r"as many as the store holds: ([\d,]+)", out) == len(store[biggest])


def check_proofreading(out: str, workspace: Path) -> None:
    with Query(workspace / "demo_store") as query:
        counts = {int(label): query.get_point_count(int(label)) for label in query.get_labels()}
    supervoxels = sorted(counts)
    bodies = {s: supervoxels[i // 3 * 3] for i, s in enumerate(supervoxels)}  # the notebook's agglomeration
    points = {}
    for supervoxel, body in bodies.items():
        points[body] = points.get(body, 0) + counts[supervoxel]
    first, second = sorted(points, key=lambda body: -points[body])[:2]
    assert number(r"(\d+) bodies;", out) == len(points)
    assert number(rf"agglomeration +body {first}: ([\d,]+) points", out) == points[first]
    assert number(rf"merge +body {first}: ([\d,]+) points", out) == points[first] + points[second]
    cut = max(s for s, body in bodies.items() if body in (first, second))  # the merged body's last supervoxel
    assert number(rf"cleave +body {first}: ([\d,]+) points", out) == points[first] + points[second] - counts[cut]
    assert f"agglomeration → merge: changed bodies {sorted([first, second])}" in out
    assert f"merge → cleave: changed bodies {sorted([first, max(supervoxels) + 1])}" in out
    # The re-scan: what the notebook printed is what its store now serves, and the old points are gone.
    split, before, after, piece, piece_points = (
        int(n.replace(",", ""))
        for n in re.search(
            r"supervoxel (\d+): ([\d,]+) points before the re-scan, ([\d,]+) after; new supervoxel (\d+): ([\d,]+)", out
        ).groups()
    )
    assert before == counts[split] and piece == max(supervoxels) + 2 and piece_points > 0
    with Query(workspace / "proofreading_store") as query:
        assert query.get_point_count(split) == after and query.get_point_count(piece) == piece_points
        assert query.sql("SELECT block_id FROM replaced_blocks").block_id.tolist() == [block_id_of((1, 1, 1))]
    with Query(workspace / "proofreading_store", mapping="rescan") as query:
        body = int(query.get_body(split))
        assert int(query.get_body(piece)) == body
        assert number(rf"rescan +body {body}: ([\d,]+) points", out) == query.get_point_count(body)


CHECKS = {
    "01": check_quick_start,
    "02": check_browse_labels,
    "03": check_render_neurons,
    "04": check_scale_out,
    "05": check_your_own_data,
    "06": check_neuroglancer,
    "07": check_proofreading,
}
