"""The OS packages of a build, collected into a local folder so that no build step needs a mirror.

``invoke fetch`` starts a throw-away container of the target's OS base image and lets its own
package manager work out what each install step of the layers would fetch *there* (the image
already has some packages; upgrades it would pull are included), per step, then download it. The
result is ``packages/os/<os>-<arch>/``, which the build bind-mounts (never copied into a layer) as
the only repository of those steps.

apt: the folder is a partial mirror: for each archive the image's sources name, the ``InRelease``
and ``Packages.xz`` exactly as the mirror signed and served them, and the collected ``.deb`` files
at their pool paths. The build's apt therefore checks the archive's signature with the image's own
keyring, the index against the signed ``InRelease`` and every ``.deb`` against the index, as it
would online; no ``[trusted=yes]``, whose unsigned index anyone could rewrite together with a
``.deb``. (``Check-Valid-Until`` is off for the folder: it is a snapshot, and a security archive's
``Valid-Until`` is a week.) dnf: the collected ``.rpm`` files with ``createrepo_c`` metadata and
``gpgcheck=1`` against the keys the image's repositories name (each RPM carries its signature).

``manifest.json`` beside the packages records what was asked (the package list of every step),
from which base image (its ID), and every file with its sha256 (for a ``.deb``, Debian's published
one from the signed index); builds verify the folder against it before Docker starts. It stays
beside the packages rather than in a committed lock: mirrors keep only the newest version of a
package, so a locked version would soon be impossible to fetch again.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from . import __version__
from .baseimage import AptSource, read_host_sources, render_deb822, strip_credentials
from .errors import UserError
from .lock import HashCache

KIND = "os"
CONTEXT_DIR = "os-packages"  # in a layer's build context
MOUNT = "/mnt/os-packages"  # where the install steps see it
MANIFEST = "manifest.json"
SCHEMA = 1
APT_SOURCES = "sources.list.d/os-packages.sources"
DNF_REPO = "yum.repos.d/os-packages.repo"
_NAME_RE = re.compile(r"^[A-Za-z0-9/][A-Za-z0-9+._/-]*$")  # a name, or what dnf resolves: /usr/sbin/useradd
_URI_LINE = re.compile(r"^'([^']+)' (\S+) (\d+)")
_COMPRESSED = re.compile(r"\.(xz|gz|lz4|zst|bz2|lzma)$")


def folder_name(os_name: str, arch: str) -> str:
    """``debian-bookworm-x86_64``: one folder per OS and architecture, shared by every row."""
    return f"{os_name}-{arch}"


def step_key(packages: Iterable[str]) -> str:
    """A step by what it installs: the order of the names does not matter to apt or dnf."""
    return " ".join(sorted(set(packages)))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- the manifest


@dataclass
class Manifest:
    """What a package folder holds and what it was collected for (``manifest.json``)."""

    os: str
    arch: str
    family: str
    base_image: str
    base_image_id: str | None
    mirror: str | None
    steps: dict[str, list[str]]  # step key -> the package files it installs (paths in the folder)
    packages: dict[str, dict[str, Any]]  # path -> sha256, size (+ package, version, architecture)
    index: dict[str, dict[str, Any]]  # path -> sha256, size: signed indexes, repository metadata, sources

    @classmethod
    def load(cls, folder: Path) -> Manifest | None:
        """The folder's manifest; ``None`` when there is none. A broken one is a :class:`UserError`."""
        path = folder / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: not readable JSON ({exc}); delete {folder} and run invoke fetch again") from None
        try:
            if data.get("schema") != SCHEMA:
                raise KeyError("schema")
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError, AttributeError):
            raise UserError(
                f"{path}: not a package folder manifest; delete {folder} and run invoke fetch again"
            ) from None

    def to_json(self) -> str:
        data = {"schema": SCHEMA, "generated_by": f"ascend-llm-stack {__version__} (invoke fetch)"}
        data.update({k: getattr(self, k) for k in self.__dataclass_fields__})
        data["steps"] = {k: sorted(v) for k, v in sorted(self.steps.items())}
        data["packages"] = dict(sorted(self.packages.items()))
        data["index"] = dict(sorted(self.index.items()))
        return json.dumps(data, indent=1) + "\n"

    def files(self) -> dict[str, dict[str, Any]]:
        return {**self.index, **self.packages}

    def uncovered(self, steps: Iterable[Sequence[str]]) -> list[str]:
        """The steps this folder was not collected for."""
        return [key for key in (step_key(s) for s in steps) if key not in self.steps]

    def digest(self, steps: Iterable[Sequence[str]]) -> str:
        """What a layer's content hash takes from the folder: its steps' packages and the indexes."""
        keys = sorted(step_key(s) for s in steps)
        used = sorted({p for k in keys for p in self.steps.get(k, [])})
        lines = [*keys, *(f"{p} {self.packages[p]['sha256']}" for p in used)]
        lines += [f"{p} {e['sha256']}" for p, e in sorted(self.index.items())]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def count(self, steps: Iterable[Sequence[str]] | None = None) -> tuple[int, int]:
        """(number of packages, bytes) of the given steps, or of the whole folder."""
        paths = set(self.packages) if steps is None else {p for s in steps for p in self.steps.get(step_key(s), [])}
        return len(paths), sum(int(self.packages[p]["size"]) for p in paths)


