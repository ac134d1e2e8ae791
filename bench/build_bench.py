#!/usr/bin/env python3
"""Build benchmark: ascend-llm-stack's layered chain vs a naive single Dockerfile, for the test row.

    python bench/build_bench.py [--payload-mb N] [--no-pull-cost] [--bundle] [--seed S] [--keep]
    python bench/build_bench.py --sweep 250,1000,2000 [--prune-cache] [--plot PNG] [--table MD]

One run builds the hidden ``test`` matrix row (x86_64) into a fresh temp root, twice over: through
``ascend_stack.build.Builder`` and as the naive single Dockerfile ``bench/naive.Dockerfile.j2``. It
prints Markdown tables to stdout (progress and BuildKit logs go to stderr):

1. cold build time: ``--no-cache`` for both, and stand-in installers whose payload is unique to this
   run, so no layer can come from an earlier run's BuildKit cache; then where that time went, per
   layer (context transfer, RUN and COPY steps, export, the rest), from the BuildKit logs;
2. no-op rebuild: in process (``Driver.builds``, which must be 0), and the whole ``invoke build``
   command in a new process, median of 5 (the docker builds it reports must be 0); one fully
   cached ``docker build`` for the naive Dockerfile;
3. rebuild after a MindSpeed-LLM ref change (a new commit on the stand-in, as
   tests/test_build_integration.py does) and what rebuilt;
4. what a node pulls from a registry after that change (both images pushed to a local registry);
5. final image size (``docker image inspect`` Size);
6. wasted bytes (ascend_stack/wasted.py, over the ``docker save`` stream) and their share of the image.

``--sweep`` instead builds both cold at each payload and reports time, size and waste with their
slope per GB of installers, as a table (also written to bench/payload-sweep.md) and a plot.

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
import io
import json
import os
import re
import secrets
import shutil
import statistics
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
from docker.errors import DockerException

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
from ascend_stack.paths import one_line
from ascend_stack.sources import export
from ascend_stack.target import Target, resolve
from ascend_stack.upstream import apex_build_facts
from ascend_stack.wasted import WasteReport, walk_layers

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
LOCAL_WHEELS = Path("/opt/wheels")  # this machine's torch-2.13.0+cpu wheel (see README: tests)
ROW, ARCH = "test", "x86_64"
MB = 1_000_000
DEFAULT_PAYLOAD_MB = 250
STARTED = time.monotonic()
# What the library reads from the checkout: frozen for the run (see snapshot_checkout).
SNAPSHOT_PARTS = ("src", "images", "entrypoints", "matrix.yaml", "published.yaml", "budgets.yaml", "locks", "tasks.py")
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
    parser.add_argument("--naive-first", action="store_true",
                        help="build the naive Dockerfile cold before ours (default: ours first), to see what the "
                             "order costs: the first build meets cold mirrors and page cache")  # fmt: skip
    parser.add_argument("--pull-cost", action=argparse.BooleanOptionalAction, default=None,
                        help="push both images, before and after the ref change, to a local registry "
                             "(tests/local_registry.py) and report what a node must pull (default: on, "
                             "off with --sweep)")  # fmt: skip
    parser.add_argument(
        "--registry-dir",
        type=Path,
        metavar="DIR",
        help="where --pull-cost's registry stores the pushed blobs (default: the temp folder)",
    )
    parser.add_argument("--bundle", action="store_true",
                        help="also write the test row's bundle (invoke bundle) and build the chain from it, "
                             "cold and with the network off (invoke build --bundle FILE --no-cache)")  # fmt: skip
    parser.add_argument(
        "--sweep",
        metavar="MB,MB,...",
        help="instead: cold builds of both at each payload per installer, with the slope",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        default=BENCH / "payload-sweep.png",
        help="with --sweep: the plot to write (default bench/payload-sweep.png)",
    )
    parser.add_argument(
        "--prune-cache",
        action="store_true",
        help="with --sweep: `docker builder prune` after each point, so the points' build caches do not add up on "
        "disk; it removes the engine's WHOLE unused build cache, other users' too: only where nobody else builds",
    )
    parser.add_argument(
        "--table",
        type=Path,
        metavar="MD",
        default=BENCH / "payload-sweep.md",
        help="with --sweep: where the table goes too (default bench/payload-sweep.md)",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.payload_mb < 1:
        parser.error("--payload-mb must be at least 1")
    if args.sweep is not None:
        try:
            args.sweep = sorted({int(x) for x in args.sweep.split(",") if x.strip()})
        except ValueError:
            parser.error(f"--sweep {args.sweep}: comma-separated whole MB per installer, e.g. 250,1000,2000")
        if not args.sweep or args.sweep[0] < 1:
            parser.error("--sweep: at least one payload of 1 MB or more")
        if args.pull_cost or args.bundle:
            parser.error("--sweep measures cold builds only: run --pull-cost / --bundle on their own")
    if args.pull_cost is None:
        args.pull_cost = args.sweep is None
    if args.prune_cache and args.sweep is None:
        parser.error("--prune-cache goes with --sweep")
    args.plot, args.table = args.plot.resolve(), args.table.resolve()
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
    """A :class:`Driver` that also remembers the ID of every image it built (for the clean-up) and how
    long each ``docker build`` took, by its log name."""

    image_ids: list[str] = field(default_factory=list)
    walls: dict[str, float] = field(default_factory=dict)

    def build(self, req: BuildRequest, log_name: str) -> str:
        started = time.monotonic()
        image_id = super().build(req, log_name)
        self.walls[log_name] = self.walls.get(log_name, 0.0) + time.monotonic() - started
        self.image_ids.append(image_id)
        return image_id


class LogTee:
    """``sys.stderr`` while builds run: every line goes on to the terminal, and each build's lines
    (``[log name] ...``, as :class:`Driver` and :func:`docker_build` write them) are kept by name."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.lines: dict[str, list[str]] = {}

    def write(self, text: str) -> int:
        self.stream.write(text)
        if text.startswith("[") and "] " in text and not text.startswith("[bench"):
            name, _, rest = text[1:].partition("] ")
            self.lines.setdefault(name, []).append(rest.rstrip("\n"))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def teed() -> Iterator[LogTee]:
    tee = LogTee(sys.stderr)
    sys.stderr = tee  # type: ignore[assignment]
    try:
        yield tee
    finally:
        sys.stderr = tee.stream


