"""The stage runner runs on the image's Python, which may be as old as 3.8."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest
from ascend_llm import cli

PACKAGE = Path(cli.__file__).resolve().parent


def has_annotations(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = [*node.args.args, *node.args.kwonlyargs, node.args.vararg, node.args.kwarg]
            if node.returns is not None or any(a is not None and a.annotation is not None for a in args):
                return True
    return False


def test_every_module_parses_with_the_python_3_8_grammar() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path), feature_version=(3, 8))
        if has_annotations(tree):
            assert "from __future__ import annotations" in source, (
                f"{path.name}: annotations like list[str] or X | None need the __future__ import on 3.8"
            )


def python38_with_yaml() -> str | None:
    for candidate in ("python3.8", str(Path.home() / ".pyenv/versions/3.8.18/bin/python3.8")):
        exe = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if exe and subprocess.run([exe, "-c", "import yaml"], capture_output=True).returncode == 0:
            return exe
    return None


def test_dry_runs_on_python_3_8(world, tmp_path: Path, script_env) -> None:
    exe = python38_with_yaml()
    if exe is None:
        pytest.skip("no python3.8 with PyYAML on this machine")
    argv = [
        "-m",
        "ascend_llm",
        "convert",
        "hf2mcore",
        "--model",
        "qwen3-14b",
        "--load",
        str(world.hf),
        "--save",
        str(tmp_path / "out"),
        "--dry-run",
    ]
    done = subprocess.run([exe, *argv], capture_output=True, text=True, env=script_env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--target-tensor-parallel-size 8" in done.stdout
    for stage in ("convert", "sft", "evaluate", "check"):
        assert (
            subprocess.run(
                [exe, "-m", "ascend_llm", stage, "--help"], capture_output=True, env=script_env, timeout=60
            ).returncode
            == 0
        )
