"""Rendering: a resolved :class:`Target` becomes one Dockerfile per layer plus a build plan.

The layer chain is data (:data:`LAYERS`, HPCCM's recipes-as-data idea): name, parent, what the
layer's tag depends on, and a function giving its template context and external inputs. The
plan written next to the Dockerfiles is exactly what the builder executes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from . import __version__, paths
from .errors import UserError
from .target import IMAGE, Target

IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"
LABEL_PREFIX = "io.ascend-llm-stack"
DRIVER_LIBS = (
    "/usr/local/Ascend/driver/lib64:/usr/local/Ascend/driver/lib64/common:/usr/local/Ascend/driver/lib64/driver"
)
TOOLKIT_ENV = "/usr/local/Ascend/ascend-toolkit/set_env.sh"
NNAL_ENV = "/usr/local/Ascend/nnal/atb/set_env.sh"

# OS packages of the base layer: what CANN's installers and run time need ([runtime] §1.4).
_BASE_PACKAGES = {
    "apt": [
        "ca-certificates",
        "gcc",
        "g++",
        "make",
        "cmake",
        "zlib1g",
        "openssl",
        "unzip",
        "pciutils",
        "net-tools",
        "libblas3",
        "libgomp1",
        "procps",
    ],
    "dnf": [
        "ca-certificates",
        "gcc",
        "gcc-c++",
        "make",
        "cmake",
        "zlib",
        "openssl",
        "unzip",
        "pciutils",
        "net-tools",
        "blas",
        "libgomp",
        "procps-ng",
        "tar",
        "gzip",
        "findutils",
        "which",
    ],
}
# What CPython needs to build from source. The final stage installs the same -dev packages: their
# names are stable across apt (and dnf) releases, unlike the runtime libraries' (libssl1.1/libssl3).
_PYTHON_BUILD = {
    "apt": [
        "build-essential",
        "libssl-dev",
        "zlib1g-dev",
        "libffi-dev",
        "libsqlite3-dev",
        "libbz2-dev",
        "libreadline-dev",
        "liblzma-dev",
    ],
    "dnf": [
        "gcc",
        "make",
        "tar",
        "gzip",
        "zlib-devel",
        "bzip2-devel",
        "openssl-devel",
        "ncurses-devel",
        "sqlite-devel",
        "readline-devel",
        "xz-devel",
        "libffi-devel",
    ],
}


@dataclass(frozen=True)
class Input:
    """Something a layer needs from outside the repository, placed in its context by the builder.

    kind: ``package`` (packages/<name>, e.g. a CANN .run), ``wheel`` (a pinned requirement such as
    ``torch_npu==2.6.0``, taken from the wheelhouse; ``url`` or ``index`` say where to download it),
    ``git`` (sources/<name> checked out at ``ref``) or ``project`` (a wheel built from this repo).
    """

    kind: str
    name: str
    url: str | None = None
    ref: str | None = None
    sha256: str | None = None
    referer: str | None = None
    index: str | None = None


@dataclass
class Layer:
    name: str
    parent: str | None
    tag: str
    summary: str
    dockerfile: str
    files: list[str]
    inputs: list[Input]
    mounts: list[str]
    build_args: dict[str, str]
    labels: dict[str, str]
    env_capture: dict[str, Any] | None = None


@dataclass
class BuildPlan:
    target: dict[str, object]
    image: str
    platform: str
    layers: list[Layer] = field(default_factory=list)

    def layer(self, name: str) -> Layer:
        return next(layer for layer in self.layers if layer.name == name)

    def to_json(self) -> str:
        data = {"schema": 1, "generated_by": f"ascend-llm-stack {__version__}", **asdict(self)}
        return json.dumps(data, indent=2) + "\n"


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the chain, as data."""

    name: str
    parent: str | None
    summary: str
    tag_parts: tuple[str, ...]
    context: Callable[[Target, dict[str, str | None]], tuple[dict[str, Any], list[Input]]]


def layer_tag(t: Target, spec: LayerSpec) -> str:
    return f"{IMAGE}/{spec.name}:" + "-".join(t.tag_part(p) for p in spec.tag_parts)


