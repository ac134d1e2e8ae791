"""Build Ascend apex the way the pinned commit's own ``scripts/build.sh`` builds it, from local trees.

Why not a remembered command line: which options apex's ``setup.py`` takes depends on the commit
(Ascend/apex 49a7994 builds with ``setup.py --cpp_ext bdist_wheel`` and rejects
``--npu_float_status``; other commits add it). So the options, and the NVIDIA apex commit the patch
applies to, are read from ``scripts/build.sh`` of the Ascend apex tree being built.

What build.sh does, and this script repeats without git or network: take NVIDIA apex at the commit
it checks out, apply ``patch/npu.patch`` (``patch -p1``), copy ``src/*`` and ``tests/*`` over it, and
run ``python setup.py <options> bdist_wheel``. The builder (ascend_stack.upstream) uses the same
parser to check, before Docker runs, that the matrix pins the NVIDIA apex commit build.sh names.

Usage (in the pta layer's builder stages, with the image's python; stdlib only):
    apex_build.py ASCEND_APEX NVIDIA_APEX DIST              both steps below, in the working directory
    apex_build.py --tree ASCEND_APEX NVIDIA_APEX WORK       the patched tree, in WORK (needs patch, not torch)
    apex_build.py --wheel ASCEND_APEX WORK DIST             setup.py in the tree WORK, the wheel into DIST
    apex_build.py ASCEND_APEX --print                       print what build.sh says, as JSON

Two steps because only the second needs torch: the pta layer prepares the tree (with the ``patch``
it installs for that) in a stage of its own, which BuildKit runs while torch installs.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

_SETUP = re.compile(r"\bsetup\.py\b(?P<options>.*?)\bbdist_wheel\b")
_CHECKOUT = re.compile(r"\bgit\s+checkout\s+(?P<commit>[0-9a-f]{7,40})\b")


class BuildScriptError(Exception):
    """build.sh says something this script cannot follow; the message says what."""


def read_build_script(text: str) -> dict[str, object]:
    """``{"nvidia_commit": ..., "setup_options": [...]}`` from the text of apex's scripts/build.sh."""
    code = [line.split("#", 1)[0] if not line.lstrip().startswith("#") else "" for line in text.splitlines()]
    setups = [m for line in code if (m := _SETUP.search(line))]
    if len(setups) != 1:
        raise BuildScriptError(f"expected one `setup.py ... bdist_wheel` line in scripts/build.sh, found {len(setups)}")
    options = shlex.split(setups[0].group("options"))
    if any("$" in o or "`" in o for o in options):
        raise BuildScriptError(f"setup.py options {options} use shell variables: cannot follow them")
    checkouts = [m.group("commit") for line in code if (m := _CHECKOUT.search(line))]
    if len(checkouts) != 1:
        raise BuildScriptError(f"expected one `git checkout <commit>` of NVIDIA apex, found {len(checkouts)}")
    return {"nvidia_commit": checkouts[0], "setup_options": options}


def copy_tree(src: Path, dest: Path) -> None:
    """``cp -r src/* dest``: merge src's entries into dest, replacing files."""
    for entry in src.iterdir():
        target = dest / entry.name
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(entry, target, follow_symlinks=False)


def tree(ascend: Path, nvidia: Path, work: Path) -> None:
    """build.sh's tree: NVIDIA apex, Ascend's patch applied, ``src/`` and ``tests/`` copied over it, in ``work``."""
    read_build_script((ascend / "scripts" / "build.sh").read_text(encoding="utf-8"))  # one we can follow
    work.mkdir(parents=True, exist_ok=True)
    copy_tree(nvidia, work)
    with (ascend / "patch" / "npu.patch").open("rb") as patch:
        subprocess.run(["patch", "-p1", "--quiet"], cwd=work, stdin=patch, check=True)
    copy_tree(ascend / "src", work)
    if (ascend / "tests").is_dir():
        (work / "tests").mkdir(exist_ok=True)
        copy_tree(ascend / "tests", work / "tests")


def wheel(ascend: Path, work: Path, dist: Path) -> list[str]:
    """``setup.py <build.sh's options> bdist_wheel`` in the prepared tree ``work``; returns the argv."""
    facts = read_build_script((ascend / "scripts" / "build.sh").read_text(encoding="utf-8"))
    argv = [sys.executable, "setup.py", *facts["setup_options"], "bdist_wheel", "--dist-dir", str(dist)]  # type: ignore[misc]
    print("apex_build: " + " ".join(shlex.quote(a) for a in argv[1:]) + " (options from scripts/build.sh)", flush=True)
    subprocess.run(argv, cwd=work, check=True)
    return argv


def build(ascend: Path, nvidia: Path, dist: Path, work: Path) -> list[str]:
    """Assemble the patched tree in ``work`` and build the wheel into ``dist``; returns the setup.py argv."""
    tree(ascend, nvidia, work)
    return wheel(ascend, work, dist)


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 2 and argv[1] == "--print":
            facts = read_build_script((Path(argv[0]) / "scripts" / "build.sh").read_text(encoding="utf-8"))
            print(json.dumps(facts, sort_keys=True))
            return 0
        mode = argv[0] if argv and argv[0] in ("--tree", "--wheel") else None
        paths = [Path(a) for a in argv[1:]] if mode else [Path(a) for a in argv]
        if len(paths) != 3:
            print("usage: apex_build.py ASCEND_APEX NVIDIA_APEX DIST | --tree ASCEND_APEX NVIDIA_APEX WORK"
                  " | --wheel ASCEND_APEX WORK DIST | ASCEND_APEX --print", file=sys.stderr)  # fmt: skip
            return 2
        if mode == "--tree":
            tree(*paths)
        elif mode == "--wheel":
            wheel(*paths)
        else:
            build(paths[0], paths[1], paths[2], Path.cwd())
    except (BuildScriptError, OSError) as exc:
        print(f"apex_build: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"apex_build: {exc.cmd[0]} failed with exit status {exc.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
