"""`make lab`, as a user runs it: JupyterLab comes up on loopback, prints its URL, and lists the notebooks.

It runs the real target in this repository (installing only if pyproject.toml
changed, building notebooks/demo_store only if it is missing), with Jupyter's
own files in a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from lab import free_port

REPOSITORY = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted(path.name for path in (REPOSITORY / "notebooks").glob("*.ipynb"))


def wait_for_url(output, port: int, timeout: float) -> tuple[str, threading.Thread]:
    """The server's URL with its token, from the first line of ``output`` that has it, and the thread that
    drains ``output`` to its end in the background so the server never blocks on a full pipe (join it
    before closing ``output``)."""
    pattern = re.compile(rf"http://127\.0\.0\.1:{port}/\S*token=\w+")
    lines: list[str] = []
    found: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in output:
            lines.append(line)
            if not found and (match := pattern.search(line)):
                found.append(match.group(0))
                seen.set()
        seen.set()  # the end of output: make stopped

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen.wait(timeout)
    assert found, "make lab printed no URL:\n" + "".join(lines[-40:])
    return found[0], reader


def get_when_up(url: str, token: str, attempts: int = 100) -> dict:
    """GET a JSON answer, retrying while the server, which logs its URL before it listens, refuses connections."""
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.URLError as error:
            if not isinstance(error.reason, ConnectionRefusedError):
                raise
            time.sleep(0.2)
    raise AssertionError(f"{url} still refuses connections")


def test_make_lab_serves_the_notebooks_from_the_repository_root(tmp_path):
    port = free_port()
    jupyter_home = {name: str(tmp_path / name) for name in ("config", "data", "runtime", "settings", "workspaces")}
    environment = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": jupyter_home["config"],
        "JUPYTER_DATA_DIR": jupyter_home["data"],
        "JUPYTER_RUNTIME_DIR": jupyter_home["runtime"],
        "JUPYTERLAB_SETTINGS_DIR": jupyter_home["settings"],
        "JUPYTERLAB_WORKSPACES_DIR": jupyter_home["workspaces"],
    }
    make = subprocess.Popen(
        ["make", "--no-print-directory", "lab", f"LAB_PORT={port}"],
        cwd=REPOSITORY,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: stopping it stops JupyterLab too
    )
    reader = None
    try:
        url, reader = wait_for_url(make.stdout, port, timeout=900)  # a first run installs and builds the demo store
        assert "/lab/tree/notebooks/01_quick_start.ipynb" in url
        token = url.rsplit("token=", 1)[1]
        listing = get_when_up(f"http://127.0.0.1:{port}/api/contents/notebooks", token)
        names = sorted(item["name"] for item in listing["content"] if item["type"] == "notebook")
        assert names == NOTEBOOKS
        assert (REPOSITORY / "notebooks" / "demo_store" / "unified_index.duckdb").exists()
        with pytest.raises(urllib.error.HTTPError, match="403"):  # and nobody else gets in without the token
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents/notebooks", timeout=30)
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=60)
        if reader is not None:
            reader.join(timeout=60)  # it ends at the end of the output, once JupyterLab is gone too
        make.stdout.close()
