"""The version matrix: schema, loading and the one-line errors an invalid ``matrix.yaml`` gives.

The schema is pydantic models (typed data the rest of the builder uses directly); the
compatibility rules between fields live in :mod:`ascend_stack.checks`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from packaging.version import InvalidVersion, Version
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from .errors import UserError

ARCHES = ("aarch64", "x86_64")
Arch = Literal["aarch64", "x86_64"]

_CANN_RE = re.compile(r"^\d+\.\d+\.(\d+|RC\d+)$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_PY_MINOR_RE = re.compile(r"^3\.\d{1,2}$")


def _no_yaml_floats(value: Any) -> Any:
    """YAML reads ``3.10`` as the float 3.1: say so instead of failing obscurely."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        raise ValueError(f'write versions in quotes, e.g. "{value}" (YAML reads {value} as a number)')
    return value


def _cann_version(value: str) -> str:
    if not _CANN_RE.match(value):
        raise ValueError(f"'{value}' is not a CANN/HDK version like 8.1.RC1 or 8.0.0")
    return value


def _py_minor(value: str) -> str:
    if not _PY_MINOR_RE.match(value):
        raise ValueError(f"'{value}' is not a Python minor version like \"3.10\"")
    return value


def _pep440(value: str) -> str:
    try:
        Version(value)
    except InvalidVersion:
        raise ValueError(f"'{value}' is not a valid package version (PEP 440)") from None
    return value


def _git_ref(value: str) -> str:
    if not value or value.startswith("-") or any(c.isspace() for c in value) or ".." in value:
        raise ValueError(f"'{value}' is not a git branch, tag or commit")
    return value


def _commit(value: str) -> str:
    if not _COMMIT_RE.match(value):
        raise ValueError(f"'{value}' is not a full commit id (40 lower-case hex digits)")
    return value


CannVersion = Annotated[str, BeforeValidator(_no_yaml_floats), AfterValidator(_cann_version)]
PyMinor = Annotated[str, BeforeValidator(_no_yaml_floats), AfterValidator(_py_minor)]
PkgVersion = Annotated[str, BeforeValidator(_no_yaml_floats), AfterValidator(_pep440)]
GitRef = Annotated[str, BeforeValidator(_no_yaml_floats), AfterValidator(_git_ref)]
Commit = Annotated[str, BeforeValidator(_no_yaml_floats), AfterValidator(_commit)]
PyRange = tuple[PyMinor, PyMinor]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Model):
    os: str
    chip: str


class OsSpec(_Model):
    family: Literal["apt", "dnf"]
    image: str = Field(min_length=1)
    python: PyMinor
    # glibc of the OS: a manylinux wheel built for a newer one will not load there.
    glibc: str = Field(pattern=r"^2\.\d+$")

    @property
    def glibc_version(self) -> tuple[int, int]:
        major, minor = self.glibc.split(".")
        return int(major), int(minor)


class PythonSource(_Model):
    version: PkgVersion
    url: str = Field(pattern=r"^https?://")


class CannPackages(_Model):
    url: str = Field(pattern=r"^https?://.*\{file\}")
    referer: str
    python_deps: list[str]


def cann_release_key(version: str) -> tuple[int, int, int, int]:
    """Order CANN releases: 8.3.RC1 < 8.3.0 < 8.5.0 (a release candidate precedes its final release)."""
    major, minor, rest = version.split(".", 2)
    if rest.upper().startswith("RC"):
        return int(major), int(minor), 0, int(rest[2:])
    return int(major), int(minor), 1, int(rest)


class CannLayout(_Model):
    """How a range of CANN releases is packaged and installed: file names, install root, set_env.sh.

    ``{version}`` and ``{arch}`` are filled in per target. ``kernels`` maps a chip to its package (the
    "kernels" package up to 8.3, the "ops" package from 8.5). ``home`` is ASCEND_TOOLKIT_HOME.
    """

    since: CannVersion
    toolkit: str
    kernels: dict[str, str] = Field(min_length=1)
    nnal: str
    home: str = Field(pattern=r"^/")
    set_env: str = Field(pattern=r"^/.*set_env\.sh$")
    nnal_home: str = Field(pattern=r"^/")
    nnal_set_env: str = Field(pattern=r"^/.*set_env\.sh$")
    # What NNAL's atb/set_env.sh picks without --cxx_abi ("torch": the ABI of the torch it imports).
    # The build always passes torch's ABI (support.torch.*.cxx11_abi) explicitly.
    nnal_default_abi: Literal["torch", 0, 1]


