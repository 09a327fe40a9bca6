"""The executor every verb runs its tasks on: real worker processes and threads, as a scan, compaction or migration uses them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading

import _children
import pytest

from pocaduck import ProgressEvent
from pocaduck.executor import Failure, Task, TaskOutcome, TaskStopped, run_tasks

SAFETY_SECONDS = 120  # only against a hang


def die_once(marker: str, report, should_stop) -> TaskOutcome:
    """A task whose process is killed the first time it runs (the marker remembers), and that succeeds after."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    report(ProgressEvent(marker, "running", blocks_total=1))
    return TaskOutcome(ProgressEvent(marker, "finished", blocks_done=1, blocks_total=1), os.getpid())


def count_until_stopped(gate: str, report, should_stop) -> TaskOutcome:
    """A task of many units that reports each one, and stops between units once asked."""
    for done in range(1, 10_000):
        if should_stop():
            raise TaskStopped("asked to stop")
        report(ProgressEvent(gate, "running", blocks_done=done, blocks_total=10_000))
        threading.Event().wait(0.01)  # one unit of work
    return TaskOutcome(ProgressEvent(gate, "finished", blocks_done=10_000, blocks_total=10_000))


def tasks_of(function, tmp_path, count: int = 2) -> list[Task]:
    return [
        Task(str(tmp_path / f"task-{number}"), 1, function, str(tmp_path / f"task-{number}")) for number in range(count)
    ]


def test_a_worker_process_that_dies_is_run_again_when_retries_allow(tmp_path):
    events = []
    results = run_tasks(tasks_of(die_once, tmp_path), workers=2, sink=events.append, retries=1, pool="processes")
    assert all(isinstance(result, TaskOutcome) for result in results.values())
    assert os.getpid() not in {result.value for result in results.values()}, "the tasks ran in worker processes"
    for worker_id in results:
        states = [event.state for event in events if event.worker_id == worker_id]
        assert states == ["queued", "queued", "running", "finished"]


def test_a_worker_process_that_dies_fails_its_task_and_says_how(tmp_path):
    events = []
    results = run_tasks(tasks_of(die_once, tmp_path), workers=2, sink=events.append, pool="processes")
    for failure in results.values():
        assert isinstance(failure, Failure) and not failure.never_started and failure.error is None
        assert failure.text == "its process died (exit code -9, SIGKILL) with 0 of its 1 done"
    assert [event.error for event in events if event.state == "failed"] == [failure.text] * 2


@pytest.mark.parametrize("pool", ["processes", "threads"])
def test_a_stop_ends_running_tasks_at_their_next_check_and_starts_no_more(tmp_path, pool):
    stop = threading.Event()
    events = []

    def stop_once_both_run(event):
        events.append(event)
        if event.state == "running" and len({e.worker_id for e in events if e.state == "running"}) == 2:
            stop.set()

    tasks = tasks_of(count_until_stopped, tmp_path, count=3)
    results = run_tasks(tasks, workers=2, sink=stop_once_both_run, stop=stop, pool=pool)
    assert all(isinstance(result, Failure) and result.cancelled for result in results.values())
    finals = {event.worker_id: event for event in events if event.state == "failed"}
    assert {event.error for event in finals.values()} == {"cancelled"}
    assert finals[tasks[2].worker_id].blocks_done == 0, "the third task never started"
    assert all(finals[task.worker_id].blocks_done < 10_000 for task in tasks[:2])


def test_a_scan_from_a_script_without_the_main_guard_says_to_add_it(tmp_path):
    """Scan workers are processes, which import the main script: without the guard they die before they start."""
    script = tmp_path / "scan_it.py"
    store = tmp_path / "store"
    script.write_text(
        textwrap.dedent(f"""
            from pocaduck import make_demo_volume, scan_volume
            scan_volume(make_demo_volume(16, seed=1), {str(store)!r}, block_shape=8, workers=2, retries=1)
        """)
    )
    child = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=SAFETY_SECONDS, cwd=tmp_path
    )
    assert child.returncode != 0
    (error,) = [line for line in child.stderr.splitlines() if line.startswith("pocaduck.errors.ScanWorkerError")]
    assert re.fullmatch(
        r"pocaduck\.errors\.ScanWorkerError: scan worker 'scan-(0|1)' failed before its first block: its process "
        r"died \(exit code 1\) with 0 of its 4 done; it never started: if this runs from a script, call it under "
        r'`if __name__ == "__main__":` \(worker processes import the main script\) '
        r"\(workers \['scan-(0|1)'\] failed too\)",
        error,
    ), error


def test_a_killed_parent_leaves_no_worker_process_behind():
    child = _children.start("executor_processes", "2")
    try:
        workers = [int(pid) for pid in _children.read_until(child, lambda lines: len(lines) == 2)]
    finally:
        child.kill()
        child.wait()
    assert _children.wait_until_ended(workers) == []