# What a BuildKit step (vertex) of the plain progress output is, by its name.
_VERTEX = re.compile(r"^#(\d+) (.*)$")
_DONE = re.compile(r"^#(\d+) (?:DONE (\d+(?:\.\d+)?)s|CACHED)$")
KINDS = ("context", "run", "copy", "export", "other")


def vertex_kind(name: str) -> str:
    if name == "[internal] load build context":
        return "context"
    if name == "exporting to image":
        return "export"
    step = re.sub(r"^\[[^\]]*\]\s*", "", name)
    if step.startswith("RUN "):
        return "run"
    if step.startswith(("COPY ", "ADD ")):
        return "copy"
    return "other"


def step_seconds(lines: list[str]) -> dict[str, list[tuple[str, float]]]:
    """Seconds of each BuildKit step of one build, by kind (:data:`KINDS`), from ``--progress=plain``.

    Steps can overlap (BuildKit runs independent ones at once), so the sum may exceed the build's
    wall time.
    """
    names: dict[str, str] = {}
    out: dict[str, list[tuple[str, float]]] = {k: [] for k in KINDS}
    for line in lines:
        if m := _DONE.match(line):
            if m[2] is not None and m[1] in names:
                out[vertex_kind(names[m[1]])].append((names[m[1]], float(m[2])))
        elif (m := _VERTEX.match(line)) and m[1] not in names:
            names[m[1]] = m[2]
    return out


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
    lines: list[str] = field(default_factory=list)


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
        return NaiveBuild(seconds, iidfile.read_text().strip(), parse_steps(lines), lines)


def build_cache_bytes(docker: Any) -> int | None:
    """What BuildKit's build cache holds now (``docker system df``), or None if the engine won't say."""
    try:
        return sum(int(entry.get("Size") or 0) for entry in docker.df().get("BuildCache") or [])
    except Exception:
        return None


def image_layers(docker: Any, image_id: str) -> list[str]:
    return list(docker.images.get(image_id).attrs["RootFS"]["Layers"])


class _Chunks(io.RawIOBase):
    """A raw reader over an iterator of byte chunks (``docker save``'s stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.rest = chunks, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.rest:
            chunk = next(self.chunks, None)
            if chunk is None:
                return 0
            self.rest = memoryview(chunk)
        n = min(len(buffer), len(self.rest))
        buffer[:n] = self.rest[:n]
        self.rest = self.rest[n:]
        return n


class _Hashing:
    """Reads through to ``raw`` and hashes what passes: a layer tar's sha256 is its diffID."""

    def __init__(self, raw: Any) -> None:
        self.raw, self.digest = raw, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        return data


def measure_waste(docker: Any, image_id: str) -> tuple[WasteReport, list[str]]:
    """Walk the layers of ``docker save`` as it streams (nothing written to disk); also what made each layer.

    The stream's layer tars come in no useful order; each is matched to its place in the image by its
    sha256, which is the diffID ``docker image inspect`` lists bottom first.
    """
    image = docker.images.get(image_id)
    order = list(image.attrs["RootFS"]["Layers"])
    members: dict[str, list[tarfile.TarInfo]] = {}
    config: dict[str, Any] = {}
    stream = io.BufferedReader(_Chunks(iter(image.save(chunk_size=1 << 20, named=False))), 1 << 20)
    with tarfile.open(fileobj=stream, mode="r|", bufsize=1 << 20) as outer:
        for entry in outer:
            if not entry.isfile():
                continue
            blob = outer.extractfile(entry)
            assert blob is not None
            if re.fullmatch(r"[0-9a-f]{64}\.json", entry.name):  # the image config (legacy layout)
                config = json.loads(blob.read())
            elif entry.name.endswith("layer.tar") or entry.name.startswith("blobs/sha256/"):
                reader = _Hashing(blob)
                try:
                    with tarfile.open(fileobj=reader, mode="r|", bufsize=1 << 20) as layer:
                        found = list(layer)
                except tarfile.ReadError:  # an OCI blob that is no layer (config, manifest)
                    found = []
                while reader.read(1 << 20):  # the tar's end blocks count in the diffID too
                    pass
                members[f"sha256:{reader.digest.hexdigest()}"] = found
    missing = [d for d in order if d not in members]
    if missing:
        raise BenchError(f"docker save of {image_id[:19]} lacks layer {missing[0]}")
    report = walk_layers((diff, members[diff]) for diff in order)
    history = [h.get("created_by", "") for h in config.get("history", []) if not h.get("empty_layer")]
    return report, history if len(history) == len(order) else [""] * len(order)


# ---------------------------------------------------------------------------------------------------
# the two builds


@dataclass
class Ours:
    seconds: float
    results: list[LayerResult]
    builds: int
    prepare_seconds: float = 0.0  # render, find and verify every input, check the Python lock
    walls: dict[str, float] = field(default_factory=dict)  # docker build log name -> seconds
    logs: dict[str, list[str]] = field(default_factory=dict)  # docker build log name -> its lines

    @property
    def image_id(self) -> str:
        image_id = self.results[-1].image_id
        assert image_id
        return image_id


def build_ours(target: Target, opts: BuildOptions, client: BuildKitClient, docker: Any, created: set[str]) -> Ours:
    driver = RecordingDriver(client, docker)
    started = time.monotonic()
    try:
        with teed() as tee:
            builder = Builder(target, opts, driver, log=note)
            prepared = builder.prepare()
            prepare_seconds = time.monotonic() - started
            results = builder.run(prepared)
    finally:
        created.update(driver.image_ids)
    seconds = time.monotonic() - started
    layers = ", ".join(f"{r.name} {r.status} {r.seconds:.1f}s" for r in results)
    note(f"ours: {fmt_secs(seconds)} in all: inputs {prepare_seconds:.1f}s, {layers} "
         f"({len(driver.builds)} docker builds)")  # fmt: skip
    return Ours(seconds, results, len(driver.builds), prepare_seconds, driver.walls, tee.lines)


