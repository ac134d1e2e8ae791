"""Every external input of a build plan, found, fetched and verified before Docker starts.

Why one place: ``invoke build`` and ``invoke fetch`` must agree on where a CANN installer, a
pinned wheel or a git commit comes from and on what it must hash to. Offline-first: local copies
(package cache, wheelhouses, git mirrors) are always preferred; the network is used only for what
is missing and only when allowed. Order matters for the user: local files are verified first (a
tampered installer stops everything at once), then missing files are downloaded (each verified
while it arrives), then git refs are resolved; whatever is still missing is reported in one error
listing every item with where to get it, rather than one failure per run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO

from . import ospackages, paths
from .download import ChecksumMismatch
from .download import download as http_download
from .errors import UserError
from .lock import LOCK_DIR, HashCache, Lock
from .published import Published
from .published import load as load_published
from .render import BuildPlan, Input
from .sources import Sources, SourceUnavailable, export
from .wheels import WheelTarget, fetch_wheel, find_wheel

REPO = Path(__file__).resolve().parents[2]
FILE_KINDS = ("package", "wheel")
# Where each kind sits inside a layer's build context (the templates bind-mount these folders).
CONTEXT_DIRS = {"package": "packages", "wheel": "wheelhouse", "git": "sources", "os": ospackages.CONTEXT_DIR}


@dataclass(frozen=True)
class InputDirs:
    """Where inputs live on this host.

    ``packages`` also holds the OS package folders, ``packages/os/<os>-<arch>/``.
    ``wheelhouse`` is the project's wheel cache (downloads go there); ``extra_wheelhouses`` are the
    user's ``--wheelhouse`` dirs, searched first. ``source_overrides`` is ``--sources DIR`` and
    ``source_map`` a user config's name -> URL/path mapping. ``hash_cache=None`` disables the cache
    of file hashes (see :class:`ascend_stack.lock.HashCache`).
    """

    packages: Path = REPO / "packages"
    wheelhouse: Path = REPO / "wheelhouse"
    extra_wheelhouses: tuple[Path, ...] = ()
    sources: Path = REPO / "sources"
    source_overrides: Path | None = None
    source_map: Mapping[str, str] = field(default_factory=dict)
    locks: Path = LOCK_DIR
    python_locks: Path = LOCK_DIR  # locks/<row>/<target>.txt, committed (ascend_stack.pylock)
    hash_cache: Path | None = REPO / "build" / ".sha256-cache.json"

    @classmethod
    def under(cls, root: Path, **overrides: object) -> InputDirs:
        """Every default folder under ``root`` (a temp dir in tests, another checkout, ...)."""
        defaults: dict[str, object] = {
            "packages": root / "packages",
            "wheelhouse": root / "wheelhouse",
            "sources": root / "sources",
            "locks": root / "locks",
            "hash_cache": root / "build" / ".sha256-cache.json",
        }
        return cls(**{**defaults, **overrides})  # type: ignore[arg-type]

    @property
    def wheelhouses(self) -> tuple[Path, ...]:
        return (*self.extra_wheelhouses, self.wheelhouse)

    def check(self) -> None:
        """Each folder option names a folder (or, for the caches, nothing yet), before any work starts."""
        paths.expect_creatable(self.packages, "--packages", "directory")
        paths.expect_creatable(self.locks, "--lock-dir", "directory")
        for folder in self.extra_wheelhouses:
            paths.expect(folder, "--wheelhouse", "directory", "pass a folder of .whl files")
        if self.source_overrides is not None:
            paths.expect(self.source_overrides, "--sources", "directory", "pass a folder of git mirrors")

    def os_packages(self, name: str) -> Path:
        """The OS package folder ``name`` (``debian-bookworm-x86_64``)."""
        return self.packages / "os" / name


@dataclass(frozen=True)
class Resolved:
    """One input, local and verified: ``path`` is the file (or the bare git mirror), ``digest`` its
    sha256 (or the full commit)."""

    layer: str
    input: Input
    path: Path
    digest: str

    @property
    def kind(self) -> str:
        return self.input.kind

    @property
    def name(self) -> str:
        return self.input.name

    @property
    def entry(self) -> str:
        """This input's line in its layer's content hash."""
        if self.kind == "git":
            return f"git:{self.name}:{self.input.ref}:{self.digest}"
        if self.kind == "wheel":
            return f"wheel:{self.name}:{self.path.name}:sha256:{self.digest}"
        if self.kind == "os":
            return f"os:{self.name}:sha256:{self.digest}"
        return f"package:{self.name}:sha256:{self.digest}"

    def place(self, context: Path) -> Path:
        """Put the input where the layer's Dockerfile mounts it, under ``context``.

        Files are hard-linked (no copy of a multi-GB installer), copied when the context is on
        another filesystem; a git source becomes a plain tree of its commit; an OS package folder,
        hard links of the files its manifest lists.
        """
        if self.kind == ospackages.KIND:
            manifest = ospackages.Manifest.load(self.path)
            assert manifest is not None  # verified by the resolver
            return ospackages.place(self.path, manifest, context)
        folder = context / CONTEXT_DIRS[self.kind]
        folder.mkdir(parents=True, exist_ok=True)
        if self.kind == "git":
            dest = folder / self.name
            stamp = folder / f".{self.name}.commit"
            if dest.is_dir() and stamp.is_file() and stamp.read_text().strip() == self.digest:
                return dest
            stamp.unlink(missing_ok=True)
            export(self.path, self.digest, dest)
            stamp.write_text(self.digest + "\n")
            return dest
        dest = folder / self.path.name
        link_or_copy(self.path, dest)
        return dest


def link_or_copy(src: Path, dest: Path) -> None:
    """``dest`` becomes ``src``'s content: a hard link, else (other filesystem, no permission) a copy."""
    with contextlib.suppress(FileNotFoundError):
        if dest.samefile(src):
            return
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


