"""Pinned wheels (torch, torch_npu) for the *target*, not for the machine running the builder.

Why by file name: a wheelhouse is a plain folder (``--wheelhouse``, the project cache ``wheelhouse/``,
a USB stick on an air-gapped host) and the build installs from it with ``--find-links``. A wheel is
usable when its name, version, Python tag and platform tag fit the target's Python X.Y and
architecture, exactly as pip inside the image will judge it, so the check needs no index and no
network. ``torch==2.13.0`` is satisfied by ``2.13.0+cpu`` (PEP 440 ignores local labels there).

Missing wheels come from a direct ``url`` (through :mod:`ascend_stack.download`) or from
``pip download`` for the target's platform, which keeps whatever the user's pip configuration adds
(find-links, extra indexes, certificates).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from .download import ChecksumMismatch, download
from .errors import UserError
from .lock import sha256_file

DEFAULT_GLIBC = (2, 17)  # an OS not in the table gets only what manylinux2014 promises


@dataclass(frozen=True)
class WheelTarget:
    """The interpreter and platform a wheel must fit: Python ``X.Y``, ``aarch64``/``x86_64``, glibc."""

    python: str
    arch: str
    glibc: tuple[int, int] = DEFAULT_GLIBC

    @classmethod
    def for_target(cls, described: dict[str, object]) -> WheelTarget:
        """From a build plan's ``target`` (python, arch, and the OS's glibc from matrix.yaml)."""
        glibc = str(described.get("glibc") or "")
        major, _, minor = glibc.partition(".")
        found = (int(major), int(minor)) if major.isdigit() and minor.isdigit() else DEFAULT_GLIBC
        return cls(str(described["python"]), str(described["arch"]), found)

    @property
    def version(self) -> tuple[int, int]:
        major, minor = self.python.split(".")[:2]
        return int(major), int(minor)

    @property
    def cp(self) -> str:
        return "cp{}{}".format(*self.version)

    def platforms(self, *, local: bool = True) -> list[str]:
        """Platform tags, most specific first; ``local`` adds ``linux_<arch>`` (wheels built on a host)."""
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{m}_{self.arch}" for m in range(minor, 16, -1)]
        tags.append(f"manylinux2014_{self.arch}")
        if self.arch == "x86_64":
            tags += [f"manylinux_2_{m}_{self.arch}" for m in range(16, 4, -1)]
            tags += [f"manylinux2010_{self.arch}", f"manylinux1_{self.arch}"]
        if local:
            tags.append(f"linux_{self.arch}")
        return tags

    def tags(self) -> list[Tag]:
        """Every tag the target's CPython accepts, in pip's order of preference."""
        platforms = [*self.platforms(), "any"]
        return [*cpython_tags(self.version, platforms=platforms), *compatible_tags(self.version, self.cp, platforms)]

    def describe(self) -> str:
        return f"{self.cp}, {self.arch}, glibc {self.glibc[0]}.{self.glibc[1]}"


def parse_requirement(req: str) -> Requirement:
    try:
        return Requirement(req)
    except InvalidRequirement as exc:
        raise UserError(f"'{req}' is not a pinned requirement like torch==2.6.0 ({exc})") from None


def wheel_fits(
    filename: str, req: Requirement, target: WheelTarget, _ranks: dict[Tag, int] | None = None
) -> int | None:
    """The rank of ``filename``'s best tag for ``target`` (lower is better) if it satisfies ``req``, else None."""
    try:
        name, version, _build, wheel_tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    if name != canonicalize_name(req.name) or not req.specifier.contains(version, prereleases=True):
        return None
    ranks = _ranks if _ranks is not None else {t: i for i, t in enumerate(target.tags())}
    found = [ranks[t] for t in wheel_tags if t in ranks]
    return min(found) if found else None


def find_wheel(req: str, target: WheelTarget, wheelhouses: Sequence[Path]) -> Path | None:
    """The best wheel for ``req`` in the first wheelhouse that has one (earlier dirs win)."""
    requirement = parse_requirement(req)
    ranks = {t: i for i, t in enumerate(target.tags())}
    for house in wheelhouses:
        if not house.is_dir():
            continue
        best: tuple[int, Version, Path] | None = None
        for path in sorted(house.glob("*.whl")):
            rank = wheel_fits(path.name, requirement, target, ranks)
            if rank is None:
                continue
            version = parse_wheel_filename(path.name)[1]
            # the best tag first, then the highest matching version (e.g. a newer local build)
            if best is None or rank < best[0] or (rank == best[0] and version > best[1]):
                best = (rank, version, path)
        if best is not None:
            return best[2]
    return None


def pip_download_command(
    req: str, target: WheelTarget, dest: Path, *, index: str | None = None, ca_cert: Path | None = None
) -> list[str]:
    """``pip download`` of exactly ``req`` for the target platform; the user's pip config still applies."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"]
    for platform in target.platforms(local=False):
        cmd += ["--platform", platform]
    cmd += ["--python-version", target.python, "--implementation", "cp"]
    for abi in (target.cp, "abi3", "none"):
        cmd += ["--abi", abi]
    if index:
        cmd += ["--extra-index-url", index]
    if ca_cert:
        cmd += ["--cert", str(ca_cert)]
    return [*cmd, "--dest", str(dest), req]


def fetch_wheel(
    req: str,
    target: WheelTarget,
    wheelhouse: Path,
    *,
    url: str | None = None,
    index: str | None = None,
    expected: dict[str, tuple[str, str]] | None = None,
    ca_cert: Path | None = None,
    progress: bool = True,
) -> Path:
    """Download a wheel for ``req`` into ``wheelhouse`` and return it.

    ``expected`` maps wheel file names to (sha256, where that expectation comes from): a download
    that does not match is deleted before it ever appears in the wheelhouse.
    """
    requirement = parse_requirement(req)
    expected = expected or {}
    wheelhouse.mkdir(parents=True, exist_ok=True)
    if url:
        name = url.rsplit("/", 1)[-1].split("?", 1)[0]
        if wheel_fits(name, requirement, target) is None:
            raise UserError(f"{url} is not a wheel for {req} on {target.describe()}: fix the URL in matrix.yaml")
        sha, source = expected.get(name, (None, ""))
        return download(url, wheelhouse / name, sha256=sha, sha256_source=source, ca_cert=ca_cert,
                        progress=progress).path  # fmt: skip
    # pip writes into a private folder first, so a failed or wrong download never lands in the wheelhouse.
    with tempfile.TemporaryDirectory(prefix=".pip-download-", dir=wheelhouse) as tmp:
        cmd = pip_download_command(req, target, Path(tmp), index=index, ca_cert=ca_cert)
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE, text=True, check=False
        )
        if proc.returncode != 0:
            lines = [line for line in (proc.stderr or proc.stdout or "").splitlines() if line.strip()]
            why = lines[-1].strip() if lines else f"pip exited with {proc.returncode}"
            where = f" (extra index {index})" if index else ""
            raise UserError(
                f"pip download {req} for {target.describe()}{where} failed: {why}; "
                f"put a matching wheel into a --wheelhouse dir instead"
            )
        wheel = find_wheel(req, target, [Path(tmp)])
        if wheel is None:
            raise UserError(f"pip download {req} gave no wheel for {target.describe()}; use --wheelhouse DIR")
        sha, source = expected.get(wheel.name, (None, ""))
        if sha:
            actual = sha256_file(wheel)
            if actual != sha:
                raise ChecksumMismatch(wheel.name, sha, actual, source, "it was not put into the wheelhouse")
        final = wheelhouse / wheel.name
        shutil.move(str(wheel), final)
        return final