class Sources(_Model):
    apex: str
    nvidia_apex: str
    mindspeed: str
    mindspeed_llm: str
    megatron: str


class TorchSupport(_Model):
    python: PyRange
    cxx11_abi: Literal[0, 1]


class ReleaseSupport(_Model):
    megatron: GitRef
    python: PyRange
    # pip constraints every row of this release gets (e.g. setuptools<82: its sources import
    # pkg_resources, which setuptools 82 removed).
    pins: list[str] = []


class Support(_Model):
    cann_python: dict[str, PyRange]
    torch_npu: dict[str, list[PkgVersion]]
    torch: dict[str, TorchSupport]
    mindspeed_llm: dict[str, ReleaseSupport]


class TorchVariant(_Model):
    torch: PkgVersion
    torch_npu: PkgVersion
    torch_npu_url: str | None = Field(default=None, pattern=r"^https?://")
    unlisted: str | None = Field(default=None, description="why this torch_npu may be absent from support.torch_npu")


class TorchChoice(_Model):
    default: PkgVersion
    variants: list[TorchVariant] = Field(min_length=1)

    @model_validator(mode="after")
    def _default_is_a_variant(self) -> TorchChoice:
        names = [v.torch for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"torch variants must be distinct, got {', '.join(names)}")
        if self.default not in names:
            raise ValueError(f"default torch {self.default} is not one of the variants ({', '.join(names)})")
        return self


class Ref(_Model):
    """A git source of a row: the human ref (branch or tag) and the full commit it is pinned to.

    Shipped rows must pin ``commit`` (checks.source_pins); the ref says where the commit came from
    and is what ``invoke fetch --update`` follows to propose a newer commit.
    """

    ref: GitRef
    commit: Commit | None = None


class MindSpeedLLM(Ref):
    release: PkgVersion


class Row(_Model):
    id: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    test: bool = False
    cann: CannVersion
    hdk_min: CannVersion
    python: PyMinor
    archs: list[Arch] = Field(min_length=1)
    oses: list[str] = Field(min_length=1)
    chips: list[str] = Field(min_length=1)
    torch_index: dict[Arch, str] | None = None
    torch: TorchChoice
    # Ascend apex is built from NVIDIA apex at the commit its scripts/build.sh checks out; rows of
    # releases whose install guide has no apex step (26.0.0: MindSpeed provides it) leave both out.
    apex: Ref | None = None
    nvidia_apex: Ref | None = None
    mindspeed: Ref
    mindspeed_llm: MindSpeedLLM
    megatron: Ref
    transformers: PkgVersion
    pip_pins: list[str] = []
    # Requirements that replace every other requirement of a package when the row's Python lock is
    # resolved (`invoke lock`): what the guide installs last wins over what earlier files asked for.
    lock_overrides: list[str] = []
    # Published sha256 of the row's CANN packages, by file name; `invoke fetch` checks downloads
    # against these and records every input's hash in the row's lock file.
    sha256: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = {}

    @property
    def key(self) -> str:
        """How ``--cann`` addresses the row: its id, else its CANN version."""
        return self.id or self.cann

    def variant(self, torch: str) -> TorchVariant:
        return next(v for v in self.torch.variants if v.torch == torch)

    def git_sources(self) -> dict[str, Ref]:
        """The row's git sources by their ``sources:`` key, apex ones only when the row builds apex."""
        found = {
            "apex": self.apex,
            "nvidia_apex": self.nvidia_apex,
            "mindspeed": self.mindspeed,
            "mindspeed_llm": self.mindspeed_llm,
            "megatron": self.megatron,
        }
        return {name: ref for name, ref in found.items() if ref is not None}

    @model_validator(mode="after")
    def _apex_pair(self) -> Row:
        if (self.apex is None) != (self.nvidia_apex is None):
            raise ValueError("apex and nvidia_apex go together: Ascend apex is a patch of NVIDIA apex")
        return self


