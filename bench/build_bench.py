#!/usr/bin/env python3
"""Build benchmark: ascend-llm-stack's layered chain vs a naive single Dockerfile, for the test row.

    python bench/build_bench.py [--payload-mb N] [--seed S] [--keep]

One run builds the hidden ``test`` matrix row (x86_64) into a fresh temp root, twice over: through
``ascend_stack.build.Builder`` and as the naive single Dockerfile ``bench/naive.Dockerfile.j2``. It
prints one Markdown table to stdout (progress and BuildKit logs go to stderr):

1. cold build time: ``--no-cache`` for both, and stand-in installers whose payload is unique to this
   run, so no layer can come from an earlier run's BuildKit cache;
2. no-op rebuild: time and ``docker build`` calls (``Driver.builds`` for ours, which must be 0; one
   fully cached ``docker build`` for the naive Dockerfile);
3. rebuild after a MindSpeed-LLM ref change (a new commit on the stand-in, as
   tests/test_build_integration.py does) and what rebuilt;
4. final image size (``docker image inspect`` Size);
5. wasted bytes (ascend_stack/wasted.py, from ``docker save``) and their share of the image.

Inputs: the CANN installers and the git repositories are the stand-ins of tests/fakes (test fixtures,
not Huawei's or upstream code); torch comes from the local wheelhouse /opt/wheels, torch_npu and every
other Python package from PyPI (with the host CA as a BuildKit secret), OS packages from the Debian
mirror. Both builds start with all inputs already fetched; the time to fetch them is not measured.
The library runs from a snapshot of src/, images/, entrypoints/ and matrix.yaml taken when the run
starts (the script re-executes itself against it), so edits to this checkout while a run lasts cannot
change content hashes half-way. Everything this run tags is under ``bench-<seed>/``; tags, images and
the temp root are removed at the end unless ``--keep``. Needs a Docker engine
(``bash scripts/docker-engine.sh``) and ``pip install -e .``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
import yaml

from ascend_stack import render
from ascend_stack.baseimage import build_base_image
from ascend_stack.build import (
    Builder,
    BuildOptions,
    LayerResult,
    NetworkOptions,
    build_entrypoints_wheel,
    secret_files,
)
from ascend_stack.driver import BuildFailed, BuildKitClient, BuildRequest, Driver, find_buildkit_client
from ascend_stack.errors import UserError
from ascend_stack.inputs import InputDirs, ResolvedInputs, link_or_copy
from ascend_stack.matrix import parse_matrix
from ascend_stack.sources import export
from ascend_stack.target import Target, resolve
from ascend_stack.wasted import WasteReport, layer_commands, wasted_bytes

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
LOCAL_WHEELS = Path("/opt/wheels")  # this machine's torch-2.13.0+cpu wheel (see README: tests)
ROW, ARCH = "test", "x86_64"
MB = 1_000_000
DEFAULT_PAYLOAD_MB = 250
STARTED = time.monotonic()
# What the library reads from the checkout: frozen for the run (see snapshot_checkout).
SNAPSHOT_PARTS = ("src", "images", "entrypoints", "matrix.yaml")
ROOT_ENV = "ASCEND_BENCH_ROOT"  # set for the re-executed run: its temp root, with the snapshot in checkout/


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def note(*parts: object) -> None:
    """Progress, to stderr (stdout carries only the table)."""
    print(f"[bench {time.monotonic() - STARTED:7.1f}s]", *parts, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--payload-mb", type=int, default=DEFAULT_PAYLOAD_MB, metavar="N",
        help=f"payload of each stand-in installer (toolkit, kernels, NNAL), in MB (default {DEFAULT_PAYLOAD_MB})",
    )  # fmt: skip
    parser.add_argument("--seed", help="makes the payload unique to this run (default: a fresh random one)")
    parser.add_argument("--keep", action="store_true", help="keep the temp root and the images this run tagged")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.payload_mb < 1:
        parser.error("--payload-mb must be at least 1")
    args.seed = (args.seed or secrets.token_hex(4)).lower()
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,31}", args.seed):
        parser.error("--seed: up to 32 of a-z 0-9 _ . - (it becomes part of image names)")
    return args


# ---------------------------------------------------------------------------------------------------
# inputs


def _fakes() -> SimpleNamespace:
    """tests/fakes: stand-in CANN installers and git repositories (test fixtures, see their docstrings)."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from fakes.cann import make_cann_packages
    from fakes.sources import add_commit, make_source_repos, megatron_core_wheel

    def repos(dest: Path) -> dict[str, Path]:
        return make_source_repos(dest, megatron_core_wheel(REPO / "build" / "test-cache"))

    return SimpleNamespace(make_cann_packages=make_cann_packages, make_source_repos=repos,
                           add_commit=add_commit)  # fmt: skip


