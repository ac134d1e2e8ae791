"""Git sources (MindSpeed, MindSpeed-LLM, Megatron-LM, apex) through a cache of bare mirrors.

Why a full mirror of branches and tags (``sources/<name>.git``) rather than shallow clones: the
matrix pins some sources by *short* commit (``2c085cc9``), which no git server will fetch by name
(``git fetch --depth 1 <sha>`` works over file:// and protocol v2 only for a full 40-hex id), and
a lock must be able to go back to a commit after its branch moved on. Every commit the lock names
also gets a ``refs/ascend-stack/locked/<sha>`` ref so that ``git gc`` never drops it.

Air-gapped hosts point a source elsewhere: ``--sources DIR`` (``DIR/<name>`` or ``DIR/<name>.git``,
any local repository) or a mapping name -> URL or path from a user config. Offline, nothing talks
to the network: a local override is still read, otherwise the commit must already be cached.
A build context gets a plain tree (``git archive | tar -x``): no ``.git``, no untracked files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import UserError

SOURCES_DIR = Path(__file__).resolve().parents[2] / "sources"
_HEX = re.compile(r"^[0-9a-f]{4,40}$")
_FULL = re.compile(r"^[0-9a-f]{40}$")
_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
_KEEP = "refs/ascend-stack/locked/"
# No prompts: a build must not hang on a password question. (Proxies: git reads *_proxy itself.)
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}


class GitError(UserError):
    """A git command failed; the message is git's last line plus what to do."""


class SourceUnavailable(UserError):
    """A source or commit is not in the cache and may not (or could not) be fetched.

    ``detail`` is the message without its subject, for a list that already names the source.
    """

    def __init__(self, subject: str, detail: str) -> None:
        self.detail = detail
        super().__init__(f"{subject} {detail}")


def is_local(url: str) -> bool:
    """A path or file:// URL: reading it is not a network operation."""
    parts = urlsplit(url)
    return parts.scheme in ("", "file") and not re.match(r"^[\w.-]+@[\w.-]+:", url)


def _run_git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, env={**os.environ, **_GIT_ENV}, check=False)


