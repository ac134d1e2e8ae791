"""``invoke demo``: from a fresh Debian/Ubuntu machine to a built and verified image, in one command.

It does what the README's manual steps do, in order, and skips whatever is already done: a Docker
engine (``scripts/docker-engine.sh`` when none answers), the offline Debian base image (``invoke
base-image``), the stand-in inputs (``scripts/test-inputs.py``, but under ``build/demo/``), the hidden
``test`` row's chain (``invoke build --cann test``, with the host CA and ``/opt/wheels`` when present,
as the tests build it: the same content tags), ``invoke verify``, and sample data on which
``sft --dry-run`` runs in the image. A second run finds every layer up to date and the image's
verdict recorded for its ID, so it takes seconds.

The CANN installers and the MindSpeed / MindSpeed-LLM / Megatron-LM / apex repositories of the
``test`` row are the stand-ins of ``tests/fakes`` (test fixtures: real names, options, layout and
install order, no Huawei or upstream code; Megatron's ``megatron/core`` is PyPI's megatron-core).
torch, torch_npu, transformers and every other package are real. The demo says so at its start and end.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from . import budgets, paths
from . import render as rendering
from .build import Builder, BuildOptions, LayerResult, NetworkOptions
from .driver import Driver, find_buildkit_client
from .errors import UserError
from .inputs import InputDirs
from .matrix import load_matrix
from .target import Target, resolve

REPO = Path(__file__).resolve().parents[2]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
LOCAL_WHEELS = Path("/opt/wheels")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
ROW = "test"
SAMPLE_MODEL = "qwen3-0.6b"
STEPS = 7

STANDIN = (
    "The CANN inside this image is a STAND-IN (tests/fakes: Huawei's file names, options and layout, no Huawei "
    "code), as are MindSpeed, MindSpeed-LLM and apex; torch, torch_npu and the Python stack are real. It runs "
    "the stage commands and their checks, not training on an NPU."
)
REAL_BUILD = (
    "A real image needs Huawei's CANN .run/.zip packages (toolkit, kernels, NNAL) and the upstream sources: "
    "`invoke fetch --cann 8.1.RC1` downloads and verifies them (or put them into packages/), then "
    "`invoke build --cann 8.1.RC1`; air-gapped hosts: docs/offline.md."
)


@dataclass(frozen=True)
class DemoDirs:
    """Everything the demo writes, under ``build/demo/`` (the image tags aside)."""

    root: Path

    @property
    def packages(self) -> Path:
        return self.root / "packages"

    @property
    def sources(self) -> Path:
        return self.root / "sources"

    @property
    def mirrors(self) -> Path:
        """The build's git mirrors of the stand-ins: never the project's sources/, which holds real upstream ones."""
        return self.root / "mirrors"

    @property
    def sample(self) -> Path:
        return self.root / "sample"

    @property
    def log(self) -> Path:
        return self.root / "demo.log"

    @property
    def state(self) -> Path:
        return self.root / "state.json"


@dataclass
class Outcome:
    """What the demo ends with: the summary's facts."""

    image: str
    image_id: str
    size_bytes: int
    verdict: str
    verified_now: bool
    try_next: list[str]
    seconds: float


@dataclass
class Step:
    """A running step: ``say`` logs a line of its output (and shows it by the spinner); ``result`` is its line."""

    say: Callable[[str], None]
    result: str = ""


