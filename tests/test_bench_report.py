"""The bench scripts rewrite their own section of docs/benchmarks.md and nothing else (bench/_report.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import _report  # noqa: E402

DOCUMENT = (
    "# Benchmarks\r\n\nTargets, written by hand: ≥ 50 M voxels/s.\n\n"
    "<!-- bench_scan:begin -->\n| old | table |\n|---|---|\n<!-- bench_scan:end -->\n\n"
    "As of November: **met**.  \n"
    "<!-- bench_store:begin -->\nstore table\n<!-- bench_store:end -->\ntrailing prose, no newline"
)


def test_a_run_replaces_its_section_and_keeps_every_other_byte(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_bytes(DOCUMENT.encode())

    _report.write_section(doc, "bench_scan", "| new | table |\n|---|---|\n\nHow it was measured: today.\n")

    head, tail = DOCUMENT.split("| old | table |\n|---|---|\n")
    expected = head + "| new | table |\n|---|---|\n\nHow it was measured: today.\n" + tail
    assert doc.read_bytes() == expected.encode()


def test_a_second_run_gives_the_same_document_as_one_run(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_bytes(DOCUMENT.encode())
    _report.write_section(doc, "bench_store", "first run")
    _report.write_section(doc, "bench_store", "second run")
    once = tmp_path / "once.md"
    once.write_bytes(DOCUMENT.encode())
    _report.write_section(once, "bench_store", "second run")
    assert doc.read_bytes() == once.read_bytes()


@pytest.mark.parametrize("marker", ["<!-- bench_scan:begin -->\n", "<!-- bench_scan:end -->\n"])
def test_a_missing_marker_names_the_marker_and_the_file_and_writes_nothing(tmp_path, marker):
    doc = tmp_path / "benchmarks.md"
    doc.write_bytes(DOCUMENT.replace(marker, "").encode())

    with pytest.raises(_report.SectionMarkerError) as raised:
        _report.write_section(doc, "bench_scan", "new table")

    assert marker.strip() in str(raised.value)
    assert str(doc) in str(raised.value)
    assert doc.read_bytes() == DOCUMENT.replace(marker, "").encode()
    assert list(tmp_path.iterdir()) == [doc]


def test_markers_twice_are_refused_rather_than_guessed(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_bytes((DOCUMENT + "\n<!-- bench_scan:begin -->\n").encode())
    with pytest.raises(_report.SectionMarkerError, match=r"2 <!-- bench_scan:begin -->"):
        _report.write_section(doc, "bench_scan", "new table")


def test_quick_and_no_docs_runs_leave_the_docs_alone(tmp_path):
    missing = tmp_path / "no-such-doc.md"  # would raise if the run meant to write it
    quick = argparse.Namespace(no_docs=False)
    assert not _report.docs_wanted(quick, "bench_scan", exploratory="--quick", files=(missing,))
    assert not _report.docs_wanted(argparse.Namespace(no_docs=True), "bench_scan", files=(missing,))


def test_a_run_checks_its_markers_before_it_measures(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_bytes(DOCUMENT.encode())
    with pytest.raises(_report.SectionMarkerError, match="bench_widgets"):
        _report.docs_wanted(argparse.Namespace(no_docs=False), "bench_widgets", files=(doc,))


@pytest.mark.parametrize("script", sorted(path.stem for path in BENCH.glob("bench_*.py")))
def test_every_bench_script_has_its_section_in_the_docs(script):
    files = (_report.DOCS, _report.README) if script == "bench_store" else (_report.DOCS,)
    assert _report.docs_wanted(argparse.Namespace(no_docs=False), script, files=files)
