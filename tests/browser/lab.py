"""A real JupyterLab on loopback and Debian's headless Chromium, for the browser tests and the widget benchmark.

JupyterLab runs without a token on a free port, in a temporary folder of its
own (notebooks, settings, runtime files); Chromium is the system one, driven by
Playwright (Playwright's own browser download does not work here).
"""

from __future__ import annotations

import base64
import importlib.util
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("POCADUCK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--ignore-gpu-blocklist",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def skip_without_browser() -> None:
    """Skip the calling test module when Chromium, Playwright or JupyterLab is missing; under CI fail instead."""
    import pytest  # here, not at the top: the widget benchmark imports this module without pytest

    missing = [
        *(
            [f"Chromium ({CHROMIUM}): apt-get install chromium, or set POCADUCK_CHROMIUM"]
            if not os.path.exists(CHROMIUM)
            else []
        ),
        *(
            f"the {name} package: pip install -e '.[browser-test]'"
            for name in ("playwright", "jupyterlab")
            if importlib.util.find_spec(name) is None
        ),
    ]
    if missing:
        message = "browser tests need " + "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def jupyter_lab(root: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Iterator[str]:
    """Start JupyterLab serving ``root``; yield its base URL; stop it."""
    port = free_port()
    home = root / ".jupyter-home"
    home.mkdir(parents=True, exist_ok=True)
    news = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no network, no toast over the widgets
    environment = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        **(env or {}),
    }
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=", "--LabApp.extension_manager=readonly", "--allow-root",
    ]  # fmt: skip
    log = open(root / ".jupyter-home" / "lab.log", "wb")  # noqa: SIM115 (closed below, after the server)
    server = subprocess.Popen(command, cwd=root, env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log_text = (home / "lab.log").read_text()
                    raise RuntimeError(f"JupyterLab did not start: {log_text}") from None
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@contextmanager
def chromium() -> Iterator[object]:
    """Yield a Playwright browser on the system Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_notebook(page, url: str, name: str, timeout_ms: int = 90_000) -> None:
    """Open a notebook in JupyterLab and wait until its kernel is idle."""
    page.goto(f"{url}/lab/tree/{name}", timeout=timeout_ms)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=timeout_ms)
    page.wait_for_function(
        """() => {
            const panel = window.jupyterapp.shell.currentWidget;
            const kernel = panel && panel.sessionContext && panel.sessionContext.session
                && panel.sessionContext.session.kernel;
            return kernel && kernel.status === 'idle';
        }""",
        timeout=timeout_ms,
    )


def error_outputs(page) -> list[str]:
    """Every error output of the open notebook, as "cell N: Name: message"."""
    return page.evaluate(
        """() => {
            const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
            const errors = [];
            for (let i = 0; i < cells.length; i++) {
                const cell = cells.get(i);
                if (cell.type !== 'code') continue;
                for (const output of cell.outputs.toJSON()) {
                    if (output.output_type === 'error') errors.push(`cell ${i}: ${output.ename}: ${output.evalue}`);
                }
            }
            return errors;
        }"""
    )


@contextmanager
def notebook_run(
    root: Path, name: str, viewport: dict[str, int], screenshot: str, env: dict[str, str] | None = None
) -> Iterator[object]:
    """The page of notebook ``name`` (under ``root``) in JupyterLab in headless Chromium, every cell started.

    The whole page is kept as ``screenshot`` in ARTIFACTS when the block ends, to look at after a failure.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    with jupyter_lab(root, env=env) as url, chromium() as browser:
        page = browser.new_page(viewport=viewport)
        open_notebook(page, url, name)
        run_all_cells(page)
        yield page
        page.screenshot(path=ARTIFACTS / screenshot, full_page=True)


def run_all_cells(page) -> None:
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def wait_for_kernel_idle(page, timeout_ms: int = 120_000) -> None:
    """Wait until the kernel is idle and no cell is queued or running (no ``[*]`` prompt)."""
    page.wait_for_function(
        """() => {
            const panel = window.jupyterapp.shell.currentWidget;
            const kernel = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
            const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
            return kernel && kernel.status === 'idle' && !prompts.some(p => p.textContent.includes('*'));
        }""",
        timeout=timeout_ms,
    )


def pixels_unlike(page, png: bytes, background: tuple[int, int, int], tolerance: int = 24) -> tuple[int, int]:
    """(pixels differing from ``background``, all pixels) of a PNG screenshot, decoded by the browser itself."""
    return tuple(
        page.evaluate(
            """async ([data, background, tolerance]) => {
                const image = new Image();
                image.src = 'data:image/png;base64,' + data;
                await image.decode();
                const canvas = document.createElement('canvas');
                canvas.width = image.width;
                canvas.height = image.height;
                const context = canvas.getContext('2d');
                context.drawImage(image, 0, 0);
                const pixels = context.getImageData(0, 0, image.width, image.height).data;
                let differing = 0;
                for (let i = 0; i < pixels.length; i += 4) {
                    const distance = Math.abs(pixels[i] - background[0]) + Math.abs(pixels[i + 1] - background[1])
                        + Math.abs(pixels[i + 2] - background[2]);
                    if (distance > tolerance) differing++;
                }
                return [differing, pixels.length / 4];
            }""",
            [base64.b64encode(png).decode(), list(background), tolerance],
        )
    )


VIEWER_BACKGROUND = (0x11, 0x14, 0x18)  # the point cloud viewer's scene background


def canvas_screenshot(page, canvas) -> bytes:
    """A screenshot of the whole pixels inside ``canvas`` and nothing else.

    ``canvas.screenshot()`` rounds a box at a fractional position outward: the strip of page background it
    then takes in (480 white pixels under a 480-wide canvas) would pass for a drawing."""
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    left, top = math.ceil(box["x"]), math.ceil(box["y"])
    right, bottom = math.floor(box["x"] + box["width"]), math.floor(box["y"] + box["height"])
    return page.screenshot(clip={"x": left, "y": top, "width": right - left, "height": bottom - top})


def wait_for_drawing(page, canvas, least: int = 200, attempts: int = 360) -> tuple[int, int, bytes]:
    """Screenshot ``canvas`` until more than ``least`` pixels differ from the viewer's background (the first
    frame comes after the buffers); return (differing pixels, all pixels, last screenshot).

    Software WebGL on a machine whose cores another job keeps busy can take long over a first frame: the
    attempts (half a second apart, three minutes in all) are a safety net, not a speed requirement."""
    differing, total, shot = 0, 1, b""
    for _ in range(attempts):
        shot = canvas_screenshot(page, canvas)
        differing, total = pixels_unlike(page, shot, VIEWER_BACKGROUND)
        if differing > least:
            break
        page.wait_for_timeout(500)
    return differing, total, shot


def wait_for_every_cell_run(page, timeout_ms: int = 300_000) -> None:
    """Wait until every code cell of the open notebook has an execution count and the kernel is idle.

    Unlike :func:`wait_for_kernel_idle` this cannot pass in the moment before a run-all has queued its cells.
    """
    page.wait_for_function(
        """() => {
            const panel = window.jupyterapp.shell.currentWidget;
            const kernel = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
            const cells = panel.content.model.cells;
            for (let i = 0; i < cells.length; i++) {
                const cell = cells.get(i);
                if (cell.type === 'code' && !cell.executionCount) return false;
            }
            return kernel && kernel.status === 'idle';
        }""",
        timeout=timeout_ms,
    )