# The naive Dockerfile's lock files: the sections of the target's Python lock, as ours renders them.
NAIVE_LOCKS = {"base": "base/requirements.lock", "pta": "pta/requirements.lock", "apex-build": "pta/apex-build.lock",
               "mindspeed": "mindspeed/requirements.lock", "runtime": "mindspeed/runtime.lock"}  # fmt: skip


def render_naive(t: Target, apex_options: list[str]) -> str:
    """bench/naive.Dockerfile.j2 for ``t``, with the lists the rendered chain uses (images/macros.j2 too)."""
    env = render.template_env()
    env.loader = jinja2.FileSystemLoader([BENCH, render.IMAGES_DIR])
    base, _ = render.LAYER_BY_NAME["base"].context(t, {})
    pta, _ = render.LAYER_BY_NAME["pta"].context(t, {})
    macros = env.get_template("macros.j2").module
    return env.get_template("naive.Dockerfile.j2").render(
        t=t,
        net_env=macros.net_env(),  # type: ignore[attr-defined]
        os_packages=[*base["os_packages"], *render.APEX_BUILD_PACKAGES],
        files=render.cann_files(t),
        set_env=t.cann_path("set_env"),
        nnal_set_env=t.cann_path("nnal_set_env"),
        index_args=pta["index_args"],
        apex_options=apex_options,
    )


def naive_context(ctx: Path, t: Target, resolved: ResolvedInputs, files: dict[str, str], dirs: InputDirs) -> Path:
    """The naive build's context: Dockerfile, constraints, lock, installers, wheels, sources, ascend-llm wheel."""
    apex = next(r for r in resolved if r.kind == "git" and r.name == "apex")
    facts = apex_build_facts(apex.path, apex.digest)
    if facts is None:
        raise BenchError(f"Ascend apex {apex.digest[:12]} has no scripts/build.sh to follow")
    ctx.mkdir(parents=True)
    (ctx / "Dockerfile").write_text(render_naive(t, list(facts["setup_options"])))  # type: ignore[call-overload]
    (ctx / "constraints.txt").write_text(render.constraints(t, "runtime"))  # what every layer after base uses
    (ctx / "locks").mkdir()
    for name, rendered in NAIVE_LOCKS.items():
        (ctx / "locks" / f"{name}.txt").write_text(files[rendered])
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
    naive_noops: list[NaiveBuild]
    naive_change: NaiveBuild
    sizes: dict[str, int]
    waste: dict[str, WasteReport]
    commands: dict[str, list[str]]  # side -> what made each layer of its final image
    new_layers: dict[str, tuple[int, int]]  # side -> (new, total) image layers after the ref change
    load: tuple[float, float]  # the host's 1-minute load average when the builds started and ended
    cold_load: dict[str, tuple[float, float]]  # side -> ... before and after its cold build
    naive_first: bool  # --naive-first
    whole: WholeCommand  # ours: the whole `invoke build` command, no-op
    pull: dict[str, Pulled] | None = None  # side -> what a node pulls after the ref change (--pull-cost)
    bundled: Bundled | None = None  # --bundle