def final_tag(t: Target) -> str:
    """The human tag of the finished image: ``ascend-llm-stack:<row>-<chip>-torch..-mslm..-<os>-py..-<arch>``."""
    return f"{IMAGE}:" + "-".join(t.tag_part(p) for p in LAYER_BY_NAME["runtime"].tag_parts)


def _labels(items: dict[str, str]) -> dict[str, str]:
    return {f"{LABEL_PREFIX}.{k}": v for k, v in items.items()}


def _base(t: Target, _commits: dict[str, str | None]) -> tuple[dict[str, Any], list[Input]]:
    fam = t.os.family
    packages = list(_BASE_PACKAGES[fam])
    if t.python_from_os:
        packages += (
            [f"python{t.python}", f"python{t.python}-venv", f"python{t.python}-dev", f"libpython{t.python}"]
            if fam == "apt"
            else ["python3", "python3-devel"]
        )
    else:
        packages += [p for p in _PYTHON_BUILD[fam] if p.endswith(("-dev", "-devel"))]
    inputs = []
    if t.python_source:
        inputs.append(Input("package", t.python_source.file, url=t.python_source.url))
    ctx = {
        "os_packages": packages,
        "build_deps": _PYTHON_BUILD[fam],
        "cann_python_deps": t.matrix.cann_packages.python_deps,
        "labels": _labels({"layer": "base", "os": t.os_name, "python": t.python, "arch": t.arch}),
    }
    return ctx, inputs


def cann_files(t: Target) -> dict[str, str]:
    """The official installer file names for this target ([runtime] §1.1)."""
    pk = t.matrix.cann_packages
    fmt = {"version": t.cann, "arch": t.arch}
    return {
        "toolkit": pk.toolkit.format(**fmt),
        "kernels": pk.kernels[t.chip].format(**fmt),
        "nnal": pk.nnal.format(**fmt),
    }


def _cann(t: Target, _commits: dict[str, str | None]) -> tuple[dict[str, Any], list[Input]]:
    pk = t.matrix.cann_packages
    files = cann_files(t)
    inputs = [
        Input("package", f, url=pk.url.format(version=t.cann, file=f), referer=pk.referer, sha256=t.row.sha256.get(f))
        for f in files.values()
    ]
    labels = _labels({"layer": "cann", "row": t.row.key, "cann": t.cann, "chip": t.chip, "hdk-min": t.row.hdk_min})
    return {"files": files, "labels": labels}, inputs


def _pta(t: Target, commits: dict[str, str | None]) -> tuple[dict[str, Any], list[Input]]:
    sources = t.matrix.sources
    args = [f"torch=={t.torch}", f"torch_npu=={t.torch_npu}"]
    if t.torch_index:
        args.insert(0, f"--extra-index-url {t.torch_index}")
    npu_url = t.variant.torch_npu_url
    inputs = [
        # The two big binaries are pinned wheels: fetched, checksummed and locked like CANN's packages.
        Input("wheel", f"torch=={t.torch}", index=t.torch_index),
        Input(
            "wheel",
            f"torch_npu=={t.torch_npu}",
            url=npu_url.format(py=t.python.replace(".", ""), arch=t.arch) if npu_url else None,
        ),
        Input("git", "apex", url=sources.apex, ref=t.row.apex.ref),
        Input("git", "nvidia-apex", url=sources.nvidia_apex, ref=t.row.apex.nvidia_ref),
    ]
    labels = _labels({"layer": "pta", "torch": t.torch, "torch-npu": t.torch_npu, "apex": t.row.apex.ref})
    return {"torch_args": " ".join(args), "labels": labels}, inputs


def stack_json(t: Target, commits: dict[str, str | None]) -> str:
    """``/etc/ascend-llm-stack/stack.json``: the resolved row, read by ``ascend-llm check``."""
    r = t.row
    data = {
        **{k: v for k, v in t.describe().items() if k not in ("platform", "mindspeed_llm")},
        "transformers": r.transformers,
        "apex": {"ref": r.apex.ref, "commit": commits.get("apex")},
        "mindspeed": {"ref": r.mindspeed.ref, "commit": commits.get("mindspeed")},
        "mindspeed_llm": {
            "release": r.mindspeed_llm.release,
            "ref": r.mindspeed_llm.ref,
            "commit": commits.get("mindspeed-llm"),
        },
        "megatron": {"ref": r.megatron.ref, "commit": commits.get("megatron")},
    }
    return json.dumps(data, indent=2) + "\n"


