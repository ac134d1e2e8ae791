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
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jinja2

from . import __version__, paths
from .errors import UserError
from .target import IMAGE, Target

IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"
LABEL_PREFIX = "io.ascend-llm-stack"
DRIVER_LIBS = (
    "/usr/local/Ascend/driver/lib64:/usr/local/Ascend/driver/lib64/common:/usr/local/Ascend/driver/lib64/driver"
)

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
# What the apex-build stage of pta installs (apex_build.py applies Ascend's patch).
APEX_BUILD_PACKAGES = ["patch"]
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
class RuntimeUser:
    """The non-root user the runtime image runs as: ``HwHiAiUser``, as the NPU driver's installer
    creates it on the host (uid/gid 1000 by default, whose device nodes are ``HwHiAiUser:HwHiAiUser
    0660``). ``invoke build --uid/--gid`` picks other ids; they are rendered into the runtime
    Dockerfile, so they are part of its content hash.
    """

    uid: int = 1000
    gid: int = 1000
    name: ClassVar[str] = "HwHiAiUser"

    def __post_init__(self) -> None:
        for what, value in (("uid", self.uid), ("gid", self.gid)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 2**31 - 2:
                raise UserError(
                    f"--{what} {value}: a number from 1 to {2**31 - 2} (0 is root: the image runs as a non-root "
                    f"user; `invoke run --user root` runs one container as root)"
                )

    @property
    def home(self) -> str:
        return f"/home/{self.name}"

    def env(self) -> dict[str, str]:
        """Where the caches and CANN's files go: under the user's home, whoever runs the container.

        HOME is set too (as jupyter/docker-stacks does), so a ``--user`` without a passwd entry still
        resolves ``~``. CANN: ASCEND_CACHE_PATH holds the kernel-compile cache (``kernel_cache``, by
        default ``$HOME/atc_data``); ASCEND_WORK_PATH the per-process files (``kernel_meta``, by default
        in the working directory, which is /opt/MindSpeed-LLM) and the logs (``$ASCEND_WORK_PATH/log``;
        ASCEND_PROCESS_LOG_PATH, left unset, still wins when a user sets it) (CANN's environment
        variable reference, envref_07_0006 / envref_07_0007).
        """
        home = self.home
        return {
            "HOME": home,
            "XDG_CACHE_HOME": f"{home}/.cache",  # pip's cache, torch's, everything that follows XDG
            "HF_HOME": f"{home}/.cache/huggingface",
            "TORCH_EXTENSIONS_DIR": f"{home}/.cache/torch_extensions",  # MindSpeed builds its ops here
            "ASCEND_CACHE_PATH": f"{home}/ascend/cache",
            "ASCEND_WORK_PATH": f"{home}/ascend/work",
        }

    def home_dirs(self) -> list[str]:
        """The home and every directory down to each cache of :meth:`env`, parents first: all the user's."""
        dirs = [self.home]
        for name, path in self.env().items():
            parts = Path(path).relative_to(self.home).parts if name != "HOME" else ()
            for i in range(1, len(parts) + 1):
                d = str(Path(self.home, *parts[:i]))
                if d not in dirs:
                    dirs.append(d)
        return dirs


# What the stages write inside the image itself (not on a mounted volume), so the user owns these
# directories (group-writable, setgid, never world-writable); everything else stays root's.
STAGE_WRITES = {
    "/opt/MindSpeed-LLM/megatron/core/datasets": "Megatron compiles its dataset helpers (helpers*.so) here at "
    "first use (megatron/core/datasets/utils.py compile_helpers, `make -C` of this directory)",
    "/opt/MindSpeed-LLM/logs": "the stages' log folder when no --save/--log-dir names one "
    "(./logs in MINDSPEED_LLM_HOME)",
    "/opt/MindSpeed-LLM/mindspeed_llm/tasks/evaluation/codecheck_log": "MindSpeed-LLM's human_eval evaluation "
    "writes its code-check logs here (eval_impl/template.py CODE_TEST_LOG_DIR)",
}


@dataclass(frozen=True)
class Input:
    """Something a layer needs from outside the repository, placed in its context by the builder.

    kind: ``package`` (packages/<name>, e.g. a CANN .run), ``wheel`` (a pinned requirement such as
    ``torch_npu==2.6.0``, taken from the wheelhouse; ``url`` or ``index`` say where to download it),
    ``git`` (sources/<name> checked out at ``ref``), ``project`` (a wheel built from this repo) or
    ``os`` (the folder packages/os/<name> of the OS packages that ``steps`` install, collected in the
    OS base image ``ref`` with the ``family``'s package manager: see :mod:`ascend_stack.ospackages`).
    """

    kind: str
    name: str
    url: str | None = None
    ref: str | None = None
    commit: str | None = None  # git: the full commit matrix.yaml pins ``ref`` to (shipped rows)
    sha256: str | None = None
    referer: str | None = None
    index: str | None = None
    # package: the .zip Huawei publishes around the .run (ascend-deployer), its URL and published sha256
    archive: str | None = None
    archive_url: str | None = None
    archive_sha256: str | None = None
    # os: the package lists of the layer's install steps, and apt or dnf
    steps: tuple[tuple[str, ...], ...] = ()
    family: str | None = None


def os_input(t: Target, *steps: list[str]) -> Input:
    """The OS package folder of the target, for a layer whose steps install these packages."""
    from .ospackages import KIND, folder_name

    return Input(KIND, folder_name(t.os_name, t.arch), ref=t.base_image, steps=tuple(tuple(s) for s in steps),
                 family=t.os.family)  # fmt: skip


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
    inputs = [os_input(t, packages) if t.python_from_os else os_input(t, _PYTHON_BUILD[fam], packages)]
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
    """The official package file names for this target, from its CANN release's layout."""
    lay = t.layout
    fmt = {"version": t.cann, "arch": t.arch}
    return {
        "toolkit": lay.toolkit.format(**fmt),
        "kernels": lay.kernels[t.chip].format(**fmt),
        "nnal": lay.nnal.format(**fmt),
    }


def cann_env_sources(t: Target) -> list[list[str]]:
    """What the CANN environment of an image is: the toolkit's set_env.sh, then NNAL's with torch's ABI."""
    return [[t.cann_path("set_env")], [t.cann_path("nnal_set_env"), f"--cxx_abi={t.cxx11_abi}"]]


def cann_layout_facts(t: Target) -> dict[str, str]:
    """The layout's paths for this target, as stack.json records them for the stage runner and checks."""
    return {k: t.cann_path(k) for k in ("home", "set_env", "nnal_home", "nnal_set_env")}


def _cann(t: Target, _commits: dict[str, str | None]) -> tuple[dict[str, Any], list[Input]]:
    from . import published

    pk = t.matrix.cann_packages
    pub = published.load()
    inputs = []
    for f in cann_files(t).values():
        zipped = pub.archive_of(f)
        inputs.append(
            Input(
                "package",
                f,
                url=pk.url.format(version=t.cann, file=f),
                referer=pk.referer,
                sha256=t.row.sha256.get(f),
                archive=zipped.name if zipped else None,
                archive_url=zipped.url if zipped else None,
                archive_sha256=zipped.sha256 if zipped else None,
            )
        )
    files = cann_files(t)
    labels = _labels({"layer": "cann", "row": t.row.key, "cann": t.cann, "chip": t.chip, "hdk-min": t.row.hdk_min})
    return {"files": files, "labels": labels, "set_env": t.cann_path("set_env")}, inputs


def git_input(t: Target, key: str) -> Input:
    """The git input of the row's source ``key`` (matrix.yaml's spelling); ``nvidia_apex`` is ``nvidia-apex``."""
    src = t.row.git_sources()[key]
    return Input("git", key.replace("_", "-"), url=getattr(t.matrix.sources, key), ref=src.ref, commit=src.commit)


def commit_of(t: Target, key: str, commits: dict[str, str | None]) -> str | None:
    """The commit a source builds at: what the build resolved, else what matrix.yaml pins."""
    src = t.row.git_sources().get(key)
    return commits.get(key.replace("_", "-")) or (src.commit if src else None)


def _source_labels(t: Target, keys: tuple[str, ...], commits: dict[str, str | None]) -> dict[str, str]:
    """``<source>`` = the ref and ``<source>-commit`` = the commit, for each source of the layer."""
    out: dict[str, str] = {}
    for key in keys:
        src = t.row.git_sources().get(key)
        if src is None:
            continue
        name = key.replace("_", "-")
        out[name] = src.ref
        commit = commit_of(t, key, commits)
        if commit:
            out[f"{name}-commit"] = commit
    return out


def _pta(t: Target, commits: dict[str, str | None]) -> tuple[dict[str, Any], list[Input]]:
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
    ]
    if t.row.apex:
        inputs += [git_input(t, "apex"), git_input(t, "nvidia_apex"), os_input(t, APEX_BUILD_PACKAGES)]
    labels = _labels(
        {"layer": "pta", "torch": t.torch, "torch-npu": t.torch_npu, **_source_labels(t, ("apex",), commits)}
    )
    index_args = f"--extra-index-url {t.torch_index}" if t.torch_index else ""
    ctx = {"torch_args": " ".join(args), "index_args": index_args, "labels": labels, "apex": bool(t.row.apex)}
    return {**ctx, "apex_packages": APEX_BUILD_PACKAGES}, inputs