def _line_offset(data: bytes, line: int) -> int:
    """Byte offset where 1-based ``line`` of ``data`` starts."""
    pos = 0
    for _ in range(line - 1):
        pos = data.index(b"\n", pos) + 1
    return pos


def stamp_installer(path: Path, token: str) -> None:
    """Make a stand-in installer's payload unique to ``token`` while keeping it a valid installer.

    tests/fakes/cann.py derives the payload from the file name only (no seed parameter), so two runs
    would produce byte-identical installers and BuildKit could reuse an earlier run's layers. This
    overwrites the first 32 bytes of ``standin-payload.bin`` inside the embedded tar with a hash of
    ``token``, then rewrites the ``archive_sha256=`` line of the header (same length), so the
    installer's own integrity check (``--check``, also run before every install) still passes.
    """
    with open(path, "r+b") as f:
        head = f.read(1 << 16)
        skip = re.search(rb"^archive_skip=(\d+)$", head, re.M)
        sha = re.search(rb"^archive_sha256=([0-9a-f]{64})$", head, re.M)
        if not skip or not sha:
            raise BenchError(f"{path.name}: not a tests/fakes installer (no archive_skip/archive_sha256 line)")
        start = _line_offset(head, int(skip[1]))
        f.seek(start)
        with tarfile.open(fileobj=f, mode="r:") as tar:
            payload = next((m for m in tar if m.name.endswith("standin-payload.bin")), None)
        stamp = hashlib.sha256(f"bench-payload {token} {path.name}".encode()).digest()
        if payload is None or payload.size < len(stamp):
            raise BenchError(f"{path.name}: no payload to make unique")
        f.seek(payload.offset_data)
        f.write(stamp)
        f.seek(start)
        digest = hashlib.sha256()
        while chunk := f.read(1 << 20):
            digest.update(chunk)
        f.seek(sha.start(1))
        f.write(digest.hexdigest().encode())
    check = subprocess.run(["bash", str(path), "--check", "--quiet"], capture_output=True, text=True)
    if check.returncode != 0:
        raise BenchError(f"{path.name} fails its own --check after stamping: {check.stderr.strip()}")


def make_installers(dest: Path, target: Target, payload_bytes: int, token: str) -> dict[str, Path]:
    """The target's three stand-in installers, each with ``payload_bytes`` of payload unique to ``token``."""
    fakes = _fakes()
    paths = fakes.make_cann_packages(dest, target.cann, target.arch, chips=(target.chip,), payload_bytes=payload_bytes)
    for path in paths.values():
        stamp_installer(path, token)
    return paths


def hotfix_target(matrix_raw: dict[str, Any], commit: str) -> Target:
    """A copy of the matrix whose test row pins MindSpeed-LLM to ``commit``."""
    raw = copy.deepcopy(matrix_raw)
    row = next(r for r in raw["rows"] if r.get("id") == ROW)
    row["mindspeed_llm"]["ref"] = commit
    return resolve(parse_matrix(raw), ROW, arch=ARCH)


def snapshot_checkout(dest: Path) -> Path:
    """Copy what the library reads from this checkout (SNAPSHOT_PARTS) into ``dest``.

    Other work goes on in this checkout while a run lasts ~10 minutes: an edit to entrypoints/ (an
    input of the runtime layer's content hash) or to images/ between the cold build and the no-op
    rebuild would turn the no-op into a real rebuild and the measurement into noise.
    """
    ignore = shutil.ignore_patterns("__pycache__", ".ruff_cache", ".pytest_cache", "*.egg-info", "build", "dist")
    for part in SNAPSHOT_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=ignore, symlinks=True)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / part)
    return dest


