"""What the counts, sizes, seeds, timeouts and flags given to the public verbs may be: one check per kind.

Every verb checks its arguments here before it starts any work, so a bad value
is refused with the same :class:`~pocaduck.errors.InvalidArgumentError`
everywhere, naming the argument, the value given and what is expected, and
leaves nothing half done. Each check returns the value as a plain Python
``int``, ``float`` or ``bool``. Numpy integers are accepted (they come out of
arrays); a bool is refused where a number is expected (``workers=True`` is a
mistake, not one worker), and NaN is never a number here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import InvalidArgumentError
from .executor import local_cpus

_UINT64_LIMIT = 2**64
OUTPUTS = ("numpy", "arrow", "pandas")  # what a reader can return: ``reader.Output``


def _refuse(value: object, name: str, expected: str, meaning: str) -> InvalidArgumentError:
    hint = f" ({meaning})" if meaning else ""
    return InvalidArgumentError(f"{name} must be {expected}{hint}, got {type(value).__name__} {value!r}")


def _integer(value: object, name: str, low: int, limit: int | None, expected: str, meaning: str) -> int:
    # np.bool_ is no np.integer, but bool is an int: refuse it by name.
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise _refuse(value, name, expected, meaning)
    if not low <= value or (limit is not None and not value < limit):
        raise _refuse(value, name, expected, meaning)
    return int(value)


def positive_int(value: object, name: str, meaning: str = "") -> int:
    """An integer of at least 1: a count of workers, points, bytes or rows.

    >>> positive_int(np.int64(4), "workers")
    4
    >>> positive_int(0, "points_per_file", "points written per file")
    Traceback (most recent call last):
    pocaduck.errors.InvalidArgumentError: points_per_file must be a positive integer (points written per file), got int 0
    """
    return _integer(value, name, 1, None, "a positive integer", meaning)


def optional_positive_int(value: object, name: str, meaning: str = "") -> int | None:
    """None (the verb's default), or an integer of at least 1.

    >>> optional_positive_int(None, "workers"), optional_positive_int(2, "workers")
    (None, 2)
    """
    return None if value is None else _integer(value, name, 1, None, "a positive integer or None", meaning)


def non_negative_int(value: object, name: str, meaning: str = "") -> int:
    """An integer of at least 0: retries, a cache size.

    >>> non_negative_int(-1, "retries")
    Traceback (most recent call last):
    pocaduck.errors.InvalidArgumentError: retries must be an integer of at least 0, got int -1
    """
    return _integer(value, name, 0, None, "an integer of at least 0", meaning)


def optional_uint64(value: object, name: str, meaning: str = "") -> int | None:
    """None, or an integer in [0, 2**64): a seed that is hashed as 64 bits, a label.

    >>> optional_uint64(np.uint64(2**64 - 1), "seed")
    18446744073709551615
    """
    return (
        None if value is None else _integer(value, name, 0, _UINT64_LIMIT, "None or an integer in [0, 2**64)", meaning)
    )


def _number(value: object, name: str, low: float, strict: bool, expected: str, meaning: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise _refuse(value, name, expected, meaning)
    if not math.isfinite(value) or value < low or (strict and value == low):
        raise _refuse(value, name, expected, meaning)
    return float(value)


def optional_positive_number(value: object, name: str, meaning: str = "") -> float | None:
    """None, or a finite number above 0: a timeout in seconds.

    >>> optional_positive_number(float("nan"), "timeout", "seconds")
    Traceback (most recent call last):
    pocaduck.errors.InvalidArgumentError: timeout must be a positive finite number or None (seconds), got float nan
    """
    if value is None:
        return None
    return _number(value, name, 0, True, "a positive finite number or None", meaning)


def non_negative_number(value: object, name: str, meaning: str = "") -> float:
    """A finite number of at least 0: an interval in seconds, where 0 means every time.

    >>> non_negative_number(0, "report_interval")
    0.0
    """
    return _number(value, name, 0, False, "a finite number of at least 0", meaning)


def flag(value: object, name: str) -> bool:
    """True or False (numpy's too): a flag given anything else was probably meant for another argument.

    >>> flag(np.bool_(True), "dry_run")
    True
    >>> flag(None, "dry_run")
    Traceback (most recent call last):
    pocaduck.errors.InvalidArgumentError: dry_run must be True or False, got NoneType None
    """
    if not isinstance(value, bool | np.bool_):
        raise _refuse(value, name, "True or False", "")
    return bool(value)


def per_axis(value: object, name: str, kind: type[int] | type[float], *, positive: bool) -> tuple:
    """One finite value per axis (z, y, x), from three values or one for every axis; whole numbers for ``int``.

    >>> per_axis(2.0, "voxel_offset", int, positive=False), per_axis([8, 8, 33], "voxel_size", float, positive=True)
    ((2, 2, 2), (8.0, 8.0, 33.0))
    >>> per_axis((4, 0, 4), "block_shape", int, positive=True)
    Traceback (most recent call last):
    pocaduck.errors.InvalidArgumentError: block_shape must be 3 positive finite whole numbers in z, y, x order, or one for every axis, got tuple (4, 0, 4)
    """
    sign = "positive " if positive else ""
    numbers = "finite whole numbers" if kind is int else "finite numbers"
    expected = f"3 {sign}{numbers} in z, y, x order, or one for every axis"
    values = (value,) if np.isscalar(value) or isinstance(value, np.generic) else value
    if isinstance(value, str) or not isinstance(values, Sequence | np.ndarray) or len(values) not in (1, 3):
        raise _refuse(value, name, expected, "")
    checked = []
    for each in values:
        if isinstance(each, bool | np.bool_) or not isinstance(each, int | float | np.integer | np.floating):
            raise _refuse(value, name, expected, "")
        if not math.isfinite(each) or (kind is int and each != int(each)) or (positive and each <= 0):
            raise _refuse(value, name, expected, "")
        checked.append(kind(each))
    return tuple(checked * 3 if len(checked) == 1 else checked)


def sample_and_seed(sample: object, seed: object) -> tuple[int | None, int | None]:
    """What a read of label samples was asked for: ``sample`` points (None: all of them), picked by ``seed``.

    >>> sample_and_seed(5, None), sample_and_seed(None, None)
    ((5, None), (None, None))
    >>> sample_and_seed(None, 3)
    Traceback (most recent call last):
    pocaduck.errors.InvalidArgumentError: seed picks a sample: give sample=N with it
    """
    if sample is None and seed is not None:
        raise InvalidArgumentError("seed picks a sample: give sample=N with it")
    return optional_positive_int(sample, "sample", "how many points to return"), optional_uint64(seed, "seed")


def reader_settings(threads: object, cache_size: object) -> tuple[int, int]:
    """A reader's DuckDB threads (None: one per CPU) and how many labels' points it caches (0: none).

    >>> reader_settings(2, 0)
    (2, 0)
    """
    threads = optional_positive_int(threads, "threads", "DuckDB threads, None for one per CPU")
    return local_cpus() if threads is None else threads, non_negative_int(cache_size, "cache_size")


def sql_request(
    statement: object, params: object, output: object, timeout: object
) -> tuple[str, Sequence | None, str, float | None]:
    """A ``Query.sql`` call's statement (text), ``?`` parameters (a sequence or None), output and timeout (seconds).

    >>> sql_request("SELECT 1", (2,), "numpy", None)
    ('SELECT 1', (2,), 'numpy', None)
    """
    if not isinstance(statement, str):
        raise _refuse(statement, "statement", "a str", "one SELECT statement")
    if params is not None and (isinstance(params, str | bytes) or not isinstance(params, Sequence | np.ndarray)):
        raise _refuse(params, "params", "a sequence or None", "the values of the statement's ? parameters, in order")
    return statement, params, one_of(output, "output", OUTPUTS), optional_positive_number(timeout, "timeout", "seconds")


def one_of(value: object, name: str, options: Sequence[str]) -> str:
    """One of a few names: a mode, a format.

    >>> one_of("edges", "mode", ("all", "surface"))
    Traceback (most recent call last):
    pocaduck.errors.InvalidArgumentError: mode must be one of 'all', 'surface', got str 'edges'
    """
    if not isinstance(value, str) or value not in options:
        raise _refuse(value, name, "one of " + ", ".join(map(repr, options)), "")
    return value
