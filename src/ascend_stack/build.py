"""``invoke build``: render, verify every input, then build only the layers whose content changed.

Each layer gets a content tag, ``ascend-llm-stack/<layer>:content-<hash>``, where the hash covers
its rendered files, the digests of its inputs (package sha256s, pinned wheels, git commits), its
parent's image ID and the platform. A layer whose content tag exists is not rebuilt, so a repeated
``invoke build`` runs no ``docker build`` at all, and changing one input rebuilds only the layers
from the one that uses it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import render
from .budgets import Budgets, Measure, OverBudget, over_budget_message
from .driver import BuildRequest, Driver
from .errors import UserError
from .inputs import InputDirs, MissingInputs, ResolvedInputs, link_or_copy, resolve_inputs
from .lock import Lock
from .render import BuildPlan, Layer, RuntimeUser
from .target import Target

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINTS = REPO / "entrypoints"
LAYER_NAMES = [spec.name for spec in render.LAYERS]


@dataclass
class NetworkOptions:
    """How build steps reach package indexes: all of it reaches them only as BuildKit secrets."""

    ca_cert: Path | None = None
    http_proxy: str | None = None
    no_proxy: str | None = None
    pip_index_url: str | None = None
    apt_mirror: str | None = None
    offline: bool = False

    def build_env(self) -> str:
        """The ``build-env`` secret: shell assignments the RUN steps load, never an ENV or ARG."""
        env: dict[str, str] = {}
        if self.http_proxy:
            for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
                env[name] = self.http_proxy
            env["no_proxy"] = env["NO_PROXY"] = self.no_proxy or "localhost,127.0.0.1"
        if self.ca_cert:
            for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
                env[name] = "/run/secrets/ca-cert"
            env["APT_OPTS"] = "-o Acquire::https::CAInfo=/run/secrets/ca-cert"
            env["DNF_OPTS"] = "--setopt=sslcacert=/run/secrets/ca-cert"
        if self.pip_index_url:
            env["PIP_INDEX_URL"] = self.pip_index_url
        if self.apt_mirror:
            env["APT_MIRROR"] = self.apt_mirror
        if self.offline:
            env["PIP_NO_INDEX"] = "1"
        return "".join(f"{k}={_sh(v)}\n" for k, v in env.items())


def _sh(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


@dataclass
class BuildOptions:
    dirs: InputDirs = field(default_factory=InputDirs)
    network: NetworkOptions = field(default_factory=NetworkOptions)
    layers: list[str] | None = None
    until: str | None = None
    out_dir: Path | None = None
    no_cache: bool = False
    dry_run: bool = False
    push: str | None = None
    docker_network: str | None = "host"
    user: RuntimeUser = field(default_factory=RuntimeUser)
    budgets: Budgets | None = None  # layer sizes are measured and reported against these
    enforce_budgets: bool = True  # a layer past its budget's limit fails the build

    def selected(self) -> list[str]:
        """The layers to build, in chain order; their ancestors must already exist."""
        names = LAYER_NAMES
        if self.until:
            if self.until not in names:
                raise UserError(f"unknown layer '{self.until}' for --until: choose one of {', '.join(names)}")
            names = names[: names.index(self.until) + 1]
        if self.layers:
            unknown = [n for n in self.layers if n not in LAYER_NAMES]
            if unknown:
                raise UserError(f"unknown layer '{unknown[0]}' for --layers: choose from {', '.join(LAYER_NAMES)}")
            names = [n for n in names if n in self.layers]
        return names


@dataclass
class LayerResult:
    name: str
    status: str  # built | up to date | would build | skipped
    content_tag: str
    image_id: str | None = None
    seconds: float = 0.0
    size: Measure | None = None  # what the layer adds over its parent, against its budget


def content_hash(layer: Layer, files: dict[str, str], digests: list[str], parent: str, platform: str) -> str:
    """What a layer's image is a function of; equal hashes mean the existing image can be reused."""
    data = {
        "schema": 1,
        "layer": layer.name,
        "files": {k: v for k, v in sorted(files.items()) if k.startswith(f"{layer.name}/")},
        "inputs": sorted(digests),
        "parent": parent,
        "platform": platform,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def content_tag(layer: Layer, digest: str) -> str:
    return f"{layer.tag.rsplit(':', 1)[0]}:content-{digest[:16]}"


def _entrypoints_files(root: Path = ENTRYPOINTS) -> list[Path]:
    """What the ascend-llm wheel is made of: its pyproject and package, no caches or build output."""
    package = [p for p in (root / "ascend_llm").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return sorted([root / "pyproject.toml", *package])


def entrypoints_digest(root: Path = ENTRYPOINTS) -> str:
    """The stage runner's sources: the runtime layer rebuilds when they change."""
    h = hashlib.sha256()
    for path in _entrypoints_files(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return "entrypoints:" + h.hexdigest()


def build_entrypoints_wheel(dest: Path) -> Path:
    """The ``ascend-llm`` wheel the runtime layer installs, built from a copy of entrypoints/."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("ascend_llm-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="ascend-llm-wheel-") as tmp:
        # A copy, so setuptools' build/ and egg-info never land in the source tree.
        src = Path(tmp) / "src"
        for path in _entrypoints_files():
            copy = src / path.relative_to(ENTRYPOINTS)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
        argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dest)]
        out = subprocess.run([*argv, str(src)], capture_output=True, text=True)
    wheels = list(dest.glob("ascend_llm-*.whl"))
    if out.returncode != 0 or len(wheels) != 1:
        last = (out.stderr.strip().splitlines() or ["no wheel was written"])[-1]
        raise UserError(f"could not build the ascend-llm wheel from entrypoints/: {last}")
    return wheels[0]


def _git_revision() -> str | None:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or None


@contextmanager
def secret_files(network: NetworkOptions) -> Iterator[dict[str, Path]]:
    """The BuildKit secrets for one build, in a private temp dir that is always removed."""
    if network.ca_cert and not network.ca_cert.is_file():
        raise UserError(f"--ca-cert {network.ca_cert}: no such file")
    tmp = Path(tempfile.mkdtemp(prefix="ascend-secrets-"))
    try:
        os.chmod(tmp, 0o700)
        env = tmp / "build-env"
        env.write_text(network.build_env())
        env.chmod(0o600)
        secrets = {"build-env": env}
        if network.ca_cert:
            secrets["ca-cert"] = network.ca_cert.resolve()
        yield secrets
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Builder:
    """Builds one target's chain through a :class:`Driver` (``None`` only for a dry run)."""

    def __init__(self, target: Target, opts: BuildOptions, driver: Driver | None, log=print) -> None:
        self.t = target
        self.opts = opts
        self.driver = driver
        self.log = log

    def prepare(self) -> tuple[BuildPlan, dict[str, str], ResolvedInputs]:
        """Render, then find and verify every input: a bad or missing one stops us before Docker."""
        offline = self.opts.network.offline
        plan, _ = render.plan(self.t, user=self.opts.user)
        # Only the layers this build reaches need their inputs (`--until cann` needs no git source).
        reach = self.opts.selected()[-1] if not self.opts.layers else LAYER_NAMES[-1]
        needed = LAYER_NAMES[: LAYER_NAMES.index(reach) + 1]
        wanted = replace(plan, layers=[layer for layer in plan.layers if layer.name in needed])
        try:
            resolved = resolve_inputs(
                wanted, self.opts.dirs, download=not offline and not self.opts.dry_run, offline=offline,
                ca_cert=self.opts.network.ca_cert, progress=not self.opts.dry_run,
            )  # fmt: skip
        except MissingInputs as missing:
            if not self.opts.dry_run or offline:  # --offline: missing inputs fail a dry run as they fail a build
                raise
            self.log(str(missing))
            resolved = ResolvedInputs({}, Lock.load(self.t.row.key, self.opts.dirs.locks))
        check_apex_pair(resolved)
        lock = self._python_lock(resolved, needed)
        plan, files = render.plan(self.t, resolved.commits(), lock, user=self.opts.user, os_local=resolved.os_layers())
        return plan, files, resolved

    def _python_lock(self, resolved: ResolvedInputs, layers: list[str]) -> Any:
        """The target's Python lock for the layers this build reaches (resolved now if missing or stale)."""
        from . import pylock, sdists

        net = self.opts.network
        try:
            lock = pylock.ensure(
                self.t, resolved, layers, allow_network=not net.offline and not self.opts.dry_run,
                find_links=self.opts.dirs.wheelhouses, index_url=net.pip_index_url, ca_cert=net.ca_cert,
                root=self.opts.dirs.python_locks, report=self.log,
            )  # fmt: skip
            if net.offline and lock is not None:
                self._check_wheelhouse(lock, layers)
            # a sdist built into a wheel by `invoke fetch --wheels` is installed as that wheel
            return sdists.with_built_wheels(lock, self.opts.dirs.wheelhouses)
        except MissingInputs:
            raise
        except UserError as err:
            if not self.opts.dry_run:
                raise
            self.log(f"note: {err}")
            return pylock.PyLock.load(pylock.lock_path(self.t, self.opts.dirs.python_locks))

    def _check_wheelhouse(self, lock: Any, layers: list[str]) -> None:
        """Offline, pip installs from the wheelhouse only: every locked file must be there before Docker runs."""
        from . import pylock
        from .inputs import Missing
        from .wheels import WheelTarget

        wanted = lock_sections(lock, layers)
        target = WheelTarget(self.t.python, self.t.arch, self.t.os.glibc_version)
        missing = pylock.missing_files(lock, wanted, target, self.opts.dirs.wheelhouses)
        if missing:
            how = f"not in {', '.join(str(d) for d in self.opts.dirs.wheelhouses)}; run `invoke fetch --wheels` there"
            raise MissingInputs(render.final_tag(self.t), [Missing("python", m, how) for m in missing], True)

    def _base_image(self) -> str:
        """The OS image ``base`` starts from: its ID when local (so a rebuilt base image counts)."""
        ref = self.t.base_image
        found = self.driver.image_id(ref) if self.driver else None
        if found or self.opts.dry_run:
            return found or ref
        if ref.startswith("ascend-llm-stack/os:"):
            raise UserError(
                f"base image {ref} is not on this host: "
                f"run 'invoke base-image --os {self.t.os_name} --arch {self.t.arch}'"
            )
        if self.opts.network.offline and self.driver:
            raise UserError(
                f"base image {ref} is not on this host and --offline forbids pulling it: docker load it first"
            )
        return ref

    def run(self, prepared: tuple[BuildPlan, dict[str, str], ResolvedInputs] | None = None) -> list[LayerResult]:
        """Build the chain; ``prepared`` is :meth:`prepare`'s result when the caller already has it."""
        selected = self.opts.selected()
        last = selected[-1] if not self.opts.layers else LAYER_NAMES[-1]
        plan, files, resolved = prepared or self.prepare()
        out_dir = self.opts.out_dir or render.default_out_dir(self.t, REPO / "build")
        render.write(files, out_dir, option="build folder")
        parent = self._base_image()  # what the next layer's hash covers: an image ID once known
        parent_ref = self.t.base_image  # what the next layer's FROM names: a tag, never an ID
        results: list[LayerResult] = []
        dynamic = {
            "org.opencontainers.image.created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            **({"org.opencontainers.image.revision": rev} if (rev := _git_revision()) else {}),
        }
        with secret_files(self.opts.network) as secrets, ThreadPoolExecutor(1, "ascend-prefetch") as pool:
            prefetched: dict[str, Future[None]] = {}
            for i, layer in enumerate(plan.layers):
                digests = resolved.digests(layer.name)
                if layer.name == "runtime":
                    digests.append(entrypoints_digest())
                digest = content_hash(layer, files, digests, parent, plan.platform)
                ctag = content_tag(layer, digest)
                existing = self.driver.image_id(ctag) if self.driver else None
                started = time.monotonic()
                if layer.name not in selected:
                    if existing is None and layer.name in LAYER_NAMES[: LAYER_NAMES.index(selected[-1])]:
                        raise UserError(
                            f"layer {layer.name} ({ctag}) is not built yet and --layers leaves it out: "
                            f"add it, or use --until {selected[-1]}"
                        )
                    status, image_id = "skipped", existing
                elif existing and not self.opts.no_cache:
                    status, image_id = "up to date", existing
                else:
                    ctx = out_dir / layer.name
                    req = self._request(plan, layer, ctx, ctag, parent_ref, secrets, {**dynamic, **_hash_label(digest)})
                    if self.opts.dry_run or self.driver is None:
                        argv = req.argv(self.driver.client, Path("IIDFILE")) if self.driver else []
                        self.log(f"would build {layer.name}: DOCKER_BUILDKIT=1 {shlex.join(argv)}")
                        status, image_id = "would build", None
                    else:
                        ready = prefetched.pop(layer.name, None)
                        if ready is not None:
                            ready.result()  # assembled while the layer before it built
                        else:
                            self._assemble(layer, ctx, resolved, files)
                        # This layer gets a new image, so the next one is built too: get its context ready now.
                        nxt = plan.layers[i + 1] if layer.name != last and i + 1 < len(plan.layers) else None
                        if nxt is not None and nxt.name in selected:
                            prefetched[nxt.name] = pool.submit(self._prefetch, nxt, out_dir, resolved, files,
                                                               plan.platform)  # fmt: skip
                        image_id = self._build(layer, req, ctx)
                        status = "built"
                if image_id and self.driver:
                    for tag in self._human_tags(plan, layer):
                        self.driver.tag(image_id, tag)
                size = self._measure(layer.name, image_id, parent) if self.opts.budgets is not None else None
                results.append(LayerResult(layer.name, status, ctag, image_id, time.monotonic() - started, size))
                parent, parent_ref = image_id or ctag, ctag
                if layer.name == last:
                    break
        if self.opts.push and self.driver and results[-1].image_id:
            self._push(plan, results)
        return results

    def _measure(self, name: str, image_id: str | None, parent: str) -> Measure | None:
        """The layer's size over its parent against its budget; past the limit, :class:`OverBudget`."""
        if not image_id or self.driver is None or self.driver.docker is None or self.opts.budgets is None:
            return None
        budgets = self.opts.budgets
        key = render.target_key(self.t)
        size, _ = self.driver.image_size(image_id)
        parent_size, parent_layers = self.driver.image_size(parent)
        m = Measure(name, size - parent_size, budgets.budget(self.t.row.key, key, name), budgets.limit)
        if m.over and self.opts.enforce_budgets:
            from .wasted import wasted_bytes

            with tempfile.TemporaryDirectory(prefix="ascend-budget-") as tmp:
                archive = self.driver.save(image_id, Path(tmp) / "image.tar")
                largest = wasted_bytes(archive).largest_added(parent_layers)
            raise OverBudget(over_budget_message(m, budgets.where(self.t.row.key, key, name), largest))
        return m

    def _human_tags(self, plan: BuildPlan, layer: Layer) -> list[str]:
        return [layer.tag, plan.image] if layer.name == "runtime" else [layer.tag]

    def _request(
        self, plan: BuildPlan, layer: Layer, ctx: Path, ctag: str, parent: str,
        secrets: dict[str, Path], labels: dict[str, str],
    ) -> BuildRequest:  # fmt: skip
        return BuildRequest(
            context=ctx,
            tags=[ctag, *self._human_tags(plan, layer)],
            platform=plan.platform,
            build_args={"PARENT_IMAGE": parent} if layer.parent else {},
            labels=labels,
            secrets=secrets,
            network=self.opts.docker_network,
            no_cache=self.opts.no_cache,
        )

    def _assemble(self, layer: Layer, ctx: Path, resolved: ResolvedInputs, files: dict[str, str]) -> None:
        """Complete a layer's build context: the folders its Dockerfile mounts, then its inputs."""
        if "wheelhouse" in layer.mounts:
            from .pylock import local_part
            from .wheels import WheelTarget

            wheels = ctx / "wheelhouse"
            wheels.mkdir(exist_ok=True)
            locks = {
                rel: text for rel, text in files.items() if rel.startswith(f"{layer.name}/") and rel.endswith(".lock")
            }
            for f in locked_files(locks.values(), self.opts.dirs.wheelhouses):
                link_or_copy(f, wheels / f.name)
            target = WheelTarget(self.t.python, self.t.arch, self.t.os.glibc_version)
            for rel, text in locks.items():  # what pip_locked installs from the context first
                (wheels / f"{Path(rel).name}.local").write_text(local_part(text, target, wheels))
        resolved.place(layer.name, ctx)
        if "entrypoints" in layer.mounts:
            build_entrypoints_wheel(ctx / "entrypoints")

    def _prefetch(self, layer: Layer, out_dir: Path, resolved: ResolvedInputs, files: dict[str, str],
                  platform: str) -> None:  # fmt: skip
        """Assemble ``layer``'s context while the layer before it builds, and send a bulky one to BuildKit.

        BuildKit keeps what it received of a context directory and, the next time the same directory
        is sent for the same paths, receives only what changed. A throw-away build that mounts exactly
        the paths the layer's Dockerfile uses therefore moves the transfer (750 MB of CANN installers
        in the test row: 10 s) off the chain's critical path. It is only ever a head start: if it
        fails, the layer's own build sends the context as it always would.
        """
        ctx = out_dir / layer.name
        self._assemble(layer, ctx, resolved, files)
        paths = context_paths(files[layer.dockerfile])
        size = sum(f.stat().st_size for p in paths for f in _files_under(ctx / p))
        base = self.driver.image_id(self.t.base_image) if self.driver else None
        if size < PREFETCH_BYTES or not paths or base is None:
            return
        assert self.driver is not None
        folder = out_dir / ".prefetch"
        folder.mkdir(exist_ok=True)
        dockerfile = folder / f"{layer.name}.Dockerfile"
        mounts = " ".join(f"--mount=type=bind,source={p},target=/mnt/context/{i}" for i, p in enumerate(paths))
        dockerfile.write_text(f"FROM {self.t.base_image}\nRUN {mounts} true\n")
        req = BuildRequest(ctx, [], platform, dockerfile=dockerfile, network="none", no_cache=self.opts.no_cache)
        try:
            image_id = self.driver.build(req, f"{layer.name}/prefetch")
        except UserError as err:
            self.log(f"note: sending {layer.name}'s context ahead failed ({err}); its build sends it")
            return
        self.driver.untag(image_id)  # an untagged throw-away image: remove it

    def _build(self, layer: Layer, req: BuildRequest, ctx: Path) -> str:
        assert self.driver is not None
        if not layer.env_capture:
            return self.driver.build(req, layer.name)
        # cann: install, read what set_env.sh exports in that image, then add it as ENV.
        cap = layer.env_capture
        install_tag = req.tags[0].replace(":content-", ":install-")
        final_tags, req.tags = req.tags, [install_tag]
        self.driver.build(req, f"{layer.name}/install")
        try:
            argv = ["python", "/mnt/ctx/capture-env.py", cap["driver_libs"]]
            for i, script in enumerate(cap["sources"]):
                argv += (["--"] if i else []) + list(script)
            env = json.loads(self.driver.run_capture(install_tag, argv, {ctx: "/mnt/ctx"}, req.platform))
            env_ctx = ctx / "env"
            env_ctx.mkdir(exist_ok=True)
            sources = [" ".join(s) for s in cap["sources"]]
            template = render.template_env().get_template(cap["template"])
            (env_ctx / "Dockerfile").write_text(template.render(env=env, env_sources=sources))
            env_req = BuildRequest(
                context=env_ctx, tags=final_tags, platform=req.platform, build_args={"INSTALL_IMAGE": install_tag},
                labels=req.labels, network=req.network, no_cache=req.no_cache,
            )  # fmt: skip
            return self.driver.build(env_req, f"{layer.name}/env")
        finally:
            # The install image lives on as the final image's parent; only its temporary tag goes.
            self.driver.untag(install_tag)

    def _push(self, plan: BuildPlan, results: list[LayerResult]) -> None:
        """Every layer's content and human tag, base first, then the final tag (see registry.chain_images)."""
        from . import registry

        assert self.driver is not None and self.opts.push
        target = registry.parse_registry(self.opts.push)
        registry.push(self.driver, target, registry.chain_images(plan, results), self.log)


PREFETCH_BYTES = 64 * 1024 * 1024  # a context this big is sent to BuildKit ahead of its build


def lock_sections(lock: Any, layers: Iterable[str]) -> list[str]:
    """The Python lock's sections these layers' pip steps install (render.LOCK_FILES), in lock order."""
    wanted = {sec for name in layers for sec in render.LOCK_FILES.get(name, {}).values()}
    return [sec for sec in lock.sections if sec in wanted]


def locked_files(lock_texts: Iterable[str], wheelhouses: Iterable[Path]) -> list[Path]:
    """The wheelhouse files a layer's pip steps can install: a name its lock sections pin, at that version.

    The steps install with ``--require-hashes``, so no other file could be used, and a build context
    is sent to BuildKit whole: torch's wheels stay out of the layers that do not install torch.
    An earlier wheelhouse wins over a later one for a file of the same name.
    """
    from packaging import utils as names
    from packaging.specifiers import InvalidSpecifier, Specifier
    from packaging.version import InvalidVersion

    from .pylock import pins_of

    wanted: dict[str, list[Specifier]] = {}  # a name may be pinned at two versions (pta's torch vs apex-build)
    for text in lock_texts:
        for name, version in pins_of(text).items():
            with contextlib.suppress(InvalidSpecifier):
                wanted.setdefault(name, []).append(Specifier(f"=={version}"))
    found: dict[str, Path] = {}
    for house in wheelhouses:
        for f in sorted(house.iterdir()) if house.is_dir() else ():
            if f.name in found or not f.is_file():
                continue
            try:
                if f.name.endswith(".whl"):
                    name, version = names.parse_wheel_filename(f.name)[:2]
                elif f.name.endswith((".tar.gz", ".zip")):
                    name, version = names.parse_sdist_filename(f.name)
                else:
                    continue
            except (names.InvalidWheelFilename, names.InvalidSdistFilename, InvalidVersion):
                continue
            if any(spec.contains(version, prereleases=True) for spec in wanted.get(names.canonicalize_name(name), ())):
                found[f.name] = f
    return list(found.values())


_MOUNT = re.compile(r"--mount=(\S+)")
_COPY = re.compile(r"^(?:COPY|ADD)\s+(.+)$", re.MULTILINE)


def context_paths(dockerfile: str) -> list[str]:
    """The build-context paths a Dockerfile reads: bind-mount sources and COPY/ADD sources (not --from)."""
    text = dockerfile.replace("\\\n", " ")
    paths: list[str] = []
    for m in _MOUNT.finditer(text):
        opts = dict(o.partition("=")[::2] for o in m.group(1).split(","))
        if opts.get("type") == "bind" and "from" not in opts and opts.get("source"):
            paths.append(opts["source"])
    for m in _COPY.finditer(text):
        args = m.group(1).split()
        if not any(a.startswith("--from") for a in args):
            paths += [a for a in args[:-1] if not a.startswith("--")]
    return sorted({p.strip("/") or "." for p in paths})


def _files_under(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        yield from (p for p in path.rglob("*") if p.is_file())


def check_apex_pair(resolved: ResolvedInputs) -> None:
    """Ascend apex's patch applies to one NVIDIA apex commit, the one its scripts/build.sh checks out."""
    from .upstream import apex_build_facts

    apex = next((r for r in resolved if r.kind == "git" and r.name == "apex"), None)
    nvidia = next((r for r in resolved if r.kind == "git" and r.name == "nvidia-apex"), None)
    if apex is None or nvidia is None:
        return
    facts = apex_build_facts(apex.path, apex.digest)
    if facts is None:
        raise UserError(
            f"Ascend apex {apex.digest[:12]} has no scripts/build.sh that says how to build it "
            "(`git checkout <NVIDIA apex commit>` and `setup.py ... bdist_wheel`): pin another apex commit"
        )
    wants = str(facts["nvidia_commit"])
    if not nvidia.digest.startswith(wants):
        raise UserError(
            f"Ascend apex {apex.digest[:12]}'s scripts/build.sh builds NVIDIA apex {wants}, but the build has "
            f"{nvidia.digest}: set nvidia_apex.commit to it in matrix.yaml"
        )


def _hash_label(digest: str) -> dict[str, str]:
    return {"io.ascend-llm-stack.content-hash": digest}