class Steps:
    """One line per step on stdout; on a terminal, a spinner with the elapsed time and the step's latest output
    line while it runs. Everything the tools print (BuildKit, pip, debootstrap) goes to the log file instead."""

    def __init__(self, console: Console, log: Path) -> None:
        self.console = console
        self.log_path = log
        self.number = 0

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Step]:
        self.number += 1
        head = f"[{self.number}/{STEPS}] {title}"
        started = time.monotonic()
        lock = threading.Lock()
        progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                            console=self.console, transient=True, redirect_stdout=False, redirect_stderr=False,
                            disable=not self.console.is_terminal)  # fmt: skip
        task = progress.add_task(escape(head))
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"\n=== {head} ({dt.datetime.now().isoformat(timespec='seconds')})\n")

            def say(text: str) -> None:
                with lock:
                    log.write(text if text.endswith("\n") else text + "\n")
                    log.flush()
                last = next((part.strip() for part in reversed(text.replace("\r", "\n").splitlines()) if part.strip()),
                            "")  # fmt: skip
                if last:
                    progress.update(task, description=escape(f"{head}: {last[:100]}"))

            step = Step(say)
            try:
                with progress, _captured(say):
                    yield step
            except UserError as err:  # the tools' output went to the log: say where it is
                self.console.print(
                    f"{escape(head):<26} [red]failed[/red]  [dim]({_duration(time.monotonic() - started)})[/dim]"
                )
                err.args = (f"{err} (the whole output: {self.log_path})",)
                raise
        took = time.monotonic() - started
        self.console.print(f"{escape(head):<26} {escape(step.result)}  [dim]({_duration(took)})[/dim]")


