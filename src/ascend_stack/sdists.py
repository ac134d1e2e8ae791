"""Locked sdists built once into wheels for the target, in its base layer (under emulation cross-arch).

Why: a few packages are published only as sdists (MindSpeed-LLM's ``word2number``,
``antlr4-python3-runtime``, ``transformers_stream_generator``). Left to pip, every layer build would
build them again, with build dependencies pip fetches unhashed. ``invoke fetch --wheels`` builds each
once, from the sdist whose sha256 the lock holds, inside the target's own base layer (its Python, its
glibc, its architecture), with the network off. The wheel's sha256 is recorded beside it in the
wheelhouse (``built-wheels.json``) and added to that requirement's hashes in the build context, so
the layer installs the wheel with ``--require-hashes`` and builds nothing. The committed lock stays
what PyPI publishes; a built wheel is trusted because the sdist it came from was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import UserError
from .lock import sha256_file

RECORD = "built-wheels.json"
# Wheels are zip files with timestamps: a fixed epoch makes the same sdist give the same bytes.
SOURCE_DATE_EPOCH = "315532800"
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def record(wheelhouse: Path) -> dict[str, dict[str, str]]:
    """``built-wheels.json``: wheel file name -> its sha256, the sdist's name and sha256, the image."""
    try:
        data = json.loads((wheelhouse / RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        raise UserError(f"{wheelhouse / RECORD}: not JSON; delete it and run `invoke fetch --wheels` again") from None
    return data if isinstance(data, dict) else {}


def _save(wheelhouse: Path, data: dict[str, dict[str, str]]) -> None:
    tmp = wheelhouse / f".{RECORD}.part"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, wheelhouse / RECORD)


def wheel_hashes(wheelhouses: Sequence[Path]) -> dict[str, str]:
    """sdist sha256 -> sha256 of the wheel built from it, for every built wheel still in place."""
    out: dict[str, str] = {}
    for house in wheelhouses:
        for name, entry in record(house).items():
            if (house / name).is_file():
                out.setdefault(entry["sdist_sha256"], entry["sha256"])
    return out


def with_built_wheels(lock: Any, wheelhouses: Sequence[Path]) -> Any:
    """``lock`` (a :class:`ascend_stack.pylock.PyLock`) with each built wheel's hash beside its sdist's."""
    extra = wheel_hashes(wheelhouses)
    if lock is None or not extra:
        return lock

    def add(m: re.Match[str]) -> str:
        wheel = extra.get(m.group(1))
        return m.group(0) if wheel is None else f"{m.group(0)} \\\n    --hash=sha256:{wheel}"

    return replace(lock, sections={name: _HASH.sub(add, text) for name, text in lock.sections.items()})


def pending(lock: Any, target: object, wheelhouses: Sequence[Path]) -> list[Path]:
    """The locked sdists in the wheelhouses with no wheel for the target beside them."""
    from .pylock import locked_file

    out = []
    for section in lock.sections:
        for name, version in lock.pins(section).items():
            found = locked_file(name, version, target, wheelhouses)
            if found is not None and not found.name.endswith(".whl"):
                out.append(found)
    return sorted(set(out))


def build_wheels(
    sdists: Sequence[Path],
    wheelhouse: Path,
    image: str,
    platform: str,
    *,
    docker: str = "docker",
    report: Callable[[str], None] = lambda _: None,
    find_links: Sequence[Path] = (),
) -> list[str]:
    """Build ``sdists`` into wheels in a container of ``image`` (``--network none``); record them.

    The build backend (setuptools) comes from ``wheelhouse`` or ``find_links`` (the user's
    ``--wheelhouse`` dirs), wherever `invoke fetch --wheels` found its locked file.
    """
    if not sdists:
        return []
    names = ", ".join(p.name for p in sdists)
    report(f"building {len(sdists)} sdist(s) into wheels in {image} ({platform}): {names}")
    data, done = record(wheelhouse), []
    with tempfile.TemporaryDirectory(prefix="ascend-sdists-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        mounts = ["-v", f"{wheelhouse.resolve()}:/mnt/wheelhouse:ro", "-v", f"{out}:/mnt/out"]
        for i, sdist in enumerate(sdists):  # an sdist may live in a --wheelhouse of the user's
            mounts += ["-v", f"{sdist.resolve()}:/mnt/sdists/{i}/{sdist.name}:ro"]
        links = ["--find-links", "/mnt/wheelhouse"]
        for i, folder in enumerate(f for f in find_links if f.is_dir()):
            mounts += ["-v", f"{folder.resolve()}:/mnt/find-links/{i}:ro"]
            links += ["--find-links", f"/mnt/find-links/{i}"]
        cmd = [
            docker, "run", "--rm", "--network", "none", "--platform", platform,
            "--user", f"{os.getuid()}:{os.getgid()}",
            "-e", "HOME=/tmp", "-e", f"SOURCE_DATE_EPOCH={SOURCE_DATE_EPOCH}", "-e", "PIP_CONFIG_FILE=/dev/null",
            *mounts, "--entrypoint", "python", image,
            # --use-pep517: the build backend (setuptools, wheel) comes from the hashed wheelhouse, not the venv
            "-m", "pip", "wheel", "--use-pep517", "--no-deps", "--no-index", *links,
            "--no-cache-dir", "--disable-pip-version-check", "--wheel-dir", "/mnt/out",
            *[f"/mnt/sdists/{i}/{s.name}" for i, s in enumerate(sdists)],
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            from .pylock import pip_error

            raise UserError(f"building {names} into wheels failed in {image}: {pip_error(proc.stderr or proc.stdout)}")
        by_name = {_dist(w): w for w in out.glob("*.whl")}
        for sdist in sdists:
            wheel = by_name.get(_dist(sdist))
            if wheel is None:
                raise UserError(
                    f"building {sdist.name} gave no wheel of it (got: {', '.join(sorted(by_name)) or 'none'})"
                )
            dest = wheelhouse / wheel.name
            shutil.move(wheel, dest)
            data[wheel.name] = {
                "sha256": sha256_file(dest),
                "sdist": sdist.name,
                "sdist_sha256": sha256_file(sdist),
                "built_in": image,
            }
            done.append(wheel.name)
    _save(wheelhouse, data)
    return done


def _dist(path: Path) -> str:
    """The canonical project name of a wheel or sdist file name."""
    from packaging.utils import parse_sdist_filename, parse_wheel_filename

    if path.name.endswith(".whl"):
        return parse_wheel_filename(path.name)[0]
    return parse_sdist_filename(path.name)[0]
