"""What the Invoke tasks do, as plain functions returning text: testable without Invoke."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table

from . import render as rendering
from .baseimage import BaseImageError, build_base_image
from .build import Builder, BuildOptions, LayerResult
from .driver import Driver, find_buildkit_client
from .errors import UserError
from .inputs import InputDirs
from .inputs import fetch as fetch_inputs
from .matrix import Matrix, MatrixError, load_matrix
from .target import resolve

if TYPE_CHECKING:  # imported where used: the kubernetes client is slow to import
    from .k8s import ManifestOptions
    from .registry import Published
    from .run import RunOptions

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MATRIX = REPO / "matrix.yaml"


def matrix_table(m: Matrix, show_all: bool = False) -> Table:
    table = Table(
        title="ascend-llm-stack version matrix (* = default torch)", title_justify="left", box=box.SIMPLE_HEAD
    )
    for col in (
        "CANN",
        "torch (torch_npu)",
        "Python",
        "MindSpeed-LLM",
        "Megatron-LM",
        "transformers",
        "HDK min",
        "archs",
        "OSes",
        "chips",
    ):
        table.add_column(col)
    for row in m.rows if show_all else m.shipped_rows():
        torches = "\n".join(
            f"{v.torch}{'*' if v.torch == row.torch.default else ''} ({v.torch_npu})" for v in row.torch.variants
        )
        table.add_row(
            row.key + (" (test)" if row.test else ""),
            torches,
            row.python,
            row.mindspeed_llm.release,
            row.megatron.ref,
            row.transformers,
            row.hdk_min,
            ", ".join(row.archs),
            ", ".join(row.oses),
            ", ".join(row.chips),
        )
    return table


def matrix_markdown(m: Matrix) -> str:
    """The shipped rows as a Markdown table: the README's copy, kept equal by a test."""
    lines = [
        "| CANN | torch (torch_npu), * = default | Python | MindSpeed-LLM | Megatron-LM | transformers "
        "| HDK min | chips |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in m.shipped_rows():
        torches = ", ".join(
            f"{v.torch}{'*' if v.torch == row.torch.default else ''} ({v.torch_npu})" for v in row.torch.variants
        )
        lines.append(
            f"| {row.key} | {torches} | {row.python} | {row.mindspeed_llm.release} | {row.megatron.ref} "
            f"| {row.transformers} | {row.hdk_min} | {', '.join(row.chips)} |"
        )
    return "\n".join(lines) + "\n"


def show_matrix(
    path: Path = DEFAULT_MATRIX,
    check: bool = False,
    show_all: bool = False,
    markdown: bool = False,
    console: Console | None = None,
) -> int:
    """Print the matrix table; with ``check``, list every problem instead of the first. Returns the exit code."""
    # Piped output (CI logs, less) gets a fixed width rather than rich's 80-column default.
    console = console or Console(width=None if Console().is_terminal else 160, soft_wrap=False)
    try:
        m = load_matrix(path)
    except MatrixError as err:
        if not check:
            raise
        for problem in err.problems:
            console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        console.print(f"{len(err.problems)} problem(s) in {path.name}", markup=False, soft_wrap=True)
        return 1
    if check:
        targets = sum(len(r.torch.variants) * len(r.archs) * len(r.oses) * len(r.chips) for r in m.shipped_rows())
        console.print(
            f"{path.name}: OK ({len(m.shipped_rows())} rows, {len(m.rows) - len(m.shipped_rows())} "
            f"test rows, {targets} buildable targets; schema and cross-checks pass)",
            markup=False,
            soft_wrap=True,
        )
        return 0
    if markdown:
        print(matrix_markdown(m), end="")
    else:
        console.print(matrix_table(m, show_all))
    return 0


def render(
    cann: str | None,
    torch: str | None = None,
    arch: str | None = None,
    os: str | None = None,
    chip: str | None = None,
    out: Path | None = None,
    matrix_path: Path = DEFAULT_MATRIX,
) -> tuple[Path, rendering.BuildPlan]:
    """Resolve the choices, render every layer and write them with the plan to ``out``."""
    target = resolve(load_matrix(matrix_path), cann, torch, arch, os, chip)
    plan, files = rendering.plan(target)
    out_dir = out or rendering.default_out_dir(target, REPO / "build")
    rendering.write(files, out_dir)
    return out_dir, plan


def _driver(dry_run: bool, verbose: bool) -> Driver:
    """A driver on the local engine; a dry run may go on without one (it then assumes nothing is built)."""
    import docker

    client = find_buildkit_client()
    if verbose:
        print(f"BuildKit client: {client.reason}")
    try:
        engine = docker.from_env()
        engine.ping()
    except Exception as exc:  # the SDK raises several types for "no engine here"
        if dry_run:
            print(f"note: no Docker engine answers ({type(exc).__name__}); the dry run assumes nothing is built")
            return Driver(client, None)
        raise UserError("no Docker engine answers: start one (scripts/docker-engine.sh), or use --dry-run") from None
    return Driver(client, engine)


def build(
    target_choices: dict[str, str | None], opts: BuildOptions, matrix_path: Path = DEFAULT_MATRIX, verbose: bool = False
) -> list[LayerResult]:
    """``invoke build``: resolve, verify inputs, build what changed, print a summary."""
    target = resolve(load_matrix(matrix_path), **target_choices)  # type: ignore[arg-type]
    opts.selected()  # bad --layers/--until fail before anything else
    if opts.push:
        from .registry import Registry, parse_registry

        registry = parse_registry(opts.push)
        if not opts.dry_run:  # unreachable, untrusted or no login: say so now, not after the build
            Registry.for_host(registry.host).check()
    builder = Builder(target, opts, None)
    prepared = builder.prepare()  # inputs are found and verified before the engine is even asked
    builder.driver = driver = _driver(opts.dry_run, verbose)
    results = builder.run(prepared)
    built = sum(r.status == "built" for r in results)
    print(f"{rendering.final_tag(target)}: {built} layer(s) built, {len(driver.builds)} docker build call(s)")
    for r in results:
        print(f"  {r.name:<10} {r.status:<12} {r.content_tag}  {r.seconds:6.1f}s")
    return results


def publish(
    target_choices: dict[str, str | None],
    registry: str,
    archs: list[str] | None = None,
    until: str = "runtime",
    matrix_path: Path = DEFAULT_MATRIX,
) -> list[Published]:
    """``invoke publish``: a manifest list per layer tag (and the final tag) over the arches already pushed.

    Each arch is built and pushed on its own (``invoke build --arch A --push REGISTRY``, natively on
    an A host or under emulation), so publishing reads the per-arch images from the registry, not
    from this engine: the two halves may come from two machines.
    """
    from . import registry as registries

    ref = registries.parse_registry(registry, "--registry")
    matrix = load_matrix(matrix_path)
    choices = {k: v for k, v in target_choices.items() if k != "arch"}
    targets = {}
    for arch in archs or resolve(matrix, **choices).row.archs:  # type: ignore[arg-type]
        targets[arch] = resolve(matrix, **choices, arch=arch)  # type: ignore[arg-type]
    names = [layer.name for layer in rendering.LAYERS]
    if until not in names:
        raise UserError(f"unknown layer '{until}' for --until: choose one of {', '.join(names)}")
    lists: dict[str, dict[str, str]] = {}
    for arch, target in targets.items():
        plan, _ = rendering.plan(target)
        tags = [layer.tag for layer in plan.layers[: names.index(until) + 1]]
        for tag in [*tags, *([plan.image] if until == "runtime" else [])]:
            lists.setdefault(registries.multi_arch_tag(tag, arch), {})[arch] = tag
    client = registries.Registry.for_host(ref.host)
    client.check()
    published = []
    for multi, per_arch in lists.items():
        done = registries.manifest_list(client, ref, multi, per_arch)
        arches = ", ".join(f"{arch} {digest[:19]}" for arch, digest in done.entries.items())
        print(f"{done.remote}: manifest list {done.digest} ({arches})")
        published.append(done)
    return published


def fetch(
    target_choices: dict[str, str | None],
    dirs: InputDirs,
    matrix_path: Path = DEFAULT_MATRIX,
    update: bool = False,
    ca_cert: Path | None = None,
) -> None:
    """``invoke fetch``: download what the target needs into the caches and record it in the lock."""
    target = resolve(load_matrix(matrix_path), **target_choices)  # type: ignore[arg-type]
    plan, _ = rendering.plan(target)
    fetch_inputs(plan, dirs, update=update, ca_cert=ca_cert)


def base_image(os_name: str, arch: str | None, mirror: str | None, force: bool) -> str:
    """``invoke base-image``: an OS base image from a Debian mirror, for hosts without a registry."""
    try:
        return build_base_image(os_name, arch, mirror, force=force)
    except BaseImageError as err:
        raise UserError(str(err)) from None


def verify(
    image: str | None,
    target_choices: dict[str, str | None],
    *,
    tier: str = "all",
    lock_dir: Path | None = None,
    matrix_path: Path = DEFAULT_MATRIX,
    devices: str | None = None,
    docker_args: tuple[str, ...] = (),
    keyword: str | None = None,
    log_dir: Path | None = None,
) -> int:
    """``invoke verify``: run the image's checks, print one line per check and a verdict; the exit code."""
    from . import verify as verifying

    target = None
    if image is None:
        if not any(target_choices.values()):
            raise UserError("name the image: --image TAG, or --cann ROW [--torch ..] [--arch ..] [--os ..] [--chip ..]")
        target = resolve(load_matrix(matrix_path), **target_choices)  # type: ignore[arg-type]
        image = rendering.final_tag(target)
    elif any(target_choices.values()):
        raise UserError("give either --image or --cann/--torch/--arch/--os/--chip, not both")
    verdict = verifying.run(
        image,
        tier=tier,
        lock_dir=lock_dir,
        matrix_path=matrix_path,
        devices=devices,
        docker_args=docker_args,
        keyword=keyword,
        target=target,
        log_dir=log_dir or REPO / "build" / "verify",
    )
    print(verdict.summary())
    return 0 if verdict.ok else 1


def manifest(image: str, out: Path | None = None) -> tuple[Path, Path]:
    """``invoke manifest``: write the image's manifest as JSON and Markdown."""
    from . import manifest as manifests

    return manifests.write(image, out or REPO / "build" / "manifests")


def run_stage(opts: RunOptions, show: bool = False) -> str | None:
    """``invoke run``: the ``docker run`` line for one stage. With ``show``, return it as text; otherwise
    check the host and replace this process with ``docker`` (its exit status is the stage's)."""
    import os as _os

    from . import run as running

    line = running.docker_run(opts)
    if show:
        return line.render()
    exe = running.check_host(line)
    _os.execv(exe, [exe, *line.argv[1:]])
    return None  # pragma: no cover - execv does not return


def k8s_manifest(
    opts: ManifestOptions,
    out: Path | None = None,
    argv: list[str] | None = None,
) -> str:
    """``invoke k8s``: the manifest as YAML; written to ``out`` when given (then the path is returned)."""
    from . import k8s as manifests

    text = manifests.render(opts, argv or [])
    if out is None:
        return text
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return f"wrote {out} ({opts.kind}, {opts.nodes} node(s)): kubectl apply -f {out}\n"
