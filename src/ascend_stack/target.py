"""Resolution: from command-line choices to one fully pinned build target.

``--cann 8.1.rc1 --torch 2.6 --arch arm64`` becomes a :class:`Target` where every version is fixed.
Choices are case-insensitive and accept a unique prefix; anything else is one line listing the
valid values.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import cached_property

from .errors import UserError
from .matrix import ARCHES, CannLayout, Matrix, OsSpec, Row, TorchVariant

IMAGE = "ascend-llm-stack"
_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}
_PLATFORMS = {"aarch64": "linux/arm64", "x86_64": "linux/amd64"}


def normalise_arch(arch: str) -> str:
    return _ARCH_ALIASES.get(arch.lower(), arch.lower())


def host_arch() -> str:
    return normalise_arch(platform.machine())


def choose(what: str, given: str | None, options: list[str], default: str | None = None) -> str:
    """Pick ``given`` from ``options``: exact (any case) or unique prefix; else one clear line."""
    if given is None:
        if default is None:
            raise UserError(f"{what} is required: choose one of {', '.join(options)}")
        return default
    low = given.lower()
    exact = [o for o in options if o.lower() == low]
    if exact:
        return exact[0]
    matches = [o for o in options if o.lower().startswith(low)]
    if len(matches) == 1:
        return matches[0]
    kind = "ambiguous" if matches else "unknown"
    raise UserError(f"{kind} {what} '{given}': choose one of {', '.join(matches or options)}")


@dataclass(frozen=True)
class PythonSource:
    version: str
    url: str

    @property
    def file(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Target:
    """One matrix row resolved for one torch variant, architecture, OS and chip."""

    matrix: Matrix
    row: Row
    variant: TorchVariant
    arch: str
    os_name: str
    chip: str

    @property
    def os(self) -> OsSpec:
        return self.matrix.oses[self.os_name]

    @property
    def cann(self) -> str:
        return self.row.cann

    @property
    def layout(self) -> CannLayout:
        """How this CANN release is packaged and installed (matrix.yaml ``cann_layouts``)."""
        return self.matrix.layout(self.cann)

    def cann_path(self, key: str) -> str:
        """An install path of the layout (``home``, ``set_env``, ...) with ``{version}`` filled in."""
        return str(getattr(self.layout, key)).format(version=self.cann)

    @property
    def python(self) -> str:
        return self.row.python

    @property
    def torch(self) -> str:
        return self.variant.torch

    @property
    def torch_npu(self) -> str:
        return self.variant.torch_npu

    @property
    def cxx11_abi(self) -> int:
        return self.matrix.support.torch[self.torch].cxx11_abi

    @property
    def platform(self) -> str:
        return _PLATFORMS[self.arch]

    @property
    def base_image(self) -> str:
        return self.os.image.format(arch=self.arch)

    @property
    def python_from_os(self) -> bool:
        return self.os.python == self.python

    @cached_property
    def python_source(self) -> PythonSource | None:
        if self.python_from_os:
            return None
        src = self.matrix.python_sources[self.python]
        return PythonSource(src.version, src.url)

    @property
    def python_prefix(self) -> str:
        return f"/usr/local/python{self.python}"

    @property
    def python_bin(self) -> str:
        if self.python_from_os:
            return f"python{self.python}"
        return f"{self.python_prefix}/bin/python{self.python}"

    @property
    def torch_index(self) -> str | None:
        indexes = self.row.torch_index if self.row.torch_index is not None else self.matrix.torch_index
        return indexes.get(self.arch)  # type: ignore[call-overload]

    def tag_part(self, name: str) -> str:
        """One piece of an image tag; tags are built from these, lower-case."""
        parts = {
            "row": self.row.key,
            "chip": self.chip,
            "os": self.os_name,
            "py": f"py{self.python}",
            "arch": self.arch,
            "torch": f"torch{self.torch}",
            "mslm": f"mslm{self.row.mindspeed_llm.release}",
        }
        return parts[name].lower()

    def describe(self) -> dict[str, object]:
        """The resolved choices, as recorded in the build plan."""
        return {
            "row": self.row.key,
            "test_row": self.row.test,
            "cann": self.cann,
            "hdk_min": self.row.hdk_min,
            "arch": self.arch,
            "platform": self.platform,
            "os": self.os_name,
            "glibc": self.os.glibc,
            "chip": self.chip,
            "python": self.python,
            "torch": self.torch,
            "torch_npu": self.torch_npu,
            "mindspeed_llm": self.row.mindspeed_llm.release,
        }


def find_row(matrix: Matrix, cann: str | None) -> Row:
    """``--cann``: a shipped row by CANN version (any case, unique prefix), or a test row by id."""
    shipped = {r.key: r for r in matrix.shipped_rows()}
    if cann is not None:
        hidden = [r for r in matrix.rows if r.test and r.key.lower() == cann.lower()]
        if hidden:
            return hidden[0]
    return shipped[choose("CANN version (--cann)", cann, list(shipped))]


def resolve(
    matrix: Matrix,
    cann: str | None,
    torch: str | None = None,
    arch: str | None = None,
    os: str | None = None,
    chip: str | None = None,
) -> Target:
    """Resolve every choice; defaults: the row's default torch, the host's arch, Ubuntu 22.04, 910b."""
    row = find_row(matrix, cann)
    torch_v = choose(
        f"torch for CANN {row.key} (--torch)", torch, [v.torch for v in row.torch.variants], row.torch.default
    )
    given_arch = normalise_arch(arch) if arch else None
    if given_arch is not None and given_arch not in ARCHES:
        raise UserError(f"unknown architecture '{arch}' for --arch: choose one of {', '.join(ARCHES)}")
    arch_v = given_arch or host_arch()
    if arch_v not in row.archs:
        how = "" if arch else " (the host's; pass --arch)"
        raise UserError(f"CANN {row.key} is not built for {arch_v}{how}: choose one of {', '.join(row.archs)}")
    default_os = matrix.defaults.os if matrix.defaults.os in row.oses else row.oses[0]
    os_v = choose(f"OS for CANN {row.key} (--os)", os, row.oses, default_os)
    default_chip = matrix.defaults.chip if matrix.defaults.chip in row.chips else row.chips[0]
    chip_v = choose(f"chip for CANN {row.key} (--chip)", chip, row.chips, default_chip)
    return Target(matrix, row, row.variant(torch_v), arch_v, os_v, chip_v)
