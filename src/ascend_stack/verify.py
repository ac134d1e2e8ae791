"""``invoke verify``: certify a built image against the matrix, its lock file and its own labels.

The checks are pytest-testinfra tests in ``tests/image/<layer>/``, run inside a container of the
image (``docker://`` backend). They are inherited down the layer chain: an image runs the checks
of its own layer (its ``io.ascend-llm-stack.layer`` label) and of every layer below it.

* Tier 1 runs anywhere (no NPU): versions, CANN records, environment, sources, entrypoint, what
  must not be in the image, labels.
* Tier 2 (tests marked ``tier2``) needs Ascend devices and the host's driver in the container;
  elsewhere each tier-2 check reports itself skipped with one line saying why.

This module holds what the checks and the task share: the layer chain, the expected values
(:class:`Expected`), small parsers of what the image holds, how to pass the NPUs into the
container, and running pytest and summarising its report for a person.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import render
from .container import inspect_image
from .errors import UserError
from .lock import LOCK_DIR, Lock, lock_path
from .matrix import Matrix
from .run import access_groups
from .target import Target, resolve

REPO = Path(__file__).resolve().parents[2]
IMAGE_TESTS = REPO / "tests" / "image"
LAYER_LABEL = f"{render.LABEL_PREFIX}.layer"
TIERS = ("1", "2", "all")
STACK_JSON = "/etc/ascend-llm-stack/stack.json"
TOOLKIT_HOME = "/usr/local/Ascend/ascend-toolkit/latest"
NNAL_HOME = "/usr/local/Ascend/nnal/atb/latest"

# Libraries of the NPU driver (HDK). They live on the host (/usr/local/Ascend/driver/lib64/{driver,
# common}, /usr/local/dcmi) and are mounted at run time, never built into the image
# (shared/reference/ascend-runtime.md §2.1), so `ldd` may report exactly these as "not found".
HOST_DRIVER_LIBS = frozenset(
    {
        "libascend_hal.so",  # driver/lib64/driver: the HAL every CANN runtime library loads
        "libdrvdsmi_host.so",  # driver/lib64/driver: device management (DSMI)
        "libdrvhdc_host.so",  # driver/lib64/driver: host-device channel
        "libdrvdevdrv.so",  # driver/lib64/driver
        "libdcmi.so",  # /usr/local/dcmi and driver/lib64/driver
    }
)
# Device nodes (under /dev) besides davinciN, and host paths of the driver (ascend-runtime.md §2.1).
NPU_CONTROL_DEVICES = ("davinci_manager", "devmm_svm", "hisi_hdc")
DRIVER_MOUNTS = (
    "/usr/local/Ascend/driver",
    "/usr/local/dcmi",
    "/usr/local/bin/npu-smi",
    "/etc/ascend_install.info",
)
# Set per container by Ascend Docker Runtime or per process by the user; never baked into an image
# (hiascend mindcluster dlruntime_ug_006; ascend-runtime.md §2.2).
RUNTIME_ONLY_VARIABLES = (
    "ASCEND_DOCKER_RUNTIME",
    "ASCEND_VISIBLE_DEVICES",
    "ASCEND_RUNTIME_OPTIONS",
    "ASCEND_RUNTIME_MOUNTS",
    "ASCEND_VNPU_SPECS",
    "ASCEND_RT_VISIBLE_DEVICES",
)
# Variables a build step may use and a finished image must not keep.
BUILD_ONLY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_TRUSTED_HOST",
    "PIP_CERT",
    "PIP_NO_INDEX",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "APT_OPTS",
    "DNF_OPTS",
    "APT_MIRROR",
)
# CANN variables the runtime layer sets itself (not set_env.sh): where the non-root user's kernel
# cache and work files go (render.RuntimeUser.env).
USER_PATH_VARIABLES = tuple(name for name in render.RuntimeUser().env() if name.startswith("ASCEND_"))
# Kernel directories under opp/built-in/op_impl/ai_core/tbe/kernel per matrix chip key.
KERNEL_DIRS = {"910b": "ascend910b", "A3": "ascend910_93"}
SEARCH_PATHS = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "ASCEND_CUSTOM_OPP_PATH")
# Variables owned by CANN's set_env.sh scripts: an image may have none that the scripts do not set.
CANN_VARIABLE = re.compile(r"^(ASCEND_|ATB_|LCCL_|ASDOPS_|TOOLCHAIN_HOME$)")
_SHELL_NOISE = {"_", "SHLVL", "PWD", "OLDPWD"}


# --------------------------------------------------------------------------------------------------------
# layers and expected values


def layer_chain(layer: str) -> list[str]:
    """The layers an image of ``layer`` contains, bottom first: ``pta`` -> base, cann, pta."""
    if layer not in render.LAYER_BY_NAME:
        raise UserError(f"unknown layer '{layer}': choose one of {', '.join(render.LAYER_BY_NAME)}")
    chain = [layer]
    while (parent := render.LAYER_BY_NAME[chain[-1]].parent) is not None:
        chain.append(parent)
    return chain[::-1]


def label(labels: Mapping[str, str], key: str) -> str | None:
    return labels.get(f"{render.LABEL_PREFIX}.{key}")


@dataclass(frozen=True)
class Expected:
    """What the image must hold: the matrix target its labels name, or (a base image) its labels."""

    layer: str
    os: str
    python: str
    arch: str
    target: Target | None  # None for a base image: it belongs to no matrix row

    @property
    def layers(self) -> list[str]:
        return layer_chain(self.layer)


def expected_from_labels(labels: Mapping[str, str], matrix: Matrix) -> Expected:
    """Resolve the image's labels to a matrix target (``UserError`` if the matrix has no such target)."""
    layer = label(labels, "layer")
    if layer is None:
        raise UserError(f"the image has no {LAYER_LABEL} label: it was not built by ascend-llm-stack")
    layer_chain(layer)
    row = label(labels, "row")
    if row is None:
        missing = [k for k in ("os", "python", "arch") if label(labels, k) is None]
        if missing:
            raise UserError(f"the image has no {render.LABEL_PREFIX}.{missing[0]} label")
        return Expected(layer, label(labels, "os") or "", label(labels, "python") or "", label(labels, "arch") or "",
                        None)  # fmt: skip
    try:
        target = resolve(
            matrix,
            row,
            torch=label(labels, "torch"),
            arch=label(labels, "arch"),
            os=label(labels, "os"),
            chip=label(labels, "chip"),
        )
    except UserError as err:
        raise UserError(f"the image's labels name no target of matrix.yaml: {err}") from None
    if target.row.key != row:
        raise UserError(f"the image's row label '{row}' names no row of matrix.yaml (closest: {target.row.key})")
    return Expected(layer, target.os_name, target.python, target.arch, target)


