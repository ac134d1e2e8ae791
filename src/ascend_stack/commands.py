"""What the Invoke tasks do, as plain functions returning text: testable without Invoke."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import paths
from .errors import UserError
from .matrix import Matrix, MatrixError, load_matrix
from .target import Target, resolve

if TYPE_CHECKING:  # the rest is imported where used, so `invoke matrix` loads neither Jinja2 nor Docker's SDK
    from rich.console import Console
    from rich.table import Table

    from . import render as rendering
    from .build import BuildOptions, LayerResult
    from .driver import BuildKitClient, Driver
    from .inputs import InputDirs, ResolvedInputs
    from .k8s import ManifestOptions
    from .pylock import PyLock
    from .registry import Published
    from .run import RunOptions

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MATRIX = REPO / "matrix.yaml"


def matrix_table(m: Matrix, show_all: bool = False) -> Table:
    from rich import box
    from rich.table import Table

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
    sources: Path | None = None,
) -> int:
    """Print the matrix table; with ``check``, list every problem instead of the first. Returns the exit code.

    ``check`` also reads the pinned commits in every local mirror (``sources/``, or ``--sources DIR``).
    """
    from rich.console import Console

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
        from dataclasses import replace

        from .sources import Sources
        from .upstream import pin_problems

        problems, read = pin_problems(m, Sources(override_dir=sources))
        problems = [replace(p, source=path.name) for p in problems]
        for problem in problems:
            console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        if problems:
            console.print(f"{len(problems)} problem(s) in {path.name}", markup=False, soft_wrap=True)
            return 1
        targets = sum(len(r.torch.variants) * len(r.archs) * len(r.oses) * len(r.chips) for r in m.shipped_rows())
        total = sum(len(r.git_sources()) for r in m.shipped_rows())
        mirrors = f"{read} of {total} pinned commits checked in local mirrors" if read else "no local mirror to read"
        console.print(
            f"{path.name}: OK ({len(m.shipped_rows())} rows, {len(m.rows) - len(m.shipped_rows())} "
            f"test rows, {targets} buildable targets; schema and cross-checks pass; {mirrors})",
            markup=False,
            soft_wrap=True,
        )
        return 0
    if markdown:
        print(matrix_markdown(m), end="")
    else:
        console.print(matrix_table(m, show_all))
    return 0


def lock(
    target_choices: dict[str, str | None],
    dirs: InputDirs,
    matrix_path: Path = DEFAULT_MATRIX,
    *,
    update: bool = False,
    ca_cert: Path | None = None,
    index_url: str | None = None,
) -> str:
    """``invoke lock``: resolve every Python package of a target into locks/<row>/<target>.txt."""
    from dataclasses import replace

    from . import pylock
    from . import render as rendering
    from .inputs import resolve_inputs

    target = resolve(load_matrix(matrix_path), **target_choices)  # type: ignore[arg-type]
    plan, _ = rendering.plan(target)
    # The sources' requirements files are lock inputs: resolve the git sources (only them).
    git_only = replace(plan, layers=[replace(layer, inputs=[i for i in layer.inputs if i.kind == "git"])
                                     for layer in plan.layers])  # fmt: skip
    resolved = resolve_inputs(git_only, dirs, download=True, offline=False, ca_cert=ca_cert, progress=False)
    path = pylock.lock_path(target, dirs.python_locks)
    previous = pylock.PyLock.load(path)
    secs = pylock.sections(target, pylock.source_reader(resolved))
    text = pylock.compile_lock(target, secs, previous=previous, update=update, find_links=dirs.wheelhouses,
                               index_url=index_url, ca_cert=ca_cert, report=print)  # fmt: skip
    wrote = pylock.write(path, text)
    count = pylock.PyLock.load(path).count()  # type: ignore[union-attr]
    state = "written: commit it" if wrote else "unchanged"
    return f"{path}: {count} packages in {len(secs)} sections, {state}"


def published(matrix_path: Path = DEFAULT_MATRIX) -> str:
    """``invoke published``: regenerate published.yaml from the installed ascend-deployer."""
    import yaml

    from . import published as pub
    from .matrix import Matrix

    # Schema only: the cross-checks read published.yaml, which this is about to write.
    raw = yaml.safe_load(matrix_path.read_text(encoding="utf-8"))
    path, pairs, files = pub.write(Matrix.model_validate(raw))
    return f"wrote {path}: {pairs} torch_npu pairings, {files} files with their published sha256"


def render(
    cann: str | None,
    torch: str | None = None,
    arch: str | None = None,
    os: str | None = None,
    chip: str | None = None,
    out: Path | None = None,
    matrix_path: Path = DEFAULT_MATRIX,
    user: rendering.RuntimeUser | None = None,
) -> tuple[Path, rendering.BuildPlan]:
    """Resolve the choices, render every layer and write them with the plan to ``out``.

    The pip steps take the target's committed Python lock (locks/<row>/<target>.txt) where there is one.
    """
    from . import pylock
    from . import render as rendering

    target = resolve(load_matrix(matrix_path), cann, torch, arch, os, chip)
    plan, files = rendering.plan(target, lock=pylock.PyLock.load(pylock.lock_path(target)), user=user)
    out_dir = out or rendering.default_out_dir(target, REPO / "build")
    rendering.write(files, out_dir)
    return out_dir, plan


def _client(dry_run: bool) -> BuildKitClient:
    """The docker CLI the builds go through. A dry run goes on without one (Docker not installed, or 23+
    without buildx): it says so in one line and shows the plan as ``docker buildx`` would run it."""
    from .driver import ASSUMED_CLIENT, find_buildkit_client

    try:
        return find_buildkit_client()
    except UserError as err:
        if not dry_run:
            raise
        print(f"note: {err}; the plan shows the commands as docker buildx would run them")
        return ASSUMED_CLIENT


def _driver(dry_run: bool, verbose: bool) -> Driver:
    """A driver on the local engine; a dry run may go on without one (it then assumes nothing is built)."""
    import docker

    from .driver import Driver

    client = _client(dry_run)
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
    target_choices: dict[str, str | None],
    opts: BuildOptions,
    matrix_path: Path = DEFAULT_MATRIX,
    verbose: bool = False,
    bundle: Path | None = None,
    record: str | None = None,
) -> list[LayerResult]:
    """``invoke build``: resolve, verify inputs, build what changed, print a summary.

    ``bundle``: a file of ``invoke bundle``, checked byte for byte and unpacked before anything else;
    the build then reads only it (``--offline``, and no RUN step has a network). ``record``: the
    :func:`ascend_stack.plancache.key` of this command, under which a successful build records what it
    read and the images it left, for the next identical command's no-op fast path.
    """
    from . import budgets
    from . import render as rendering
    from .build import Builder

    opts.selected()  # bad --layers/--until fail before anything else
    unpacked = None
    if bundle is not None:
        from . import bundle as bundles

        unpacked = bundles.unpack(bundle)
        target_choices = bundles.choices(unpacked, target_choices, bundle)
        opts.dirs, opts.network.offline, opts.docker_network = unpacked.dirs(), True, "none"
    target = resolve(load_matrix(matrix_path), **target_choices)  # type: ignore[arg-type]
    if opts.budgets is None:
        opts.budgets = budgets.load(matrix_path.parent / budgets.FILE)
    opts.dirs.check()
    check_ca_cert(opts.network.ca_cert)
    if not opts.dry_run:
        _client(False)  # a missing buildx plugin is said now, not after gigabytes of downloads
    if unpacked is not None and unpacked.base_image and not opts.dry_run:
        # verified above; the OS package folder belongs to this image (its ID), so it comes first
        bundles.load_image(_driver(False, verbose), target.base_image, unpacked.base_image)
    if opts.push:
        from .registry import Registry, parse_registry

        registry = parse_registry(opts.push)
        if not opts.dry_run:  # unreachable, untrusted or no login: say so now, not after the build
            Registry.for_host(registry.host).check()
    builder = Builder(target, opts, None)
    prepared = builder.prepare()  # inputs are found and verified before the engine is even asked
    builder.driver = driver = _driver(opts.dry_run, verbose)
    if record is not None:
        from . import plancache

        plancache.forget(record)  # a build that stops half-way leaves no record to replay
    results = builder.run(prepared)
    print("\n".join(summary(rendering.final_tag(target), results, len(driver.builds))))
    if record is not None and not opts.dry_run:
        _record(record, target, opts, matrix_path, prepared, results, driver)
    return results


def summary(final_tag: str, results: list[LayerResult], builds: int, replayed: bool = False) -> list[str]:
    """What ``invoke build`` prints at the end; ``replayed``: as the same command will print it next time,
    when nothing changed (every layer up to date, no docker build)."""
    built = 0 if replayed else sum(r.status == "built" for r in results)
    lines = [f"{final_tag}: {built} layer(s) built, {0 if replayed else builds} docker build call(s)"]
    for r in results:
        status = "up to date" if replayed and r.status == "built" else r.status
        seconds = 0.0 if replayed else r.seconds
        size = f"  {r.size.describe()}" if r.size else ""
        lines.append(f"  {r.name:<10} {status:<12} {r.content_tag}  {seconds:6.1f}s{size}")
    if replayed:
        lines.append("  (nothing the last build read has changed and every tag is on its image; --no-cache checks all)")
    return lines


def _record(
    key: str,
    target: Target,
    opts: BuildOptions,
    matrix_path: Path,
    prepared: tuple,
    results: list[LayerResult],
    driver: Driver,
) -> None:
    """Record what this build read (code, templates, matrix, budgets, locks, inputs, mirrors' refs, the
    rendered build folder) and the tags it left, for :func:`ascend_stack.plancache.replay`."""
    from . import budgets, plancache
    from . import render as rendering

    plan, files, resolved = prepared
    dirs = opts.dirs
    read: list[Path] = [matrix_path, matrix_path.parent / budgets.FILE, REPO / "tasks.py", REPO / "published.yaml"]
    for code in (REPO / "src" / "ascend_stack", REPO / "images", REPO / "entrypoints", dirs.locks, dirs.python_locks):
        read += plancache.tree(code)
    for folder in (dirs.packages, dirs.sources, dirs.source_overrides, *dirs.wheelhouses):
        if folder is not None:
            read += [folder, *(folder.iterdir() if folder.is_dir() else ())]  # an input added or removed
    for r in resolved:
        read += plancache.git_refs(r.path) if r.kind == "git" else plancache.tree(r.path)
    if dirs.hash_cache is not None:
        read.append(dirs.hash_cache)
    if opts.network.ca_cert is not None:
        read.append(opts.network.ca_cert)
    out_dir = opts.out_dir or rendering.default_out_dir(target, REPO / "build")
    read += [out_dir / rel for rel in files]
    # every tag the build left or found, on its image: another image under one of them is another build
    images = {target.base_image: driver.image_id(target.base_image) or ""}
    layers = {layer.name: layer for layer in plan.layers}
    for r in results:
        if r.image_id:
            human = [layers[r.name].tag, *([plan.image] if r.name == "runtime" else [])]
            images.update(dict.fromkeys([r.content_tag, *human], r.image_id))
    lines = summary(rendering.final_tag(target), results, 0, replayed=True)
    plancache.save(key, read, images, lines)


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
    from . import render as rendering

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
    wheels: bool = False,
    index_url: str | None = None,
    apt_mirror: str | None = None,
) -> Fetched:
    """``invoke fetch``: download what the target needs into the caches and record it in the lock.

    ``wheels``: also every file of the target's Python lock, for its platform (what an offline build
    needs); a locked sdist is built once into a wheel in the target's base layer (:mod:`.sdists`).
    The OS packages of the layers are collected into ``packages/os/<os>-<arch>/`` in a container of
    the target's OS base image (``apt_mirror``: instead of the mirror its sources name).
    """
    from . import render as rendering
    from .build import Builder, BuildOptions
    from .inputs import fetch as fetch_inputs

    target = resolve(load_matrix(matrix_path), **target_choices)  # type: ignore[arg-type]
    dirs.check()
    check_ca_cert(ca_cert)
    plan, _ = rendering.plan(target)
    resolved = fetch_inputs(plan, dirs, update=update, ca_cert=ca_cert, apt_mirror=apt_mirror)
    lock = None
    if wheels:
        from . import pylock, sdists
        from .build import NetworkOptions
        from .wheels import WheelTarget

        lock = pylock.ensure(target, resolved, [layer.name for layer in plan.layers], allow_network=True,
                             find_links=dirs.wheelhouses, index_url=index_url, ca_cert=ca_cert,
                             root=dirs.python_locks, report=print)  # fmt: skip
        assert lock is not None
        got = pylock.download_wheels(target, lock, dirs.wheelhouse, find_links=dirs.extra_wheelhouses,
                                     index_url=index_url, ca_cert=ca_cert, report=print)  # fmt: skip
        todo = sdists.pending(lock, WheelTarget(target.python, target.arch, target.os.glibc_version), dirs.wheelhouses)
        if todo:  # built in the target's own base layer: its Python, glibc and architecture
            net = NetworkOptions(ca_cert=ca_cert, pip_index_url=index_url, apt_mirror=apt_mirror)
            [base] = Builder(target, BuildOptions(dirs=dirs, network=net, until="base"), _driver(False, False)).run()
            got += len(
                sdists.build_wheels(
                    todo,
                    dirs.wheelhouse,
                    base.content_tag,
                    target.platform,
                    report=print,
                    find_links=dirs.extra_wheelhouses,
                )
            )
        print(f"wheelhouse {dirs.wheelhouse}: {got} new file(s); every package of {lock.path.name} is local")
    return Fetched(target, resolved, lock)


@dataclass(frozen=True)
class Fetched:
    """What :func:`fetch` made local: the target, its inputs, its Python lock (with ``wheels``)."""

    target: Target
    resolved: ResolvedInputs
    lock: PyLock | None


def bundle(
    target_choices: dict[str, str | None],
    dirs: InputDirs,
    out: Path,
    matrix_path: Path = DEFAULT_MATRIX,
    *,
    ca_cert: Path | None = None,
    index_url: str | None = None,
    apt_mirror: str | None = None,
) -> Path:
    """``invoke bundle``: fetch everything the target needs, then write it as one verified file."""
    from . import bundle as bundles

    paths.expect_creatable(out, "--out", "file")
    if out.suffix != ".tar":
        raise UserError(f"--out {out}: a bundle is a .tar file; name it e.g. {out.with_suffix('.tar').name}")
    got = fetch(target_choices, dirs, matrix_path, ca_cert=ca_cert, wheels=True, index_url=index_url,
                apt_mirror=apt_mirror)  # fmt: skip
    assert got.lock is not None
    path, size = bundles.make(got.target, got.resolved, got.lock, dirs, out, _driver(False, False))
    print(f"{path}: {size / 1e6:.1f} MB; on the air-gapped host: invoke build --bundle {path.name}")
    return path


def check_ca_cert(ca_cert: Path | None) -> None:
    """--ca-cert names a readable PEM bundle: checked before the first download, not by each one."""
    if ca_cert is None:
        return
    from .download import _ssl_context

    paths.expect(ca_cert, "--ca-cert", "file", "pass the PEM bundle of your proxy's CA")
    _ssl_context(str(ca_cert))


def base_image(os_name: str, arch: str | None, mirror: str | None, force: bool) -> str:
    """``invoke base-image``: an OS base image from a Debian mirror, for hosts without a registry."""
    from .baseimage import BaseImageError, build_base_image

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
    from . import render as rendering
    from . import verify as verifying

    if lock_dir is not None:
        paths.expect(lock_dir, "--lock-dir", "directory", "pass the folder of the row lock files")
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


def manifest(
    image: str, out: Path | None = None, lock_dir: Path | None = None, matrix_path: Path = DEFAULT_MATRIX
) -> tuple[Path, Path, Path]:
    """``invoke manifest``: write the image's manifest as JSON and Markdown, and its CycloneDX SBOM."""
    from . import manifest as manifests

    if lock_dir is not None and not lock_dir.is_dir():
        raise UserError(f"--lock-dir {lock_dir}: no such directory")
    if out is not None:
        paths.expect_creatable(out, "--out", "directory")
    return manifests.write(image, out or REPO / "build" / "manifests", lock_dir, matrix_path)


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

    if out is not None:
        paths.expect_creatable(out, "--out", "file")
    text = manifests.render(opts, argv or [])
    if out is None:
        return text
    paths.write_text(out, text)
    return f"wrote {out} ({opts.kind}, {opts.nodes} node(s)): kubectl apply -f {out}\n"
