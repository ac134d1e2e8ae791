"""One carry-over file for an air-gapped host: everything a target's build needs, with a manifest.

``invoke bundle --cann X ... --out FILE.tar`` writes, on a connected machine: the CANN packages, the
wheelhouse of the target's Python lock (every locked file for the target's platform), the OS packages
of the base layer where they have been collected (``packages/os/<os>-<arch>/``), every git source as a
small repository holding just its pinned commit, the base OS image (``docker save``), the locks, and
``manifest.json``: every file's size and sha256, the target's choices and the bundle's own version.

``invoke build --bundle FILE.tar --offline`` on the far side checks the manifest against every byte
while it unpacks (into ``build/bundles/<digest>/``) and refuses a bundle with a changed, missing or
extra file, naming it, before Docker is even asked; then loads the base image and builds from the
unpacked folders only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from . import __version__
from .errors import UserError

SCHEMA = 1
MANIFEST = "manifest.json"
REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "build" / "bundles"
CHUNK = 1 << 20


@dataclass(frozen=True)
class BundleFile:
    path: str  # inside the bundle, e.g. packages/Ascend-cann-toolkit_...run
    sha256: str
    size: int


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


@contextmanager
def _progress(total: int, label: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    console = Console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn(), console=console, disable=not (enabled and console.is_terminal))  # fmt: skip
    with bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


# --------------------------------------------------------------------------------------------------------
# writing


def source_repository(mirror: Path, commit: str, ref: str, dest: Path) -> None:
    """A bare repository of one commit (depth 1) with ``ref`` naming it: what an offline build reads.

    Its refs stay loose files (no ``gc``, which would pack them): the bundle carries files only, and
    git knows a repository by its ``refs/`` folder.
    """
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], capture_output=True, text=True, env=env)

    git("init", "--quiet", "--bare", "--template=", str(dest))
    out = git(
        "-C",
        str(dest),
        "-c",
        "fetch.unpackLimit=1",
        "fetch",
        "--quiet",
        "--depth",
        "1",
        f"file://{mirror.resolve()}",
        commit,
    )  # fmt: skip  (unpackLimit: one pack file, not loose objects)
    if out.returncode != 0:
        raise UserError(f"cannot copy commit {commit} of {mirror} into the bundle: {out.stderr.strip()[-200:]}")
    branch = git("-C", str(mirror), "rev-parse", "--verify", "--quiet", f"refs/heads/{ref}").returncode == 0
    git("-C", str(dest), "update-ref", f"refs/{'heads' if branch else 'tags'}/{ref}", commit)
    git("-C", str(dest), "update-ref", "--no-deref", "HEAD", commit)
    (dest / "FETCH_HEAD").unlink(missing_ok=True)


def write(
    out: Path,
    files: dict[str, Path],
    target: dict[str, Any],
    *,
    progress: bool = True,
) -> tuple[Path, int]:
    """Write the tar ``out`` (atomically) from ``files`` (bundle path -> local file); returns it and its size."""
    entries = []
    for rel, path in sorted(files.items()):
        entries.append(BundleFile(rel, _sha256(path), path.stat().st_size))
    manifest = {
        "schema": SCHEMA,
        "created_by": f"ascend-llm-stack {__version__}",
        "target": target,
        "files": [vars(e) for e in entries],
    }
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    total = sum(e.size for e in entries)
    with (
        _progress(total, f"bundle {out.name}", progress) as advance,
        tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar,
    ):
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(body), 0, 0o644
        tar.addfile(info, _BytesReader(body))
        for e in entries:
            info = tarfile.TarInfo(e.path)
            info.size, info.mtime, info.mode = e.size, 0, 0o644 if not os.access(files[e.path], os.X_OK) else 0o755
            with files[e.path].open("rb") as fh:
                tar.addfile(info, _Counting(fh, advance))
    os.replace(tmp, out)
    return out, out.stat().st_size


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.at + n
        chunk, self.at = self.data[self.at : end], min(end, len(self.data))
        return chunk


class _Counting:
    def __init__(self, fh: BinaryIO, advance: Callable[[int], None]) -> None:
        self.fh, self.advance = fh, advance

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.advance(len(data))
        return data


def save_image(driver: Any, ref: str, path: Path) -> None:
    """``docker save REF`` (with its tag, so ``docker load`` gives the build its FROM image back)."""
    if driver.image_id(ref) is None:
        repo, _, tag = ref.rpartition(":")
        driver.docker.images.pull(repo, tag=tag)
    with path.open("wb") as fh:
        for chunk in driver.docker.api.get_image(ref, chunk_size=CHUNK):
            fh.write(chunk)


def load_image(driver: Any, ref: str, path: Path) -> None:
    """``docker load`` the bundle's base image unless an image of that name is here already."""
    if driver.image_id(ref) is not None:
        return
    with path.open("rb") as fh:
        driver.docker.images.load(fh)
    if driver.image_id(ref) is None:
        raise UserError(f"the bundle's base-image.tar does not hold {ref}: write the bundle again")


