"""Invoke tasks: a thin shell over the ``ascend_stack`` library. Run ``invoke --list``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from invoke import Exit, task

from ascend_stack import commands
from ascend_stack.errors import UserError

T = TypeVar("T")

CHOICES = {
    "cann": "matrix row by CANN version, any case, e.g. 8.1.RC1 (see 'invoke matrix')",
    "torch": "torch variant of the row (default: the row's default)",
    "arch": "aarch64 or x86_64 (default: this host's)",
    "os": "ubuntu22.04 (default), ubuntu20.04, openeuler22.03, debian-bookworm",
    "chip": "910b (Atlas A2, default) or A3 (Atlas A3)",
    "matrix": "the matrix file (default: matrix.yaml next to tasks.py)",
}


def _run(fn: Callable[[], T]) -> T:
    """Bad input ends the task with one line on stderr and exit code 2, never a traceback."""
    try:
        return fn()
    except UserError as err:
        raise Exit(f"error: {err}", code=err.exit_code) from None


def _matrix_path(matrix: str | None) -> Path:
    return Path(matrix) if matrix else commands.DEFAULT_MATRIX


@task(
    auto_shortflags=False,
    help={
        "check": "validate the schema and cross-checks; list every problem",
        "all": "include test rows",
        "markdown": "print the shipped rows as the README's Markdown table",
        "matrix": CHOICES["matrix"],
    },
)
def matrix(c, check=False, all=False, markdown=False, matrix=None):
    """Show the version matrix (CANN rows, torch variants, Python, MindSpeed-LLM, archs, OSes)."""
    code = _run(lambda: commands.show_matrix(_matrix_path(matrix), check=check, show_all=all, markdown=markdown))
    if code:
        raise Exit(code=code)


@task(
    auto_shortflags=False,
    help={**CHOICES, "out": "output folder (default: build/<row>/<os>-<chip>-torch<ver>-<arch>/)"},
)
def render(c, cann=None, torch=None, arch=None, os=None, chip=None, out=None, matrix=None):
    """Write every layer's Dockerfile and the build plan for one target. No Docker needed."""
    out_dir, plan = _run(
        lambda: commands.render(cann, torch, arch, os, chip, Path(out) if out else None, _matrix_path(matrix))
    )
    print(f"rendered {len(plan.layers)} layers for {plan.image} into {out_dir}")
    for layer in plan.layers:
        print(f"  {layer.name:<10} {layer.tag}")