def table(m: Measured) -> str:
    t = m.target
    caption = (
        f"**Build benchmark, one run** ({dt.date.today().isoformat()}, seed `{m.seed}`): the `{ROW}` row "
        f"(CANN {t.cann} stand-in installers, torch {t.torch} + torch_npu {t.torch_npu}, MindSpeed-LLM "
        f"{t.row.mindspeed_llm.release}, {t.os_name}, Python {t.python}, {t.arch}), built with BuildKit "
        f"(docker {m.client.version}, {machine()}). Installers scaled down: toolkit, kernels and "
        f"NNAL stand-ins carry {fmt_bytes(m.payload_bytes)} of payload each ({fmt_bytes(3 * m.payload_bytes)}"
        f" in all; the real toolkit installer alone is several GB). Host load average (1 min) "
        f"{m.load[0]:.1f} at the start, {m.load[1]:.1f} at the end: other work shares the machine."
    )
    oc, on, och = m.ours_cold, m.ours_noop, m.ours_change
    nc, nch = m.naive_cold, m.naive_change
    nn = sorted(m.naive_noops, key=lambda b: b.seconds)[len(m.naive_noops) // 2]  # the median run
    rebuilt = [r.name for r in och.results if r.status == "built"]
    kept = [r.name for r in och.results if r.status == "up to date"]
    first = nch.steps.rerun[0] if nch.steps.rerun else None
    whole = m.whole
    size_ours, size_naive = m.sizes["ours"], m.sizes["naive"]
    waste_ok = m.waste["ours"].wasted <= 0.01 * size_ours

    def ratio(ours: float, naive: float) -> str:
        return f"≤ 1.0 x naive: {verdict(ours <= naive)} ({ours / naive:.2f} x)"

    rows = [
        ("", "ascend-llm-stack", "naive single Dockerfile", "target (ours)"),
        ("---", "---", "---", "---"),
        (
            "cold build (`--no-cache`, payload new to this run)",
            f"{fmt_secs(oc.seconds)} ({oc.builds} docker builds for {len(oc.results)} layers; "
            f"load {m.cold_load['ours'][0]:.1f} to {m.cold_load['ours'][1]:.1f}"
            f"{', built second' if m.naive_first else ', built first'})",
            f"{fmt_secs(nc.seconds)} (1 docker build, {nc.steps.total} steps; "
            f"load {m.cold_load['naive'][0]:.1f} to {m.cold_load['naive'][1]:.1f})",
            ratio(oc.seconds, nc.seconds),
        ),
        (
            "no-op rebuild, in process (`Builder.run()`)",
            f"{fmt_secs(on.seconds)}, **{on.builds}** docker build{'' if on.builds == 1 else 's'} "
            f"({sum(r.status == 'up to date' for r in on.results)}/{len(on.results)} layers up to date)",
            "—",
            "—",
        ),
        (
            f"no-op rebuild, the whole command (median of {len(whole.seconds)})",
            f"`invoke build`: {fmt_secs(whole.median)} ({fmt_secs(min(whole.seconds))} to "
            f"{fmt_secs(max(whole.seconds))}), **{max(whole.builds)}** docker builds; the first after the "
            f"in-process build, with no record to replay (full check): {fmt_secs(whole.first)}, "
            f"{whole.first_builds} docker builds",
            f"`docker build`: {fmt_secs(nn.seconds)}, 1 docker build ({nn.steps.cached}/{nn.steps.total} steps cached)",
            f"≤ 0.5 s with 0 builds: {verdict(whole.median <= 0.5 and max(whole.builds) == whole.first_builds == 0)}",
        ),
        (
            "rebuild after a MindSpeed-LLM ref change",
            f"{fmt_secs(och.seconds)}: rebuilt {', '.join(rebuilt) or 'nothing'} ({och.builds} docker builds), "
            f"{', '.join(kept)} up to date; {m.new_layers['ours'][0]}/{m.new_layers['ours'][1]} image layers new",
            f"{fmt_secs(nch.seconds)}: {len(nch.steps.rerun)}/{nch.steps.total} steps re-run"
            + (f", from `{_short(first[2])}`" if first else "")
            + f"; {m.new_layers['naive'][0]}/{m.new_layers['naive'][1]} image layers new",
            ratio(och.seconds, nch.seconds),
        ),
    ]
    if m.pull:
        cells = []
        for side in ("ours", "naive"):
            c = m.pull[side].cost
            share = 100 * c.pull_bytes / c.image_bytes
            cells.append(f"{fmt_bytes(c.pull_bytes)} of {fmt_bytes(c.image_bytes)} ({share:.1f} % of the pushed "
                         f"image), {c.new_layers}/{c.layers} layers")  # fmt: skip
        share = m.pull["ours"].cost.pull_bytes / m.pull["ours"].cost.image_bytes
        rows.append(("pull after the ref change (a node holding the image before it; registry sizes, compressed)",
                     *cells, f"< 5 % of the image: {verdict(share < 0.05)}"))  # fmt: skip
    rows += [
        ("final image size", fmt_bytes(size_ours), fmt_bytes(size_naive), "—"),
        (
            "wasted bytes (deleted or overwritten by a later layer)",
            waste_cell(m.waste["ours"], size_ours, m.commands["ours"]),
            waste_cell(m.waste["naive"], size_naive, m.commands["naive"]),
            f"≤ 1 %: {verdict(waste_ok)}",
        ),
    ]
    if m.bundled:
        b = m.bundled
        rows += [
            ("bundle for the test row (`invoke bundle`)",
             f"{fmt_bytes(b.size)}, written in {fmt_secs(b.write_seconds)} (locked wheels from PyPI, OS packages "
             "from Debian's mirror, sdists built, included)", "—", "—"),
            ("chain built from the bundle, cold, network off (`invoke build --bundle FILE --no-cache`)",
             f"{fmt_secs(b.build_seconds)} ({b.builds} docker builds, every one `--network none --no-cache`: "
             f"{'yes' if b.offline else '**no**'}), + {fmt_secs(b.load_seconds)} `docker load` of its base image",
             "—", "—"),
        ]  # fmt: skip
    lines = ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in rows]
    return caption + "\n\n" + "\n".join(lines) + "\n"


def breakdown(ours: Ours, naive: NaiveBuild) -> str:
    """Where the cold builds' time goes: per layer of ours, and the one naive build, in seconds.

    ``docker build``: the wall time of the layer's builds; the BuildKit columns sum its steps by kind
    (they can overlap); ``outside BuildKit``: the rest of the layer's time (assembling its context,
    the CANN environment capture's container, tagging, sizes). A ``prefetch`` row is a throw-away
    build that sends the next layer's context ahead, while the layer above it builds.
    """

    def kinds(logs: list[list[str]]) -> dict[str, float]:
        out = dict.fromkeys(KINDS, 0.0)
        for lines in logs:
            for kind, steps in step_seconds(lines).items():
                out[kind] += sum(secs for _, secs in steps)
        return out

    head = ("", "wall", "docker build", "context transfer", "RUN steps", "COPY steps", "export", "other BuildKit",
            "outside BuildKit")  # fmt: skip
    rows: list[tuple[str, ...]] = [head, tuple("---" for _ in head)]
    prep = f"{ours.prepare_seconds:.1f}"
    rows.append(("ours: inputs (render, verify, lock)", prep, *["—"] * 6, prep))
    for r in ours.results:
        mine = [n for n in ours.walls if (n == r.name or n.startswith(f"{r.name}/")) and not n.endswith("/prefetch")]
        docker = sum(ours.walls[n] for n in mine)
        k = kinds([ours.logs.get(n, []) for n in mine])
        rows.append((f"ours: {r.name} ({len(mine)} build{'s' * (len(mine) != 1)})", f"{r.seconds:.1f}", f"{docker:.1f}",
                     *(f"{k[x]:.1f}" for x in KINDS), f"{max(r.seconds - docker, 0):.1f}"))  # fmt: skip
        if f"{r.name}/prefetch" in ours.walls:
            name = f"{r.name}/prefetch"
            k = kinds([ours.logs.get(name, [])])
            rows.append((f"ours: {name} (during the layer above)", "—", f"{ours.walls[name]:.1f}",
                         *(f"{k[x]:.1f}" for x in KINDS), "—"))  # fmt: skip
    k = kinds([naive.lines])
    rows.append(("naive (1 build)", f"{naive.seconds:.1f}", f"{naive.seconds:.1f}", *(f"{k[x]:.1f}" for x in KINDS),
                 "0.0"))  # fmt: skip
    lines = ["| " + " | ".join(cells) + " |" for cells in rows]
    return "**Where the cold builds' time goes** (seconds; BuildKit steps may overlap):\n\n" + "\n".join(lines) + "\n"


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