def _mindspeed(t: Target, commits: dict[str, str | None]) -> tuple[dict[str, Any], list[Input]]:
    s, r = t.matrix.sources, t.row
    inputs = [
        Input("git", "mindspeed", url=s.mindspeed, ref=r.mindspeed.ref),
        Input("git", "mindspeed-llm", url=s.mindspeed_llm, ref=r.mindspeed_llm.ref),
        Input("git", "megatron", url=s.megatron, ref=r.megatron.ref),
    ]
    labels = _labels(
        {
            "layer": "mindspeed",
            "mindspeed": r.mindspeed.ref,
            "mindspeed-llm": r.mindspeed_llm.ref,
            "megatron": r.megatron.ref,
            "transformers": r.transformers,
        }
    )
    return {"labels": labels}, inputs


def _runtime(t: Target, _commits: dict[str, str | None]) -> tuple[dict[str, Any], list[Input]]:
    labels = {
        "org.opencontainers.image.title": "ascend-llm-stack",
        "org.opencontainers.image.description": (
            f"MindSpeed-LLM {t.row.mindspeed_llm.release} training image for Ascend {t.chip}, "
            f"CANN {t.cann}, torch {t.torch}"
        ),
        "org.opencontainers.image.version": final_tag(t).split(":", 1)[1],
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.vendor": "ascend-llm-stack",
        **_labels({"layer": "runtime"}),
    }
    return {"labels": labels}, [Input("project", "entrypoints", ref="entrypoints")]


LAYERS: tuple[LayerSpec, ...] = (
    LayerSpec("base", None, "OS, Python venv, and the OS/pip packages CANN needs", ("os", "py", "arch"), _base),
    LayerSpec(
        "cann",
        "base",
        "CANN toolkit, chip kernels and NNAL; ENV captured from set_env.sh",
        ("row", "chip", "os", "py", "arch"),
        _cann,
    ),
    LayerSpec(
        "pta",
        "cann",
        "torch, torch_npu, and Ascend apex built as a wheel",
        ("row", "chip", "torch", "os", "py", "arch"),
        _pta,
    ),
    LayerSpec(
        "mindspeed",
        "pta",
        "MindSpeed (editable), MindSpeed-LLM + Megatron-LM, transformers pin",
        ("row", "chip", "torch", "mslm", "os", "py", "arch"),
        _mindspeed,
    ),
    LayerSpec(
        "runtime",
        "mindspeed",
        "the ascend-llm stage runner as entrypoint, OCI labels",
        ("row", "chip", "torch", "mslm", "os", "py", "arch"),
        _runtime,
    ),
)
LAYER_BY_NAME = {spec.name: spec for spec in LAYERS}