def reexec_on_snapshot(args: argparse.Namespace) -> None:
    """Snapshot the checkout into a new temp root and replace this process with a run against it."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-build-{args.seed}-"))
    try:
        checkout = snapshot_checkout(root / "checkout")
        pythonpath = os.pathsep.join(p for p in (str(checkout / "src"), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, ROOT_ENV: str(root), "PYTHONPATH": pythonpath}
        argv = [sys.executable, str(Path(__file__).resolve()), *args.argv, "--seed", args.seed]
        sys.stderr.flush()
        os.execve(sys.executable, argv, env)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------------
# Docker


@dataclass
class RecordingDriver(Driver):
    """A :class:`Driver` that also remembers the ID of every image it built (for the clean-up)."""

    image_ids: list[str] = field(default_factory=list)

    def build(self, req: BuildRequest, log_name: str) -> str:
        image_id = super().build(req, log_name)
        self.image_ids.append(image_id)
        return image_id


def connect() -> tuple[BuildKitClient, Any]:
    import docker

    try:
        client = docker.from_env(timeout=900)
        client.ping()
    except Exception as exc:
        raise BenchError(
            f"no Docker engine answers ({type(exc).__name__}): run bash scripts/docker-engine.sh"
        ) from None
    return find_buildkit_client(), client


@contextlib.contextmanager
def namespace(name: str) -> Iterator[None]:
    """Tag the chain ``<name>/<layer>:...`` instead of ``ascend-llm-stack/<layer>:...``.

    The benchmark must neither move the project's human tags nor reuse (or shadow) the content
    tags of chains that other builds on this engine made; ``render.IMAGE`` is the one place the
    library takes the image name from.
    """
    saved = render.IMAGE  # type: ignore[attr-defined]
    render.IMAGE = name  # type: ignore[attr-defined]
    try:
        yield
    finally:
        render.IMAGE = saved  # type: ignore[attr-defined]


@dataclass
class Steps:
    """The Dockerfile steps of one BuildKit build, from its plain progress output."""

    total: int = 0
    rerun: list[tuple[int, int, str]] = field(default_factory=list)  # (step, of, instruction)

    @property
    def cached(self) -> int:
        return self.total - len(self.rerun)


_STEP = re.compile(r"^#(\d+) \[(?:[^\]\s]+ )?\s*(\d+)/(\d+)\] (.+)$")
_CACHED = re.compile(r"^#(\d+) CACHED$")


def parse_steps(lines: list[str]) -> Steps:
    """Which ``[i/N]`` steps ran and which were ``CACHED`` (the FROM step is not counted)."""
    steps: dict[int, tuple[int, int, str]] = {}
    cached: set[int] = set()
    for line in lines:
        if m := _STEP.match(line):
            steps.setdefault(int(m[1]), (int(m[2]), int(m[3]), m[4]))
        elif m := _CACHED.match(line):
            cached.add(int(m[1]))
    build = {vertex: s for vertex, s in steps.items() if not s[2].startswith("FROM ")}
    return Steps(len(build), sorted(s for vertex, s in build.items() if vertex not in cached))


@dataclass
class NaiveBuild:
    seconds: float
    image_id: str
    steps: Steps


def docker_build(client: BuildKitClient, req: BuildRequest, log_name: str) -> NaiveBuild:
    """One ``docker build`` through the same BuildKit client as ours, its log streamed to stderr."""
    with tempfile.TemporaryDirectory(prefix="bench-iid-") as tmp:
        iidfile = Path(tmp) / "iid"
        lines: list[str] = []
        started = time.monotonic()
        proc = subprocess.Popen(
            req.argv(client, iidfile), env={**os.environ, "DOCKER_BUILDKIT": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(f"[{log_name}] {line}")
            lines.append(line.rstrip("\n"))
        code = proc.wait()
        seconds = time.monotonic() - started
        if code != 0:
            last = next((line for line in reversed(lines) if line.strip()), "")
            raise BenchError(f"{log_name}: docker build exit {code}: {last.strip()}")
        return NaiveBuild(seconds, iidfile.read_text().strip(), parse_steps(lines))


def build_cache_bytes(docker: Any) -> int | None:
    """What BuildKit's build cache holds now (``docker system df``), or None if the engine won't say."""
    try:
        return sum(int(entry.get("Size") or 0) for entry in docker.df().get("BuildCache") or [])
    except Exception:
        return None


def image_layers(docker: Any, image_id: str) -> list[str]:
    return list(docker.images.get(image_id).attrs["RootFS"]["Layers"])


def measure_waste(docker: Any, image_id: str, scratch: Path) -> tuple[WasteReport, list[str]]:
    """``docker save`` the image into ``scratch``, walk its layers; also what made each layer.

    The archive is deleted afterwards.
    """
    archive = scratch / f"save-{image_id.split(':')[-1][:12]}.tar"
    try:
        with open(archive, "wb") as f:
            for chunk in docker.images.get(image_id).save(chunk_size=1 << 20, named=False):
                f.write(chunk)
        return wasted_bytes(archive), layer_commands(archive)
    finally:
        archive.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------
# the two builds


@dataclass
class Ours:
    seconds: float
    results: list[LayerResult]
    builds: int

    @property
    def image_id(self) -> str:
        image_id = self.results[-1].image_id
        assert image_id
        return image_id


def build_ours(target: Target, opts: BuildOptions, client: BuildKitClient, docker: Any, created: set[str]) -> Ours:
    driver = RecordingDriver(client, docker)
    started = time.monotonic()
    try:
        results = Builder(target, opts, driver, log=note).run()
    finally:
        created.update(driver.image_ids)
    seconds = time.monotonic() - started
    layers = ", ".join(f"{r.name} {r.status} {r.seconds:.1f}s" for r in results)
    note(f"ours: {fmt_secs(seconds)} in all: {layers} ({len(driver.builds)} docker builds)")
    return Ours(seconds, results, len(driver.builds))


def render_naive(t: Target) -> str:
    """bench/naive.Dockerfile.j2 for ``t``, with the lists the rendered chain uses (images/macros.j2 too)."""
    env = render.template_env()
    env.loader = jinja2.FileSystemLoader([BENCH, render.IMAGES_DIR])
    base, _ = render.LAYER_BY_NAME["base"].context(t, {})
    pta, _ = render.LAYER_BY_NAME["pta"].context(t, {})
    macros = env.get_template("macros.j2").module
    return env.get_template("naive.Dockerfile.j2").render(
        t=t,
        net_env=macros.net_env(),  # type: ignore[attr-defined]
        os_packages=[*base["os_packages"], "patch"],
        cann_python_deps=base["cann_python_deps"],
        files=render.cann_files(t),
        torch_args=pta["torch_args"],
    )


def naive_context(ctx: Path, t: Target, resolved: ResolvedInputs, dirs: InputDirs) -> Path:
    """The naive build's context: Dockerfile, constraints, installers, wheels, sources, ascend-llm wheel."""
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(render_naive(t))
    (ctx / "constraints.txt").write_text(render.constraints(t, "runtime"))  # what every layer after base uses
    build_entrypoints_wheel(ctx / "entrypoints")
    for item in resolved:
        if item.kind == "package":
            (ctx / "packages").mkdir(exist_ok=True)
            link_or_copy(item.path, ctx / "packages" / item.path.name)
        elif item.kind == "git":
            export(item.path, item.digest, ctx / "sources" / item.name)
    (ctx / "wheelhouse").mkdir()
    for folder in dirs.wheelhouses:  # what the pta layer mounts: every wheel of every wheelhouse
        for f in sorted(folder.glob("*")) if folder.is_dir() else ():
            if f.is_file() and f.suffix in (".whl", ".gz", ".zip"):
                link_or_copy(f, ctx / "wheelhouse" / f.name)
    return ctx