def load_lock(row: str, lock_dir: Path | None) -> Lock | None:
    """The row's lock from ``lock_dir`` (or ``locks/`` when it has the row's file); ``None`` if there is none."""
    directory = lock_dir or LOCK_DIR
    if not lock_path(row, directory).is_file():
        return None
    return Lock.load(row, directory)


# --------------------------------------------------------------------------------------------------------
# parsers of what an image holds


def parse_key_values(text: str, sep: str = "=") -> dict[str, str]:
    """``key=value`` (or ``key : value``) lines; quotes around values are dropped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if sep in line and not line.lstrip().startswith("#"):
            key, value = line.split(sep, 1)
            out[key.strip()] = value.strip().strip('"')
    return out


def os_problem(os_name: str, release: Mapping[str, str]) -> str | None:
    """Why ``/etc/os-release`` is not the matrix OS ``os_name`` (``ubuntu22.04``, ``debian-bookworm``); else None."""
    m = re.match(r"^([a-z]+)-?(.+)$", os_name.lower())
    if m is None:
        return f"cannot read the OS name '{os_name}'"
    distro, version = m.groups()
    seen_id = release.get("ID", "").lower()
    versions = {release.get("VERSION_ID", "").lower(), release.get("VERSION_CODENAME", "").lower()}
    if seen_id != distro or version not in versions:
        pretty = release.get("PRETTY_NAME") or f"{seen_id} {release.get('VERSION_ID', '?')}"
        return f"the image runs {pretty}, not {os_name}"
    return None


def apex_problem(version: str | None) -> str | None:
    """Why an installed apex of ``version`` is not Ascend apex, or None when it is.

    Ascend apex marks its version: ``0.1-ascend`` (49a7994's setup.py; not PEP 440, pip shows it as
    written), ``0.1+ascend`` or ``0.1.dev20241015+ascend`` (later commits, the seed guide's wheel).
    NVIDIA's apex is plain ``0.1``: its fused CUDA optimizers cannot run on an NPU.
    """
    if version is None:
        return "apex is not installed"
    if not re.search(r"[-+_.]ascend\b", version.lower()):
        return f"apex {version} is installed, not Ascend apex (its version says ascend, e.g. 0.1-ascend)"
    return None


def version_cfg_versions(text: str) -> dict[str, str]:
    """``version.cfg``'s ``<component>_running_version=[7.x.y:<CANN>]`` lines -> {component: CANN version}."""
    out: dict[str, str] = {}
    for m in re.finditer(r"^(\w+)_running_version=\[([^\]]*)\]", text, re.MULTILINE):
        out[m.group(1)] = m.group(2).rsplit(":", 1)[-1]
    return out


def ldd_missing(output: str) -> set[str]:
    """The sonames ``ldd`` could not find (``libx.so => not found``)."""
    return {m.group(1) for m in re.finditer(r"^\s*(\S+) => not found", output, re.MULTILINE)}


def standin_reason(head: bytes, name: str) -> str | None:
    """Why a CANN library whose first bytes are ``head`` is a test stand-in, or None for a real one.

    The stand-ins of tests/fakes install short text files that say so where CANN has ELF libraries;
    anything that is not ELF *and* does not say so is a broken install, not a stand-in.
    """
    if head.startswith(b"\x7fELF") or b"stand-in" not in head.lower():
        return None
    first = head.decode(errors="replace").splitlines()[0].strip()
    return f"the image's CANN is a test stand-in ({name} is not an ELF file but says: {first!r})"


def split_search_path(value: str | None) -> list[str]:
    return [p for p in (value or "").split(":") if p]


def env_problems(
    image_env: Mapping[str, str],
    clean: Mapping[str, str],
    sourced: Mapping[str, str],
    driver_dirs: Iterable[str] = (),
) -> list[str]:
    """How the image's environment differs from what sourcing set_env.sh in a clean shell gives.

    ``clean`` is ``env`` of a clean shell, ``sourced`` the same shell after sourcing the toolkit's and
    NNAL's ``set_env.sh``. Every variable the scripts set or change must be in the image with that
    value; search paths must hold the scripts' entries in the scripts' order. The other way round,
    the image may not hold a CANN variable, or a search-path entry under /usr/local/Ascend, that
    the scripts do not give (``driver_dirs``, the driver's library directories, excepted).
    """
    problems: list[str] = []
    added = {k: v for k, v in sourced.items() if k not in _SHELL_NOISE and clean.get(k) != v}
    for name, value in sorted(added.items()):
        if name in SEARCH_PATHS:
            before = set(split_search_path(clean.get(name)))
            wanted = [p for p in dict.fromkeys(split_search_path(value)) if p not in before]
            have = split_search_path(image_env.get(name))
            missing = [p for p in wanted if p not in have]
            if missing:
                problems.append(f"{name} lacks {', '.join(missing)} (set_env.sh adds it)")
            elif [p for p in dict.fromkeys(have) if p in wanted] != wanted:
                problems.append(f"{name} holds set_env.sh's entries in another order than set_env.sh gives")
        elif name not in image_env:
            problems.append(f"{name} is missing (set_env.sh sets it to {value!r})")
        elif image_env[name] != value:
            problems.append(f"{name} is {image_env[name]!r} in the image, set_env.sh gives {value!r}")
    allowed = set(driver_dirs)
    for name in SEARCH_PATHS:
        given = set(split_search_path(sourced.get(name)))
        stale = [
            p
            for p in split_search_path(image_env.get(name))
            if p.startswith("/usr/local/Ascend/") and p not in given and p not in allowed
        ]
        if stale:
            problems.append(f"{name} has {', '.join(stale)}, which set_env.sh does not add")
    for name in sorted(image_env):
        own = name in RUNTIME_ONLY_VARIABLES or name in USER_PATH_VARIABLES
        if CANN_VARIABLE.match(name) and name not in added and not own:
            problems.append(f"{name}={image_env[name]!r} is in the image but set_env.sh does not set it")
    return problems


# --------------------------------------------------------------------------------------------------------
# NPUs for tier 2


def npu_run_args(devices: str | None = None, dev: Path = Path("/dev")) -> list[str]:
    """``docker run`` arguments that pass this host's NPUs and driver into a container (none if it has none).

    ``devices``: a comma-separated list of NPU numbers (``0,1``); default every ``/dev/davinciN``;
    ``none`` passes nothing (when ``--docker-arg=--runtime=ascend`` lets Ascend Docker Runtime do it).
    """
    if devices and devices.strip().lower() == "none":
        return []
    found = sorted(
        (p for p in dev.glob("davinci*") if re.fullmatch(r"davinci\d+", p.name)), key=lambda p: int(p.name[7:])
    )
    if devices:
        wanted = {d.strip() for d in devices.split(",") if d.strip()}
        unknown = sorted(wanted - {p.name[7:] for p in found})
        if unknown:
            have = ", ".join(p.name[7:] for p in found) or "none"
            raise UserError(f"--devices {devices}: no /dev/davinci{unknown[0]} on this host (it has: {have})")
        found = [p for p in found if p.name[7:] in wanted]
    if not found:
        return []
    args: list[str] = []
    nodes = [str(p) for p in [*found, *(dev / name for name in NPU_CONTROL_DEVICES)] if p.exists()]
    for node in nodes:
        args += ["--device", node]
    mounts = [path for path in DRIVER_MOUNTS if Path(path).exists()]
    for path in mounts:
        args += ["--volume", f"{path}:{path}:ro"]
    # The checks run as the image's non-root user, as a stage does: the groups `invoke run` would add.
    for gid in access_groups(nodes, mounts):
        args += ["--group-add", str(gid)]
    return [*args, "--shm-size", "1g"]


# --------------------------------------------------------------------------------------------------------
# running the checks


@dataclass(frozen=True)
class CheckResult:
    layer: str
    name: str
    tier: str  # "1" or "2"
    outcome: str  # passed | failed | skipped
    message: str


@dataclass
class Verdict:
    image: str
    layers: list[str]
    tier: str
    results: list[CheckResult]
    log: Path
    pytest_exit: int

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.outcome == "failed"]

    @property
    def ok(self) -> bool:
        return self.pytest_exit in (0, 5) and not self.failed and bool(self.results)

    def summary(self) -> str:
        """One line per check (PASS/FAIL/SKIP, layer, check, reason), then one verdict line."""
        tags = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}
        width = max([len(r.name) for r in self.results] + [10])
        lines = [f"verify {self.image}: layers {' > '.join(self.layers)}, tier {self.tier}"]
        for r in self.results:
            lines.append(f"  {tags[r.outcome]}  {r.layer:<9}  {r.name:<{width}}  {r.message}".rstrip())
        return "\n".join([*lines, self.verdict_line()])

    def verdict_line(self) -> str:
        if self.failed:
            names = ", ".join(f"{r.layer}/{r.name}" for r in self.failed)
            return f"verdict: FAIL: {len(self.failed)} of {len(self.results)} checks failed: {names} (log: {self.log})"
        if not self.ok:
            return f"verdict: ERROR: the checks did not run (pytest exit {self.pytest_exit}); see {self.log}"
        parts = []
        for tier in ("1", "2"):
            mine = [r for r in self.results if r.tier == tier]
            if not mine:
                continue
            passed, skipped = (sum(r.outcome == o for r in mine) for o in ("passed", "skipped"))
            reasons = sorted({r.message for r in mine if r.outcome == "skipped"})
            why = f" ({reasons[0]})" if not passed and len(reasons) == 1 else ""
            parts.append(f"tier {tier}: {passed} passed, {skipped} skipped{why}")
        return f"verdict: PASS: {'; '.join(parts)}"