def stack_json(t: Target, commits: dict[str, str | None]) -> str:
    """``/etc/ascend-llm-stack/stack.json``: the resolved row, read by ``ascend-llm check``."""
    r = t.row
    sources: dict[str, Any] = {}
    for key, src in r.git_sources().items():
        if key == "nvidia_apex":
            continue
        entry: dict[str, Any] = {"ref": src.ref, "commit": commit_of(t, key, commits)}
        if key == "mindspeed_llm":
            entry = {"release": r.mindspeed_llm.release, **entry}
        sources[key] = entry
    data = {
        **{k: v for k, v in t.describe().items() if k not in ("platform", "mindspeed_llm")},
        "cann_layout": {**cann_layout_facts(t), "cxx_abi": t.cxx11_abi},
        "transformers": r.transformers,
        "apex": None,
        **sources,
    }
    return json.dumps(data, indent=2) + "\n"


def _mindspeed(t: Target, commits: dict[str, str | None]) -> tuple[dict[str, Any], list[Input]]:
    r = t.row
    inputs = [git_input(t, key) for key in ("mindspeed", "mindspeed_llm", "megatron")]
    labels = _labels(
        {
            "layer": "mindspeed",
            **_source_labels(t, ("mindspeed", "mindspeed_llm", "megatron"), commits),
            "transformers": r.transformers,
        }
    )
    return {"labels": labels}, inputs