# ---------------------------------------------------------------------------------------------------
# the table


def fmt_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}" if unit == "GB" else f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def fmt_secs(s: float) -> str:
    if s < 10:
        return f"{s:.2f} s"
    if s < 120:
        return f"{s:.0f} s"
    return f"{int(s // 60)} min {s % 60:02.0f} s"


def _kind(path: str) -> str:
    return "CANN .run installers" if path.endswith(".run") else "wheels" if path.endswith(".whl") else "other"


def hidden_by_layer(report: WasteReport) -> list[tuple[int, int]]:
    """(layer index, bytes it hides), most first."""
    by_layer: dict[int, int] = {}
    for h in report.hidden:
        by_layer[h.hidden_in] = by_layer.get(h.hidden_in, 0) + h.size
    return sorted(by_layer.items(), key=lambda item: (-item[1], item[0]))


def command_summary(created_by: str, width: int = 90) -> str:
    """A layer's ``created_by`` without BuildKit's shell prefix and marker, its end kept if too long."""
    text = " ".join(created_by.replace("# buildkit", "").split())
    text = re.sub(r"^RUN (\|\d+ \S+ )?/bin/(ba)?sh -o pipefail -c ", "", text)
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def waste_cell(report: WasteReport, size: int, commands: list[str]) -> str:
    kinds = {"CANN .run installers": 0, "wheels": 0, "other": 0}
    for h in report.hidden:
        kinds[_kind(h.path)] += h.size
    parts = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in kinds.items() if v)
    cell = f"{fmt_bytes(report.wasted)} ({100 * report.wasted / size:.2f} % of the image)"
    if parts:
        cell += f": {parts}"
    if report.hidden:
        index, hidden = hidden_by_layer(report)[0]
        made_by = command_summary(commands[index], 50) if commands[index] else "?"
        cell += f"; {fmt_bytes(hidden)} of it hidden by layer {index + 1}/{len(report.layers)} `{made_by}`"
    return cell