def build_hint(target: Target | None) -> str:
    if target is None:
        return "build it with `invoke build --cann <row> ...` (see `invoke matrix`), or pull it"
    parts = [f"--cann {target.row.key}", f"--torch {target.torch}", f"--arch {target.arch}", f"--os {target.os_name}",
             f"--chip {target.chip}"]  # fmt: skip
    return f"build it with `invoke build {' '.join(parts)}`"


def image_layer(image: str, target: Target | None = None) -> str:
    """The image's layer label; a missing image or label is a one-line :class:`UserError`."""
    info = inspect_image(image)
    if info is None:
        raise UserError(f"no image {image} here: {build_hint(target)}")
    labels = (info.get("Config") or {}).get("Labels") or {}
    layer = labels.get(LAYER_LABEL)
    if layer is None:
        raise UserError(f"{image} has no {LAYER_LABEL} label: it was not built by ascend-llm-stack")
    layer_chain(layer)
    return layer


def pytest_command(
    image: str,
    layers: Sequence[str],
    *,
    tier: str = "all",
    report: Path,
    lock_dir: Path | None = None,
    matrix_path: Path | None = None,
    devices: str | None = None,
    docker_args: Sequence[str] = (),
    keyword: str | None = None,
) -> list[str]:
    argv = [sys.executable, "-m", "pytest", *(str(IMAGE_TESTS / layer) for layer in layers)]
    argv += ["--image", image, "--tier", tier, "--verify-report", str(report)]
    argv += ["-p", "no:cacheprovider", "-q", "--no-header", "--tb=short", "-rN", "--color=no"]
    if lock_dir:
        argv += ["--lock-dir", str(lock_dir)]
    if matrix_path:
        argv += ["--matrix", str(matrix_path)]
    if devices:
        argv += ["--devices", devices]
    for arg in docker_args:
        argv.append(f"--docker-arg={arg}")
    if keyword:
        argv += ["-k", keyword]
    return argv


