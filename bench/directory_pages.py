"""How small a store's label directory is on disk, and what each step of its page encoding gains.

    .venv/bin/python bench/directory_pages.py STORE [STORE ...] [--pages 200]

For the directory in force of each store: its format, its bytes against those
of the same tree in format 1 (pages stored as they are), and, on leaf pages
sampled evenly across it, the compression ratio to format 1's page of: zstd
(level 3, through pyarrow) on the page as stored; on the page split into
columns with labels as deltas; the same with each column's bytes shuffled; and
format 2's encoding (``_directory_pages.encode_leaf``: also each column in the
narrowest of 1, 2, 4 or 8 bytes, each row offset as its gap from where the
entry before ends), with its decoding time per page.
Nothing is written.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from pocaduck import open_store
from pocaduck._directory_pages import ENTRY, decode_leaf, encode_leaf
from pocaduck.label_directory import open_in_force

_ZSTD = pa.Codec("zstd", compression_level=3)


def by_column(entries: np.ndarray, shuffle: bool) -> bytes:
    """The entries column by column, each label as its difference from the one before, bytes shuffled or not."""
    labels = entries["label"]
    columns = [np.diff(labels, prepend=labels[:1]), *(np.ascontiguousarray(entries[n]) for n in ENTRY.names[1:])]
    if shuffle:
        return b"".join(c.view(np.uint8).reshape(-1, c.itemsize).T.tobytes() for c in columns)
    return b"".join(c.tobytes() for c in columns)


def sampled_pages(directory, wanted: int) -> list[np.ndarray]:
    """Up to ``wanted`` full leaf pages spread evenly over the directory, read with their CRCs checked."""
    leaves = directory._levels[-1]
    full = leaves.items // leaves.per_page
    keep = set(np.unique(np.linspace(0, max(full - 1, 0), wanted).astype(int)).tolist()) if full else set()
    pages, page = [], 0
    for chunk in directory.entries():
        for start in range(0, len(chunk), leaves.per_page):
            if page in keep and len(chunk) - start >= leaves.per_page:
                pages.append(chunk[start : start + leaves.per_page])
            page += 1
    return pages


def fixed_bytes(directory) -> int:
    """The bytes of the same tree in format 1: every item as it is, a CRC a page, the same top."""
    levels = directory._levels
    pages = sum(level.items * (ENTRY.itemsize if level.leaf else 8) + level.pages * 4 for level in levels)
    root = levels[0].pages * 8 if levels else 0
    return pages + root + directory.byte_parts()["table"] + 8 * len(levels) + 48


def report(store: str, wanted: int) -> str:
    directory = open_in_force(open_store(store).storage)
    if directory is None:
        raise SystemExit(f"{store} has no label directory: run `pocaduck consolidate {store}`")
    fixed = fixed_bytes(directory)
    line = (
        f"{store}: {directory.entry_count:,} entries, format {directory.format}, {directory.size:,} bytes "
        f"({fixed / directory.size:.1f}x smaller than format 1's {fixed:,})"
    )
    pages = sampled_pages(directory, wanted)
    if not pages:
        return line + "; no full leaf page to sample"
    raw = sum(page.nbytes for page in pages)
    sizes = {
        "zstd as stored": sum(len(_ZSTD.compress(page.tobytes(), asbytes=True)) for page in pages),
        "by column": sum(len(_ZSTD.compress(by_column(page, False), asbytes=True)) for page in pages),
        "+ shuffled": sum(len(_ZSTD.compress(by_column(page, True), asbytes=True)) for page in pages),
    }
    encoded = [encode_leaf(page) for page in pages]
    sizes["+ narrowed, row gaps (format 2)"] = sum(map(len, encoded))
    started = time.perf_counter()
    for stored, page in zip(encoded, pages, strict=True):
        decode_leaf(stored, len(page))
    decode_us = (time.perf_counter() - started) / len(pages) * 1e6
    ratios = ", ".join(f"{name} {raw / size:.2f}x" for name, size in sizes.items())
    return f"{line}; {len(pages)} leaf pages: {ratios}; format 2 decodes a page in {decode_us:.0f} us"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stores", nargs="+")
    parser.add_argument("--pages", type=int, default=200)
    args = parser.parse_args()
    for store in args.stores:
        print(report(store, args.pages))


if __name__ == "__main__":
    main()
