"""Build an OS base image offline: ``debootstrap --variant=minbase`` from a Debian mirror, then
``tar | docker import``.

Why: no container registry is reachable from air-gapped clusters (nor from this project's CI), so
``FROM ubuntu:22.04`` cannot be pulled there. A Debian mirror usually is reachable (the one the
host's apt already uses), and a base image made from it is as good as a pulled one. Only Debian
suites can be bootstrapped from a Debian mirror; other OS names raise :class:`BaseImageError`.

The pure parts (mirror detection, argument checks, command lines, apt sources text) are separate
functions so they can be tested without root, network or a Docker engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

#: Debian suites this module knows how to bootstrap (debian-bookworm is the one CI exercises).
DEBIAN_SUITES: dict[str, str] = {"bullseye": "11", "bookworm": "12", "trixie": "13"}
#: Architectures as the project names them -> Debian's names.
DEB_ARCH: dict[str, str] = {"x86_64": "amd64", "aarch64": "arm64"}
_ARCH_ALIASES: dict[str, str] = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "x86_64": "x86_64",
    "aarch64": "aarch64",
}
DEFAULT_OS = "debian-bookworm"
IMAGE_REPO = "ascend-llm-stack/os"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LABEL_PREFIX = "ascend-llm-stack.base"
_MIRROR_SCHEMES = ("http", "https", "ftp", "file")
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space as \040


class BaseImageError(Exception):
    """A base image cannot be built as asked; ``str(err)`` is one line saying why and what to do."""


# --------------------------------------------------------------------------- arguments


def supported_os_names() -> list[str]:
    """The OS names :func:`build_base_image` accepts, e.g. ``debian-bookworm``."""
    return [f"debian-{suite}" for suite in DEBIAN_SUITES]


def parse_os_name(os_name: str) -> str:
    """Return the suite of ``debian-<suite>``: nothing else can come from a Debian mirror."""
    family, _, suite = os_name.partition("-")
    if family == "debian" and suite in DEBIAN_SUITES:
        return suite
    raise BaseImageError(
        f"cannot build a base image for '{os_name}': only Debian suites can be bootstrapped from a "
        f"Debian mirror; supported: {', '.join(supported_os_names())} "
        "(other OSes must come from a registry)"
    )


def normalize_arch(arch: str) -> str:
    """Map ``amd64``/``arm64`` to the project's ``x86_64``/``aarch64``; reject anything else."""
    try:
        return _ARCH_ALIASES[arch]
    except KeyError:
        raise BaseImageError(f"unsupported architecture '{arch}': use one of {', '.join(DEB_ARCH)}") from None


def host_arch() -> str:
    """This machine's architecture in the project's naming (``x86_64`` or ``aarch64``)."""
    return normalize_arch(platform.machine())


def default_tag(os_name: str, arch: str) -> str:
    """``ascend-llm-stack/os:debian-bookworm-x86_64``: the name matrix.yaml's ``oses`` refers to."""
    return f"{IMAGE_REPO}:{os_name}-{arch}"


def docker_platform(arch: str) -> str:
    """The ``--platform`` value for an architecture (so arm64 images say arm64 in their config)."""
    return f"linux/{DEB_ARCH[normalize_arch(arch)]}"


def strip_credentials(url: str) -> str:
    """Drop ``user:password@`` from a URL so it can be written into an image or a label."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def check_mirror(mirror: str) -> str:
    """A mirror must be an absolute http(s)/ftp/file URL; return it without a trailing slash."""
    parts = urlsplit(mirror)
    if parts.scheme not in _MIRROR_SCHEMES or not (parts.netloc or parts.scheme == "file"):
        raise BaseImageError(
            f"invalid mirror '{mirror}': give a URL like http://deb.debian.org/debian "
            f"(schemes: {', '.join(_MIRROR_SCHEMES)})"
        )
    return mirror.rstrip("/")


# --------------------------------------------------------------------------- apt sources


@dataclass(frozen=True)
class AptSource:
    """One apt source entry: what a ``deb URI SUITE COMPONENTS`` line or a deb822 stanza says."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...] = ("main",)
    types: tuple[str, ...] = ("deb",)
    signed_by: str | None = None


