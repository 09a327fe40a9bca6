"""How well the leaf pages of a store's label directory would compress: a measurement for a future format.

    .venv/bin/python bench/directory_pages.py STORE [--pages 200]

Samples leaf pages evenly across the directory in force and prints the
compression ratio of zlib (level 6) and zstd (level 3, through pyarrow: no new
dependency) on the page as stored, and of zstd on the page split into columns
with labels as deltas, with zstd's decompression time per page. Nothing is
written.
"""

from __future__ import annotations

import argparse
import os
import time
import zlib

import numpy as np
import pyarrow as pa

from pocaduck import open_store
from pocaduck.label_directory import ENTRY, PAGE_BYTES, read_pointer


def as_columns(page: bytes) -> bytes:
    """The page's entries column by column, each label as its difference from the one before."""
    entries = np.frombuffer(page, ENTRY)
    labels = entries["label"]
    deltas = np.diff(labels, prepend=labels[:1])
    return deltas.tobytes() + b"".join(np.ascontiguousarray(entries[name]).tobytes() for name in ENTRY.names[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("--pages", type=int, default=200)
    args = parser.parse_args()
    pointer = read_pointer(open_store(args.store).storage)
    if pointer is None:
        raise SystemExit(f"{args.store} has no label directory: run `pocaduck consolidate {args.store}`")
    path = os.path.join(args.store, "index_versions", pointer["build"], "label_directory.bin")
    per_page = (PAGE_BYTES - 4) // ENTRY.itemsize
    stride = per_page * ENTRY.itemsize + 4  # a page's entries and its CRC-32
    full_pages = pointer["entries"] // per_page
    zstd = pa.Codec("zstd", compression_level=3)
    raw = deflated = zstandard = columnar = 0
    decompress_seconds = 0.0
    sampled = np.unique(np.linspace(0, max(full_pages - 1, 0), args.pages).astype(int)) if full_pages else []
    with open(path, "rb") as directory:
        for page_number in sampled:
            directory.seek(page_number * stride)
            page = directory.read(per_page * ENTRY.itemsize)
            raw += len(page)
            deflated += len(zlib.compress(page, 6))
            compressed = zstd.compress(page, asbytes=True)
            zstandard += len(compressed)
            started = time.perf_counter()
            zstd.decompress(compressed, len(page), asbytes=True)
            decompress_seconds += time.perf_counter() - started
            columnar += len(zstd.compress(as_columns(page), asbytes=True))
    if not raw:
        raise SystemExit("the directory has no full leaf page to sample")
    print(
        f"{pointer['entries']:,} entries, directory {pointer['size'] / 1e6:.1f} MB; {len(sampled)} leaf pages: "
        f"zlib-6 {raw / deflated:.2f}×, zstd-3 {raw / zstandard:.2f}×, zstd-3 by column with label deltas "
        f"{raw / columnar:.2f}×; zstd decompresses a page in {decompress_seconds / len(sampled) * 1e6:.0f} µs"
    )


if __name__ == "__main__":
    main()