class Matrix(_Model):
    schema_version: Literal[1]
    defaults: Defaults
    oses: dict[str, OsSpec] = Field(min_length=1)
    python_sources: dict[str, PythonSource]
    cann_packages: CannPackages
    cann_layouts: list[CannLayout] = Field(min_length=1)
    torch_index: dict[Arch, str]
    sources: Sources
    support: Support
    rows: list[Row] = Field(min_length=1)

    def shipped_rows(self) -> list[Row]:
        return [r for r in self.rows if not r.test]

    def layout(self, cann: str) -> CannLayout:
        """The layout of CANN release ``cann``: the last one whose ``since`` is not after it."""
        key = cann_release_key(cann)
        found = [lay for lay in self.cann_layouts if cann_release_key(lay.since) <= key]
        if not found:
            raise ValueError(f"no cann_layouts entry covers CANN {cann}")
        return max(found, key=lambda lay: cann_release_key(lay.since))


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the matrix: where (row, field) and which rule it breaks."""

    row: str | None
    field: str
    rule: str
    source: str = "matrix.yaml"

    def __str__(self) -> str:
        where = f"row {self.row}, field {self.field}" if self.row else f"field {self.field}"
        return f"{self.source}: {where}: {self.rule}"


class MatrixError(UserError):
    """An invalid matrix. ``str()`` is the first problem; ``problems`` has all of them."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 1} more: run 'invoke matrix --check')" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _row_name(raw: Any, index: int) -> str:
    try:
        row = raw["rows"][index]
        return str(row.get("id") or row.get("cann") or f"#{index + 1}")
    except (KeyError, IndexError, TypeError, AttributeError):
        return f"#{index + 1}"


def problems_from_validation(exc: ValidationError, raw: Any) -> list[Problem]:
    """Turn pydantic's errors into (row, field, rule) problems a person can act on."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check its spelling against matrix.yaml's other rows)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        if len(loc) >= 2 and loc[0] == "rows" and isinstance(loc[1], int):
            problems.append(Problem(_row_name(raw, loc[1]), _field_path(loc[2:]), msg))
        else:
            problems.append(Problem(None, _field_path(loc), msg))
    return problems


def parse_matrix(raw: Any, source: str = "matrix.yaml") -> Matrix:
    """Validate already-loaded YAML data: schema first, then the cross-checks."""
    from .checks import cross_check  # the rules need the typed model

    if not isinstance(raw, dict):
        raise MatrixError([Problem(None, "(top level)", "the file must be a YAML mapping", source)])
    try:
        matrix = Matrix.model_validate(raw)
    except ValidationError as exc:
        problems = problems_from_validation(exc, raw)
    else:
        problems = cross_check(matrix)
    if problems:
        raise MatrixError([replace(p, source=source) for p in problems])
    return matrix


# libyaml's parser when PyYAML has it: every task reads matrix.yaml, and the pure-Python one takes 5x longer.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class UniqueKeyLoader(_SafeLoader):  # type: ignore[misc]
    """``yaml.safe_load`` that refuses a key given twice (YAML itself keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # unhashable: SafeLoader reports it
                continue
            seen[key] = line
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {first} and {line}); keep one", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Parse YAML written by people: like ``yaml.safe_load``, but a duplicate key is an error."""
    return yaml.load(text, Loader=UniqueKeyLoader)


def load_matrix(path: Path) -> Matrix:
    """Load and validate ``matrix.yaml``; any problem raises :class:`MatrixError`."""
    if not path.is_file():
        there = "a directory" if path.is_dir() else "nothing"
        raise UserError(
            f"--matrix {path}: expected a file, found {there}; run from the repository root or pass --matrix"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--matrix {path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"--matrix {path}:{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_matrix(raw, path.name)