def _runtime(t: Target, _commits: dict[str, str | None]) -> tuple[dict[str, Any], list[Input]]:
    # The user's part of the context (and its labels) is added by plan(): it is a build option.
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


def row_pins(t: Target) -> list[str]:
    """Every pin of the target after the base layer: CANN's, the MindSpeed-LLM release's, the row's own."""
    cann = [d for d in t.matrix.cann_packages.python_deps if any(c in d for c in "<>=")]
    release = t.matrix.support.mindspeed_llm.get(t.row.mindspeed_llm.release)
    return list(dict.fromkeys([*cann, *(release.pins if release else []), *t.row.pip_pins]))


def constraints(t: Target, layer: str) -> str:
    """pip constraints for a layer's installs: later steps must never move torch or the pins.

    The base layer is shared by every row with the same OS/Python/arch, so it takes none of a row's.
    """
    lines = ["# pip constraints rendered from matrix.yaml; applied to every pip install of this layer"]
    if layer != "base":
        # CANN's own pins (protobuf, numpy) and the release's hold in every later layer too.
        lines += [f"torch=={t.torch}", f"torch_npu=={t.torch_npu}", *row_pins(t)]
    return "\n".join(lines) + "\n"


NO_LOCK = "# no Python lock yet: `invoke lock` (or invoke build) writes locks/<row>/<target>.txt\n"
EMPTY_SECTION = "# locked: no new packages in this layer\n"
# The lock file each layer mounts, and the lock section it holds.
LOCK_FILES = {
    "base": {"requirements.lock": "base"},
    "pta": {"requirements.lock": "pta", "apex-build.lock": "apex-build"},
    # the runtime section (the stage runner's dependencies) too: installed before the sources, a new
    # MindSpeed-LLM commit does not make every node pull tensorboard and matplotlib again
    "mindspeed": {"requirements.lock": "mindspeed", "runtime.lock": "runtime"},
}


