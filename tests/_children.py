"""Child processes that tests limit, hold half-way or kill: ``python _children.py NAME ARG...`` runs ``NAME(*ARGS)``.

Each body tells the test where it stands by printing lines, so the test waits
for a line, never for time.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
from collections.abc import Callable

import numpy as np

SAFETY_SECONDS = 120  # only against a hang: every wait ends on an event long before


def start(*args: str) -> subprocess.Popen:
    """Run one of this module's bodies in a new Python process, its stdout a pipe the test reads."""
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
    )


def say(line: object) -> None:
    """Print one line in one write: processes sharing the pipe never interleave inside a line
    (``print`` writes the text and its newline separately)."""
    os.write(sys.stdout.fileno(), f"{line}\n".encode())


def read_until(process: subprocess.Popen, enough: Callable[[list[str]], bool]) -> list[str]:
    """The whole lines ``process`` printed, once they are ``enough``; fails if it stops printing first."""
    text = b""
    while not enough(text.decode().splitlines()[: text.count(b"\n")]):
        ready, _, _ = select.select([process.stdout], [], [], SAFETY_SECONDS)
        chunk = os.read(process.stdout.fileno(), 4096) if ready else b""
        if not chunk:
            raise AssertionError(f"the child process printed only {text!r} and then stopped")
        text += chunk
    return text.decode().splitlines()[: text.count(b"\n")]


def wait_until_ended(pids: list[int]) -> list[int]:
    """Wait for the processes to end (their pidfds become readable); return those still alive at the safety deadline."""
    watched = {}
    for pid in pids:
        try:
            watched[os.pidfd_open(pid)] = pid
        except ProcessLookupError:  # already gone
            continue
    try:
        while watched:
            ended, _, _ = select.select(list(watched), [], [], SAFETY_SECONDS)
            if not ended:
                break
            for handle in ended:
                os.close(handle)
                del watched[handle]
        return sorted(watched.values())
    finally:
        for handle in watched:
            os.close(handle)


def under_file_size_limit(verb: str, store: str, limit: str) -> None:
    """Run ``verb`` on ``store`` as on a nearly full disk: no file may grow past ``limit`` bytes; print the outcome."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    from pocaduck import compact, consolidate

    try:
        consolidate(store) if verb == "consolidate" else compact(store, workers=1)
        outcome = {"type": None}
    except Exception as error:
        outcome = {"type": type(error).__name__, "message": str(error)}
    say(json.dumps(outcome))


def build_and_wait(store: str) -> None:
    """Build a unified index, then hold the build open (unpublished) until stdin closes or we are killed."""
    from pocaduck import open_store
    from pocaduck.consolidate import UnifiedIndexBuild

    opened = open_store(store)
    with UnifiedIndexBuild(opened) as build:
        build.fill(opened.schema, opened.worker_states()[0], None)
        say(os.path.basename(build.path))
        sys.stdin.read()


def blocking_task(argument: object, report: object, should_stop: object) -> None:
    """An executor task that never ends, once it has printed its process id."""
    say(os.getpid())
    signal.pause()


def executor_processes(workers: str) -> None:
    """Run never-ending tasks in the executor's worker processes."""
    from pocaduck.executor import Task, run_tasks

    tasks = [Task(str(number), 1, blocking_task) for number in range(int(workers))]
    run_tasks(tasks, workers=int(workers), sink=lambda event: None, pool="processes")


def compact_until_interrupted(store: str) -> None:
    """Compact; after the first shard, hold the run until Ctrl-C (SIGINT) arrives, and say how it ended."""
    from pocaduck import compact

    def hold_after_the_first_shard(event: object) -> None:
        if event.state == "finished":
            say("finished")
            signal.pause()  # Ctrl-C raises KeyboardInterrupt here, in the thread that runs the compaction

    try:
        compact(store, workers=2, points_per_file=200, progress=hold_after_the_first_shard)
        say("compacted")
    except KeyboardInterrupt:
        say("interrupted")


class BlockingVolume:
    """A label volume whose reads never end, once the reading process has printed its id."""

    shape = (8, 8, 8)
    dtype = np.dtype("uint8")

    def __getitem__(self, box: object) -> np.ndarray:
        say(os.getpid())
        signal.pause()
        return np.zeros((1, 1, 1), self.dtype)


def scan(store: str, workers: str) -> None:
    """Scan a volume whose reads never end, with local worker processes."""
    from pocaduck import scan_volume

    scan_volume(BlockingVolume(), store, block_shape=4, workers=int(workers))


def export_then_hang(store: str, out: str, tasks: str) -> None:
    """Export with one worker, printing each finished task; after ``tasks`` of them, stop half-way for good."""
    from pocaduck import export_neuroglancer

    def report(event) -> None:
        if event.state == "finished":
            say(event.worker_id)
            if len(finished) + 1 >= int(tasks):
                signal.pause()
            finished.append(event.worker_id)

    finished: list[str] = []
    export_neuroglancer(store, out, workers=1, progress=report, shard_bytes=4096, points_per_cell=200)


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