def check_files(folder: Path, manifest: Manifest, hashes: HashCache, *, rehash: bool, advice: str) -> list[str]:
    """Every file the manifest lists has its sha256; returns the missing ones.

    A file with another hash raises :class:`ChecksumMismatch` (one line: the file, both hashes).
    """
    from .download import ChecksumMismatch

    missing = []
    source = f"{folder / MANIFEST}" + (", from the archive's signed index" if manifest.family == "apt" else "")
    for rel, entry in sorted(manifest.files().items()):
        path = folder / rel
        if not path.is_file():
            missing.append(rel)
            continue
        actual = hashes.sha256(path, rehash=rehash)
        if actual != entry["sha256"]:
            raise ChecksumMismatch(str(path), entry["sha256"], actual, source, advice)
    return missing


def image_id(ref: str) -> str | None:
    """The local image ID of ``ref``; ``None`` when it is not here or no engine answers."""
    from .container import inspect_image

    try:
        info = inspect_image(ref)
    except UserError:
        return None
    return str(info["Id"]) if info else None


# --------------------------------------------------------------------------- collection


@dataclass(frozen=True)
class Request:
    """What to collect: the install steps of the layers, for one OS base image."""

    os: str
    arch: str
    family: str
    image: str
    platform: str
    steps: tuple[tuple[str, ...], ...]
    mirror: str | None = None
    ca_cert: Path | None = None

    def __post_init__(self) -> None:
        for name in (n for s in self.steps for n in s):
            if not _NAME_RE.match(name):
                raise UserError(f"'{name}' is not an OS package name")


