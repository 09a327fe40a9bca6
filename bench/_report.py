"""What every bench script does with its Markdown at the end of a run: print it, save it, publish it.

Each script owns one section of ``docs/benchmarks.md`` between two markers,
``<!-- bench_store:begin -->`` and ``<!-- bench_store:end -->`` for
``bench_store.py``. A run replaces what lies between its markers and leaves
every other byte of the file alone, so the prose around the sections
(targets, explanations) is written by hand and survives the runs.

A run that does not measure the published sizes (``--quick``, ``--no-docs``)
leaves the docs untouched; its Markdown still goes to stdout and
``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
DOCS = REPO / "docs" / "benchmarks.md"
README = REPO / "README.md"


class SectionMarkerError(Exception):
    """A document lacks the markers of the section a run should replace, or has them twice."""


def markers(section: str) -> tuple[str, str]:
    return f"<!-- {section}:begin -->", f"<!-- {section}:end -->"


def replace_section(document: str, section: str, body: str, source: str) -> str:
    """``document`` with what stands between the markers of ``section`` replaced by ``body``.

    >>> replace_section("a\\n<!-- t:begin -->\\nold\\n<!-- t:end -->\\nb\\n", "t", "new", "doc.md")
    'a\\n<!-- t:begin -->\\nnew\\n<!-- t:end -->\\nb\\n'
    """
    begin, end = markers(section)
    for marker in (begin, end):
        found = document.count(marker)
        if found != 1:
            raise SectionMarkerError(
                f"{source} has {'no' if found == 0 else found} {marker} (expected one); put {begin} and {end} "
                f"once each around the section that {section}.py writes. Nothing was written."
            )
        if marker in body:
            raise SectionMarkerError(f"the new text of section {section} contains its own marker {marker}")
    start, stop = document.index(begin) + len(begin), document.index(end)
    if stop < start:
        raise SectionMarkerError(f"{source} has {end} before {begin}. Nothing was written.")
    return document[:start] + "\n" + body.strip("\n") + "\n" + document[stop:]


def write_section(path: Path, section: str, body: str) -> None:
    """Replace ``section`` of the file at ``path``; the file is replaced whole, so a crash cannot leave half of it."""
    document = path.read_bytes().decode("utf-8")
    updated = replace_section(document, section, body, str(path))
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_bytes(updated.encode("utf-8"))
    os.replace(staging, path)


def add_docs_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-docs",
        action="store_true",
        help="leave docs/benchmarks.md alone (an exploratory run; results/ still gets it)",
    )


def docs_wanted(
    args: argparse.Namespace, section: str, exploratory: str | None = None, files: tuple[Path, ...] = (DOCS,)
) -> bool:
    """Whether this run rewrites its section: not with ``--no-docs``, nor when ``exploratory`` says why not.

    Checks the markers before the run starts, so that a run of many minutes does not fail at its end.
    """
    reason = "--no-docs" if args.no_docs else exploratory
    if reason:
        print(f"{section}: {reason}, docs/benchmarks.md is left as it is", file=sys.stderr)
        return False
    for path in files:
        replace_section(path.read_bytes().decode("utf-8"), section, "", str(path))
    return True


def engine_commit() -> str:
    """The commit measured, ``-dirty`` when the engine or the benchmarks had uncommitted changes."""

    def git(*arguments: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *arguments], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--", "pocaduck", "bench", "pyproject.toml") else "")


def how_measured(started: float, details: str = "") -> str:
    """One line on when, on what and with which command a run measured; ``started`` is its ``time.perf_counter()``."""
    command = shlex.join(["python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
    versions = ", ".join(f"{name} {version(name)}" for name in ("duckdb", "pyarrow", "numpy"))
    return (
        f"How it was measured: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, pocaduck at {engine_commit()}; "
        f"{versions}, Python {platform.python_version()}; {os.cpu_count()} CPUs ({platform.machine()}); "
        f"`{command}`, {(time.perf_counter() - started) / 60:.1f} min{'; ' + details if details else ''}."
    )


def publish(section: str, text: str, raw: Any, docs: bool) -> None:
    """Print ``text``, save it and ``raw`` as ``bench/results/NAME.md`` / ``.json``, and write it into the docs.

    NAME is ``section`` without its ``bench_`` prefix: ``bench_store`` saves ``store.md``.
    """
    print(text)
    name = section.removeprefix("bench_")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(raw, indent=1))
    if docs:
        write_section(DOCS, section, text)
        print(f"{section}: wrote its section of {DOCS.relative_to(REPO)}", file=sys.stderr)
