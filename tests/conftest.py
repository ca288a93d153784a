import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Decoded-image caches go to a per-session temp dir, never the user's cache."""
    monkeypatch.setenv("DEEPSTDP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "tiny-imagenet-200" / "wnids.txt").exists():
        pytest.skip("../shared/data/tiny-imagenet-200 is not beside the repository")
    return SHARED_DATA


def pytest_configure(config):
    os.environ.setdefault("NUMBA_NUM_THREADS", "2")