# The scripts run as root in the throw-away collection container, with the folder's staging dir
# at /out (steps.txt: one install step per line) and the CA bundle, if any, at /run/ca.crt.
APT_SCRIPT = r"""set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# Plain lists for the work (docker images of Ubuntu keep them compressed, which costs ~10 s an apt call).
cat > /tmp/plain.conf <<'CONF'
Acquire::GzipIndexes "false";
CONF
# For the folder: the indexes as the mirror signed and served them (.xz where it has them).
cat > /tmp/keep-xz.conf <<'CONF'
#clear Acquire::CompressionTypes::Order;
Acquire::CompressionTypes::Order { "xz"; "gz"; };
Acquire::GzipIndexes "true";
Acquire::PDiffs "false";
Acquire::IndexTargets::deb::Packages::KeepCompressedAs "xz";
CONF
opts=(-q -o Acquire::Languages=none -o APT::Install-Recommends=false)
if [ -s /run/ca.crt ]; then opts+=(-o Acquire::https::CAInfo=/run/ca.crt); fi
mkdir -p /out/etc-apt /out/lists/partial /out/lists-used /out/archives/partial /tmp/none/partial
if [ -n "${MIRROR:-}" ]; then
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    parts=$(. /etc/os-release && [ "$ID" = ubuntu ] && echo "main universe" || echo main)
    mkdir -p /out/etc-apt/sources.list.d
    echo "deb ${MIRROR} ${codename} ${parts}" > /out/etc-apt/sources.list
    opts+=(-o Dir::Etc::SourceList=/out/etc-apt/sources.list -o Dir::Etc::SourceParts=/out/etc-apt/sources.list.d)
else
    if [ -e /etc/apt/sources.list ]; then cp /etc/apt/sources.list /out/etc-apt/; fi
    if [ -d /etc/apt/sources.list.d ]; then cp -r /etc/apt/sources.list.d /out/etc-apt/; fi
fi
apt-get -c /tmp/plain.conf "${opts[@]}" update
i=0
while IFS= read -r packages; do
    # What `apt-get install` would fetch in this image (nothing is cached in /tmp/none), then fetch it.
    # shellcheck disable=SC2086
    apt-get -c /tmp/plain.conf "${opts[@]}" -qq install -y --print-uris -o Dir::Cache::Archives=/tmp/none/ \
        $packages > "/out/step-$i.uris"
    # shellcheck disable=SC2086
    apt-get -c /tmp/plain.conf "${opts[@]}" install -y --download-only -o Dir::Cache::Archives=/out/archives/ $packages
    i=$((i + 1))
done < /out/steps.txt
cp /var/lib/apt/lists/*Release* /out/lists-used/
# The indexes once more, for the folder; their InRelease files must be those apt used above, else
# the mirror changed meanwhile.
apt-get -c /tmp/keep-xz.conf "${opts[@]}" -o Dir::State::Lists=/out/lists update
apt-get -c /tmp/keep-xz.conf "${opts[@]}" -o Dir::State::Lists=/out/lists indextargets \
    --format '$(REPO_URI)	$(RELEASE)	$(METAKEY)	$(FILENAME)	$(IDENTIFIER)' > /out/targets.tsv
chown -R "${HOST_UID:-0}:${HOST_GID:-0}" /out
"""

DNF_SCRIPT = r"""set -euo pipefail
opts=(-y --setopt=install_weak_deps=False)
if [ -s /run/ca.crt ]; then opts+=(--setopt=sslcacert=/run/ca.crt); fi
mkdir -p /out/rpms /out/rpm-gpg
dnf "${opts[@]}" makecache
i=0
while IFS= read -r packages; do
    rm -rf /tmp/dl && mkdir -p /tmp/dl
    # What `dnf install` would fetch in this image.
    # shellcheck disable=SC2086
    dnf "${opts[@]}" install --downloadonly --downloaddir=/tmp/dl $packages
    find /tmp/dl -maxdepth 1 -name '*.rpm' -printf '%f\n' > "/out/step-$i.files"
    find /tmp/dl -maxdepth 1 -name '*.rpm' -exec cp -n {} /out/rpms/ \;
    i=$((i + 1))
done < /out/steps.txt
# The repository metadata; createrepo_c goes into this throw-away container only.
dnf "${opts[@]}" install createrepo_c
createrepo_c --quiet /out/rpms
# The keys the image's repositories check signatures with; those named by URL are carried along.
basearch=$(uname -m)
: > /out/gpgkeys.txt
for key in $(sed -n 's/^gpgkey[[:space:]]*=[[:space:]]*//p' /etc/yum.repos.d/*.repo | tr ', ' '\n\n' | sort -u); do
    key=${key//\$basearch/$basearch}
    case "$key" in
        file://*) echo "$key" >> /out/gpgkeys.txt ;;
        http://*|https://*)
            name=$(basename "$key")
            if [ -s /run/ca.crt ]; then curl -fsSL --cacert /run/ca.crt -o "/out/rpm-gpg/$name" "$key"
            else curl -fsSL -o "/out/rpm-gpg/$name" "$key"; fi
            echo "file://MOUNT/rpm-gpg/$name" >> /out/gpgkeys.txt ;;
    esac
done
chown -R "${HOST_UID:-0}:${HOST_GID:-0}" /out
""".replace("MOUNT", MOUNT)

PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


def container_argv(req: Request, staging: Path, docker: str = "docker") -> list[str]:
    """``docker run`` of the collection script: host network (as builds), the CA as a read-only mount."""
    argv = [docker, "run", "--rm", "--network", "host", "--platform", req.platform, "-v", f"{staging}:/out"]
    if req.ca_cert:
        argv += ["-v", f"{req.ca_cert.resolve()}:/run/ca.crt:ro"]
    env = {"HOST_UID": str(os.getuid()), "HOST_GID": str(os.getgid())}
    if req.mirror:
        env["MIRROR"] = req.mirror
    for name in PROXY_VARS:  # what the host's own downloads use (invoke fetch's CANN, wheels)
        if os.environ.get(name):
            env[name] = os.environ[name]
    for name, value in env.items():
        argv += ["-e", f"{name}={value}"]
    return [*argv, "--entrypoint", "bash", req.image, "/out/collect.sh"]


def _run_container(argv: list[str]) -> None:
    """Run the collection container, its output streamed to stderr; a failure is one line."""
    tail: deque[str] = deque(maxlen=8)
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    except FileNotFoundError:
        raise UserError(f"'{argv[0]}' not found: install Docker (scripts/docker-engine.sh)") from None
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stderr.write(f"[os-packages] {line}")
        if line.strip():
            tail.append(line.strip())
    if proc.wait() != 0:
        last = " | ".join(list(tail)[-3:])
        raise UserError(f"collecting the OS packages failed (exit {proc.returncode}): {last}")