def _short(instruction: str, width: int = 60) -> str:
    text = " ".join(instruction.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


@dataclass
class Measured:
    seed: str
    payload_bytes: int
    target: Target
    client: BuildKitClient
    ours_cold: Ours
    ours_noop: Ours
    ours_change: Ours
    naive_cold: NaiveBuild
    naive_noop: NaiveBuild
    naive_change: NaiveBuild
    sizes: dict[str, int]
    waste: dict[str, WasteReport]
    commands: dict[str, list[str]]  # side -> what made each layer of its final image
    new_layers: dict[str, tuple[int, int]]  # side -> (new, total) image layers after the ref change
    load: tuple[float, float]  # the host's 1-minute load average when the builds started and ended


def table(m: Measured) -> str:
    t = m.target
    caption = (
        f"**Build benchmark, one run** ({dt.date.today().isoformat()}, seed `{m.seed}`): the `{ROW}` row "
        f"(CANN {t.cann} stand-in installers, torch {t.torch} + torch_npu {t.torch_npu}, MindSpeed-LLM "
        f"{t.row.mindspeed_llm.release}, {t.os_name}, Python {t.python}, {t.arch}), built with BuildKit "
        f"(docker {m.client.version}, {os.cpu_count()} cores). Installers scaled down: toolkit, kernels and "
        f"NNAL stand-ins carry {fmt_bytes(m.payload_bytes)} of payload each ({fmt_bytes(3 * m.payload_bytes)}"
        f" in all; the real toolkit installer alone is several GB). Host load average (1 min) "
        f"{m.load[0]:.1f} at the start, {m.load[1]:.1f} at the end: other work shares the machine."
    )
    oc, on, och = m.ours_cold, m.ours_noop, m.ours_change
    nc, nn, nch = m.naive_cold, m.naive_noop, m.naive_change
    rebuilt = [r.name for r in och.results if r.status == "built"]
    kept = [r.name for r in och.results if r.status == "up to date"]
    first = nch.steps.rerun[0] if nch.steps.rerun else None
    noop_ok = on.builds == 0 and on.seconds <= 2.0
    size_ours, size_naive = m.sizes["ours"], m.sizes["naive"]
    waste_ok = m.waste["ours"].wasted <= 0.01 * size_ours
    rows = [
        ("", "ascend-llm-stack", "naive single Dockerfile", "target (ours)"),
        ("---", "---", "---", "---"),
        (
            "cold build (`--no-cache`, payload new to this run)",
            f"{fmt_secs(oc.seconds)} ({oc.builds} docker builds for {len(oc.results)} layers)",
            f"{fmt_secs(nc.seconds)} (1 docker build, {nc.steps.total} steps)",
            "—",
        ),
        (
            "no-op rebuild",
            f"{fmt_secs(on.seconds)}, **{on.builds}** docker build{'' if on.builds == 1 else 's'} "
            f"({sum(r.status == 'up to date' for r in on.results)}/{len(on.results)} layers up to date)",
            f"{fmt_secs(nn.seconds)}, 1 docker build ({nn.steps.cached}/{nn.steps.total} steps cached)",
            f"≤ 2 s with 0 builds: {verdict(noop_ok)}",
        ),
        (
            "rebuild after a MindSpeed-LLM ref change",
            f"{fmt_secs(och.seconds)}: rebuilt {', '.join(rebuilt) or 'nothing'} ({och.builds} docker builds), "
            f"{', '.join(kept)} up to date; {m.new_layers['ours'][0]}/{m.new_layers['ours'][1]} image layers new",
            f"{fmt_secs(nch.seconds)}: {len(nch.steps.rerun)}/{nch.steps.total} steps re-run"
            + (f", from `{_short(first[2])}`" if first else "")
            + f"; {m.new_layers['naive'][0]}/{m.new_layers['naive'][1]} image layers new",
            "—",
        ),
        ("final image size", fmt_bytes(size_ours), fmt_bytes(size_naive), "—"),
        (
            "wasted bytes (deleted or overwritten by a later layer)",
            waste_cell(m.waste["ours"], size_ours, m.commands["ours"]),
            waste_cell(m.waste["naive"], size_naive, m.commands["naive"]),
            f"≤ 1 %: {verdict(waste_ok)}",
        ),
    ]
    lines = ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in rows]
    return caption + "\n\n" + "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# the run