def _git(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    """Run git; its stdout, or ``""`` when it failed and ``check`` is off."""
    proc = _run_git(*args, cwd=cwd)
    if proc.returncode != 0:
        if not check:
            return ""
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        cmd = next((a for a in args if not a.startswith("-") and "=" not in a), "")
        raise GitError(f"git {cmd} failed: {lines[-1] if lines else f'exit code {proc.returncode}'}")
    return proc.stdout.decode(errors="replace").strip()


@dataclass(frozen=True)
class Sources:
    """Where git sources come from and where they are cached.

    ``cache``: the bare mirrors (``<cache>/<name>.git``). ``override_dir``: ``--sources DIR``.
    ``mapping``: name -> URL or path (a user config's ``sources:``); it wins over ``override_dir``.
    """

    cache: Path = SOURCES_DIR
    override_dir: Path | None = None
    mapping: Mapping[str, str] = field(default_factory=dict)
    ca_cert: Path | None = None

    def mirror(self, name: str) -> Path:
        return self.cache / f"{name}.git"

    def upstream(self, name: str, url: str) -> str:
        """The URL or path to fetch ``name`` from: the mapping, then ``--sources DIR``, then upstream."""
        for key in _aliases(name):
            if key in self.mapping:
                return self.mapping[key]
        if self.override_dir is not None:
            for key in _aliases(name):
                for candidate in (self.override_dir / key, self.override_dir / f"{key}.git"):
                    if candidate.is_dir():
                        return str(candidate.resolve())
        return url

    def sync(self, name: str, url: str, *, offline: bool = False) -> Path:
        """Clone or update the bare mirror of ``name`` (branches and tags) and return its path.

        Offline, only a local upstream is read; otherwise the cached mirror is used as it is.
        """
        origin = self.upstream(name, url)
        mirror = self.mirror(name)
        if offline and not is_local(origin):
            if not _is_repo(mirror):
                raise _unavailable(name, url, mirror, self.override_dir, "offline")
            return mirror
        if not _is_repo(mirror):
            tmp = mirror.with_name(mirror.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            mirror.parent.mkdir(parents=True, exist_ok=True)
            _git("init", "--quiet", "--bare", str(tmp))
            try:
                _fetch(tmp, origin, _REFSPECS, ca_cert=self.ca_cert)
                tmp.rename(mirror)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            _fetch(mirror, origin, _REFSPECS, ca_cert=self.ca_cert)
        return mirror

    def resolve(
        self,
        name: str,
        url: str,
        ref: str,
        *,
        locked: str | None = None,
        update: bool = False,
        offline: bool = False,
    ) -> tuple[Path, str]:
        """The mirror and the full commit ``ref`` stands for.

        The ``locked`` commit wins unless ``update``: it is only fetched if the cache lacks it.
        Otherwise the mirror is refreshed (unless offline) and ``ref`` resolved as a branch, a
        tag, or a unique (short) commit id.
        """
        mirror = self.mirror(name)
        origin = self.upstream(name, url)
        network_ok = not offline or is_local(origin)
        if locked and not update:
            if not (_is_repo(mirror) and has_commit(mirror, locked)) and network_ok:
                mirror = self.sync(name, url, offline=offline)
                if not has_commit(mirror, locked):
                    _fetch(mirror, origin, (locked,), check=False, ca_cert=self.ca_cert)
            if not (_is_repo(mirror) and has_commit(mirror, locked)):
                why = "" if network_ok else "offline"
                raise _unavailable(name, url, mirror, self.override_dir, why, locked, origin=origin)
            _keep(mirror, locked)
            return mirror, locked
        mirror = self.sync(name, url, offline=offline)
        commit = resolve_ref(mirror, ref)
        if commit is None and _FULL.match(ref) and network_ok:
            _fetch(mirror, origin, (ref,), check=False, ca_cert=self.ca_cert)  # a commit no branch or tag reaches
            commit = resolve_ref(mirror, ref)
        if commit is None:
            cached = "" if network_ok else f" as cached in {mirror} (offline)"
            raise SourceUnavailable(
                f"git source {name}:", f"ref '{ref}' is not a branch, a tag or a unique commit of {origin}{cached}"
            )
        _keep(mirror, commit)
        return mirror, commit


def _aliases(name: str) -> list[str]:
    """``nvidia-apex`` is ``nvidia_apex`` in matrix.yaml: accept both spellings."""
    return list(dict.fromkeys([name, name.replace("-", "_"), name.replace("_", "-")]))


def _is_repo(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


def _fetch(mirror: Path, origin: str, refspecs: Sequence[str], check: bool = True, ca_cert: Path | None = None) -> None:
    ca = ("-c", f"http.sslCAInfo={ca_cert}") if ca_cert else ()
    # --update-shallow: a shallow clone (`git clone --depth 1`, what an air-gapped user often carries)
    # is a valid source; without it git rejects its refs ("shallow roots are not allowed to be updated").
    try:
        _git(*ca, "fetch", "--quiet", "--force", "--tags", "--update-shallow", "--", origin, *refspecs, cwd=mirror,
             check=check)  # fmt: skip
    except GitError as exc:
        raise GitError(f"{exc}; fetching {origin} into {mirror}") from None


def has_commit(mirror: Path, commit: str) -> bool:
    return _run_git("cat-file", "-e", f"{commit}^{{commit}}", cwd=mirror).returncode == 0


def resolve_ref(mirror: Path, ref: str) -> str | None:
    """A branch, then a tag, then a (short) commit id, as a full commit; ``None`` if unknown or ambiguous."""
    candidates = [f"refs/heads/{ref}", f"refs/tags/{ref}"]
    if _HEX.match(ref):
        candidates.append(ref)
    for candidate in candidates:
        out = _git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{candidate}^{{commit}}", cwd=mirror,
                   check=False)  # fmt: skip
        if _FULL.match(out):
            return out
    return None


def _keep(mirror: Path, commit: str) -> None:
    """Pin ``commit`` with a ref of its own, so gc keeps it after its branch moved on."""
    _git("update-ref", f"{_KEEP}{commit}", commit, cwd=mirror)


def export(mirror: Path, commit: str, dest: Path) -> Path:
    """Write ``commit``'s tree into ``dest`` (replaced atomically): plain files, no ``.git``.

    Files marked ``export-ignore`` in the source's own ``.gitattributes`` are left out, as
    ``git archive`` does; submodules are not included.
    """
    tmp = dest.with_name(dest.name + ".export-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        archive = subprocess.Popen(
            ["git", "archive", "--format=tar", commit], cwd=mirror, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert archive.stdout is not None
        tar = subprocess.run(
            ["tar", "-x", "--no-same-owner", "-C", str(tmp)], stdin=archive.stdout, capture_output=True, check=False
        )
        archive.stdout.close()
        err = archive.stderr.read().decode(errors="replace").strip() if archive.stderr else ""
        if archive.wait() != 0 or tar.returncode != 0:
            why = err or tar.stderr.decode(errors="replace").strip() or "unknown error"
            raise GitError(f"cannot export {commit} from {mirror}: {why.splitlines()[-1]}")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def is_shallow(repo: str) -> bool:
    """A local repository made with ``--depth``: it holds only some commits."""
    return is_local(repo) and _git("rev-parse", "--is-shallow-repository", cwd=Path(repo), check=False) == "true"


def _unavailable(
    name: str,
    url: str,
    mirror: Path,
    override_dir: Path | None,
    why: str,
    commit: str | None = None,
    origin: str | None = None,
) -> SourceUnavailable:
    subject = f"commit {commit} of git source {name}" if commit else f"git source {name}"
    if commit and origin and is_shallow(origin):
        return SourceUnavailable(
            subject,
            f"is not in {origin}, a shallow clone: add it there with "
            f"`git -C {origin} fetch --depth 1 origin {commit}`, or point --sources at a full clone",
        )
    where = f" ({why})" if why else ""
    alt = f"put a repository at {override_dir}/{name}" if override_dir else f"pass --sources DIR holding DIR/{name}"
    return SourceUnavailable(
        subject, f"is not in {mirror}{where}: mirror {url} into {mirror} (git clone --mirror), or {alt}"
    )