def _dockerenv(value: str) -> str:
    """Quote a value for a Dockerfile ENV line (JSON-style quotes; ``$`` must not expand)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _keyvalues(items: dict[str, str]) -> str:
    """``k="v"`` pairs for LABEL and ENV, one per continued line."""
    return " \\\n    ".join(f"{k}={_dockerenv(v)}" for k, v in items.items())


def template_env(images_dir: Path = IMAGES_DIR) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(images_dir),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["sh"] = shlex.quote
    env.filters["keyvalues"] = _keyvalues
    return env


def constraints(t: Target, layer: str) -> str:
    """pip constraints for a layer's installs: later steps must never move torch or the pins.

    The base layer is shared by every row with the same OS/Python/arch, so it takes none of a row's.
    """
    lines = ["# pip constraints rendered from matrix.yaml; applied to every pip install of this layer"]
    if layer != "base":
        # CANN's own pins (protobuf, numpy) hold in every later layer too.
        cann_pins = [d for d in t.matrix.cann_packages.python_deps if any(c in d for c in "<>=")]
        lines += [f"torch=={t.torch}", f"torch_npu=={t.torch_npu}", *dict.fromkeys([*cann_pins, *t.row.pip_pins])]
    return "\n".join(lines) + "\n"


def plan(t: Target, commits: dict[str, str | None] | None = None) -> tuple[BuildPlan, dict[str, str]]:
    """The build plan and the rendered files (relative path -> text), without touching disk."""
    commits = commits or {}
    env = template_env()
    out = BuildPlan(target=t.describe(), image=final_tag(t), platform=t.platform)
    files: dict[str, str] = {}
    for spec in LAYERS:
        ctx, inputs = spec.context(t, commits)
        parent_tag = layer_tag(t, LAYER_BY_NAME[spec.parent]) if spec.parent else None
        text = env.get_template(f"{spec.name}/Dockerfile.j2").render(t=t, parent_tag=parent_tag, **ctx)
        layer_files = {f"{spec.name}/Dockerfile": text}
        mounts: list[str] = []
        if "--mount=type=bind,source=wheelhouse" in text:
            layer_files[f"{spec.name}/constraints.txt"] = constraints(t, spec.name)
            mounts.append("wheelhouse")
        if spec.name == "mindspeed":
            layer_files["mindspeed/stack.json"] = stack_json(t, commits)
        env_capture = None
        if spec.name == "cann":
            layer_files["cann/capture-env.py"] = (IMAGES_DIR / "cann/capture-env.py").read_text()
            env_capture = {
                "script": "cann/capture-env.py",
                "template": "cann/env.Dockerfile.j2",
                "driver_libs": DRIVER_LIBS,
                "sources": [[TOOLKIT_ENV], [NNAL_ENV, f"--cxx_abi={t.cxx11_abi}"]],
            }
        mounts += sorted({i.kind for i in inputs} & {"package", "git", "project"})
        files.update(layer_files)
        out.layers.append(
            Layer(
                name=spec.name,
                parent=spec.parent,
                tag=layer_tag(t, spec),
                summary=spec.summary,
                dockerfile=f"{spec.name}/Dockerfile",
                files=sorted(layer_files),
                inputs=inputs,
                mounts=[{"package": "packages", "git": "sources", "project": "entrypoints"}.get(m, m) for m in mounts],
                build_args={"PARENT_IMAGE": parent_tag} if parent_tag else {},
                labels=ctx["labels"],
                env_capture=env_capture,
            )
        )
    files["plan.json"] = out.to_json()
    return out, files


MARKER = ".ascend-stack-render"
"""Written into every render folder: what tells a previous render (replaced whole) from the user's folder."""
MARKER_TEXT = "written by ascend-llm-stack's render: this folder is replaced whole by the next render\n"


def previous_render(out_dir: Path) -> bool:
    """``out_dir`` holds a render (its marker, or the build plan of a render made before the marker
    existed), so the next render may replace it whole."""
    try:
        if (out_dir / MARKER).is_file():
            return (out_dir / MARKER).read_text(encoding="utf-8") == MARKER_TEXT
        plan = json.loads((out_dir / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(plan, dict) and str(plan.get("generated_by", "")).startswith("ascend-llm-stack ")


def check_out_dir(out_dir: Path, option: str = "--out") -> None:
    """Refuse an output folder that is a file, lies under a file, or holds anything but a previous render."""
    paths.expect_creatable(out_dir, option, "directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not previous_render(out_dir):
        raise UserError(
            f"{option} {out_dir}: the directory is not empty and holds no previous render (no {MARKER}); "
            f"choose a new or empty directory: render replaces its output folder whole"
        )


def write(files: dict[str, str], out_dir: Path, option: str = "--out") -> None:
    """Write rendered files into a private sibling temp dir, then swap it in: the folder is complete or
    untouched, and only a previous render (or an empty folder) is ever replaced."""
    check_out_dir(out_dir, option)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    old = tmp.with_name(tmp.name[: -len(".tmp")] + ".old")
    try:
        for rel, text in {**files, MARKER: MARKER_TEXT}.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        umask = os.umask(0o022)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the render from other users
        moved = out_dir.exists()
        if moved:
            out_dir.rename(old)
        try:
            tmp.rename(out_dir)
        except BaseException:
            if moved:
                old.rename(out_dir)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def default_out_dir(t: Target, root: Path = Path("build")) -> Path:
    """``build/<row>/<os>-<chip>-torch<ver>-<arch>/``: one folder per variant of a row."""
    return root / t.row.key / "-".join(t.tag_part(p) for p in ("os", "chip", "torch", "arch"))
