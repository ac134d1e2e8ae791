"""cann layer: a plain `docker run` has exactly the environment that CANN's set_env.sh scripts give."""

from __future__ import annotations

from typing import Any

import pytest

from ascend_stack import render
from ascend_stack.verify import RUNTIME_ONLY_VARIABLES, Expected, env_problems, split_search_path

CLEAN_SHELL = "env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bash -c"
DRIVER_DIRS = render.DRIVER_LIBS.split(":")


def _env(host: Any, script: str) -> dict[str, str]:
    out = host.run(f"{CLEAN_SHELL} '{script}env -0'")
    assert out.rc == 0, f"sourcing set_env.sh failed: {out.stderr.strip().splitlines()[-1:]}"
    return dict(item.split("=", 1) for item in out.stdout.split("\0") if "=" in item)


@pytest.fixture(scope="module")
def set_env(host: Any, expected: Expected) -> tuple[dict[str, str], dict[str, str]]:
    """``env`` of a clean shell, and of the same shell after sourcing the toolkit's and NNAL's set_env.sh."""
    if expected.target is None:
        pytest.skip("a base image has no CANN")
    sourcing = "".join(f"source {' '.join(script)} && " for script in render.cann_env_sources(expected.target))
    return _env(host, ""), _env(host, sourcing)


def test_plain_run_has_exactly_the_set_env_variables(
    environment: dict[str, str], set_env: tuple[dict[str, str], dict[str, str]]
) -> None:
    clean, sourced = set_env
    problems = env_problems(environment, clean, sourced, DRIVER_DIRS)
    assert not problems, "image ENV differs from set_env.sh: " + "; ".join(problems)


def test_search_paths_have_no_empty_entry(environment: dict[str, str]) -> None:
    """An empty entry in PATH/LD_LIBRARY_PATH/PYTHONPATH means "the working directory"."""
    bad = [name for name in ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH") if "" in environment.get(name, "x").split(":")]
    assert not bad, f"{', '.join(bad)} has an empty entry: every process would search its working directory"


def test_driver_libraries_are_on_the_library_path(environment: dict[str, str], expected: Expected) -> None:
    if expected.target is None:
        pytest.skip("a base image has no CANN")
    have = split_search_path(environment.get("LD_LIBRARY_PATH"))
    missing = [d for d in DRIVER_DIRS if d not in have]
    assert not missing, f"LD_LIBRARY_PATH lacks the host driver's {', '.join(missing)}"


def test_no_runtime_only_variable_is_baked_in(image_env: dict[str, str]) -> None:
    """Device selection belongs to `docker run` (or Ascend Docker Runtime), never to the image."""
    found = [f"{n}={image_env[n]}" for n in RUNTIME_ONLY_VARIABLES if n in image_env]
    assert not found, f"set at run time, never in an image: {', '.join(found)}"
