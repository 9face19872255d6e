"""Slow checks (full-size runs) are marked ``slow`` and run only with DPM_JAX_SLOW=1."""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DPM_JAX_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set DPM_JAX_SLOW=1 to run (minutes on a CPU)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
