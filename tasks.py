"""Invoke tasks: a thin shell over the ``ascend_stack`` library. Run ``invoke --list``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from invoke import Exit, task

from ascend_stack import commands
from ascend_stack.build import BuildOptions, NetworkOptions
from ascend_stack.errors import UserError
from ascend_stack.inputs import InputDirs

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


INPUTS = {
    "packages": "package cache of CANN .run files and source tarballs (default: packages/)",
    "wheelhouse": "a folder of local wheels, searched before the index (repeatable)",
    "sources": "folder of local git mirrors: DIR/<name> or DIR/<name>.git replaces the upstream URL",
    "lock_dir": "folder of the per-row lock files (default: locks/)",
    "ca_cert": "CA bundle for a TLS-intercepting proxy; reaches the build only as a BuildKit secret",
}


def _dirs(packages=None, wheelhouse=None, sources=None, lock_dir=None) -> InputDirs:
    d = InputDirs()
    return InputDirs(
        packages=Path(packages) if packages else d.packages,
        extra_wheelhouses=tuple(Path(w) for w in wheelhouse or ()),
        source_overrides=Path(sources) if sources else None,
        locks=Path(lock_dir) if lock_dir else d.locks,
    )


@task(
    auto_shortflags=False,
    iterable=["wheelhouse"],
    help={
        **CHOICES,
        **INPUTS,
        "layers": "comma-separated layers to build (base,cann,pta,mindspeed,runtime); the others must exist",
        "until": "build the chain up to this layer",
        "offline": "check that every input is local before Docker starts; pip uses only the wheelhouse",
        "pip_index_url": "pip index for the build steps (a secret: may carry credentials)",
        "apt_mirror": "apt mirror URL for the build steps (Debian/Ubuntu bases)",
        "http_proxy": "proxy for the build steps' downloads (a secret: never stored in the image)",
        "no_cache": "rebuild the selected layers even when their content tag exists",
        "dry_run": "print the plan and the docker build commands, build nothing",
        "push": "push the finished image to this registry (e.g. registry.local:5000/team)",
        "network": "build network for RUN steps (default host; 'default' for Docker's bridge)",
        "verbose": "say which BuildKit client was picked and why",
    },
)
def build(c, cann=None, torch=None, arch=None, os=None, chip=None, matrix=None, layers=None, until=None,
          packages=None, wheelhouse=None, sources=None, lock_dir=None, offline=False, ca_cert=None,
          pip_index_url=None, apt_mirror=None, http_proxy=None, no_cache=False, dry_run=False, push=None,
          network="host", verbose=False):  # fmt: skip
    """Build the image chain of one matrix target through BuildKit; unchanged layers are reused."""
    opts = BuildOptions(
        dirs=_dirs(packages, wheelhouse, sources, lock_dir),
        network=NetworkOptions(
            ca_cert=Path(ca_cert) if ca_cert else None, http_proxy=http_proxy, pip_index_url=pip_index_url,
            apt_mirror=apt_mirror, offline=offline,
        ),
        layers=[x.strip() for x in layers.split(",")] if layers else None,
        until=until, no_cache=no_cache, dry_run=dry_run, push=push,
        docker_network=None if network == "default" else network,
    )  # fmt: skip
    choices = {"cann": cann, "torch": torch, "arch": arch, "os": os, "chip": chip}
    _run(lambda: commands.build(choices, opts, _matrix_path(matrix), verbose=verbose))


@task(
    auto_shortflags=False,
    iterable=["wheelhouse"],
    help={**CHOICES, **INPUTS, "update": "re-resolve git refs and re-record hashes in the lock"},
)
def fetch(c, cann=None, torch=None, arch=None, os=None, chip=None, matrix=None, packages=None, wheelhouse=None,
          sources=None, lock_dir=None, ca_cert=None, update=False):  # fmt: skip
    """Download every input a target needs (CANN packages, wheels, git sources), verify and lock them."""
    choices = {"cann": cann, "torch": torch, "arch": arch, "os": os, "chip": chip}
    _run(lambda: commands.fetch(choices, _dirs(packages, wheelhouse, sources, lock_dir), _matrix_path(matrix),
                                update=update, ca_cert=Path(ca_cert) if ca_cert else None))  # fmt: skip


@task(
    name="base-image",
    auto_shortflags=False,
    help={
        "os": "the OS to bootstrap (debian-bookworm)",
        "arch": "aarch64 or x86_64 (default: this host's; aarch64 on x86_64 runs under qemu)",
        "mirror": "Debian mirror URL (default: the one this host's apt uses)",
        "force": "rebuild even if the image exists",
    },
)
def base_image(c, os="debian-bookworm", arch=None, mirror=None, force=False):
    """Build an OS base image from a distribution mirror with debootstrap, for hosts without a registry."""
    tag = _run(lambda: commands.base_image(os, arch, mirror, force))
    print(tag)