@dataclass
class ResolvedInputs:
    """What :func:`resolve_inputs` found: by (layer name, input name), plus the lock it used."""

    items: dict[tuple[str, str], Resolved]
    lock: Lock
    events: list[str] = field(default_factory=list)

    def __getitem__(self, key: tuple[str, str]) -> Resolved:
        return self.items[key]

    def __iter__(self) -> Iterator[Resolved]:
        return iter(self.items.values())

    def __len__(self) -> int:
        return len(self.items)

    def layer(self, name: str) -> list[Resolved]:
        return [r for r in self.items.values() if r.layer == name]

    def digests(self, layer: str) -> list[str]:
        return layer_digests(self, layer)

    def commits(self) -> dict[str, str | None]:
        """Git source name -> commit, for :func:`ascend_stack.render.plan` (stack.json)."""
        return {r.name: r.digest for r in self.items.values() if r.kind == "git"}

    def os_layers(self) -> set[str]:
        """The layers whose OS packages come from a local folder, for :func:`ascend_stack.render.plan`."""
        return {r.layer for r in self.items.values() if r.kind == "os"}

    def place(self, layer: str, context: Path) -> list[Path]:
        """Put every input of ``layer`` into its build context."""
        return [r.place(context) for r in self.layer(layer)]


def layer_digests(resolved: ResolvedInputs, layer: str) -> list[str]:
    """The input lines a layer's content hash must include: every file's sha256, every commit."""
    return sorted(r.entry for r in resolved.layer(layer))


@dataclass(frozen=True)
class Missing:
    """An input that is not here, and what to do about it (one line)."""

    kind: str
    name: str
    how: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.how}"


class MissingInputs(UserError):
    """Some inputs are neither local nor fetchable. The message has one line per missing input."""

    def __init__(self, image: str, missing: list[Missing], offline: bool) -> None:
        self.missing = missing
        mode = " (offline)" if offline else ""
        lines = [f"{len(missing)} input(s) missing for {image}{mode}:", *(f"  {m}" for m in missing)]
        super().__init__("\n".join(lines))


def fetch_command(plan: BuildPlan) -> str:
    t = plan.target
    return f"invoke fetch --cann {t['row']} --torch {t['torch']} --arch {t['arch']} --os {t['os']} --chip {t['chip']}"