@dataclass
class Inputs:
    """One set of inputs, fetched and verified: what both builds of a measurement start from."""

    root: Path
    target: Target
    opts: BuildOptions
    repos: dict[str, Path]
    resolved: ResolvedInputs
    files: dict[str, str]  # ours, rendered (the naive Dockerfile takes its lock files from here)
    naive_ctx: Path


def prepare(run: Run, root: Path, payload_mb: int, token: str) -> Inputs:
    """Base image, stand-in installers and repositories under ``root``, every input fetched and verified."""
    run.matrix_raw = yaml.safe_load((run.checkout / "matrix.yaml").read_text())
    target = resolve(parse_matrix(run.matrix_raw), ROW, arch=ARCH)
    if not _exists(run.docker, target.base_image):
        # A prerequisite shared with the test suite (`invoke base-image`), not a benchmark artefact: kept.
        note(f"building the OS base image {target.base_image} (not timed)")
        build_base_image(target.os_name, target.arch, docker_client=run.docker)
    payload = payload_mb * MB
    note(f"writing stand-in installers with {fmt_bytes(payload)} payload each (token {token})")
    make_installers(root / "packages", target, payload, token)
    repos = _fakes().make_source_repos(root / "upstream")
    dirs = InputDirs.under(
        root,
        extra_wheelhouses=(LOCAL_WHEELS,) if LOCAL_WHEELS.is_dir() else (),
        source_overrides=root / "upstream",
    )
    opts = BuildOptions(
        dirs=dirs,
        network=NetworkOptions(ca_cert=HOST_CA if HOST_CA.is_file() else None),
        out_dir=render.default_out_dir(target, root / "build"),
    )
    note("fetching and verifying inputs (not timed: both builds start with every input local)")
    _, files, resolved = Builder(target, opts, None, log=note).prepare()
    naive_ctx = naive_context(root / "naive", target, resolved, files, opts.dirs)
    return Inputs(root, target, opts, repos, resolved, files, naive_ctx)


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


def naive_build(run: Run, inp: Inputs, secrets_: dict[str, Path], tag: str, log_name: str,
                no_cache: bool = False) -> NaiveBuild:  # fmt: skip
    req = BuildRequest(inp.naive_ctx, [f"{run.prefix}naive:{tag}"], inp.target.platform, secrets=secrets_,
                       no_cache=no_cache)  # fmt: skip
    note(f"naive: {log_name} ...")
    out = docker_build(run.client, req, log_name)
    run.created.add(out.image_id)
    note(f"naive: {log_name} took {fmt_secs(out.seconds)} ({len(out.steps.rerun)}/{out.steps.total} steps ran)")
    return out


def waste_of(run: Run, side: str, image_id: str) -> tuple[WasteReport, list[str]]:
    note(f"{side}: walking the layers of docker save for wasted bytes ...")
    report, commands = measure_waste(run.docker, image_id)
    note(f"{side}: {fmt_bytes(report.wasted)} wasted of {fmt_bytes(report.total)} in layers")
    describe_waste(side, report, commands)
    return report, commands