def parse_one_line_sources(text: str) -> list[AptSource]:
    """Parse the classic ``sources.list`` format (``deb [opts] uri suite comp...``), in order."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        if kind not in ("deb", "deb-src"):
            continue
        rest = rest.strip()
        signed_by = None
        if rest.startswith("["):
            opts, _, rest = rest[1:].partition("]")
            for opt in opts.split():
                key, _, value = opt.partition("=")
                if key == "signed-by":
                    signed_by = value
        fields = rest.split()
        if len(fields) < 2:
            continue
        out.append(
            AptSource(
                uri=fields[0],
                suites=(fields[1],),
                components=tuple(fields[2:]),
                types=(kind,),
                signed_by=signed_by,
            )
        )
    return out


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Parse a deb822 ``.sources`` file (stanzas of ``Field: value``), skipping ``Enabled: no``."""
    out: list[AptSource] = []
    for stanza in _deb822_stanzas(text):
        if stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        types = tuple(stanza.get("types", "").split())
        suites = tuple(stanza.get("suites", "").split())
        signed_by = stanza.get("signed-by", "").strip()
        # Signed-By may hold an inline key block; only a file path is worth carrying over.
        if "\n" in signed_by or signed_by.startswith("-----"):
            signed_by = ""
        for uri in stanza.get("uris", "").split():
            if types and suites:
                out.append(
                    AptSource(
                        uri=uri,
                        suites=suites,
                        components=tuple(stanza.get("components", "").split()),
                        types=types,
                        signed_by=signed_by or None,
                    )
                )
    return out


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    fields: dict[str, str] = {}
    key: str | None = None
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if fields:
                yield fields
            fields, key = {}, None
        elif raw[0] in " \t" and key is not None:
            fields[key] += "\n" + raw.strip()
        elif ":" in raw:
            name, _, value = raw.partition(":")
            key = name.strip().lower()
            fields[key] = value.strip()
    return


def read_host_sources(apt_dir: Path = Path("/etc/apt")) -> list[AptSource]:
    """All apt sources of this host in apt's own order: ``sources.list``, then ``sources.list.d``.

    Only ``*.list`` and ``*.sources`` files count (apt ignores e.g. ``*.list.disabled``).
    """
    out: list[AptSource] = []
    main = apt_dir / "sources.list"
    if main.is_file():
        out += parse_one_line_sources(main.read_text(errors="replace"))
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if not path.is_file():
                continue
            if path.name.endswith(".list"):
                out += parse_one_line_sources(path.read_text(errors="replace"))
            elif path.name.endswith(".sources"):
                out += parse_deb822_sources(path.read_text(errors="replace"))
    return out


def _is_security(source: AptSource, suite: str) -> bool:
    return f"{suite}-security" in source.suites or source.uri.rstrip("/").endswith("-security")


