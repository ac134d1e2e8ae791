"""The environment a stage runs with: what the seed's scripts export, each value overridable.

Defaults are rendered as ``export NAME="${NAME:-default}"`` so a value the caller already set
(``docker run -e NAME=...``) wins; ``--env NAME=VALUE`` forces a value.
"""

from __future__ import annotations

import glob
import os
import platform
import sysconfig
from dataclasses import dataclass
from typing import Iterable, Sequence

from ascend_llm.errors import UsageError
from ascend_llm.system import sysroot_path


@dataclass
class EnvVar:
    """One ``export`` line of the launch script."""

    name: str
    value: str
    comment: str = ""
    overridable: bool = True


BASE_ENV = (
    EnvVar("CUDA_DEVICE_MAX_CONNECTIONS", "1", "one hardware queue, as every upstream script sets"),
    EnvVar("PYTHONUNBUFFERED", "1", "log lines appear as they happen"),
)
DISTRIBUTED_ENV = (
    EnvVar("PYTORCH_NPU_ALLOC_CONF", "expandable_segments:True", "less memory fragmentation"),
    EnvVar("HCCL_CONNECT_TIMEOUT", "1800", "seconds for HCCL link setup (CANN default 120)"),
    EnvVar("HCCL_IF_BASE_PORT", "30000", "first host port HCCL uses (the seed's value)"),
)
LIBGOMP_SYSTEM = "/usr/lib/aarch64-linux-gnu/libgomp.so.1"
LIBGOMP_GLOBS = ("scikit_learn.libs/libgomp*.so*", "torch.libs/libgomp*.so*", "torch/lib/libgomp*.so*")


def parse_env_assignments(items: Iterable[str] | None) -> dict[str, str]:
    """Parse ``--env NAME=VALUE`` options."""
    out: dict[str, str] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if (
            not sep
            or not name
            or not (name[0].isalpha() or name[0] == "_")
            or not all(c.isalnum() or c == "_" for c in name)
        ):
            raise UsageError(f"--env {item!r}: expected NAME=VALUE with a shell variable name")
        out[name] = value
    return out


def site_dirs() -> list[str]:
    """The running interpreter's site-packages (the image venv inside an image)."""
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


def libgomp_preloads(machine: str | None = None, sites: Sequence[str] | None = None) -> list[str]:
    """libgomp copies to preload on aarch64, where a late dlopen of libgomp fails with
    "cannot allocate memory in static TLS block"; only files that exist, and never elsewhere."""
    if (machine or platform.machine()) != "aarch64":
        return []
    if os.environ.get("ASCEND_LLM_NO_LIBGOMP_PRELOAD"):
        return []
    found: list[str] = []
    for site in sites if sites is not None else site_dirs():
        for pattern in LIBGOMP_GLOBS:
            found.extend(sorted(glob.glob(os.path.join(site, pattern))))
    system = sysroot_path(LIBGOMP_SYSTEM)
    if system.exists():
        found.append(str(system))
    unique: list[str] = []
    for path in found:
        if path not in unique and os.path.isfile(path):
            unique.append(path)
    return unique


def stage_env(distributed: bool, preset_env: dict[str, str], forced: dict[str, str]) -> list[EnvVar]:
    """The ordered env of a stage: base, distributed, preset extras, then forced values."""
    env: dict[str, EnvVar] = {}
    for var in BASE_ENV + (DISTRIBUTED_ENV if distributed else ()):
        env[var.name] = EnvVar(var.name, var.value, var.comment)
    for name, value in preset_env.items():
        env[name] = EnvVar(name, value, "model preset")
    for name, value in forced.items():
        env[name] = EnvVar(name, value, "--env", overridable=False)
    return list(env.values())
