"""Shared fixtures: the repository's matrix as raw data, and access to a Docker engine.

Tests that need an engine use the ``docker_client`` fixture: without an engine they skip with one
reason, except under ``CI=true`` where a missing engine is a failure (CI must start one).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chain import chain  # noqa: F401  (the session fixture that builds the integration test image)

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow (arm64 emulation)")
    parser.addoption(
        "--real-sources",
        metavar="DIR",
        default=None,
        help="build the test row from the real upstream repositories in DIR (DIR/mindspeed, mindspeed-llm, "
        "megatron, apex, nvidia-apex: clones or mirrors, shallow ones included) at the seed row's pinned "
        "commits, and check the image (tests/test_real_sources.py)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def megatron_core() -> Path:
    """PyPI's megatron-core 0.8.0 wheel: the real megatron/core of the Megatron stand-in (tests/fakes/sources.py).

    Cached under build/test-cache/ so that local runs download it once.
    """
    from fakes.sources import megatron_core_wheel

    return megatron_core_wheel(REPO / "build" / "test-cache")


@pytest.fixture(scope="session")
def matrix_raw() -> dict[str, Any]:
    return yaml.safe_load((REPO / "matrix.yaml").read_text())


@pytest.fixture
def raw(matrix_raw: dict[str, Any]) -> dict[str, Any]:
    """A private deep copy of matrix.yaml's data for a test to break."""
    return copy.deepcopy(matrix_raw)


def _engine_unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}: .ci/run must start a Docker engine")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A Docker SDK client for a running engine (skip, or fail under CI=true, without one)."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # any failure to reach the engine means: no engine here
        _engine_unavailable(f"no Docker engine answers ({type(exc).__name__})")
    yield client
    client.close()
