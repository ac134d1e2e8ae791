"""Invoke tasks: a thin shell over the ``ascend_stack`` library. Run ``invoke --list``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from invoke import Exit, task

# Every import of the library happens inside the task that needs it: `invoke --list` and `--help`
# load none of it (pydantic, rich, jinja2 and the Docker SDK cost more than invoke itself).
if TYPE_CHECKING:
    from ascend_stack.inputs import InputDirs

T = TypeVar("T")

CHOICES = {
    "cann": "matrix row by CANN version, any case, e.g. 8.1.RC1 (see 'invoke matrix')",
    "torch": "torch variant of the row (default: the row's default)",
    "arch": "aarch64 or x86_64 (default: this host's)",
    "os": "ubuntu22.04 (default), ubuntu20.04, openeuler22.03, debian-bookworm",
    "chip": "910b (Atlas A2, default) or A3 (Atlas A3)",
    "matrix": "the matrix file (default: matrix.yaml next to tasks.py)",
}


def _run(fn: Callable[[], T]) -> T:
    """Bad input ends the task with one line on stderr and exit code 2, never a traceback; Ctrl-C or
    SIGTERM with one line and 128 + the signal. User text in a message cannot add a line to it."""
    from ascend_stack.errors import Stopped, UserError, stoppable
    from ascend_stack.paths import one_line

    try:
        with stoppable():
            return fn()
    except UserError as err:  # the --offline list of missing inputs keeps its lines, one per input
        raise Exit("error: " + "\n".join(map(one_line, str(err).splitlines())), code=err.exit_code) from None
    except Stopped as stop:
        raise Exit(f"stopped by {stop.name}", code=128 + stop.signum) from None


def _print(text: str) -> None:
    """Generated text to stdout as is: bytes of a path that are not UTF-8 pass through, never a traceback."""
    import sys

    sys.stdout.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
    sys.stdout.write(text)


def _matrix_path(matrix: str | None) -> Path:
    from ascend_stack.commands import DEFAULT_MATRIX

    return Path(matrix) if matrix else DEFAULT_MATRIX


@task(
    auto_shortflags=False,
    help={
        "check": "validate the schema and cross-checks; list every problem",
        "all": "include test rows",
        "markdown": "print the shipped rows as the README's Markdown table",
        "matrix": CHOICES["matrix"],
        "sources": "with --check: also check the pinned commits in these local mirrors (DIR/<name>[.git])",
    },
)
def matrix(c, check=False, all=False, markdown=False, matrix=None, sources=None):
    """Show the version matrix (CANN rows, torch variants, Python, MindSpeed-LLM, archs, OSes)."""
    from ascend_stack import commands

    code = _run(lambda: commands.show_matrix(_matrix_path(matrix), check=check, show_all=all, markdown=markdown,
                                             sources=Path(sources) if sources else None))  # fmt: skip
    if code:
        raise Exit(code=code)


@task(auto_shortflags=False, help={"matrix": CHOICES["matrix"]})
def published(c, matrix=None):
    """Regenerate published.yaml (Huawei's torch_npu/CANN pairings and sha256) from the installed ascend-deployer."""
    from ascend_stack import commands

    print(_run(lambda: commands.published(_matrix_path(matrix))))


USER = {
    "uid": "uid of the image's non-root user HwHiAiUser (default 1000, as the NPU driver installs it on hosts)",
    "gid": "gid of HwHiAiUser (default 1000): the group of the host's /dev/davinci* nodes",
}


def _user(uid, gid):
    """The runtime image's user from --uid/--gid (whole numbers; refused in one line otherwise)."""
    from ascend_stack.errors import UserError
    from ascend_stack.render import RuntimeUser

    ids = {}
    for name, value in (("uid", uid), ("gid", gid)):
        if value is not None:
            if not str(value).isdigit():
                raise UserError(f"--{name} {value}: a whole number such as 1000")
            ids[name] = int(value)
    return RuntimeUser(**ids)


@task(
    auto_shortflags=False,
    help={**CHOICES, **USER, "out": "output folder (default: build/<row>/<os>-<chip>-torch<ver>-<arch>/)"},
)
def render(c, cann=None, torch=None, arch=None, os=None, chip=None, out=None, matrix=None, uid=None, gid=None):
    """Write every layer's Dockerfile and the build plan for one target. No Docker needed."""
    from ascend_stack import commands

    out_dir, plan = _run(
        lambda: commands.render(
            cann, torch, arch, os, chip, Path(out) if out else None, _matrix_path(matrix), _user(uid, gid)
        )
    )
    print(f"rendered {len(plan.layers)} layers for {plan.image} into {out_dir}")
    for layer in plan.layers:
        print(f"  {layer.name:<10} {layer.tag}")


INPUTS = {
    "packages": "package cache: CANN .run files, source tarballs, OS packages in os/<os>-<arch>/ (default: packages/)",
    "wheelhouse": "a folder of local wheels, searched before the index (repeatable)",
    "sources": "folder of local git mirrors: DIR/<name> or DIR/<name>.git replaces the upstream URL",
    "lock_dir": "folder of the per-row lock files (default: locks/)",
    "ca_cert": "CA bundle for a TLS-intercepting proxy; reaches the build only as a BuildKit secret",
}


def _dirs(packages=None, wheelhouse=None, sources=None, lock_dir=None) -> InputDirs:
    from ascend_stack.inputs import InputDirs

    d = InputDirs()
    return InputDirs(
        packages=Path(packages) if packages else d.packages,
        extra_wheelhouses=tuple(Path(w) for w in wheelhouse or ()),
        source_overrides=Path(sources) if sources else None,
        locks=Path(lock_dir) if lock_dir else d.locks,
    )


@task(
    auto_shortflags=False,
    iterable=["wheelhouse"],
    help={
        **CHOICES,
        **INPUTS,
        **USER,
        "layers": "comma-separated layers to build (base,cann,pta,mindspeed,runtime); the others must exist",
        "until": "build the chain up to this layer",
        "offline": "check that every input is local before Docker starts; pip uses only the wheelhouse",
        "pip_index_url": "pip index for the build steps (a secret: may carry credentials)",
        "apt_mirror": "apt mirror URL for the build steps (Debian/Ubuntu bases)",
        "http_proxy": "proxy for the build steps' downloads (a secret: never stored in the image)",
        "no_cache": "rebuild the selected layers even when their content tag exists",
        "dry_run": "print the plan and the docker build commands, build nothing",
        "push": "push every layer's tags and the final image to this registry (e.g. registry.local:5000/team; "
        "docker login first)",
        "network": "build network for RUN steps (default host; 'default' for Docker's bridge)",
        "verbose": "say which BuildKit client was picked and why",
        "bundle": "a file of `invoke bundle`: checked byte for byte, then the build reads only it (offline, "
        "no network in any step)",
    },
)
def build(c, cann=None, torch=None, arch=None, os=None, chip=None, matrix=None, layers=None, until=None,
          packages=None, wheelhouse=None, sources=None, lock_dir=None, offline=False, ca_cert=None,
          pip_index_url=None, apt_mirror=None, http_proxy=None, no_cache=False, dry_run=False, push=None,
          network="host", verbose=False, uid=None, gid=None, bundle=None):  # fmt: skip
    """Build the image chain of one matrix target through BuildKit; unchanged layers are reused.
    Each layer's size is reported against budgets.yaml; one past 120 % of its budget fails the build."""
    record = None
    if not (dry_run or no_cache or push or bundle or verbose):  # the no-op fast path (ascend_stack/plancache.py)
        from ascend_stack import plancache

        options = {k: v for k, v in locals().items() if k not in ("c", "plancache", "record")}
        record = plancache.key(options)
        if plancache.replay(record):
            return
    from ascend_stack import commands
    from ascend_stack.build import BuildOptions, NetworkOptions

    opts = BuildOptions(
        dirs=_dirs(packages, wheelhouse, sources, lock_dir),
        network=NetworkOptions(
            ca_cert=Path(ca_cert) if ca_cert else None, http_proxy=http_proxy, pip_index_url=pip_index_url,
            apt_mirror=apt_mirror, offline=offline,
        ),
        layers=[x.strip() for x in layers.split(",")] if layers else None,
        until=until, no_cache=no_cache, dry_run=dry_run, push=push,
        docker_network=None if network == "default" else network,
    )  # fmt: skip
    choices = {"cann": cann, "torch": torch, "arch": arch, "os": os, "chip": chip}

    def go():
        opts.user = _user(uid, gid)
        return commands.build(choices, opts, _matrix_path(matrix), verbose=verbose,
                              bundle=Path(bundle) if bundle else None, record=record)  # fmt: skip

    _run(go)


@task(
    auto_shortflags=False,
    help={
        "registry": "the registry the arches were pushed to, as given to build --push (e.g. registry.local:5000/team)",
        **{k: v for k, v in CHOICES.items() if k != "arch"},
        "arch": "comma-separated arches to join (default: every arch of the row, e.g. aarch64,x86_64)",
        "until": "join the layer tags up to this layer (default runtime: every layer and the final tag)",
    },
)
def publish(c, registry, cann=None, torch=None, arch=None, os=None, chip=None, matrix=None, until="runtime"):
    """Write multi-arch manifest lists for a target's tags from the per-arch images pushed by build --push."""
    from ascend_stack import commands

    choices = {"cann": cann, "torch": torch, "os": os, "chip": chip}
    archs = [a.strip() for a in arch.split(",")] if arch else None
    _run(lambda: commands.publish(choices, registry, archs, until, _matrix_path(matrix)))


@task(
    auto_shortflags=False,
    iterable=["wheelhouse"],
    help={
        **CHOICES,
        **INPUTS,
        "update": "re-resolve git refs, re-record hashes in the lock, collect the OS packages again",
        "wheels": "also download every file of the target's Python lock (locks/<row>/<target>.txt) into wheelhouse/",
        "pip_index_url": "the index for --wheels (default PyPI; e.g. your mirror)",
        "apt_mirror": "apt mirror to collect the OS packages from (default: the one the base image's sources name)",
    },
)
def fetch(c, cann=None, torch=None, arch=None, os=None, chip=None, matrix=None, packages=None, wheelhouse=None,
          sources=None, lock_dir=None, ca_cert=None, update=False, wheels=False, pip_index_url=None,
          apt_mirror=None):  # fmt: skip
    """Download every input a target needs (CANN packages, git sources, OS packages; wheels), verify and lock them."""
    from ascend_stack import commands

    choices = {"cann": cann, "torch": torch, "arch": arch, "os": os, "chip": chip}
    _run(lambda: commands.fetch(choices, _dirs(packages, wheelhouse, sources, lock_dir), _matrix_path(matrix),
                                update=update, ca_cert=Path(ca_cert) if ca_cert else None, wheels=wheels,
                                index_url=pip_index_url, apt_mirror=apt_mirror))  # fmt: skip


@task(
    auto_shortflags=False,
    iterable=["wheelhouse"],
    help={
        **CHOICES,
        **INPUTS,
        "out": "the bundle file to write (.tar)",
        "pip_index_url": "the index to fetch the locked wheels from (default PyPI; e.g. your mirror)",
        "apt_mirror": "apt mirror to collect the OS packages from (default: the one the base image's sources name)",
    },
)
def bundle(c, out, cann=None, torch=None, arch=None, os=None, chip=None, matrix=None, packages=None, wheelhouse=None,
           sources=None, lock_dir=None, ca_cert=None, pip_index_url=None, apt_mirror=None):  # fmt: skip
    """Write one file with everything a target's build needs, for an air-gapped host: invoke build --bundle FILE."""
    from ascend_stack import commands

    choices = {"cann": cann, "torch": torch, "arch": arch, "os": os, "chip": chip}
    _run(lambda: commands.bundle(choices, _dirs(packages, wheelhouse, sources, lock_dir), Path(out),
                                 _matrix_path(matrix), ca_cert=Path(ca_cert) if ca_cert else None,
                                 index_url=pip_index_url, apt_mirror=apt_mirror))  # fmt: skip


@task(
    auto_shortflags=False,
    iterable=["wheelhouse"],
    help={
        **CHOICES,
        "sources": INPUTS["sources"],
        "wheelhouse": INPUTS["wheelhouse"],
        "ca_cert": INPUTS["ca_cert"],
        "pip_index_url": "the index to resolve from (default PyPI; e.g. your mirror)",
        "update": "resolve every package afresh instead of keeping the lock's versions where they still fit",
    },
)
def lock(c, cann=None, torch=None, arch=None, os=None, chip=None, matrix=None, sources=None, wheelhouse=None,
         ca_cert=None, pip_index_url=None, update=False):  # fmt: skip
    """Lock every Python package of a target, with hashes, for its Python and platform: locks/<row>/<target>.txt."""
    from ascend_stack import commands

    choices = {"cann": cann, "torch": torch, "arch": arch, "os": os, "chip": chip}
    print(_run(lambda: commands.lock(choices, _dirs(None, wheelhouse, sources, None), _matrix_path(matrix),
                                     update=update, ca_cert=Path(ca_cert) if ca_cert else None,
                                     index_url=pip_index_url)))  # fmt: skip


@task(
    name="base-image",
    auto_shortflags=False,
    help={
        "os": "the OS to bootstrap (debian-bookworm)",
        "arch": "aarch64 or x86_64 (default: this host's; aarch64 on x86_64 runs under qemu)",
        "mirror": "Debian mirror URL (default: the one this host's apt uses)",
        "force": "rebuild even if the image exists",
    },
)
def base_image(c, os="debian-bookworm", arch=None, mirror=None, force=False):
    """Build an OS base image from a distribution mirror with debootstrap, for hosts without a registry."""
    from ascend_stack import commands

    tag = _run(lambda: commands.base_image(os, arch, mirror, force))
    print(tag)


@task(
    auto_shortflags=False,
    help={
        "arch": "aarch64 or x86_64 (default: this host's)",
        "ca_cert": "CA bundle for a TLS-intercepting proxy (default: /etc/ssl/certs/ca-certificates.crt if present)",
        "wheelhouse": "a folder of local wheels, searched before PyPI (default: /opt/wheels if present)",
        "http_proxy": "proxy for the build steps' downloads (a secret: never stored in the image)",
        "dir": "where the stand-in inputs, sample data and log go (default: build/demo/)",
        "mirror": "Debian mirror for the base image (default: the one this host's apt uses, else deb.debian.org)",
    },
)
def demo(c, arch=None, ca_cert=None, wheelhouse=None, http_proxy=None, dir=None, mirror=None):
    """Build and verify the test row's image (stand-in CANN) on a fresh host, engine included; again: seconds.
    Steps: Docker engine, OS base image, stand-in inputs, the chain, invoke verify, sft --dry-run on sample data."""
    from ascend_stack import demo as demos

    _run(lambda: demos.run(arch, Path(ca_cert) if ca_cert else None, Path(wheelhouse) if wheelhouse else None,
                           http_proxy, Path(dir).absolute() if dir else None, mirror))  # fmt: skip


@task(
    auto_shortflags=False,
    iterable=["docker_arg"],
    help={
        "image": "the image to check (tag or ID); or name it by --cann/--torch/--arch/--os/--chip",
        **{k: v for k, v in CHOICES.items() if k != "matrix"},
        "matrix": CHOICES["matrix"],
        "tier": "1: anywhere (default: all = 1 and 2); 2: needs Ascend NPUs and the host driver",
        "lock_dir": "folder of the row lock files the image was built with (default: locks/)",
        "devices": "NPU numbers to pass into the container for tier 2, e.g. 0,1 (default: every /dev/davinciN)",
        "docker_arg": "extra `docker run` argument for the check container, e.g. --runtime=ascend (repeatable)",
        "keyword": "run only the checks matching this pytest -k expression",
    },
)
def verify(c, image=None, cann=None, torch=None, arch=None, os=None, chip=None, matrix=None, tier="all",
           lock_dir=None, devices=None, docker_arg=None, keyword=None):  # fmt: skip
    """Check a built image inside a container: tier 1 anywhere, tier 2 on an Ascend host. Exit 1 on a failure."""
    from ascend_stack import commands

    choices = {"cann": cann, "torch": torch, "arch": arch, "os": os, "chip": chip}
    code = _run(lambda: commands.verify(image, choices, tier=str(tier), lock_dir=Path(lock_dir) if lock_dir else None,
                                        matrix_path=_matrix_path(matrix), devices=devices,
                                        docker_args=tuple(docker_arg or ()), keyword=keyword))  # fmt: skip
    if code:
        raise Exit(code=code)


@task(
    auto_shortflags=False,
    help={
        "image": "the image (tag or ID)",
        "out": "output folder (default: build/manifests/)",
        "lock_dir": "folder of the row lock files the image was built with, for the SBOM's hashes (default: locks/)",
        "matrix": CHOICES["matrix"],
    },
)
def manifest(c, image, out=None, lock_dir=None, matrix=None):
    """Write what an image holds (OS packages, Python packages, CANN, commits, matrix row, labels) as JSON
    and Markdown, and as a CycloneDX SBOM (<tag>.cdx.json) with the lock's hashes."""
    from ascend_stack import commands

    paths = _run(lambda: commands.manifest(image, Path(out) if out else None, Path(lock_dir) if lock_dir else None,
                                           _matrix_path(matrix)))  # fmt: skip
    for path in paths:
        print(path)


def _after_dashes(c) -> list[str]:
    """The words after ``--`` exactly as typed (Invoke's ``c.remainder`` re-joins them with spaces)."""
    import shlex
    import sys

    argv = sys.argv[1:]
    return argv[argv.index("--") + 1 :] if "--" in argv else shlex.split(c.remainder or "")


@task(
    auto_shortflags=False,
    iterable=["mount", "env"],
    help={
        "image": "the image to run (the tag `invoke build` printed)",
        "npus": "NPUs to pass: all (default), none (CPU-only stages), N, N-M or a list such as 0-3,6",
        "host_type": "a2 (Atlas A2, NPUs 0-7; default) or a3 (Atlas A3, NPUs 0-15)",
        "runtime": "ascend: use Ascend Docker Runtime (ASCEND_VISIBLE_DEVICES) instead of --device flags",
        "privileged": "add --privileged (not needed for NPUs; refused with --runtime or a subset of --npus)",
        "mount": "host directory for data/checkpoints/tokenizer, mounted at the same path; SRC:DST[:ro] (repeatable)",
        "env": "NAME=VALUE for the container, e.g. HCCL_SOCKET_IFNAME=eth0 (repeatable)",
        "name": "container name",
        "network": "Docker network (default host: HCCL and torchrun listen on host ports)",
        "shm_size": "shared memory size (default 64g)",
        "ipc_host": "share the host's IPC namespace instead of --shm-size (as the seed guide did)",
        "detach": "start in the background (docker logs -f NAME to follow)",
        "interactive": "attach a terminal (-it), e.g. for `-- bash`",
        "keep": "keep the container after it exits (no --rm)",
        "print": "print the docker run line instead of running it; checks nothing on this host",
        "user": "run as this user instead of the image's HwHiAiUser, e.g. root (then no --group-add is needed)",
    },
)
def run(c, image=None, npus="all", host_type="a2", runtime=None, privileged=False, mount=None, env=None, name=None,
        network="host", shm_size=None, ipc_host=False, detach=False, interactive=False, keep=False,
        print=False, user=None):  # fmt: skip
    """Run a stage in a container on this Atlas host: invoke run --image TAG [--npus 0-7] -- pretrain ..."""
    from ascend_stack import commands
    from ascend_stack.run import RunOptions

    opts = RunOptions(
        image=image or "", command=_after_dashes(c), npus=str(npus), host_type=host_type, runtime=runtime,
        privileged=privileged, mounts=list(mount or ()), env=list(env or ()), name=name, network=network,
        shm_size=shm_size, ipc_host=ipc_host, detach=detach, interactive=interactive, keep=keep, user=user,
    )  # fmt: skip
    text = _run(lambda: commands.run_stage(opts, show=print))
    if text:
        _print(text)


@task(
    auto_shortflags=False,
    iterable=["mount", "env", "input"],
    help={
        "file": "the pipeline YAML file (see docs/pipeline.md; ascend-llm pipeline --example sft)",
        "image": "the image the steps run in (the tag `invoke build` printed)",
        "from": "run STEP and every later step, whatever the records say",
        "only": "run only STEP",
        "input": "NAME=PATH: replace one of the file's inputs (repeatable)",
        "output": "replace the file's output root",
        "dry_run": "print the whole run as one bash script (the docker run line of every step); checks no host",
        "check": "check the whole run inside the image; run nothing",
        "npus": "NPUs to pass to every step: all (default), N-M, a list such as 0-3,6",
        "host_type": "a2 (Atlas A2, NPUs 0-7; default) or a3 (Atlas A3, NPUs 0-15)",
        "runtime": "ascend: use Ascend Docker Runtime (ASCEND_VISIBLE_DEVICES) instead of --device flags",
        "mount": "host directory mounted at the same path; every path of the file must be under one (repeatable)",
        "env": "NAME=VALUE for every step's container (repeatable)",
        "shm_size": "shared memory size (default 64g)",
        "ipc_host": "share the host's IPC namespace instead of --shm-size",
    },
)
def pipeline(c, file=None, image=None, from_=None, only=None, input=None, output=None, dry_run=False,
             check=False, npus="all", host_type="a2", runtime=None, mount=None, env=None, shm_size=None,
             ipc_host=False):  # fmt: skip
    """Run a pipeline file from the host, each step in the image: invoke pipeline --image T --mount /apps/hw --file F"""
    from ascend_stack.pipeline import PipelineOptions, run_pipeline
    from ascend_stack.run import RunOptions

    if not file:
        raise Exit("error: --file is required: the pipeline YAML file", code=2)
    run_opts = RunOptions(
        image=image or "", command=["pipeline"], npus=str(npus), host_type=host_type, runtime=runtime,
        mounts=list(mount or ()), env=list(env or ()), shm_size=shm_size, ipc_host=ipc_host,
    )  # fmt: skip
    opts = PipelineOptions(file, run_opts, from_, only, list(input or ()), output, dry_run, check)
    code = _run(lambda: run_pipeline(opts))
    if code:
        raise Exit(code=code)


@task(
    auto_shortflags=False,
    iterable=["volume", "pvc", "env", "node_selector"],
    help={
        "image": "the image the nodes pull (push it with invoke build --push REGISTRY)",
        "nodes": "number of nodes (pods), one per node with all its NPUs",
        "kind": "volcano (Volcano Job), pytorchjob (Kubeflow PyTorchJob) or ascendjob (MindCluster AscendJob)",
        "name": "job name (default ascend-llm)",
        "namespace": "namespace to put in the manifest (default: none, kubectl's current one)",
        "host_type": "a2 (8 NPUs per node; default) or a3 (16)",
        "npus_per_node": "NPUs per pod (default: all of the host type's)",
        "resource": "device-plugin resource name (default huawei.com/Ascend910; some clusters use huawei.com/npu)",
        "shm_size": "size limit of the memory-backed /dev/shm (default 64Gi)",
        "pod_network": "use the pod network instead of host networking",
        "no_driver_mounts": "do not mount the host driver (the nodes' Ascend Docker Runtime mounts it)",
        "volume": "host path on every node (shared storage) for data/checkpoints: /PATH[:/MOUNT] (repeatable)",
        "pvc": "persistent volume claim: CLAIM:/MOUNT (repeatable)",
        "env": "NAME=VALUE for the container, e.g. HCCL_SOCKET_IFNAME=eth0 (repeatable)",
        "node_selector": "LABEL=VALUE the nodes must carry (repeatable; ascendjob adds accelerator-type)",
        "queue": "Volcano queue (default: default)",
        "out": "write the manifest to this file instead of stdout",
    },
)
def k8s(c, image=None, nodes=None, kind=None, name="ascend-llm", namespace=None, host_type="a2", npus_per_node=None,
        resource="huawei.com/Ascend910", shm_size="64Gi", pod_network=False, no_driver_mounts=False, volume=None,
        pvc=None, env=None, node_selector=None, queue="default", out=None):  # fmt: skip
    """Write a Volcano Job / PyTorchJob / AscendJob manifest that runs a stage on N nodes (YAML to stdout or --out)."""
    import sys

    from ascend_stack import commands
    from ascend_stack.errors import UserError
    from ascend_stack.k8s import ManifestOptions

    def build() -> str:
        if nodes is None:
            raise UserError("--nodes is required: how many nodes (pods) the job spans")

        def whole(option: str, value: str) -> int:
            try:
                return int(value)
            except ValueError:
                raise UserError(f"{option} {value!r}: expected a whole number, e.g. {option} 2") from None

        count = whole("--nodes", nodes)
        per_node = whole("--npus-per-node", npus_per_node) if npus_per_node is not None else None
        opts = ManifestOptions(
            image=image or "", command=_after_dashes(c), nodes=count, kind=kind or "", name=name,
            namespace=namespace, host_type=host_type, npus_per_node=per_node, resource=resource, shm_size=shm_size,
            host_network=not pod_network, driver_mounts=not no_driver_mounts, volumes=list(volume or ()),
            pvcs=list(pvc or ()), env=list(env or ()), node_selector=list(node_selector or ()), queue=queue,
        )  # fmt: skip
        argv = sys.argv[1:]
        argv = argv[argv.index("k8s") :] if "k8s" in argv else []  # the task's own words, for the header
        return commands.k8s_manifest(opts, Path(out) if out else None, argv)

    _print(_run(build))