@dataclass
class Run:
    args: argparse.Namespace
    client: BuildKitClient
    docker: Any
    root: Path
    checkout: Path  # the snapshot the library runs from
    prefix: str  # every tag of this run starts with it
    created: set[str] = field(default_factory=set)
    matrix_raw: dict[str, Any] = field(default_factory=dict)


def prepare(run: Run) -> tuple[Target, BuildOptions, dict[str, Path], ResolvedInputs]:
    """Base image, stand-in installers and repositories, and every input fetched and verified."""
    run.matrix_raw = yaml.safe_load((run.checkout / "matrix.yaml").read_text())
    target = resolve(parse_matrix(run.matrix_raw), ROW, arch=ARCH)
    if not _exists(run.docker, target.base_image):
        # A prerequisite shared with the test suite (`invoke base-image`), not a benchmark artefact: kept.
        note(f"building the OS base image {target.base_image} (not timed)")
        build_base_image(target.os_name, target.arch, docker_client=run.docker)
    payload = run.args.payload_mb * MB
    note(f"writing stand-in installers with {fmt_bytes(payload)} payload each (seed {run.args.seed})")
    make_installers(run.root / "packages", target, payload, run.args.seed)
    repos = _fakes().make_source_repos(run.root / "upstream")
    dirs = InputDirs.under(
        run.root,
        extra_wheelhouses=(LOCAL_WHEELS,) if LOCAL_WHEELS.is_dir() else (),
        source_overrides=run.root / "upstream",
    )
    opts = BuildOptions(
        dirs=dirs,
        network=NetworkOptions(ca_cert=HOST_CA if HOST_CA.is_file() else None),
        out_dir=render.default_out_dir(target, run.root / "build"),
    )
    note("fetching and verifying inputs (not timed: both builds start with every input local)")
    _, _, resolved = Builder(target, opts, None, log=note).prepare()
    return target, opts, repos, resolved


def _exists(docker: Any, ref: str) -> bool:
    import docker.errors as errors

    try:
        docker.images.get(ref)
    except errors.ImageNotFound:
        return False
    return True


def describe_waste(side: str, report: WasteReport, commands: list[str]) -> None:
    """Where the wasted bytes are, to stderr: per layer that hid them, and the largest files."""
    for index, size in hidden_by_layer(report)[:8]:
        made_by = command_summary(commands[index])
        note(f"{side}:   layer {index + 1}/{len(report.layers)} hides {fmt_bytes(size)}: {made_by}")
    for h in report.largest(8):
        note(f"{side}:   {fmt_bytes(h.size):>9}  /{h.path} ({h.how} in layer {h.hidden_in + 1}, from {h.added_in + 1})")


