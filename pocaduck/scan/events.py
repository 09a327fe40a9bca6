"""The event stream and the tqdm display, for code that imports them from here: they live in :mod:`pocaduck.progress`."""

from ..progress import EventLog, TqdmProgress

__all__ = ["EventLog", "TqdmProgress"]