def read_report(path: Path) -> list[CheckResult]:
    if not path.is_file():
        return []
    return [CheckResult(**item) for item in json.loads(path.read_text(encoding="utf-8"))]


def run(
    image: str,
    *,
    tier: str = "all",
    lock_dir: Path | None = None,
    matrix_path: Path | None = None,
    devices: str | None = None,
    docker_args: Sequence[str] = (),
    keyword: str | None = None,
    target: Target | None = None,
    log_dir: Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> Verdict:
    """Run the checks of ``image``'s layer chain through pytest and collect one result per check."""
    if tier not in TIERS:
        raise UserError(f"unknown tier '{tier}' for --tier: choose one of {', '.join(TIERS)}")
    if not IMAGE_TESTS.is_dir():
        raise UserError(f"{IMAGE_TESTS} is missing: run invoke verify from a checkout of ascend-llm-stack")
    if lock_dir is not None and not lock_dir.is_dir():
        raise UserError(f"--lock-dir {lock_dir}: no such directory")
    layers = layer_chain(image_layer(image, target))
    npu_run_args(devices)  # a bad --devices fails here, with one line, not inside pytest
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="ascend-verify-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", image)
    report, log = log_dir / f"{safe}.json", log_dir / f"{safe}.log"
    report.unlink(missing_ok=True)
    argv = pytest_command(image, layers, tier=tier, report=report, lock_dir=lock_dir, matrix_path=matrix_path,
                          devices=devices, docker_args=docker_args, keyword=keyword)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    if echo:
        echo(f"running: {' '.join(argv[1:])}")
    with log.open("w", encoding="utf-8") as fh:
        done = subprocess.run(argv, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False)
    return Verdict(image, layers, tier, read_report(report), log, done.returncode)