def _show(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


class _Resolver:
    """The state of one :func:`resolve_inputs` call."""

    def __init__(
        self,
        plan: BuildPlan,
        dirs: InputDirs,
        *,
        network: bool,
        offline: bool,
        update: bool,
        progress: bool,
        ca_cert: Path | None,
        rehash: bool,
        report: Callable[[str], None] | None,
        published: Published | None = None,
        collect_os: bool = False,
        apt_mirror: str | None = None,
    ) -> None:
        t = plan.target
        self.plan, self.dirs = plan, dirs
        self.network, self.offline, self.update = network, offline, update
        self.collect_os, self.apt_mirror = collect_os and network, apt_mirror
        self.progress, self.ca_cert, self.rehash, self.report = progress, ca_cert, rehash, report
        self.row = str(t["row"])
        self.published = published or load_published()
        self.lock = Lock.load(self.row, dirs.locks)
        self.hashes = HashCache(dirs.hash_cache)
        self.wheel_target = WheelTarget.for_target(t)
        self.sources = Sources(dirs.sources, dirs.source_overrides, dirs.source_map, ca_cert)
        self.items: dict[tuple[str, str], Resolved] = {}
        self.os_checked: dict[str, tuple[ospackages.Manifest | None, dict[str, str]]] = {}
        self.missing: list[Missing] = []
        self.events: list[str] = []

    def say(self, action: str, text: str) -> None:
        line = f"{action:<9} {text}"
        self.events.append(line)
        if self.report:
            self.report(line)

    # -- expectations
    def expectations(self, inp: Input, file: str) -> list[tuple[str, str]]:
        """(sha256, where it comes from) that ``file`` must match; a matrix/lock conflict is an error."""
        out = []
        if inp.kind == "package" and inp.sha256:
            out.append((inp.sha256, f"matrix.yaml, row {self.row}"))
        published = self.published.file(file) if inp.kind == "wheel" else None
        if published:
            out.append((published.sha256, self.published_source()))
        locked = None if self.update else self.lock.file_sha256(file)
        if locked:
            if out and out[0][0] != locked:
                if out[0][1] == self.published_source():
                    raise UserError(
                        f"{file}: {self.published_source()} publishes sha256 {out[0][0]} but {_show(self.lock.path)} "
                        f"records {locked}; the lock took another file: run `{fetch_command(self.plan)} --update`"
                    )
                raise UserError(
                    f"{file}: matrix.yaml publishes sha256 {out[0][0]} but {_show(self.lock.path)} records "
                    f"{locked}; if matrix.yaml is right, run `{fetch_command(self.plan)} --update`"
                )
            out.append((locked, _show(self.lock.path)))
        return out

    def verify(self, inp: Input, path: Path, action: str, known: str | None = None) -> str:
        """Check ``path`` (whose hash may be ``known``) against the matrix and the lock; record it if new."""
        actual = known or self.hashes.sha256(path, rehash=self.rehash)
        expected = self.expectations(inp, path.name)
        for sha, source in expected:
            if actual != sha:
                if source.startswith("matrix.yaml") or source == self.published_source():
                    advice = f"delete {_show(path)} and run `{fetch_command(self.plan)}` to download it again"
                else:
                    advice = (
                        f"if this file is the one you want, run `{fetch_command(self.plan)} --update` "
                        f"to record it; otherwise delete {_show(path)} and fetch it again"
                    )
                raise ChecksumMismatch(_show(path), sha, actual, source, advice)
        recorded = self.lock.record_file(path.name, actual)
        checked = ", ".join(source for _, source in expected)
        detail = f"sha256 {actual[:16]}…" + (f" = {checked}" if checked else "")
        if recorded:
            detail += f"; recorded in {_show(self.lock.path)}"
        self.say(action if action != "found" else ("recorded" if recorded else "verified"), f"{_show(path)} {detail}")
        return actual

    # -- files
    def find_local(self, inp: Input) -> Path | None:
        if inp.kind == "package":
            path = self.dirs.packages / inp.name
            if path.is_file():
                return path
            archive = self.dirs.packages / inp.archive if inp.archive else None
            if archive and archive.is_file():  # the .zip Huawei publishes, carried over: verify, unpack
                return self.unpack(inp, archive, self.verify_archive(inp, archive))
            return None
        return find_wheel(inp.name, self.wheel_target, self.dirs.wheelhouses)

    def published_source(self) -> str:
        return f"{self.published.source} (published.yaml)"

    def verify_archive(self, inp: Input, archive: Path, known: str | None = None) -> str:
        """The published sha256 of a package's .zip holds; it is recorded in the lock too."""
        actual = known or self.hashes.sha256(archive, rehash=self.rehash)
        if inp.archive_sha256 and actual != inp.archive_sha256:
            raise ChecksumMismatch(
                _show(archive), inp.archive_sha256, actual, self.published_source(),
                f"delete {_show(archive)} and run `{fetch_command(self.plan)}` to download it again",
            )  # fmt: skip
        self.lock.record_file(archive.name, actual)
        self.say("verified", f"{_show(archive)} sha256 {actual[:16]}… = {self.published_source()}")
        return actual

    def unpack(self, inp: Input, archive: Path, _sha: str) -> Path:
        """Extract the package's .run from its verified .zip into the package cache (atomically)."""
        dest = self.dirs.packages / inp.name
        try:
            with zipfile.ZipFile(archive) as zf:
                members = [m for m in zf.infolist() if Path(m.filename).name == inp.name and not m.is_dir()]
                if len(members) != 1:
                    raise UserError(f"{_show(archive)} does not hold {inp.name}: is it the right package?")
                tmp = dest.with_name(f".{dest.name}.unzip")
                with zf.open(members[0]) as src, tmp.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        except zipfile.BadZipFile:
            raise UserError(f"{_show(archive)} is not a zip archive: delete it and fetch again") from None
        tmp.chmod(0o755)
        os.replace(tmp, dest)
        self.say("unpacked", f"{_show(dest)} from {archive.name}")
        return dest

    def fetch_file(self, inp: Input) -> tuple[Path, str | None]:
        """Download a missing file; returns it and, when the download computed it, its sha256."""
        if inp.kind == "package" and inp.archive and inp.archive_url:
            dest = self.dirs.packages / inp.archive
            got = http_download(
                inp.archive_url, dest, referer=inp.referer, sha256=inp.archive_sha256,
                sha256_source=self.published_source(), ca_cert=self.ca_cert, progress=self.progress,
                advice=f"{dest.name} was not kept; the published sha256 is Huawei's, so do not use this download",
            )  # fmt: skip
            self.hashes.remember(got.path, got.sha256)
            return self.unpack(inp, got.path, self.verify_archive(inp, got.path, got.sha256)), None
        if inp.kind == "package":
            if not inp.url:
                raise UserError(f"no download URL is known; put it into {_show(self.dirs.packages)}/")
            dest = self.dirs.packages / inp.name
            expected = self.expectations(inp, inp.name)
            sha, source = expected[0] if expected else (None, "")
            got = http_download(
                inp.url, dest, referer=inp.referer, sha256=sha, sha256_source=source,
                ca_cert=self.ca_cert, progress=self.progress,
            )  # fmt: skip
            self.hashes.remember(got.path, got.sha256)
            return got.path, got.sha256
        locked = {} if self.update else {n: (s, _show(self.lock.path)) for n, s in self.lock.files.items()}
        published = {n: (f.sha256, self.published_source()) for n, f in self.published.files.items()}
        locked = {**locked, **published}  # Huawei's hash wins; verify() then holds the lock to it as well
        wheel = fetch_wheel(
            inp.name, self.wheel_target, self.dirs.wheelhouse, url=inp.url, index=inp.index,
            expected=locked, ca_cert=self.ca_cert, progress=self.progress,
        )  # fmt: skip
        return wheel, None

    def missing_file(self, inp: Input, reason: str = "") -> Missing:
        fetch = f"run `{fetch_command(self.plan)}`"
        if inp.kind == "package":
            url = inp.archive_url or inp.url
            where = f"download {url}" + (f" (header Referer: {inp.referer})" if inp.referer else "")
            if inp.archive_url:
                where += f" (the .zip Huawei publishes, sha256 {inp.archive_sha256}; the build unpacks the .run)"
            how = (
                f"not in {_show(self.dirs.packages)}/; {where} into it, or {fetch}"
                if url
                else (f"not in {_show(self.dirs.packages)}/; put it there")
            )
        else:
            dirs = ", ".join(_show(d) for d in self.dirs.wheelhouses)
            source = inp.url or (f"PyPI or {inp.index}" if inp.index else "PyPI")
            how = (
                f"no wheel for {self.wheel_target.describe()} in {dirs}; put one into a --wheelhouse dir "
                f"(from {source}), or {fetch}"
            )
        return Missing(inp.kind, inp.name, how + (f" [{reason}]" if reason else ""))

    # -- git
    def resolve_git(self, layer: str, inp: Input) -> None:
        """A pinned commit (matrix.yaml) is what builds; otherwise the lock's, else the ref's head."""
        assert inp.url is not None and inp.ref is not None
        locked = self.lock.commit(inp.name, inp.ref)
        wanted = inp.commit or locked
        try:
            mirror, commit = self.sources.resolve(
                inp.name, inp.url, inp.ref, locked=wanted, update=self.update and not inp.commit,
                offline=not self.network,
            )  # fmt: skip
        except SourceUnavailable as err:
            self.missing.append(Missing("git", f"{inp.name}@{inp.ref}", err.detail))
            return
        except UserError as err:  # e.g. the upstream could not be reached
            detail = f"{err}; mirror {inp.url} into {_show(self.sources.mirror(inp.name))} or pass --sources DIR"
            self.missing.append(Missing("git", f"{inp.name}@{inp.ref}", detail))
            return
        self.lock.record_commit(inp.name, inp.ref, commit)
        if inp.commit:
            how = f"pinned in matrix.yaml; recorded in {_show(self.lock.path)}" if locked != commit else "pinned"
        elif locked == commit:
            how = f"as locked in {_show(self.lock.path)}"
        elif locked:
            how = f"updated from {locked[:12]} in {_show(self.lock.path)}"
        else:
            how = f"recorded in {_show(self.lock.path)}"
        self.say("resolved", f"git {inp.name} {inp.ref} -> {commit[:12]} ({how})")
        self.items[(layer, inp.name)] = Resolved(layer, inp, mirror, commit)
        if inp.commit and self.update:
            try:
                self.propose(inp)
            except UserError as err:
                self.say("proposal", f"could not see where {inp.ref} of {inp.name} is now: {err}")

    def propose(self, inp: Input) -> None:
        """``--update`` on a pinned source: say where its ref is now, as the one-line matrix.yaml change."""
        assert inp.url is not None and inp.ref is not None
        _, head = self.sources.resolve(inp.name, inp.url, inp.ref, update=True, offline=not self.network)
        if head != inp.commit:
            key = inp.name.replace("-", "_")
            self.say(
                "proposal",
                f"{inp.ref} of {inp.name} is now at {head}: to build it, change matrix.yaml row {self.row} "
                f"{key}.commit from {inp.commit} to {head} (review the upstream changes first)",
            )

    # -- OS packages
    def os_folders(self) -> dict[str, list[tuple[str, Input]]]:
        """Folder name -> the (layer, input) pairs it serves, in chain order."""
        out: dict[str, list[tuple[str, Input]]] = {}
        for layer in self.plan.layers:
            for inp in layer.inputs:
                if inp.kind == ospackages.KIND:
                    out.setdefault(inp.name, []).append((layer.name, inp))
        return out

    def check_os(self, name: str, wanted: list[tuple[str, Input]]) -> tuple[ospackages.Manifest | None, dict[str, str]]:
        """The folder's manifest (its files verified: a tampered one raises) and, per layer, why it does not fit."""
        folder = self.dirs.os_packages(name)
        manifest = ospackages.Manifest.load(folder)
        if manifest is None:
            return None, {layer: f"not in {_show(folder)}/" for layer, _ in wanted}
        advice = f"delete {_show(folder)} and run `{fetch_command(self.plan)}` to collect it again"
        gone = ospackages.check_files(folder, manifest, self.hashes, rehash=self.rehash, advice=advice)
        image = wanted[0][1].ref or ""
        now = ospackages.image_id(image) if image else None
        why = ""
        if gone:
            why = f"{len(gone)} file(s) of {_show(folder)} are gone ({gone[0]})"
        elif (manifest.os, manifest.arch) != (self.plan.target["os"], self.plan.target["arch"]):
            why = f"{_show(folder)} holds packages of {manifest.os} {manifest.arch}"
        elif now and manifest.base_image_id and now != manifest.base_image_id:
            why = f"{_show(folder)} was collected in {image} {manifest.base_image_id[:19]}, which is now {now[:19]}"
        reasons = {}
        for layer, inp in wanted:
            uncovered = manifest.uncovered(inp.steps)
            if why or uncovered:
                reasons[layer] = why or f"{_show(folder)} was collected without the {layer} step `{uncovered[0]}`"
        return manifest, reasons

    def resolve_os(self, name: str, wanted: list[tuple[str, Input]]) -> None:
        """Use the folder for the layers it fits; ``invoke fetch`` (re)collects it when it does not fit one."""
        folder = self.dirs.os_packages(name)
        manifest, reasons = self.os_checked[name]
        action = "verified"
        if self.collect_os and (reasons or self.update):
            steps = [ospackages.step_key(s) for _, inp in wanted for s in inp.steps]
            if manifest is not None and not self.update:
                steps += list(manifest.steps)  # what other plans collected stays
            first, unique = wanted[0][1], tuple(tuple(k.split()) for k in dict.fromkeys(steps))
            req = ospackages.Request(
                os=str(self.plan.target["os"]), arch=str(self.plan.target["arch"]), family=first.family or "apt",
                image=first.ref or "", platform=self.plan.platform, steps=unique,
                mirror=self.apt_mirror, ca_cert=self.ca_cert,
            )  # fmt: skip
            try:
                manifest = ospackages.collect(req, folder, reuse=manifest, report=partial(self.say, "collect"))
            except ChecksumMismatch:
                raise
            except UserError as err:  # e.g. no engine, no mirror: listed with the other missing inputs
                first_reason = next(iter(reasons.values()), f"{_show(folder)} is out of date")
                self.missing.append(Missing(ospackages.KIND, name, f"{first_reason}; collecting it failed: {err}"))
                return
            ospackages.check_files(folder, manifest, self.hashes, rehash=False, advice="collect it again")
            action, reasons = "collected", {}
        fits = [(layer, inp) for layer, inp in wanted if layer not in reasons]
        if manifest is not None and fits:
            for layer, inp in fits:
                self.items[(layer, inp.name)] = Resolved(layer, inp, folder, manifest.digest(inp.steps))
            count, size = manifest.count([s for _, inp in fits for s in inp.steps])
            layers = ", ".join(layer for layer, _ in fits)
            self.say(action, f"{_show(folder)}/ {count} OS packages ({size / 1e6:.1f} MB) for {layers}; "
                             f"sha256 = {ospackages.MANIFEST}")  # fmt: skip
        if not reasons:
            return
        layers = ", ".join(reasons)
        reason = next(iter(reasons.values()))
        if self.offline:
            how = f"{reason}; run `{fetch_command(self.plan)}` to collect the OS packages of {layers} into it"
            self.missing.append(Missing(ospackages.KIND, name, how))
        else:
            self.say("mirror", f"{reason}: {layers} install OS packages from the mirror")

    def run(self) -> ResolvedInputs:
        pending: list[tuple[str, Input]] = []
        # 1. what is here already: a tampered file stops everything before any download starts
        for layer in self.plan.layers:
            for inp in layer.inputs:
                if inp.kind in FILE_KINDS:
                    path = self.find_local(inp)
                    if path is None:
                        pending.append((layer.name, inp))
                    else:
                        self.items[(layer.name, inp.name)] = Resolved(
                            layer.name, inp, path, self.verify(inp, path, "found")
                        )
        # ... and the OS package folders (their files are verified: a tampered .deb stops everything too)
        self.os_checked = {name: self.check_os(name, wanted) for name, wanted in self.os_folders().items()}
        # 2. what is missing: downloaded (and verified while it arrives) if allowed
        for layer_name, inp in pending:
            if not self.network:
                self.missing.append(self.missing_file(inp))
                continue
            try:
                path, known = self.fetch_file(inp)
            except ChecksumMismatch:
                raise
            except UserError as err:
                self.missing.append(self.missing_file(inp, str(err)))
                continue
            self.items[(layer_name, inp.name)] = Resolved(
                layer_name, inp, path, self.verify(inp, path, "fetched", known)
            )
        # OS package folders: used where they fit, (re)collected by invoke fetch
        for name, wanted in self.os_folders().items():
            self.resolve_os(name, wanted)
        # 3. git refs, the locked commit first
        for layer in self.plan.layers:
            for inp in layer.inputs:
                if inp.kind == "git":
                    self.resolve_git(layer.name, inp)
        ordered = {
            (layer.name, inp.name): self.items[(layer.name, inp.name)]
            for layer in self.plan.layers
            for inp in layer.inputs
            if (layer.name, inp.name) in self.items
        }
        return ResolvedInputs(ordered, self.lock, self.events)


def resolve_inputs(
    plan: BuildPlan,
    dirs: InputDirs,
    *,
    download: bool,
    offline: bool,
    update: bool = False,
    progress: bool = True,
    ca_cert: Path | None = None,
    rehash: bool = False,
    report: Callable[[str], None] | None = None,
    published: Published | None = None,
    collect_os: bool = False,
    apt_mirror: str | None = None,
) -> ResolvedInputs:
    """Find, fetch (``download`` and not ``offline``) and verify every input of ``plan``.

    A checksum mismatch raises :class:`ChecksumMismatch` at once; inputs new to the lock are
    recorded and the lock saved; anything still missing raises one :class:`MissingInputs`.
    ``update`` re-resolves git refs and re-records file hashes (the matrix's are still enforced);
    ``rehash`` ignores the hash cache. ``project`` inputs are the build driver's business.
    OS package folders are used when they fit, required ``offline``, and (re)collected only with
    ``collect_os`` (``invoke fetch``), from ``apt_mirror`` if given.
    """
    resolver = _Resolver(
        plan, dirs, network=download and not offline, offline=offline, update=update, progress=progress,
        ca_cert=ca_cert, rehash=rehash, report=report, published=published, collect_os=collect_os,
        apt_mirror=apt_mirror,
    )  # fmt: skip
    try:
        result = resolver.run()
    finally:
        resolver.hashes.save()
        resolver.lock.save()  # what was verified stays recorded, even if something else failed
    if resolver.missing:
        raise MissingInputs(plan.image, resolver.missing, offline)
    return result


def fetch(
    plan: BuildPlan,
    dirs: InputDirs,
    *,
    offline: bool = False,
    update: bool = False,
    progress: bool = True,
    ca_cert: Path | None = None,
    out: TextIO | None = None,
    published: Published | None = None,
    apt_mirror: str | None = None,
) -> ResolvedInputs:
    """``invoke fetch``: download what is missing, verify everything (no hash cache), record new hashes.

    Prints one line per input as it goes (fetched / verified / recorded / resolved / collected).
    """
    import sys

    stream = out or sys.stdout

    def report(line: str) -> None:
        print(line, file=stream, flush=True)

    resolved = resolve_inputs(
        plan, dirs, download=True, offline=offline, update=update, progress=progress, ca_cert=ca_cert,
        rehash=True, report=report, published=published, collect_os=True, apt_mirror=apt_mirror,
    )  # fmt: skip
    files = sum(1 for r in resolved if r.kind in FILE_KINDS)
    gits = sum(1 for r in resolved if r.kind == "git")
    folders = len({r.name for r in resolved if r.kind == ospackages.KIND})
    report(
        f"all inputs of {plan.image} are local: {files} file(s), {gits} git source(s), {folders} OS package "
        f"folder(s); lock {_show(resolved.lock.path)}"
    )
    return resolved