def _tree(root: Path, prefix: str) -> dict[str, Path]:
    """Every file under ``root``, as bundle paths under ``prefix``."""
    return {f"{prefix}/{p.relative_to(root).as_posix()}": p for p in sorted(root.rglob("*")) if p.is_file()}


def make(
    t: Any, resolved: Any, lock: Any, dirs: Any, out: Path, driver: Any, *, progress: bool = True
) -> tuple[Path, int]:
    """The bundle of target ``t`` from what ``invoke fetch --wheels`` made local (``resolved``, ``lock``)."""
    from . import sdists
    from .pylock import locked_file
    from .render import final_tag, target_key
    from .wheels import WheelTarget

    files: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="ascend-bundle-", dir=out.parent if out.parent.is_dir() else None) as tmp:
        work = Path(tmp)
        for r in resolved:
            if r.kind == "package":
                files[f"packages/{r.path.name}"] = r.path
            elif r.kind == "wheel":
                files[f"wheelhouse/{r.path.name}"] = r.path
            elif r.kind == "os":
                files.update(_tree(r.path, f"packages/os/{r.path.name}"))
            elif r.kind == "git":
                repo = work / "sources" / f"{r.name}.git"
                if not repo.exists():
                    source_repository(r.path, r.digest, r.input.ref, repo)
                files.update(_tree(repo, f"sources/{r.name}.git"))
        target = WheelTarget(t.python, t.arch, t.os.glibc_version)
        built = {}
        for section in lock.sections:
            for name, version in lock.pins(section).items():
                found = locked_file(name, version, target, dirs.wheelhouses)
                if found is None:
                    raise UserError(
                        f"{name}=={version} of {lock.path.name} is not in the wheelhouse: run invoke fetch --wheels"
                    )
                files[f"wheelhouse/{found.name}"] = found
                for house in dirs.wheelhouses:
                    if found.name in (record := sdists.record(house)):
                        built[found.name] = record[found.name]
        if built:
            (work / sdists.RECORD).write_text(json.dumps(built, indent=1, sort_keys=True) + "\n")
            files[f"wheelhouse/{sdists.RECORD}"] = work / sdists.RECORD
        python_lock = lock.path
        files[f"locks/{python_lock.parent.name}/{python_lock.name}"] = python_lock
        files[f"locks/{resolved.lock.path.name}"] = resolved.lock.path
        image = work / "base-image.tar"
        save_image(driver, t.base_image, image)
        files["base-image.tar"] = image
        choices = {"cann": t.row.key, "arch": t.arch, "os": t.os_name, "torch": t.torch, "chip": t.chip}
        about = {"choices": choices, "target": target_key(t), "image": final_tag(t), "base_image": t.base_image}
        return write(out, files, about, progress=progress)