def detect_mirror(suite: str = "bookworm", apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the host's apt uses for ``suite`` (e.g. ``http://deb.debian.org/debian``).

    Prefers a ``deb`` entry that lists ``suite`` itself; else one listing any known Debian suite
    (a bullseye host's mirror also serves bookworm). Security archives are skipped: they do not
    carry the base suite.
    """
    sources = [s for s in read_host_sources(apt_dir) if "deb" in s.types and urlsplit(s.uri).scheme in _MIRROR_SCHEMES]
    for source in sources:
        if suite in source.suites and not _is_security(source, suite):
            return source.uri.rstrip("/")
    for source in sources:
        if any(s in DEBIAN_SUITES for s in source.suites) and not any(s.endswith("-security") for s in source.suites):
            return source.uri.rstrip("/")
    raise BaseImageError(
        f"no Debian mirror for '{suite}' found in {apt_dir}/sources.list or "
        f"{apt_dir}/sources.list.d/*.{{list,sources}}; pass a mirror URL (--mirror)"
    )


def image_apt_sources(
    suite: str, mirror: str, host_sources: Sequence[AptSource] = (), keyring: str | None = None
) -> list[AptSource]:
    """The apt sources to write into the image: the mirror that built it, for ``suite``.

    When the host already uses that mirror, its ``suite-updates`` (etc.) and its security archive
    for ``suite`` are kept too, so ``apt-get upgrade`` in the image sees the same updates the host
    does. An explicit mirror the host does not know gets only ``suite`` (air-gapped mirrors often
    carry nothing else, and apt fails on a missing suite).
    """
    mirror = strip_credentials(mirror.rstrip("/"))
    same = [s for s in host_sources if "deb" in s.types and strip_credentials(s.uri.rstrip("/")) == mirror]
    suites: list[str] = [suite]
    components: list[str] = []
    for source in same:
        for s in source.suites:
            if (s == suite or s.startswith(suite + "-")) and s not in suites and not s.endswith("-security"):
                suites.append(s)
        components += [c for c in source.components if c not in components]
    out = [
        AptSource(
            uri=mirror,
            suites=tuple(suites),
            components=tuple(components or ["main"]),
            signed_by=keyring,
        )
    ]
    if same:
        seen: set[str] = set()
        for source in host_sources:
            uri = strip_credentials(source.uri.rstrip("/"))
            if "deb" in source.types and f"{suite}-security" in source.suites and uri not in seen:
                seen.add(uri)
                out.append(
                    AptSource(
                        uri=uri,
                        suites=(f"{suite}-security",),
                        components=source.components or ("main",),
                        signed_by=keyring,
                    )
                )
    return out


def render_deb822(sources: Iterable[AptSource]) -> str:
    """Write sources as a deb822 ``.sources`` file (what Debian 12 images ship)."""
    stanzas = []
    for s in sources:
        lines = [
            f"Types: {' '.join(s.types)}",
            f"URIs: {s.uri}",
            f"Suites: {' '.join(s.suites)}",
            f"Components: {' '.join(s.components)}",
        ]
        if s.signed_by:
            lines.append(f"Signed-By: {s.signed_by}")
        stanzas.append("\n".join(lines) + "\n")
    return "\n".join(stanzas)


# --------------------------------------------------------------------------- command lines


def debootstrap_command(
    suite: str,
    rootfs: Path,
    mirror: str,
    arch: str,
    *,
    foreign: bool = False,
    include: Sequence[str] = (),
) -> list[str]:
    """``debootstrap --variant=minbase`` for ``arch``; ``foreign`` stops before the second stage
    (which must then run emulated inside the rootfs)."""
    cmd = ["debootstrap", f"--arch={DEB_ARCH[normalize_arch(arch)]}", "--variant=minbase"]
    if include:
        cmd.append(f"--include={','.join(include)}")
    if foreign:
        cmd.append("--foreign")
    if Path(DEBIAN_KEYRING).is_file():
        cmd.append(f"--keyring={DEBIAN_KEYRING}")
    cmd += [suite, str(rootfs), mirror]
    return cmd


def second_stage_command(rootfs: Path) -> list[str]:
    """Finish a ``--foreign`` bootstrap inside the rootfs (through qemu-user-static's binfmt)."""
    return ["chroot", str(rootfs), "/debootstrap/debootstrap", "--second-stage"]


def tar_command(rootfs: Path) -> list[str]:
    """Stream the rootfs as a tar on stdout, owners as numbers (the host's names mean nothing)."""
    return ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."]


def image_changes(os_name: str, arch: str, mirror: str) -> list[str]:
    """Dockerfile instructions ``docker import --change`` applies: what a pulled image has."""
    return [
        'CMD ["bash"]',
        f"ENV PATH={IMAGE_PATH}",
        "ENV LANG=C.UTF-8",
        f"LABEL {LABEL_PREFIX}.os={os_name} {LABEL_PREFIX}.arch={arch} "
        f"{LABEL_PREFIX}.mirror={strip_credentials(mirror)}",
    ]


def import_command(
    tag: str,
    arch: str,
    changes: Sequence[str],
    *,
    docker_cli: str = "docker",
    message: str | None = None,
) -> list[str]:
    """``docker import`` from stdin; ``--platform`` makes an arm64 rootfs an arm64 image."""
    cmd = [docker_cli, "import", "--platform", docker_platform(arch)]
    for change in changes:
        cmd += ["--change", change]
    if message:
        cmd += ["--message", message]
    cmd += ["-", tag]
    return cmd


# --------------------------------------------------------------------------- rootfs handling


def mounts_under(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    """Mount points at or below ``path`` (debootstrap mounts /proc, /sys, /dev binds there)."""
    root = os.path.realpath(path)
    found = []
    try:
        with open(mountinfo) as fh:
            for line in fh:
                point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), line.split()[4])
                if point == root or point.startswith(root + "/"):
                    found.append(point)
    except OSError:
        pass
    return sorted(found, key=len, reverse=True)


def remove_rootfs(rootfs: Path) -> None:
    """Unmount whatever is left mounted in the rootfs, then delete it.

    Never deletes through a mount: a leftover bind mount of the host's /dev (or worse) must not be
    emptied by ``rm -rf``. ``--one-file-system`` is a second guard.
    """
    if not rootfs.exists():
        return
    for point in mounts_under(rootfs):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    left = mounts_under(rootfs)
    if left:
        log.error("not deleting %s: still mounted: %s", rootfs, ", ".join(left))
        return
    subprocess.run(["rm", "-rf", "--one-file-system", str(rootfs)], check=False, capture_output=True)
    if rootfs.exists():
        log.warning("could not fully delete %s", rootfs)


def tidy_rootfs(rootfs: Path, sources_text: str) -> None:
    """Make the rootfs fit for an image: sane apt sources, no apt lists/caches, no host traces."""
    apt = rootfs / "etc/apt"
    (apt / "sources.list").unlink(missing_ok=True)  # debootstrap's one-liner; replaced below
    (apt / "sources.list.d").mkdir(parents=True, exist_ok=True)
    (apt / "sources.list.d/debian.sources").write_text(sources_text)
    for pattern in (
        "var/lib/apt/lists/*",
        "var/lib/apt/lists/partial/*",
        "var/cache/apt/*.bin",
        "var/cache/apt/archives/*.deb",
        "var/cache/apt/archives/partial/*",
        "var/log/apt/*",
        "var/log/*.log",
        "var/cache/debconf/*-old",
        "var/lib/dpkg/*-old",
        "tmp/*",
        "var/tmp/*",
    ):
        for path in rootfs.glob(pattern):
            if path.name == "partial":
                continue  # apt's download dirs, owned by _apt: keep them (emptied above/below)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    # debootstrap copies the host's resolv.conf and hostname; Docker provides both at run time.
    for name in ("etc/resolv.conf", "etc/hostname", "etc/machine-id"):
        path = rootfs / name
        if path.is_file() and not path.is_symlink():
            path.write_text("")
    shutil.rmtree(rootfs / "debootstrap", ignore_errors=True)


# --------------------------------------------------------------------------- engine access


def image_exists(tag: str, docker_client: Any | None, docker_cli: str = "docker") -> bool:
    """True when the engine already has ``tag`` (asked through the SDK client, else the CLI).

    Also the first contact with the engine: when none answers, say so now rather than after a
    half-minute debootstrap whose import would then fail.
    """
    no_engine = "no Docker engine answers ({}): run scripts/docker-engine.sh"
    if docker_client is not None:
        import docker.errors

        try:
            docker_client.images.get(tag)
        except docker.errors.ImageNotFound:
            return False
        except Exception as exc:  # connection refused, API errors: nothing to build into
            raise BaseImageError(no_engine.format(type(exc).__name__)) from None
        return True
    try:
        proc = subprocess.run(
            [docker_cli, "image", "inspect", "--format", "{{.Id}}", tag],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        raise BaseImageError(f"no docker client '{docker_cli}': run scripts/docker-engine.sh") from None
    if proc.returncode == 0:
        return True
    if "no such image" in proc.stderr.lower():
        return False
    last = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
    raise BaseImageError(no_engine.format(last[0]))


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """End a child's whole process group: SIGTERM first, so debootstrap's exit traps unmount what
    it mounted in the rootfs, then SIGKILL for whatever is still writing there."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _run(cmd: Sequence[str], what: str, timeout: float | None, log_file: Path | None = None) -> None:
    """Run one step in its own process group, so that on Ctrl-C, a timeout or any error nothing of
    it (dpkg, chroot helpers) goes on writing into a rootfs that is about to be deleted."""
    log.info("%s: %s", what, shlex.join(cmd))
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except FileNotFoundError:
        raise BaseImageError(
            f"{what} failed: '{cmd[0]}' not found (run scripts/docker-engine.sh to install it)"
        ) from None
    with proc:  # closes the pipe whatever happens
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            raise BaseImageError(f"{what} did not finish within {timeout:.0f}s") from None
        except BaseException:  # KeyboardInterrupt included: the child is in another process group
            _stop_group(proc)
            raise
    if proc.returncode != 0:
        tail = output.strip().splitlines()[-5:]
        if log_file is not None and log_file.is_file():
            tail = log_file.read_text(errors="replace").strip().splitlines()[-5:]
        raise BaseImageError(f"{what} failed (exit {proc.returncode}): " + " | ".join(tail))
    log.info("%s done in %.0fs", what, time.monotonic() - started)


def _import(rootfs: Path, cmd: Sequence[str], timeout: float | None) -> str:
    """Run ``tar -C rootfs -c . | docker import ...``; return the image ID it prints."""
    log.info("import: %s | %s", shlex.join(tar_command(rootfs)), shlex.join(cmd))
    with subprocess.Popen(tar_command(rootfs), stdout=subprocess.PIPE, stderr=subprocess.PIPE) as tar:
        try:
            proc = subprocess.run(list(cmd), stdin=tar.stdout, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise BaseImageError(f"docker import failed: '{cmd[0]}' not found") from None
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            if tar.poll() is None:
                tar.kill()
            tar_err = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
            tar.wait()
    if proc.returncode != 0:
        last = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise BaseImageError(f"docker import failed (exit {proc.returncode}): {last}")
    if tar.returncode != 0:
        raise BaseImageError(f"tar of the rootfs failed (exit {tar.returncode}): {tar_err.strip()}")
    return proc.stdout.strip()


def _image_id(tag: str, docker_cli: str) -> str:
    """The image ID ``tag`` names now, or "" (no such image, no engine)."""
    try:
        proc = subprocess.run(
            [docker_cli, "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True
        )
    except FileNotFoundError:
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _image_architecture(tag: str, docker_cli: str) -> str:
    proc = subprocess.run(
        [docker_cli, "image", "inspect", "--format", "{{.Architecture}}", tag], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise BaseImageError(f"cannot inspect {tag} after import: {proc.stderr.strip()}")
    return proc.stdout.strip()


def retarget_saved_image(saved: Path, out: IO[bytes], deb_arch: str) -> str:
    """Copy a ``docker save`` archive of one image to ``out`` with its config's architecture set to
    ``deb_arch``; return the new image ID (the config's sha256). Layers are copied untouched."""
    with tarfile.open(saved) as src:
        names = src.getnames()
        if "index.json" in names and "manifest.json" not in names:
            raise BaseImageError("cannot set the architecture: the engine saved an OCI layout only")
        manifest = json.load(_member(src, "manifest.json"))
        if len(manifest) != 1:
            raise BaseImageError(f"expected one image in the saved archive, found {len(manifest)}")
        old_name = manifest[0]["Config"]
        config = json.load(_member(src, old_name))
        config["architecture"] = deb_arch
        config.pop("variant", None)
        data = json.dumps(config, separators=(",", ":")).encode()
        digest = hashlib.sha256(data).hexdigest()
        head, sep, _ = old_name.rpartition("/")
        new_name = f"{head}{sep}{digest}" + (".json" if old_name.endswith(".json") else "")
        manifest[0]["Config"] = new_name
        with tarfile.open(fileobj=out, mode="w|") as dst:
            for member in src.getmembers():
                if member.name in (old_name, "manifest.json", "index.json", "oci-layout"):
                    continue  # index.json would still name the old config: manifest.json rules
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
            for name, blob in ((new_name, data), ("manifest.json", json.dumps(manifest).encode())):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(blob), 0o644
                dst.addfile(info, io.BytesIO(blob))
    return f"sha256:{digest}"


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    handle = archive.extractfile(name)
    if handle is None:
        raise BaseImageError(f"saved image archive has no file {name}")
    return handle


def set_image_architecture(
    tag: str, deb_arch: str, docker_cli: str, scratch: Path, timeout: float | None = None
) -> str:
    """Give ``tag`` the architecture ``deb_arch`` in its config: ``docker save``, rewrite, ``docker load``.

    Why: Docker 20.10 (Debian 12's docker.io) ignores ``import --platform`` for the architecture
    (it records the engine's own), so an arm64 rootfs would be labelled amd64 and BuildKit's
    ``--platform linux/arm64`` builds would not find it locally. Engines that honour it skip this.
    """
    log.info("engine ignored --platform on import: rewriting %s's config to %s", tag, deb_arch)
    saved = scratch / "saved.tar"
    old_id = _image_id(tag, docker_cli)
    _run([docker_cli, "save", "-o", str(saved), tag], "docker save", timeout)
    fixed = scratch / "fixed.tar"
    with fixed.open("wb") as out:
        new_id = retarget_saved_image(saved, out, deb_arch)
    saved.unlink()
    _run([docker_cli, "load", "-i", str(fixed)], "docker load", timeout)
    fixed.unlink()
    if _image_architecture(tag, docker_cli) != deb_arch:
        raise BaseImageError(f"{tag} still does not say {deb_arch} after docker load")
    if old_id and old_id != new_id:  # the amd64-labelled original is now untagged: drop it
        subprocess.run([docker_cli, "image", "rm", old_id], capture_output=True, check=False)
    return new_id


# --------------------------------------------------------------------------- preconditions


def _check_can_bootstrap(arch: str, host: str) -> bool:
    """Raise unless debootstrap can run here; return whether the bootstrap must be foreign."""
    if shutil.which("debootstrap") is None:
        raise BaseImageError(
            "debootstrap is not installed: run scripts/docker-engine.sh (or apt-get install -y debootstrap)"
        )
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise BaseImageError("debootstrap needs root: run the base-image build as root")
    foreign = arch != host
    if foreign:
        handler = BINFMT_DIR / f"qemu-{arch}"
        text = handler.read_text() if handler.is_file() else ""
        if not text.startswith("enabled"):
            raise BaseImageError(
                f"cannot build {arch} on {host}: qemu-{arch} emulation is not registered; "
                "run scripts/docker-engine.sh --arm64 (installs qemu-user-static binfmt-support)"
            )
        # Without the F flag the interpreter path would have to exist inside the chroot too.
        if not any(line.startswith("flags:") and "F" in line for line in text.splitlines()):
            raise BaseImageError(
                f"qemu-{arch} is registered without the F (fix-binary) flag, "
                "so it cannot run inside a chroot; reinstall qemu-user-static"
            )
    return foreign


# --------------------------------------------------------------------------- the build


def build_base_image(
    os_name: str = DEFAULT_OS,
    arch: str | None = None,
    mirror: str | None = None,
    tag: str | None = None,
    docker_client: Any | None = None,
    *,
    force: bool = False,
    include: Sequence[str] = (),
    docker_cli: str = "docker",
    workdir: Path | None = None,
    apt_dir: Path = Path("/etc/apt"),
    timeout: float | None = 3600,
) -> str:
    """Build (or find) the base image for ``os_name``/``arch`` and return its tag.

    ``arch`` defaults to the host's; a foreign one (aarch64 on x86_64) is bootstrapped with
    ``--foreign`` and finished under qemu-user-static. ``mirror`` defaults to the host apt's
    Debian mirror. ``docker_client`` (a Docker SDK client) is only used to see whether ``tag``
    exists: then nothing is built unless ``force``. The import itself goes through
    ``docker_cli`` (the SDK's import cannot set a platform); when the engine ignores the platform
    (Docker 20.10), :func:`set_image_architecture` fixes the config. ``include`` adds packages to
    debootstrap. The temporary rootfs is removed in every case, Ctrl-C included.
    """
    suite = parse_os_name(os_name)
    arch = normalize_arch(arch) if arch else host_arch()
    tag = tag or default_tag(os_name, arch)
    if not tag or any(c.isspace() for c in tag):
        raise BaseImageError(f"invalid image tag '{tag}'")
    mirror = check_mirror(mirror) if mirror else detect_mirror(suite, apt_dir)

    if not force and image_exists(tag, docker_client, docker_cli):
        log.info("%s exists; not rebuilding (force=True rebuilds)", tag)
        return tag

    replaced = _image_id(tag, docker_cli) if force else ""
    foreign = _check_can_bootstrap(arch, host_arch())
    host_sources = read_host_sources(apt_dir)
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix=f"ascend-rootfs-{os_name}-{arch}-", dir=workdir))
    rootfs = scratch / "rootfs"
    try:
        rootfs.mkdir()
        _run(
            debootstrap_command(suite, rootfs, mirror, arch, foreign=foreign, include=include),
            "debootstrap",
            timeout,
            rootfs / "debootstrap/debootstrap.log",
        )
        if foreign:
            _run(
                second_stage_command(rootfs),
                "debootstrap --second-stage",
                timeout,
                rootfs / "debootstrap/debootstrap.log",
            )
        keyring = DEBIAN_KEYRING if (rootfs / DEBIAN_KEYRING.lstrip("/")).is_file() else None
        if urlsplit(mirror).username:
            log.warning("mirror credentials are not written into the image's apt sources")
        sources = image_apt_sources(suite, mirror, host_sources, keyring)
        tidy_rootfs(rootfs, render_deb822(sources))
        message = f"debootstrap --variant=minbase {suite} ({DEB_ARCH[arch]}) from {strip_credentials(mirror)}"
        image_id = _import(
            rootfs,
            import_command(
                tag,
                arch,
                image_changes(os_name, arch, mirror),
                docker_cli=docker_cli,
                message=message,
            ),
            timeout,
        )
        remove_rootfs(rootfs)  # free the space before a possible save/load round trip
        if _image_architecture(tag, docker_cli) != DEB_ARCH[arch]:
            image_id = set_image_architecture(tag, DEB_ARCH[arch], docker_cli, scratch, timeout)
    finally:
        with contextlib.suppress(Exception):
            remove_rootfs(scratch)
    if replaced and replaced != image_id:  # drop the image force=True replaced, if now untagged
        subprocess.run([docker_cli, "image", "rm", replaced], capture_output=True, check=False)
    log.info("built %s (%s) in %.0fs", tag, image_id, time.monotonic() - started)
    return tag
