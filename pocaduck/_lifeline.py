"""Worker processes that end with the process that started them, so a killed parent leaves no orphans.

With forkserver (or spawn) a worker's OS parent is the fork server, not the
process that wants its results, so each worker watches that process by pid.
"""

from __future__ import annotations

import os
import select
import threading


def exit_with(parent_pid: int) -> None:
    """End this process as soon as ``parent_pid`` ends; a process initializer (call it first thing).

    It waits on a pidfd in a daemon thread (Linux 5.3+): no polling. Where
    pidfds do not exist it does nothing.
    """
    if not hasattr(os, "pidfd_open"):
        return
    try:
        parent = os.pidfd_open(parent_pid)
    except ProcessLookupError:  # gone before we started
        os._exit(1)

    def watch() -> None:
        select.select([parent], [], [])  # readable once the process has ended
        os._exit(1)

    threading.Thread(target=watch, name="pocaduck-lifeline", daemon=True).start()