# --------------------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class Unpacked:
    root: Path
    target: dict[str, Any]
    files: list[BundleFile]

    @property
    def packages(self) -> Path:
        return self.root / "packages"

    @property
    def wheelhouse(self) -> Path:
        return self.root / "wheelhouse"

    @property
    def sources(self) -> Path:
        return self.root / "sources"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def base_image(self) -> Path | None:
        found = self.root / "base-image.tar"
        return found if found.is_file() else None

    def dirs(self) -> Any:
        """The input folders of a build from this bundle: its own, nothing of the host's."""
        from .inputs import InputDirs

        return InputDirs(
            packages=self.packages, wheelhouse=self.wheelhouse, sources=self.sources, locks=self.locks,
            python_locks=self.locks, hash_cache=self.root / ".sha256-cache.json",
        )  # fmt: skip


def choices(unpacked: Unpacked, given: dict[str, str | None], bundle: Path) -> dict[str, str | None]:
    """The bundle's target; a choice given on the command line must be the bundle's."""
    theirs = unpacked.target["choices"]
    for key, value in given.items():
        if value is not None and key in theirs and value.lower() != str(theirs[key]).lower():
            raise UserError(
                f"--{key} {value}: {bundle} holds {key} {theirs[key]}; leave --{key} out or write another bundle"
            )
    return {**given, **{k: str(v) for k, v in theirs.items() if k in given}}


def read_manifest(bundle: Path) -> dict[str, Any]:
    try:
        with tarfile.open(bundle, "r:") as tar:
            member = tar.getmember(MANIFEST)
            fh = tar.extractfile(member)
            assert fh is not None
            data = json.loads(fh.read())
    except FileNotFoundError:
        raise UserError(f"--bundle {bundle}: no such file") from None
    except (tarfile.TarError, KeyError, ValueError):
        raise UserError(f"--bundle {bundle}: not a bundle written by `invoke bundle` (no {MANIFEST})") from None
    if data.get("schema") != SCHEMA:
        raise UserError(f"--bundle {bundle}: manifest schema {data.get('schema')!r}, this version reads {SCHEMA}")
    return data


def unpack(bundle: Path, root: Path = BUNDLES, *, progress: bool = True) -> Unpacked:
    """Check every member against the manifest while unpacking; a mismatch is one line, nothing is kept."""
    manifest = read_manifest(bundle)
    files = [BundleFile(**f) for f in manifest["files"]]
    want = {f.path: f for f in files}
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    dest = root / digest
    stamp = dest / ".verified"
    if stamp.is_file():  # unpacked and verified before: verify the files on disk are still those
        for f in files:
            p = dest / f.path
            if not p.is_file() or p.stat().st_size != f.size:
                break
        else:
            return Unpacked(dest, manifest["target"], files)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=root if root.is_dir() else _mkdir(root)))
    try:
        seen: set[str] = set()
        with (
            tarfile.open(bundle, "r:") as tar,
            _progress(sum(f.size for f in files), f"unpack {bundle.name}", progress) as advance,
        ):
            for member in tar:
                if member.name == MANIFEST:
                    continue
                expected = want.get(member.name)
                if expected is None or not member.isfile() or ".." in Path(member.name).parts:
                    raise UserError(f"--bundle {bundle}: {member.name} is not in its manifest: the bundle was changed")
                target = tmp / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                src = tar.extractfile(member)
                assert src is not None
                with target.open("wb") as out:
                    while block := src.read(CHUNK):
                        h.update(block)
                        out.write(block)
                        advance(len(block))
                if h.hexdigest() != expected.sha256:
                    raise UserError(
                        f"--bundle {bundle}: {member.name} has sha256 {h.hexdigest()}, the manifest says "
                        f"{expected.sha256}: the bundle was changed or damaged; write it again"
                    )
                target.chmod(member.mode & 0o777)
                seen.add(member.name)
        missing = sorted(set(want) - seen)
        if missing:
            raise UserError(f"--bundle {bundle}: {missing[0]} is in its manifest but not in the bundle")
        (tmp / ".verified").write_text(digest + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Unpacked(dest, manifest["target"], files)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
