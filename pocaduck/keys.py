"""What a label and a block id may be: the two keys every write and every query is made of.

Writers, readers and widgets all check keys here, so a key a writer accepts is
one a reader can ask for, and the same bad key gets the same error everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .errors import InvalidBlockIdError, InvalidLabelError

_UINT64_LIMIT = 2**64
_INT64_MIN, _INT64_LIMIT = -(2**63), 2**63


def check_label(label: object, name: str = "label") -> int:
    """Labels are integers in [0, 2**64); numpy integers (also 0-d arrays) are accepted, bools and floats are not.

    ``name`` is how the error names what was given (the argument, or "each of labels").

    >>> check_label(np.uint64(2**64 - 1)), check_label(np.array(7)[()]), check_label(np.array(7))
    (18446744073709551615, 7, 7)
    """
    if type(label) is not int:
        if isinstance(label, np.ndarray) and label.ndim == 0:  # what a reduction or ``[()]`` of an array gives
            label = label[()]
        if not isinstance(label, np.integer):
            raise InvalidLabelError(f"{name} must be an integer in [0, 2**64), got {type(label).__name__} {label!r}")
        label = int(label)
    if not 0 <= label < _UINT64_LIMIT:
        raise InvalidLabelError(f"{name} must be in [0, 2**64): {label} is outside the uint64 range")
    return label


def check_labels_asked(labels: object, name: str = "label") -> tuple[list[int], bool]:
    """The labels a reader was asked for as argument ``name``, checked, and whether one label was given.

    One label is an integer or a 0-d array; anything else iterable is several.

    >>> check_labels_asked(5), check_labels_asked(np.array(5)), check_labels_asked(np.array([2**64 - 1, 3], np.uint64))
    (([5], True), ([5], True), ([18446744073709551615, 3], False))
    """
    single = (
        type(labels) is int  # checked first: the ABC test below costs microseconds on get_points' hot path
        or not isinstance(labels, Iterable)
        or (isinstance(labels, np.ndarray) and labels.ndim == 0)
    )
    if single:
        return [check_label(labels, name)], True
    if isinstance(labels, np.ndarray) and labels.dtype == np.uint64 and labels.ndim == 1:
        return labels.tolist(), False  # every uint64 is a label: no check per label (1 ms for a 1,000-supervoxel body)
    each_of = f"each of {name}"
    return [check_label(each, each_of) for each in labels], False


def check_block_id(block_id: object) -> tuple[str | int, str]:
    """The block id in canonical form with its type name (``string`` or ``int64``).

    >>> check_block_id("0_1_2"), check_block_id(np.int32(4))
    (('0_1_2', 'string'), (4, 'int64'))
    """
    if type(block_id) is str:
        if not block_id.isascii():
            try:
                block_id.encode()
            except UnicodeEncodeError as error:  # a lone surrogate: Parquet would refuse it only at finalize()
                raise InvalidBlockIdError(
                    f"block id {block_id!r} is not valid UTF-8 text ({error.reason}); decode it properly or use "
                    f"an integer block id"
                ) from error
        return block_id, "string"
    if type(block_id) is int or isinstance(block_id, np.integer):
        value = int(block_id)
        if not _INT64_MIN <= value < _INT64_LIMIT:
            raise InvalidBlockIdError(f"integer block id {value} is outside the int64 range")
        return value, "int64"
    raise InvalidBlockIdError(f"block id must be a str or an int, got {type(block_id).__name__} {block_id!r}")


def check_labels(labels: object, count: int) -> np.ndarray:
    """``count`` labels, one per point, as a uint64 array; integer arrays of any width are accepted.

    >>> check_labels(np.array([5, 2**40], dtype=np.int64), 2).dtype
    dtype('uint64')
    >>> check_labels(np.array([-1]), 1)
    Traceback (most recent call last):
    pocaduck.errors.InvalidLabelError: labels must be in the uint64 range [0, 2**64); labels[0] is -1
    """
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu" or labels.ndim != 1:
        described = (
            f"a {labels.dtype} array of shape {labels.shape}"
            if isinstance(labels, np.ndarray)
            else type(labels).__name__
        )
        raise InvalidLabelError(f"labels must be a 1-D integer numpy array, one label per point, got {described}")
    if len(labels) != count:
        raise InvalidLabelError(f"labels has {len(labels)} entries for {count} points: give one label per point")
    if labels.dtype.kind == "i" and len(labels) and labels.min() < 0:
        first = int(np.flatnonzero(labels < 0)[0])
        raise InvalidLabelError(
            f"labels must be in the uint64 range [0, 2**64); labels[{first}] is {int(labels[first])}"
        )
    return labels.astype(np.uint64, copy=False)