@contextlib.contextmanager
def _captured(say: Callable[[str], None]) -> Iterator[None]:
    """Whatever reaches file descriptors 1 and 2 while the body runs (the library's prints, BuildKit's log, pip
    and debootstrap in subprocesses) and the library's log records go to ``say``, a line at a time."""
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: say(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("ascend_stack")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    saved = os.dup(1), os.dup(2)
    reader = threading.Thread(target=_forward, args=(read_end, say), daemon=True)
    reader.start()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        reader.join(timeout=10)  # EOF unless a child that outlives the step still holds the pipe
        logger.removeHandler(handler)
        logger.setLevel(level)


def _forward(fd: int, say: Callable[[str], None]) -> None:
    with os.fdopen(fd, "rb") as pipe:
        for raw in pipe:
            say(raw.decode(errors="replace").rstrip("\n"))


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


class _ProgressDriver(Driver):
    """The build's driver, saying which layer BuildKit is on (its log goes to the demo log)."""

    def __init__(self, driver: Driver, say: Callable[[str], None]) -> None:
        super().__init__(driver.client, driver.docker)
        self.say = say

    def build(self, req: Any, log_name: str) -> str:
        self.say(f"docker build of layer {log_name}")
        return super().build(req, log_name)


def host_arch() -> str:
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(platform.machine(), platform.machine())


def run(
    arch: str | None = None,
    ca_cert: Path | None = None,
    wheelhouse: Path | None = None,
    http_proxy: str | None = None,
    root: Path | None = None,
    mirror: str | None = None,
    console: Console | None = None,
) -> Outcome:
    """The whole demo; every step is skipped when its result is already there. Bad input or a failed step:
    :class:`UserError`, one line."""
    started = time.monotonic()
    console = console or Console(file=_terminal(), highlight=False, soft_wrap=True)
    dirs = DemoDirs(root or REPO / "build" / "demo")
    ca_cert = ca_cert if ca_cert is not None else (HOST_CA if HOST_CA.is_file() else None)
    wheelhouse = wheelhouse if wheelhouse is not None else (LOCAL_WHEELS if LOCAL_WHEELS.is_dir() else None)
    if ca_cert is not None:
        paths.expect(ca_cert, "--ca-cert", "file", "pass the PEM bundle of your proxy's CA")
    if wheelhouse is not None:
        paths.expect(wheelhouse, "--wheelhouse", "directory", "pass a folder of .whl files")
    matrix_path = REPO / "matrix.yaml"
    target = resolve(load_matrix(matrix_path), ROW, arch=arch or host_arch())
    claim(dirs.root)

    console.print(f"[bold]ascend-llm-stack demo[/bold]: build and verify the hidden `{ROW}` matrix row: CANN "
                  f"{target.cann} (stand-in), torch {target.torch}, torch_npu {target.torch_npu}, MindSpeed-LLM "
                  f"{target.row.mindspeed_llm.release}, {target.os_name}, Python {target.python}, {target.arch}.",
                  highlight=False)  # fmt: skip
    console.print(f"[yellow]{STANDIN}[/yellow]\n{REAL_BUILD}\nLog of every step: {dirs.log}\n", highlight=False)
    steps = Steps(console, dirs.log)

    with steps.step("Docker engine") as step:
        engine = ensure_engine(step.say)
        client = find_buildkit_client()
        step.result = f"engine {engine.version().get('Version', '?')} answers; BuildKit client {client.reason}"
    with steps.step("OS base image") as step:
        step.result = ensure_base_image(engine, target, mirror, step.say)
    with steps.step("stand-in inputs") as step:
        step.result = ensure_standins(dirs, target, step.say)
    with steps.step("image chain") as step:
        results = build_chain(target, dirs, Driver(client, engine), ca_cert, wheelhouse, http_proxy, step.say)
        runtime = results[-1]
        assert runtime.image_id is not None
        statuses = ", ".join(f"{r.name} {r.status}" for r in results)
        over = [f"{r.name} {r.size.describe()}" for r in results if r.size and r.size.over]
        step.result = f"{sum(r.status == 'built' for r in results)} of {len(results)} layers built ({statuses})" + (
            f"; past 120 % of budgets.yaml: {', '.join(over)}" if over else "")  # fmt: skip
    image = rendering.final_tag(target)
    with steps.step("invoke verify") as step:
        verdict, ok, fresh = verify(image, runtime.image_id, target, dirs, step.say)
        step.result = verdict.removeprefix("verdict: ") + ("" if fresh else " (recorded for this image ID)")
    if not ok:
        raise UserError(f"{verdict}; run `invoke verify --image {image}` for every check")
    with steps.step("sample data") as step:
        step.result = ensure_sample(dirs.sample, image, engine, step.say)
    sft = sft_dry_run_argv(dirs.sample, image)
    with steps.step("sft --dry-run") as step:
        sft_ok, step.result = check_sft_dry_run(sft, step.say)
    size = int(engine.images.get(image).attrs.get("Size") or 0)
    sft_line = shlex.join(sft) + ("" if sft_ok else f"    # here it {step.result}")
    outcome = Outcome(image, runtime.image_id, size, verdict, fresh,
                      [shlex.join(["docker", "run", "--rm", image, "--help"]), sft_line,
                       "invoke render --cann 8.1.RC1"], time.monotonic() - started)  # fmt: skip
    console.print(summary(outcome), highlight=False)
    return outcome


MARK = ".ascend-llm-stack-demo"


def claim(root: Path) -> None:
    """The demo's folder: new, empty or one it made (it replaces its own sub-folders, never a user's files)."""
    paths.expect_creatable(root, "--dir", "directory")
    if root.is_dir() and not (root / MARK).is_file() and any(root.iterdir()):
        raise UserError(f"--dir {root}: holds files invoke demo did not write; choose a new or empty directory")
    root.mkdir(parents=True, exist_ok=True)
    (root / MARK).write_text("written by invoke demo: it may replace what it made here\n")


def _terminal() -> Any:
    """This process's stdout as it is now: the steps point file descriptor 1 at their log."""
    try:
        return os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")
    except (AttributeError, OSError, ValueError):  # no file descriptor (an in-process test's capture)
        return sys.stdout


def summary(o: Outcome) -> str:
    again = "" if o.verified_now else " (recorded for this image ID)"
    lines = [
        "",
        f"Done in {_duration(o.seconds)}.",
        f"  image   {o.image}  ({o.size_bytes / 1e9:.2f} GB, {o.image_id[:19]})",
        f"  verify  {o.verdict.removeprefix('verdict: ')}{again}",
        "Try next:",
        *(f"  {cmd}" for cmd in o.try_next),
        "",
        f"[yellow]{STANDIN}[/yellow]",
        REAL_BUILD,
    ]
    return "\n".join(lines)


def ensure_engine(say: Callable[[str], None]) -> Any:
    """An engine that answers: this host's, or one that scripts/docker-engine.sh installs and starts."""
    engine = _engine()
    if engine is not None:
        return engine
    script = REPO / "scripts" / "docker-engine.sh"
    say(f"no Docker engine answers: bash {script}")
    proc = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail = ""
    for line in proc.stdout:
        say(line)
        tail = line.strip() or tail
    if proc.wait() != 0:
        raise UserError(f"scripts/docker-engine.sh failed: {tail.removeprefix('docker-engine: ')}")
    engine = _engine()
    if engine is None:
        raise UserError("scripts/docker-engine.sh ran but no Docker engine answers: see its log (/var/log/dockerd.log)")
    return engine


def _engine() -> Any:
    import docker

    try:
        engine = docker.from_env()
        engine.ping()
    except Exception:  # the SDK raises several types for "no engine here"
        return None
    return engine


def ensure_base_image(engine: Any, target: Target, mirror: str | None, say: Callable[[str], None]) -> str:
    """``invoke base-image`` for the row's OS and arch: debootstrap from the host's Debian mirror (Debian's own
    on a host whose apt names none, as on Ubuntu), once."""
    import docker.errors

    from .baseimage import BaseImageError, build_base_image, detect_mirror, parse_os_name

    with contextlib.suppress(docker.errors.ImageNotFound):
        found = engine.images.get(target.base_image)
        return f"{target.base_image} exists ({found.id[7:19]})"
    if shutil.which("debootstrap") is None:
        raise UserError(
            f"{target.base_image} is not here and debootstrap is not installed: apt-get install debootstrap "
            "(or run scripts/docker-engine.sh), then invoke demo again"
        )
    try:
        mirror = mirror or detect_mirror(parse_os_name(target.os_name))
    except BaseImageError:
        mirror = DEBIAN_MIRROR
    say(f"debootstrap {target.os_name} ({target.arch}) from {mirror}, then docker import")
    try:
        tag = build_base_image(target.os_name, target.arch, mirror, docker_client=engine)
    except BaseImageError as err:
        raise UserError(str(err)) from None
    return f"{tag} built ({engine.images.get(tag).id[7:19]})"


def ensure_standins(dirs: DemoDirs, target: Target, say: Callable[[str], None]) -> str:
    """The test row's stand-in CANN installers and source repositories (deterministic: same bytes, same commits,
    so the content tags are the ones the tests' chain has)."""
    fakes = _fakes()
    names = fakes.package_file_names(target.cann, target.arch, (target.chip,))
    made = []
    if not all((dirs.packages / name).is_file() for name in names.values()):
        with _fresh_dir(dirs.packages) as tmp:
            fakes.make_cann_packages(tmp, target.cann, target.arch, chips=(target.chip,))
        made.append("CANN installers")
    if not dirs.sources.is_dir():
        say("megatron-core 0.8.0 from PyPI (the Megatron stand-in's real megatron/core)")
        wheel = fakes.megatron_core_wheel(REPO / "build" / "test-cache")
        with _fresh_dir(dirs.sources) as tmp:
            fakes.make_source_repos(tmp, wheel)
        made.append("source repositories")
    where = f"{len(names)} CANN installers in {_rel(dirs.packages)}, 5 repositories in {_rel(dirs.sources)}"
    return ("wrote " + " and ".join(made) + ": " if made else "") + where


def _fakes() -> Any:
    """tests/fakes (the stand-ins are test fixtures; a checkout has them next to src/)."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    try:
        import fakes
        from fakes.sources import megatron_core_wheel
    except ImportError:
        raise UserError(f"{tests}/fakes is missing: run invoke demo from a checkout of ascend-llm-stack") from None
    fakes.megatron_core_wheel = megatron_core_wheel
    return fakes


@contextlib.contextmanager
def _fresh_dir(dest: Path) -> Iterator[Path]:
    """A new folder that replaces ``dest`` only when the body finished: never half of one."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # a folder as mkdir makes it, not mkdtemp's 0700: the image's user reads sample/
    try:
        yield tmp
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def build_chain(
    target: Target, dirs: DemoDirs, driver: Driver, ca_cert: Path | None, wheelhouse: Path | None,
    http_proxy: str | None, say: Callable[[str], None],
) -> list[LayerResult]:  # fmt: skip
    """``invoke build --cann test --packages build/demo/packages --sources build/demo/sources [--wheelhouse]
    [--ca-cert]``: layers whose content tag exists are reused."""
    opts = BuildOptions(
        dirs=InputDirs(packages=dirs.packages, extra_wheelhouses=(wheelhouse,) if wheelhouse else (),
                       sources=dirs.mirrors, source_overrides=dirs.sources),
        network=NetworkOptions(ca_cert=ca_cert, http_proxy=http_proxy),
        budgets=budgets.load(REPO / budgets.FILE),
        enforce_budgets=False,  # sizes are reported; holding layers to budgets.yaml is the maintainers' test
    )  # fmt: skip
    opts.dirs.check()
    builder = Builder(target, opts, _ProgressDriver(driver, say), log=say)
    results = builder.run()
    for r in results:
        size = f"  {r.size.describe()}" if r.size else ""
        say(f"{r.name:<10} {r.status:<12} {r.content_tag}  {r.seconds:6.1f}s{size}")
    return results


def verify(image: str, image_id: str, target: Target, dirs: DemoDirs,
           say: Callable[[str], None]) -> tuple[str, bool, bool]:  # fmt: skip
    """``invoke verify`` of the image, once per image ID: (verdict line, ok, run now)."""
    from . import verify as verifying

    state = _load_state(dirs.state)
    if state.get("image_id") == image_id and state.get("ok"):
        return str(state["verdict"]), True, False
    say(f"the checks of every layer, in a container of {image}")
    verdict = verifying.run(image, target=target, matrix_path=REPO / "matrix.yaml", log_dir=REPO / "build" / "verify")
    say(verdict.summary())
    line = verdict.verdict_line()
    paths.write_text(dirs.state, json.dumps({"image": image, "image_id": image_id, "ok": verdict.ok,
                                             "verdict": line, "log": str(verdict.log)}, indent=2) + "\n")  # fmt: skip
    return line, verdict.ok, True


def _load_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# Written in a container of the image: real Megatron indexed datasets (megatron-core's own writer) of a few
# token ids, in the packed layout `ascend-llm preprocess --format alpaca` writes.
_SAMPLE_WRITER = """
import sys, warnings
import numpy, torch
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # megatron-core warns about missing Apex/TE on import
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
prefix = sys.argv[1]
samples = [[151644, 872, 198, 9707, 151645], [151644, 77091, 198, 13048, 151645], [151644, 872, 198, 151645]]
for key in ("input_ids", "attention_mask", "labels"):
    builder = IndexedDatasetBuilder(f"{prefix}_packed_{key}_document.bin", dtype=numpy.int32)
    for sample in samples:
        builder.add_item(torch.tensor(sample, dtype=torch.int32))
        builder.end_document()
    builder.finalize(f"{prefix}_packed_{key}_document.idx")
"""

# Qwen3-0.6B's config.json values the preset checks (entrypoints/ascend_llm/presets/qwen3-0.6b.yaml).
_QWEN3_06B = {
    "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "num_hidden_layers": 28, "hidden_size": 1024,
    "intermediate_size": 3072, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
    "tie_word_embeddings": True, "vocab_size": 151936, "torch_dtype": "bfloat16",
}  # fmt: skip


def ensure_sample(sample: Path, image: str, engine: Any, say: Callable[[str], None]) -> str:
    """Sample inputs for ``sft --dry-run``: packed data (3 samples), an empty Megatron checkpoint tree of the
    preset's TP1 PP1 layout, a model dir with Qwen3-0.6B's config.json and placeholder tokenizer files. Enough
    for the stage's checks and its launch script; nothing here can train."""
    done = sample / "README.txt"
    if done.is_file():
        return f"{_rel(sample)} (written earlier)"
    with _fresh_dir(sample) as tmp:
        (tmp / "data").mkdir()
        uid, gid = os.getuid(), os.getgid()
        say("packed data through megatron-core's IndexedDatasetBuilder, in a container of the image")
        out = engine.containers.run(image, ["python", "-c", _SAMPLE_WRITER, "/sample/data/alpaca"], entrypoint=[],
                                    user=f"{uid}:{gid}", environment={"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"},
                                    volumes={str(tmp): {"bind": "/sample", "mode": "rw"}}, remove=True,
                                    stdout=True, stderr=True)  # fmt: skip
        say(out.decode(errors="replace"))
        ckpt = tmp / "ckpt"
        (ckpt / "iter_0000001" / "mp_rank_00").mkdir(parents=True)
        (ckpt / "iter_0000001" / "mp_rank_00" / "model_optim_rng.pt").write_bytes(b"")
        (ckpt / "latest_checkpointed_iteration.txt").write_text("1")
        hf = tmp / "tokenizer"
        hf.mkdir()
        (hf / "config.json").write_text(json.dumps(_QWEN3_06B, indent=2) + "\n")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (hf / name).write_text("{}\n")
        save = tmp / "out"
        save.mkdir()
        _writable_by_image_user(save, engine.images.get(image).labels)
        (tmp / "README.txt").write_text(
            "Sample inputs of `invoke demo` for `sft --dry-run`: data/ holds 3 token-id samples in Megatron's packed\n"
            "layout (written by megatron-core), ckpt/ an empty checkpoint tree (TP1 PP1), tokenizer/ Qwen3-0.6B's\n"
            "config.json with placeholder tokenizer files, out/ is the --save folder. Nothing here can train.\n"
        )
    return f"{_rel(sample)}: packed data, an empty TP1/PP1 checkpoint, a Qwen3-0.6B config, out/"


def _writable_by_image_user(folder: Path, labels: dict[str, str]) -> None:
    """The image runs as HwHiAiUser (its uid/gid labels); the --save folder must be its to write."""
    uid, gid = int(labels.get("io.ascend-llm-stack.uid", 1000)), int(labels.get("io.ascend-llm-stack.gid", 1000))
    if os.getuid() == uid:
        return
    if os.geteuid() == 0:
        os.chown(folder, uid, gid)
    else:  # not ours to give away: let anyone write this scratch folder, as /tmp does
        folder.chmod(0o1777)


def sft_dry_run_argv(sample: Path, image: str) -> list[str]:
    return ["docker", "run", "--rm", "-v", f"{sample}:/sample", image, "sft", "--dry-run", "--model", SAMPLE_MODEL,
            "--load", "/sample/ckpt", "--save", "/sample/out", "--data", "/sample/data/alpaca",
            "--tokenizer", "/sample/tokenizer"]  # fmt: skip


def check_sft_dry_run(argv: list[str], say: Callable[[str], None]) -> tuple[bool, str]:
    """Run the printed ``sft --dry-run`` command as the user will: (it printed the launch script, what happened).

    Its preflight is real: on a host with less free disk than the checkpoint needs (7.8 GB for Qwen3-0.6B) it
    stops with that one line, which the demo reports instead of the script."""
    from .container import docker_cli

    done = subprocess.run([docker_cli(), *argv[1:]], capture_output=True, text=True, timeout=300)
    say(done.stdout + done.stderr)
    if done.returncode == 0 and done.stdout.startswith("#!/usr/bin/env bash"):
        return True, f"prints the {len(done.stdout.splitlines())}-line launch script (posttrain_gpt.py under torchrun)"
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    if done.returncode == 2 and last.startswith("ascend-llm: "):  # its preflight refused, in one line
        return False, f"stops at its preflight check: {last.removeprefix('ascend-llm: ')}"
    raise UserError(f"sft --dry-run on the sample data failed (exit {done.returncode}): {last}")