def measure(run: Run) -> Measured:
    target, opts, repos, resolved = prepare(run)
    naive_ctx = naive_context(run.root / "naive", target, resolved, opts.dirs)
    naive_tag = f"{run.prefix}naive"
    load_start = os.getloadavg()[0]
    with secret_files(opts.network) as secrets_:

        def naive(tag: str, log_name: str, no_cache: bool = False) -> NaiveBuild:
            req = BuildRequest(naive_ctx, [f"{naive_tag}:{tag}"], target.platform, secrets=secrets_, no_cache=no_cache)
            note(f"naive: {log_name} ...")
            out = docker_build(run.client, req, log_name)
            run.created.add(out.image_id)
            note(f"naive: {log_name} took {fmt_secs(out.seconds)} ({len(out.steps.rerun)}/{out.steps.total} steps ran)")
            return out

        note("ours: cold build ...")
        ours_cold = build_ours(target, replace(opts, no_cache=True), run.client, run.docker, run.created)
        naive_cold = naive("cold", "naive/cold", no_cache=True)

        note("ours: no-op rebuild ...")
        ours_noop = build_ours(target, opts, run.client, run.docker, run.created)
        naive_noop = naive("cold", "naive/no-op")

        commit = _fakes().add_commit(repos["mindspeed-llm"], "2.1.0-hotfix", "HOTFIX.md", f"fix {run.args.seed}\n")
        note(f"MindSpeed-LLM ref -> {commit[:12]} (new commit on branch 2.1.0-hotfix)")
        note("ours: rebuild after the ref change ...")
        ours_change = build_ours(hotfix_target(run.matrix_raw, commit), opts, run.client, run.docker, run.created)
        started = time.monotonic()
        export(repos["mindspeed-llm"], commit, naive_ctx / "sources" / "mindspeed-llm")
        exported = time.monotonic() - started
        naive_change = naive("hotfix", "naive/ref-change")
        naive_change.seconds += exported
    load = (load_start, os.getloadavg()[0])

    sizes = {"ours": run.docker.images.get(ours_cold.image_id).attrs["Size"],
             "naive": run.docker.images.get(naive_cold.image_id).attrs["Size"]}  # fmt: skip
    new_layers = {}
    for side, before, after in (("ours", ours_cold.image_id, ours_change.image_id),
                                ("naive", naive_cold.image_id, naive_change.image_id)):  # fmt: skip
        old, new = set(image_layers(run.docker, before)), image_layers(run.docker, after)
        new_layers[side] = (sum(layer not in old for layer in new), len(new))
    waste, commands = {}, {}
    for side, image_id in (("ours", ours_cold.image_id), ("naive", naive_cold.image_id)):
        note(f"{side}: docker save + walking the layers for wasted bytes ...")
        waste[side], commands[side] = measure_waste(run.docker, image_id, run.root)
        note(f"{side}: {fmt_bytes(waste[side].wasted)} wasted of {fmt_bytes(waste[side].total)} in layers")
        describe_waste(side, waste[side], commands[side])
    return Measured(
        run.args.seed, run.args.payload_mb * MB, target, run.client, ours_cold, ours_noop, ours_change,
        naive_cold, naive_noop, naive_change, sizes, waste, commands, new_layers, load,
    )  # fmt: skip


def cleanup(run: Run) -> None:
    """Remove this run's tags, the images its builds made, and the temp root (all kept with --keep)."""
    import docker.errors as errors

    if run.args.keep:
        note(f"kept (--keep): {run.root} and the images tagged {run.prefix}*")
        return
    for image in run.docker.images.list():
        for tag in image.tags:
            if tag.startswith(run.prefix):
                with contextlib.suppress(errors.APIError):
                    run.docker.images.remove(tag)
    for image_id in sorted(run.created):
        try:
            image = run.docker.images.get(image_id)
        except errors.ImageNotFound:
            continue
        if image.tags:  # tagged by someone else since: not ours to remove
            note(f"left {image_id[:19]} in place: it is tagged {', '.join(image.tags)}")
            continue
        with contextlib.suppress(errors.APIError):
            run.docker.images.remove(image_id)
    shutil.rmtree(run.root, ignore_errors=True)
    note(f"removed {run.root} and the images of this run")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if ROOT_ENV not in os.environ:
        reexec_on_snapshot(args)  # does not return
    root = Path(os.environ[ROOT_ENV])
    checkout = root / "checkout"
    if not Path(render.__file__).resolve().is_relative_to(checkout.resolve()):
        shutil.rmtree(root, ignore_errors=True)
        print(f"error: ascend_stack was imported from {render.__file__}, not from the snapshot {checkout}",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        client, docker = connect()
    except BenchError as err:
        shutil.rmtree(root, ignore_errors=True)
        print(f"error: {err}", file=sys.stderr)
        return 1
    note(f"BuildKit client: {client.reason}; library snapshot: {checkout}")
    run = Run(args, client, docker, root, checkout, f"bench-{args.seed}/")
    cache_before = build_cache_bytes(docker)
    try:
        with namespace(f"{run.prefix}ascend-llm-stack"):
            measured = measure(run)
        print(table(measured), end="")
        return 0
    except (BenchError, BuildFailed, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        cleanup(run)
        cache_after = build_cache_bytes(docker)
        if cache_before is not None and cache_after is not None:
            grown = fmt_bytes(max(cache_after - cache_before, 0))
            note(f"BuildKit's build cache grew by {grown} during this run (never pruned here; "
                 "`docker builder prune` reclaims it when nobody else needs it)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
