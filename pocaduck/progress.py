"""Progress events: what a worker reports while it ingests, for callbacks, tqdm bars and notebook panels."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

WorkerState = Literal["queued", "running", "finished", "failed"]


@dataclass(frozen=True)
class ProgressEvent:
    """One worker's state at one moment. Events of a worker are cumulative, not deltas.

    >>> ProgressEvent("0", "running", blocks_done=2, blocks_total=8, points_written=1000, elapsed=0.5).points_per_second
    2000.0
    """

    worker_id: str
    state: WorkerState
    blocks_done: int = 0
    blocks_total: int = 0
    labels_written: int = 0
    points_written: int = 0
    files_written: int = 0
    bytes_written: int = 0
    elapsed: float = 0.0
    error: str | None = None

    @property
    def points_per_second(self) -> float:
        return self.points_written / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def blocks_per_second(self) -> float:
        return self.blocks_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def fraction_done(self) -> float:
        return self.blocks_done / self.blocks_total if self.blocks_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