def lock_text(lock: Any, section: str) -> str:
    """A layer's lock file: its section of the target's Python lock (pylock.PyLock), or why there is none."""
    if lock is None:
        return NO_LOCK
    text = lock.sections.get(section)
    if text is None:
        return NO_LOCK
    return text if "--hash=" in text else EMPTY_SECTION


def _user_context(user: RuntimeUser) -> dict[str, Any]:
    return {
        "user": user,
        "user_env": user.env(),
        "home_dirs": user.home_dirs(),
        "stage_writes": list(STAGE_WRITES),
        "user_labels": _labels({"user": user.name, "uid": str(user.uid), "gid": str(user.gid)}),
    }


def plan(
    t: Target,
    commits: dict[str, str | None] | None = None,
    lock: Any = None,
    user: RuntimeUser | None = None,
    os_local: Collection[str] = (),
) -> tuple[BuildPlan, dict[str, str]]:
    """The build plan and the rendered files (relative path -> text), without touching disk.

    ``lock`` is the target's Python lock (:class:`ascend_stack.pylock.PyLock`); without one the pip
    steps refuse to run, saying so (``invoke render`` before ``invoke lock``). ``os_local``: the
    layers whose OS packages come from the local folder (mounted as the only repository of their
    install steps) rather than from a mirror.
    """
    from .ospackages import CONTEXT_DIR, MOUNT

    commits = commits or {}
    user = user or RuntimeUser()
    env = template_env()
    out = BuildPlan(target=t.describe(), image=final_tag(t), platform=t.platform)
    files: dict[str, str] = {}
    for spec in LAYERS:
        ctx, inputs = spec.context(t, commits)
        if spec.name == "runtime":
            ctx = {**ctx, **_user_context(user)}
            ctx["labels"] = {**ctx["labels"], **ctx["user_labels"]}
        parent_tag = layer_tag(t, LAYER_BY_NAME[spec.parent]) if spec.parent else None
        os_repo = MOUNT if spec.name in os_local else None
        text = env.get_template(f"{spec.name}/Dockerfile.j2").render(t=t, parent_tag=parent_tag, os_repo=os_repo, **ctx)
        layer_files = {f"{spec.name}/Dockerfile": text}
        mounts: list[str] = []
        if "--mount=type=bind,source=wheelhouse" in text:
            layer_files[f"{spec.name}/constraints.txt"] = constraints(t, spec.name)
            mounts.append("wheelhouse")
        if spec.name == "mindspeed":
            layer_files["mindspeed/stack.json"] = stack_json(t, commits)
        if spec.name == "pta" and ctx.get("apex"):
            layer_files["pta/apex_build.py"] = (IMAGES_DIR / "pta/apex_build.py").read_text()
        for file, section in LOCK_FILES.get(spec.name, {}).items():
            if f"source={file}," in text:
                layer_files[f"{spec.name}/{file}"] = lock_text(lock, section)
        env_capture = None
        if spec.name == "cann":
            layer_files["cann/capture-env.py"] = (IMAGES_DIR / "cann/capture-env.py").read_text()
            env_capture = {
                "script": "cann/capture-env.py",
                "template": "cann/env.Dockerfile.j2",
                "driver_libs": DRIVER_LIBS,
                "sources": cann_env_sources(t),
            }
        mounts += sorted({i.kind for i in inputs} & {"package", "git", "project"})
        if os_repo:
            mounts.append(CONTEXT_DIR)
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


def target_key(t: Target) -> str:
    """``<os>-<chip>-torch<ver>-<arch>``: a target within its row (build folders, budgets, locks)."""
    return "-".join(t.tag_part(p) for p in ("os", "chip", "torch", "arch"))


def default_out_dir(t: Target, root: Path = Path("build")) -> Path:
    """``build/<row>/<os>-<chip>-torch<ver>-<arch>/``: one folder per variant of a row."""
    return root / t.row.key / target_key(t)
