"""Fixtures for the stage runner's tests: a fake machine built from real files.

Every test runs with a private sysroot (no /dev/davinci*, no stack.json unless a test writes one),
a private MINDSPEED_LLM_HOME and none of the cluster launchers' variables, so the host never leaks in.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

ENTRYPOINTS = Path(__file__).resolve().parents[2] / "entrypoints"
if str(ENTRYPOINTS) not in sys.path:  # the tests also run from a checkout without `pip install -e ./entrypoints`
    sys.path.insert(0, str(ENTRYPOINTS))

import pytest  # noqa: E402
from ascend_llm import cli  # noqa: E402
from stagekit import LAUNCHER_VARS, World, run_cli  # noqa: E402


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean machine: empty sysroot, MindSpeed-LLM home, no launcher variables, plenty of disk."""
    root = tmp_path_factory.mktemp("sysroot")
    home = tmp_path_factory.mktemp("mindspeed_llm")
    monkeypatch.setenv("ASCEND_LLM_SYSROOT", str(root))
    monkeypatch.setenv("MINDSPEED_LLM_HOME", str(home))
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    return root


@pytest.fixture
def sysroot(isolated: Path) -> Path:
    return isolated


@pytest.fixture
def roomy_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend every volume has 100 TB free (checkpoint-size rules are tested separately)."""
    usage = shutil.disk_usage("/")
    monkeypatch.setattr("ascend_llm.preflight.shutil.disk_usage", lambda path: usage._replace(free=100 * 1024**4))


@pytest.fixture
def ascend(capsys: pytest.CaptureFixture):
    """``ascend("sft", "--model", ...)`` -> Result."""
    return lambda *argv: run_cli(capsys, *argv)


# -- real files -----------------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path: Path) -> World:
    """The seed's Qwen3-14B directories, built from stand-ins (tests/entrypoints/stagekit.py)."""
    return World(tmp_path)


@pytest.fixture
def script_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A subprocess environment with ascend_llm importable."""
    env = dict(os.environ)
    src = str(Path(cli.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    yield env