def collect(
    req: Request,
    dest: Path,
    *,
    reuse: Manifest | None = None,
    report: Callable[[str], None] = print,
    docker: str | None = None,
) -> Manifest:
    """Collect ``req`` into ``dest`` (replaced only once the new folder is complete).

    ``reuse``: the verified manifest of what is in ``dest`` now; its package files are handed to
    the package manager, which then downloads only what it does not have yet.
    """
    from .container import docker_cli

    docker = docker or docker_cli()
    if req.image.startswith("ascend-llm-stack/os:") and image_id(req.image) is None:
        raise UserError(
            f"base image {req.image} is not on this host: run 'invoke base-image --os {req.os} --arch {req.arch}'"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(f".{dest.name}.collect")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        (staging / "steps.txt").write_text("".join(" ".join(s) + "\n" for s in req.steps))
        (staging / "collect.sh").write_text(APT_SCRIPT if req.family == "apt" else DNF_SCRIPT)
        if reuse is not None and req.family == "apt":
            (staging / "archives").mkdir()
            for rel, entry in reuse.packages.items():
                if (dest / rel).is_file():
                    _link(dest / rel, staging / "archives" / archive_name(entry))
        report(f"collecting OS packages of {len(req.steps)} install step(s) in a container of {req.image}")
        _run_container(container_argv(req, staging, docker))
        tree = staging / "tree"
        assemble = _assemble_apt if req.family == "apt" else _assemble_dnf
        manifest = assemble(req, staging, tree)
        manifest.base_image_id = image_id(req.image)
        (tree / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        _swap(tree, dest)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _swap(tree: Path, dest: Path) -> None:
    """Put the new folder in place of the old one; the old one is removed only after the rename."""
    for path in [tree, *tree.rglob("*")]:  # the package manager's sandbox user must read it
        path.chmod(0o755 if path.is_dir() else 0o644)
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tree.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def archive_name(entry: dict[str, Any]) -> str:
    """The name apt gives a downloaded ``.deb`` in its archive cache (an epoch's ``:`` as ``%3a``)."""
    return f"{entry['package']}_{str(entry['version']).replace(':', '%3a')}_{entry['architecture']}.deb"


def archive_dir(repo_uri: str) -> str:
    """The folder of one archive, named after its URI as apt names its lists: ``deb.debian.org_debian``."""
    parts = urlsplit(strip_credentials(repo_uri))
    name = f"{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}".strip("/")
    return re.sub(r"[^A-Za-z0-9.-]+", "_", name) or "archive"


# --------------------------------------------------------------------------- apt


@dataclass(frozen=True)
class IndexTarget:
    """One line of ``apt-get indextargets``: a Packages index of one suite and component."""

    repo: str  # http://deb.debian.org/debian/
    suite: str  # bookworm
    metakey: str  # main/binary-amd64/Packages
    filename: str  # /var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.xz

    @property
    def component(self) -> str:
        return self.metakey.split("/", 1)[0]

    def release_prefix(self) -> str:
        """apt's lists name of the suite's Release files, without ``InRelease``/``Release``."""
        base = _COMPRESSED.sub("", Path(self.filename).name)
        tail = self.metakey.replace("/", "_")
        if not base.endswith("_" + tail):
            raise UserError(f"unexpected apt lists file {self.filename} for {self.metakey}")
        return base[: -len(tail)]


def parse_targets(text: str) -> list[IndexTarget]:
    out = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) == 5 and fields[4] == "Packages":
            out.append(IndexTarget(*fields[:4]))
    return out


def parse_print_uris(text: str) -> list[tuple[str, str, int]]:
    """``apt-get --print-uris`` lines: (URI, archive file name, size)."""
    out = []
    for line in text.splitlines():
        m = _URI_LINE.match(line)
        if m:
            out.append((m.group(1), m.group(2), int(m.group(3))))
    return out


def release_hashes(text: str) -> dict[str, tuple[str, int]]:
    """The ``SHA256:`` section of a (In)Release file: path -> (sha256, size)."""
    out: dict[str, tuple[str, int]] = {}
    section = False
    for line in text.splitlines():
        if not line.startswith(" "):
            section = line.strip() == "SHA256:"
            continue
        if section:
            fields = line.split()
            if len(fields) == 3:
                out[fields[2]] = (fields[0], int(fields[1]))
    return out


def read_index(data: bytes, wanted: set[str]) -> dict[str, dict[str, str]]:
    """The stanzas of a Packages index whose ``Filename`` is in ``wanted``: Filename -> fields."""
    found: dict[str, dict[str, str]] = {}
    stanza: dict[str, str] = {}
    for raw in [*data.decode("utf-8", "replace").split("\n"), ""]:
        if not raw:
            if stanza.get("Filename") in wanted:
                found[stanza["Filename"]] = stanza
            stanza = {}
        elif raw[0] not in " \t":
            key, _, value = raw.partition(":")
            if key in ("Package", "Version", "Architecture", "Filename", "Size", "SHA256"):
                stanza[key] = value.strip()
    return found


def _decompress(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if _COMPRESSED.search(path.name):
        raise UserError(f"apt kept {path.name} in a compression Python cannot read")
    return data


def folder_sources(sources: Sequence[AptSource], targets: Sequence[IndexTarget]) -> list[AptSource]:
    """The image's apt sources, each archive pointed at its copy in the mounted folder."""
    by_repo: dict[str, dict[str, list[str]]] = {}
    for t in targets:
        comps = by_repo.setdefault(strip_credentials(t.repo).rstrip("/"), {}).setdefault(t.suite, [])
        if t.component not in comps:
            comps.append(t.component)
    out = []
    for s in sources:
        uri = strip_credentials(s.uri).rstrip("/")
        if "deb" not in s.types or uri not in by_repo:
            continue
        suites = [x for x in s.suites if x in by_repo[uri]]
        comps = [c for x in suites for c in by_repo[uri][x]]
        if suites:
            out.append(
                AptSource(
                    uri=f"file:{MOUNT}/{archive_dir(uri)}",
                    suites=tuple(suites),
                    components=tuple(dict.fromkeys(comps)),
                    signed_by=s.signed_by,
                )
            )
    if not out:
        raise UserError("the collection container's apt sources name none of the archives apt read")
    return out


def _assemble_apt(req: Request, staging: Path, tree: Path) -> Manifest:
    """Lay the collected indexes and ``.deb`` files out as a partial mirror; check each against the index."""
    targets = parse_targets((staging / "targets.tsv").read_text())
    if not targets:
        raise UserError(f"apt in {req.image} read no Packages index: check its sources (or --apt-mirror)")
    repos = sorted({t.repo for t in targets}, key=len, reverse=True)
    index: dict[str, dict[str, Any]] = {}
    # 1. per suite: the signed Release file, and the Packages index as it signs it
    stanzas: dict[str, dict[str, str]] = {}  # folder path of a .deb -> its index stanza
    uris = {i: parse_print_uris((staging / f"step-{i}.uris").read_text()) for i in range(len(req.steps))}
    wanted: dict[str, set[str]] = {}
    for entries in uris.values():
        for uri, _, _ in entries:
            repo = next((r for r in repos if unquote(uri).startswith(r)), None)
            if repo is None:
                raise UserError(f"{uri} is in none of the archives apt read")
            wanted.setdefault(repo, set()).add(unquote(uri)[len(repo) :])
    lists = staging / "lists"
    for t in targets:
        prefix = t.release_prefix()
        dists = Path(archive_dir(t.repo)) / "dists" / t.suite
        release_files = ["InRelease"] if (lists / f"{prefix}InRelease").is_file() else ["Release", "Release.gpg"]
        for name in release_files:
            src = lists / f"{prefix}{name}"
            if not src.is_file():
                raise UserError(f"apt in {req.image} left no {name} for {t.repo} {t.suite}")
            used = staging / "lists-used" / src.name
            if not used.is_file() or used.read_bytes() != src.read_bytes():
                raise UserError(f"{t.repo} {t.suite} changed while the packages were collected: run invoke fetch again")
            _put(src, tree / dists / name, index, dists / name)
        signed = release_hashes((lists / f"{prefix}{release_files[0]}").read_text(errors="replace"))
        src = lists / Path(t.filename).name
        raw = src.read_bytes()
        packed = f"{t.metakey}{src.suffix}" if _COMPRESSED.search(src.name) else t.metakey
        if signed.get(packed, ("",))[0] == hashlib.sha256(raw).hexdigest():
            _put(src, tree / dists / packed, index, dists / packed)
        else:  # apt re-packed it: keep it uncompressed if that is what the Release file signs
            plain = _decompress(src)
            if signed.get(t.metakey, ("",))[0] != hashlib.sha256(plain).hexdigest():
                raise UserError(f"{t.repo} {t.suite} {t.metakey}: the index apt kept is not the one its Release signs")
            (tree / dists / t.metakey).parent.mkdir(parents=True, exist_ok=True)
            (tree / dists / t.metakey).write_bytes(plain)
            index[str(dists / t.metakey)] = {"sha256": hashlib.sha256(plain).hexdigest(), "size": len(plain)}
        for fname, stanza in read_index(_decompress(src), wanted.get(t.repo, set())).items():
            stanzas[str(Path(archive_dir(t.repo)) / fname)] = stanza
    # 2. the packages, at their pool paths, each checked against its index stanza
    packages: dict[str, dict[str, Any]] = {}
    steps: dict[str, list[str]] = {}
    for i, step in enumerate(req.steps):
        paths = []
        for uri, archive_file, size in uris[i]:
            repo = next(r for r in repos if unquote(uri).startswith(r))
            rel = str(Path(archive_dir(repo)) / unquote(uri)[len(repo) :])
            stanza = stanzas.get(rel)
            if stanza is None:
                raise UserError(f"{uri}: not in the Packages index apt read")
            if rel not in packages:
                src = staging / "archives" / archive_file
                if not src.is_file():
                    raise UserError(f"apt did not download {archive_file} ({uri})")
                actual = _sha256(src)
                if actual != stanza.get("SHA256") or src.stat().st_size != size:
                    raise UserError(f"{archive_file}: sha256 {actual} is not the index's {stanza.get('SHA256')}")
                _link(src, tree / rel)
                packages[rel] = {
                    "sha256": actual, "size": size, "package": stanza["Package"],
                    "version": stanza["Version"], "architecture": stanza["Architecture"],
                }  # fmt: skip
            paths.append(rel)
        steps[step_key(step)] = paths
    # 3. the sources the install steps use: the image's, pointed at the folder
    # (with --apt-mirror, the container wrote the mirror's line there)
    text = render_deb822(folder_sources(read_host_sources(staging / "etc-apt"), targets))
    (tree / APT_SOURCES).parent.mkdir(parents=True, exist_ok=True)
    (tree / APT_SOURCES).write_text(text)
    index[APT_SOURCES] = {"sha256": hashlib.sha256(text.encode()).hexdigest(), "size": len(text.encode())}
    return Manifest(req.os, req.arch, "apt", req.image, None, req.mirror, steps, packages, index)


def _put(src: Path, dest: Path, index: dict[str, dict[str, Any]], rel: Path) -> None:
    _link(src, dest)
    index[str(rel)] = {"sha256": _sha256(dest), "size": dest.stat().st_size}


# --------------------------------------------------------------------------- dnf


def dnf_repo(gpgkeys: Sequence[str]) -> str:
    """The one repository of the install steps: the folder, signatures checked with the image's keys."""
    lines = [
        "[os-packages]",
        "name=OS packages collected by invoke fetch",
        f"baseurl=file://{MOUNT}/rpms",
        "enabled=1",
        f"gpgcheck={1 if gpgkeys else 0}",
    ]
    if gpgkeys:
        lines.append("gpgkey=" + " ".join(gpgkeys))
    return "\n".join(lines) + "\n"


def _assemble_dnf(req: Request, staging: Path, tree: Path) -> Manifest:
    """The collected ``.rpm`` files with their repodata, as the folder's one repository.

    Not exercised here (openEuler images cannot be pulled on this project's machines): written to
    the interface of ``dnf install --downloadonly`` and ``createrepo_c``.
    """
    packages: dict[str, dict[str, Any]] = {}
    index: dict[str, dict[str, Any]] = {}
    steps: dict[str, list[str]] = {}
    for i, step in enumerate(req.steps):
        names = (staging / f"step-{i}.files").read_text().split()
        steps[step_key(step)] = [f"rpms/{n}" for n in names]
    for path in sorted((staging / "rpms").rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(staging)
        _link(path, tree / rel)
        entry = {"sha256": _sha256(path), "size": path.stat().st_size}
        (packages if path.suffix == ".rpm" and rel.parent.name == "rpms" else index)[str(rel)] = entry
    for path in sorted((staging / "rpm-gpg").glob("*")):
        _put(path, tree / "rpm-gpg" / path.name, index, Path("rpm-gpg") / path.name)
    text = dnf_repo((staging / "gpgkeys.txt").read_text().split())
    (tree / DNF_REPO).parent.mkdir(parents=True, exist_ok=True)
    (tree / DNF_REPO).write_text(text)
    index[DNF_REPO] = {"sha256": hashlib.sha256(text.encode()).hexdigest(), "size": len(text.encode())}
    return Manifest(req.os, req.arch, "dnf", req.image, None, req.mirror, steps, packages, index)


# --------------------------------------------------------------------------- placing


def place(folder: Path, manifest: Manifest, context: Path) -> Path:
    """The folder as the layer's build context has it: hard links of every listed file."""
    dest = context / CONTEXT_DIR
    for rel in [MANIFEST, *manifest.files()]:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        _link(folder / rel, target)
    return dest
