"""Binder, tried as far as it can be without Docker: a fresh virtual environment from binder/ alone, postBuild,
the widget extensions enabled in JupyterLab, every notebook run in it; and binder's pins agree with pyproject.toml.

The environment is built from a copy of the repository's tracked files, as a
clone on Binder would be, with pip's cache but without this project's venv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from test_notebooks import NAMES, problems_in

REPOSITORY = Path(__file__).resolve().parents[1]
BINDER_EXTRAS = ("widgets", "scan", "dask", "neuroglancer")  # what binder/postBuild installs pocaduck with
LAB = ("jupyterlab", "ipykernel")  # JupyterLab itself, whose bounds the browser-test extra sets
WIDGET_EXTENSIONS = ("@jupyter-widgets/jupyterlab-manager", "jupyter-threejs", "anywidget")


def binder_pins() -> dict[str, Version]:
    """binder/requirements.txt as {package: pinned version}; every line must be an exact pin."""
    pins = {}
    for line in (REPOSITORY / "binder" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"binder/requirements.txt must pin exactly: {line}"
        pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    return pins


def pyproject_requirements() -> list[Requirement]:
    """What pyproject.toml asks for on Binder: the dependencies, the extras postBuild names, JupyterLab."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [Requirement(text) for text in project["dependencies"]]
    wanted += [Requirement(text) for extra in BINDER_EXTRAS for text in extras[extra]]
    wanted += [Requirement(text) for text in extras["browser-test"] if Requirement(text).name in LAB]
    return wanted


def test_binder_pins_every_package_pyproject_asks_for_within_its_bounds():
    pins = binder_pins()
    for requirement in pyproject_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} (pyproject.toml) has no pin in binder/requirements.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"binder pins {name}=={pins[name]}, outside pyproject.toml's {requirement}"
        )


def test_every_package_of_the_source_tree_is_in_the_wheel():
    """An editable install finds a new subpackage by its path; Binder's and users' installs only if it is listed."""
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(REPOSITORY).parts) for init in (REPOSITORY / "pocaduck").rglob("__init__.py")
    }
    assert found - listed == set()


def test_postbuild_installs_pocaduck_with_the_extras_checked_here():
    postbuild = (REPOSITORY / "binder" / "postBuild").read_text()
    assert f'".[{",".join(BINDER_EXTRAS)}]"' in postbuild
    assert os.access(REPOSITORY / "binder" / "postBuild", os.X_OK)  # repo2docker runs it as a program


@pytest.fixture(scope="module")
def binder(tmp_path_factory):
    """(checkout, environment variables) after: a copy of the tracked files, a new venv, pip install -r
    binder/requirements.txt, then binder/postBuild run with that venv's python first on PATH."""
    root = tmp_path_factory.mktemp("binder")
    checkout = root / "repository"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPOSITORY, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (REPOSITORY / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPOSITORY / name, checkout / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("JUPYTER", "VIRTUAL_ENV"))},
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "JUPYTER_CONFIG_DIR": str(root / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(root / "jupyter-data"),  # no kernel specs of this machine's user
        "JUPYTER_RUNTIME_DIR": str(root / "jupyter-runtime"),
    }

    def run(*command: str, cwd: Path = checkout) -> str:
        done = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout + done.stderr

    run("python", "-m", "pip", "install", "--quiet", "-r", "binder/requirements.txt")
    run("binder/postBuild")
    return checkout, run


def test_postbuild_builds_the_demo_store(binder):
    checkout, run = binder
    assert (checkout / "notebooks" / "demo_store" / "unified_index.duckdb").exists()
    location = run("python", "-c", "import pocaduck, pocaduck.widgets; print(pocaduck.__file__)", cwd=checkout.parent)
    assert "site-packages" in location  # installed by postBuild, with its widgets


def test_the_widget_extensions_are_enabled_in_jupyterlab(binder):
    _, run = binder
    listing = re.sub(r"\x1b\[[0-9;]*m", "", run("jupyter", "labextension", "list"))
    for extension in WIDGET_EXTENSIONS:
        lines = [line for line in listing.splitlines() if line.strip().startswith(extension + " ")]
        assert lines and "enabled" in lines[0] and "OK" in lines[0], f"{extension} is not enabled:\n{listing}"


def test_every_notebook_runs_in_the_binder_environment(binder):
    checkout, run = binder
    outputs = checkout.parent / "executed"
    notebooks = [f"notebooks/{name}" for name in NAMES]
    run("jupyter", "nbconvert", "--to", "notebook", "--execute", "--ExecutePreprocessor.timeout=600", "--output-dir",
        str(outputs), *notebooks)  # fmt: skip
    for name in NAMES:
        assert problems_in(nbformat.read(outputs / name, as_version=4)) == [], name