def measure(run: Run) -> Measured:
    inp = prepare(run, run.root, run.args.payload_mb, run.args.seed)
    target, opts = inp.target, inp.opts
    load_start = os.getloadavg()[0]
    with secret_files(opts.network) as secrets_:
        note("ours: cold build ...")
        loads = {}
        for side in ("naive", "ours") if run.args.naive_first else ("ours", "naive"):
            before = os.getloadavg()[0]
            if side == "ours":
                ours_cold = build_ours(target, replace(opts, no_cache=True), run.client, run.docker, run.created)
            else:
                naive_cold = naive_build(run, inp, secrets_, "cold", "naive/cold", no_cache=True)
            loads[side] = (before, os.getloadavg()[0])

        note("ours: no-op rebuild ...")
        ours_noop = build_ours(target, opts, run.client, run.docker, run.created)
        note("ours: no-op rebuild, the whole `invoke build` command, 5 times ...")
        whole = whole_command_noop(run, inp, ours_cold.results)
        naive_noops = [naive_build(run, inp, secrets_, "cold", f"naive/no-op-{i + 1}") for i in range(NOOP_RUNS)]

        commit = _fakes().add_commit(inp.repos["mindspeed-llm"], "2.1.0-hotfix", "HOTFIX.md", f"fix {run.args.seed}\n")
        note(f"MindSpeed-LLM ref -> {commit[:12]} (new commit on branch 2.1.0-hotfix)")
        note("ours: rebuild after the ref change ...")
        ours_change = build_ours(hotfix_target(run.matrix_raw, commit), opts, run.client, run.docker, run.created)
        started = time.monotonic()
        export(inp.repos["mindspeed-llm"], commit, inp.naive_ctx / "sources" / "mindspeed-llm")
        exported = time.monotonic() - started
        naive_change = naive_build(run, inp, secrets_, "hotfix", "naive/ref-change")
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
        waste[side], commands[side] = waste_of(run, side, image_id)
    pull = None
    if run.args.pull_cost:
        pull = pull_costs(run, {"ours": (ours_cold.image_id, ours_change.image_id),
                                "naive": (naive_cold.image_id, naive_change.image_id)})  # fmt: skip
    bundled = bundle_figures(run, inp) if run.args.bundle else None
    return Measured(
        run.args.seed, run.args.payload_mb * MB, target, run.client, ours_cold, ours_noop, ours_change,
        naive_cold, naive_noops, naive_change, sizes, waste, commands, new_layers, load, loads, run.args.naive_first,
        whole, pull, bundled,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# the whole command, the registry, the bundle

NOOP_RUNS = 5
# `invoke build` as its console script runs it, with the benchmark's image namespace (see namespace()),
# set when ascend_stack.render is first imported: the no-op fast path (ascend_stack/plancache.py) never
# imports it, so setting it up front would time an import the user's command does not make.
NOOP_SCRIPT = """\
import sys
from importlib.machinery import PathFinder

class Namespace:
    def find_spec(self, name, path=None, target=None):
        if name != "ascend_stack.render":
            return None
        sys.meta_path.remove(self)
        spec = PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.IMAGE = sys.argv[1]
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, Namespace())
from invoke.main import program
program.run(["invoke", *sys.argv[2:]])
"""


@dataclass
class WholeCommand:
    seconds: list[float]  # the timed runs: each finds the record the run before it left
    builds: list[int]
    first: float  # the first run after the in-process build: no record yet, the full check, which records
    first_builds: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def layer_sizes(run: Run, target: Target, results: list[LayerResult]) -> dict[str, int]:
    """What each layer adds over its parent (the budgets' measure), from ``docker image inspect``."""
    sizes, parent = {}, run.docker.images.get(target.base_image).attrs["Size"]
    for r in results:
        size = run.docker.images.get(r.image_id).attrs["Size"]
        sizes[r.name], parent = size - parent, size
    return sizes


def whole_command_noop(run: Run, inp: Inputs, results: list[LayerResult]) -> WholeCommand:
    """``invoke build`` in a new process, as a user types it, on the chain ours just built: NOOP_RUNS times.

    Its inputs are the bench's (same packages, wheelhouses, sources, locks and hash cache, so the
    same content tags); its matrix is a copy whose budgets.yaml beside it holds the sizes this
    run's layers have (the test row's budgets are for payload-free stand-ins).
    """
    target, dirs = inp.target, inp.opts.dirs
    folder = run.root / "whole-command"
    folder.mkdir(exist_ok=True)
    shutil.copy(run.checkout / "matrix.yaml", folder / "matrix.yaml")
    budgets = {"schema": 1, "targets": {ROW: {render.target_key(target): layer_sizes(run, target, results)}}}
    (folder / "budgets.yaml").write_text(yaml.safe_dump(budgets))
    if dirs.hash_cache and dirs.hash_cache.is_file():  # the checkout's hash cache is where invoke looks
        (run.checkout / "build").mkdir(exist_ok=True)
        shutil.copy(dirs.hash_cache, run.checkout / "build" / dirs.hash_cache.name)
    argv = [sys.executable, "-c", NOOP_SCRIPT, render.IMAGE, "build", "--cann", ROW, "--arch", ARCH,
            "--os", target.os_name, "--matrix", str(folder / "matrix.yaml"), "--packages", str(dirs.packages),
            "--lock-dir", str(dirs.locks), "--sources", str(dirs.source_overrides)]  # fmt: skip
    for house in dirs.wheelhouses:
        argv += ["--wheelhouse", str(house)]
    if inp.opts.network.ca_cert:
        argv += ["--ca-cert", str(inp.opts.network.ca_cert)]
    seconds, builds = [], []
    for i in range(NOOP_RUNS + 1):
        started = time.monotonic()
        out = subprocess.run(argv, cwd=run.checkout, capture_output=True, text=True)
        seconds.append(time.monotonic() - started)
        counted = re.search(r": (\d+) layer\(s\) built, (\d+) docker build call\(s\)", out.stdout)
        if out.returncode != 0 or counted is None:
            raise BenchError(f"invoke build (no-op {i}) exit {out.returncode}: {(out.stderr or out.stdout)[-800:]}")
        builds.append(int(counted[2]))
        which = "first, full check" if i == 0 else f"{i}/{NOOP_RUNS}"
        note(f"ours: whole-command no-op ({which}): {seconds[-1]:.2f} s, {builds[-1]} docker builds")
    return WholeCommand(seconds[1:], builds[1:], seconds[0], builds[0])


@dataclass
class Pulled:
    """What a node holding the image from before the ref change must download for the one after."""

    cost: Any  # ascend_stack.registry.PullCost
    before: str  # the remote tags
    after: str


def pull_costs(run: Run, images: dict[str, tuple[str, str]]) -> dict[str, Pulled]:
    """Push each side's images (before, after the ref change) to a local registry; what a node pulls.

    The registry is tests/local_registry.py's (Debian's docker-registry on loopback, TLS, basic
    auth, logged in through the engine); the figure is :func:`ascend_stack.registry.pull_cost`,
    from the two manifests the registry holds (compressed blob sizes, the config included).
    """
    import docker as docker_sdk

    from ascend_stack.registry import Registry, parse_registry, pull_cost, push

    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from local_registry import local_registry, missing_tools

    if reason := missing_tools():
        raise BenchError(f"--pull-cost: {reason} (bash scripts/docker-engine.sh --registry installs them)")
    saved_tmp = tempfile.tempdir
    tempfile.tempdir = str(run.args.registry_dir) if run.args.registry_dir else None
    try:
        with local_registry(engine_login=True) as reg:
            tempfile.tempdir = saved_tmp
            with _environ(DOCKER_CONFIG=str(reg.docker_config)):
                engine = docker_sdk.from_env(timeout=900)  # reads the registry login from DOCKER_CONFIG
            driver = Driver(run.client, engine)
            target = parse_registry(f"{reg.host}/bench")
            refs = {side: (f"{run.prefix}{side}:before", f"{run.prefix}{side}:after") for side in images}
            for side, (before, after) in images.items():
                note(f"{side}: pushing the images from before and after the ref change to {target} ...")
                started = time.monotonic()
                push(driver, target, [(before, refs[side][0]), (after, refs[side][1])], note)
                note(f"{side}: pushed in {fmt_secs(time.monotonic() - started)}")
            client = Registry(reg.host, (reg.user, reg.password))
            out = {}
            for side, (before, after) in refs.items():
                remote = [target.remote(r).split("/", 1)[1] for r in (before, after)]
                out[side] = Pulled(pull_cost(client, remote[1], remote[0]), remote[0], remote[1])
                note(f"{side}: a node holding {remote[0]} pulls {out[side].cost} for {remote[1]}")
            return out
    finally:
        tempfile.tempdir = saved_tmp


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class Bundled:
    size: int
    write_seconds: float
    build_seconds: float
    load_seconds: float  # docker load of the bundle's base image (the OS image is shared here: kept)
    results: list[LayerResult]
    builds: int
    offline: bool  # every docker build ran with --network none and --no-cache


def bundle_figures(run: Run, inp: Inputs) -> Bundled:
    """``invoke bundle`` for the test row, then the whole chain built from the file, cold, network off.

    As tests/test_build_bundle.py does it, in this process (commands.bundle, commands.build with
    ``bundle=``), but the shared OS base image keeps its tag: the far side's ``docker load`` is
    timed on its own instead (loading an image the engine has changes nothing).
    """
    from ascend_stack import bundle as bundles
    from ascend_stack import commands

    root = run.root / "bundle"
    (root / "packages").mkdir(parents=True)
    for r in inp.resolved:
        if r.kind == "package":
            link_or_copy(r.path, root / "packages" / r.path.name)
    dirs = InputDirs.under(root, source_overrides=inp.opts.dirs.source_overrides,
                           extra_wheelhouses=inp.opts.dirs.wheelhouses)  # fmt: skip
    choices = {"cann": ROW, "torch": None, "arch": ARCH, "os": inp.target.os_name, "chip": None}
    note("bundle: invoke bundle (fetch --wheels, OS packages, sdists built, docker save, the file) ...")
    started = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):
        path = commands.bundle(choices, dirs, root / "out" / "test.tar", run.checkout / "matrix.yaml",
                               ca_cert=inp.opts.network.ca_cert)  # fmt: skip
    written = time.monotonic() - started
    note(f"bundle: {fmt_bytes(path.stat().st_size)} written in {fmt_secs(written)}")
    unpacked = bundles.unpack(path, progress=False)
    started = time.monotonic()
    if unpacked.base_image:
        with unpacked.base_image.open("rb") as fh:
            run.docker.images.load(fh)
    loaded = time.monotonic() - started
    drivers: list[Driver] = []
    real = commands._driver

    def recording(dry_run: bool, verbose: bool) -> Driver:
        found = real(dry_run, verbose)
        drivers.append(RecordingDriver(found.client, found.docker))
        return drivers[-1]

    opts = BuildOptions(no_cache=True, out_dir=root / "far", enforce_budgets=False)
    note("bundle: invoke build --bundle FILE --no-cache (network off in every step) ...")
    commands._driver = recording  # type: ignore[assignment]
    started = time.monotonic()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            results = commands.build({k: None for k in choices}, opts, run.checkout / "matrix.yaml", bundle=path)
    finally:
        commands._driver = real  # type: ignore[assignment]
        for d in drivers:
            run.created.update(d.image_ids)  # type: ignore[attr-defined]
    built = time.monotonic() - started
    builds = [req for d in drivers for req in d.builds]
    offline = bool(builds) and all(req.network == "none" and req.no_cache for req in builds)
    note(f"bundle: the chain built from it in {fmt_secs(built)} ({len(builds)} docker builds, network off: {offline})")
    return Bundled(path.stat().st_size, written, built, loaded, results, len(builds), offline)


