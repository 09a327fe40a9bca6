from __future__ import annotations

import signal
from pathlib import Path

import pytest
from _original import install_original, run_original

# A shell's background job (`make test &`) ignores SIGINT, and every process it starts inherits that:
# the tests that press Ctrl-C in a child would see it ignored. A Python handler here is reset to the
# default in each child at exec, so children receive SIGINT as they would from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def store(tmp_path):
    """A fresh store folder path (created by the first Ingestor)."""
    return str(tmp_path / "store")


@pytest.fixture(scope="session")
def original_package(tmp_path_factory):
    """pocaduck==0.1.1 from the registry, installed into a folder of its own (skips without the registry, not in CI)."""
    return install_original(tmp_path_factory.mktemp("pocaduck_0_1_1"))


@pytest.fixture(scope="session")
def original_stores(original_package, tmp_path_factory):
    """Stores written by the original, made once per (dtype, consolidations); copy one before changing it."""
    made: dict[tuple[str, int], tuple[Path, dict]] = {}

    def make(dtype: str = "int64", consolidations: int = 1) -> tuple[Path, dict]:
        if (dtype, consolidations) not in made:
            store = tmp_path_factory.mktemp("original") / "store"
            made[dtype, consolidations] = (store, run_original(original_package, "write", store, dtype, consolidations))
        return made[dtype, consolidations]

    return make