# ---------------------------------------------------------------------------------------------------
# the payload sweep


@dataclass
class SweepPoint:
    payload_mb: int
    ours: float  # cold build seconds
    naive: float
    sizes: dict[str, int]
    waste: dict[str, int]
    load: tuple[float, float]


# What one side of a sweep point needs on disk, per byte of installers (I), at its peak (naive's,
# the larger): the stand-ins (I), their copy in BuildKit's context store (I), the COPY layer and the
# installed CANN (2 I), and the image again in the temp folder of `docker save` (2 I: Docker 20.10
# writes the export out before it streams it), plus the other layers (torch, MindSpeed-LLM's
# requirements...). Each side's images go before the other side builds; BuildKit keeps the context
# copies and exported layers in its build cache after the images go, so without --prune-cache the
# points add up. An estimate: each side notes what the build cache really grew by.
DISK_PER_INSTALLER_BYTE = 6
DISK_PER_POINT = 6 * 10**9


def disk_check(run: Run, payloads: list[int]) -> None:
    """Stop before a sweep that would fill the disk Docker and the temp root share (a shared machine)."""
    root = Path(run.docker.info().get("DockerRootDir") or "/var/lib/docker")
    folders = {root, run.root} if root.exists() else {run.root}
    per_point = [DISK_PER_INSTALLER_BYTE * 3 * mb * MB + DISK_PER_POINT for mb in payloads]
    need = max(per_point) if run.args.prune_cache else sum(per_point)
    for folder in folders:
        free = shutil.disk_usage(folder).free
        note(f"sweep: about {fmt_bytes(need)} of disk needed, {fmt_bytes(free)} free under {folder}")
        if free < need:
            raise BenchError(
                f"--sweep {','.join(map(str, payloads))} needs about {fmt_bytes(need)} of disk and {folder} has "
                f"{fmt_bytes(free)} free: sweep fewer or smaller payloads, free space first (BuildKit's build "
                "cache: `docker system df`), or --prune-cache where nobody else builds on the engine"
            )


def sweep(run: Run) -> list[SweepPoint]:
    """Cold builds of both at each payload; each side's images go before the other builds (disk)."""
    disk_check(run, run.args.sweep)
    points = []
    for mb in run.args.sweep:
        root = run.root / f"sweep-{mb}"
        inp = prepare(run, root, mb, f"{run.args.seed}-{mb}")
        load_start = os.getloadavg()[0]
        seconds, sizes, waste = {}, {}, {}
        with secret_files(inp.opts.network) as secrets_:
            for side in ("ours", "naive"):
                cache_before = build_cache_bytes(run.docker)
                note(f"sweep {mb} MB: {side}: cold build ...")
                if side == "ours":
                    built = build_ours(inp.target, replace(inp.opts, no_cache=True), run.client, run.docker,
                                       run.created)  # fmt: skip
                else:
                    built = naive_build(run, inp, secrets_, f"cold-{mb}", f"naive/cold-{mb}", no_cache=True)
                seconds[side] = built.seconds
                sizes[side] = run.docker.images.get(built.image_id).attrs["Size"]
                waste[side] = waste_of(run, side, built.image_id)[0].wasted
                free_side(run, f"sweep {mb} MB: {side}", cache_before, 3 * mb * MB)
        load = (load_start, os.getloadavg()[0])
        points.append(SweepPoint(mb, seconds["ours"], seconds["naive"], sizes, waste, load))
        note(f"sweep {mb} MB: ours {fmt_secs(seconds['ours'])} {fmt_bytes(sizes['ours'])}, "
             f"naive {fmt_secs(seconds['naive'])} {fmt_bytes(sizes['naive'])}")  # fmt: skip
        if not run.args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return points


def free_side(run: Run, what: str, cache_before: int | None, installers: int) -> None:
    """Remove one side's images (unless --keep) and, with --prune-cache, BuildKit's cache, before the next build."""
    if not run.args.keep:
        remove_images(run)
    cache_after = build_cache_bytes(run.docker)
    if cache_before is not None and cache_after is not None:
        note(f"{what}: BuildKit's build cache grew by {fmt_bytes(cache_after - cache_before)} "
             f"({fmt_bytes(installers)} of installers)")  # fmt: skip
    if run.args.prune_cache:
        note(f"{what}: --prune-cache: docker builder prune ...")
        subprocess.run([run.client.path, "builder", "prune", "--force"], check=True, stdout=sys.stderr)


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs; None for fewer than two distinct xs."""
    if len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def installers_gb(p: SweepPoint) -> float:
    return 3 * p.payload_mb * MB / 1e9  # toolkit, kernels and NNAL stand-ins carry the payload each


def machine() -> str:
    """The cores this process may use (nproc) and the load average when called."""
    one, five, fifteen = os.getloadavg()
    return f"nproc {len(os.sched_getaffinity(0))}, load average {one:.2f} {five:.2f} {fifteen:.2f} at the end"


def sweep_table(points: list[SweepPoint], client: BuildKitClient, seed: str) -> str:
    xs = [installers_gb(p) for p in points]
    loads = [x for p in points for x in p.load]
    caption = (
        f"**Payload sweep, one run** ({dt.date.today().isoformat()}, seed `{seed}`): the `{ROW}` row ({ARCH}) "
        f"built cold (`--no-cache`, payload new to the run) by both approaches in turn at each payload per stand-in "
        f"installer (toolkit, kernels and NNAL each carry it), BuildKit (docker {client.version}, "
        f"{machine()}). Host load average (1 min) {min(loads):.1f} to {max(loads):.1f} over the builds."
    )
    rows = [("payload per installer (all three)", "cold build, ours", "cold build, naive", "image, ours",
             "image, naive", "wasted, ours", "wasted, naive"), tuple("---" for _ in range(7))]  # fmt: skip
    for p, x in zip(points, xs, strict=True):
        rows.append((f"{p.payload_mb} MB ({x:.2f} GB)", fmt_secs(p.ours), fmt_secs(p.naive), fmt_bytes(p.sizes["ours"]),
                     fmt_bytes(p.sizes["naive"]), fmt_bytes(p.waste["ours"]), fmt_bytes(p.waste["naive"])))  # fmt: skip
    slopes = {
        "time": [slope(xs, [p.ours for p in points]), slope(xs, [p.naive for p in points])],
        "size": [slope(xs, [p.sizes[s] for p in points]) for s in ("ours", "naive")],
        "waste": [slope(xs, [p.waste[s] for p in points]) for s in ("ours", "naive")],
    }
    if slopes["time"][0] is not None:

        def per_gb(v: float | None, secs: bool = False) -> str:
            return "—" if v is None else (f"{v:.1f} s" if secs else fmt_bytes(max(v, 0)))

        t, z, w = slopes["time"], slopes["size"], slopes["waste"]
        rows.append(("**slope, per GB of installers**", per_gb(t[0], True), per_gb(t[1], True), per_gb(z[0]),
                     per_gb(z[1]), per_gb(w[0]), per_gb(w[1])))  # fmt: skip
    lines = ["| " + " | ".join(cells) + " |" for cells in rows]
    return caption + "\n\n" + "\n".join(lines) + "\n"


def plot(points: list[SweepPoint], path: Path, seed: str) -> None:
    """Cold build time, image size and wasted bytes against the installers' size, both approaches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [installers_gb(p) for p in points]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), constrained_layout=True)
    panels = (
        ("cold build (s)", lambda p, s: p.ours if s == "ours" else p.naive),
        ("image size (GB)", lambda p, s: p.sizes[s] / 1e9),
        ("wasted bytes (GB)", lambda p, s: p.waste[s] / 1e9),
    )
    for ax, (title, value) in zip(axes, panels, strict=True):
        for side, label, style in (("ours", "ascend-llm-stack", "o-"), ("naive", "naive single Dockerfile", "s--")):
            ax.plot(xs, [value(p, side) for p in points], style, label=label)
        ax.set_title(title)
        ax.set_xlabel("CANN installers, all three (GB)")
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"build_bench.py --sweep {','.join(str(p.payload_mb) for p in points)} (seed {seed})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def remove_images(run: Run) -> None:
    """Remove this run's tags and the images its builds made (not one someone else has tagged since)."""
    import docker.errors as errors

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
    run.created.clear()


def cleanup(run: Run) -> None:
    """Remove this run's tags, the images its builds made, and the temp root (all kept with --keep)."""
    if run.args.keep:
        note(f"kept (--keep): {run.root} and the images tagged {run.prefix}*")
        return
    remove_images(run)
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
            if args.sweep:
                points = sweep(run)
                text = sweep_table(points, client, args.seed)
                print(text, end="")
                args.table.parent.mkdir(parents=True, exist_ok=True)
                args.table.write_text(text + f"\n![payload sweep]({args.plot.name})\n")
                plot(points, args.plot, args.seed)
                note(f"table: {args.table}; plot: {args.plot}")
                return 0
            measured = measure(run)
        print(table(measured), end="")
        print()
        print(breakdown(measured.ours_cold, measured.naive_cold), end="")
        return 0
    except (BenchError, BuildFailed, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except DockerException as err:  # e.g. the engine's disk filled during docker save
        print(f"error: the Docker engine failed mid-run: {one_line(str(err))} (if out of disk: "
              "`docker system df`, free space, run again)", file=sys.stderr)  # fmt: skip
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
