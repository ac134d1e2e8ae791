"""What the pinned upstream sources themselves say, read from local git mirrors (never the network).

Why: matrix.yaml pins every git source to a commit, and two facts about those commits are worth
checking wherever a mirror is at hand (``sources/<name>.git``, or ``--sources DIR``): the commit is
really on the ref the row names (a typo, or a tag moved upstream, is caught before a build), and
Ascend apex's ``scripts/build.sh`` at its pinned commit checks out the NVIDIA apex commit the row
pins (the patch only applies there). The build reads build.sh with the same parser
(``images/pta/apex_build.py``), so the two can never disagree about what it says.
"""

from __future__ import annotations

import importlib.util
import subprocess
from functools import cache
from pathlib import Path
from types import ModuleType

from .matrix import Matrix, Problem
from .sources import Sources, has_commit, is_local, is_shallow, resolve_ref

APEX_BUILD = Path(__file__).resolve().parents[2] / "images" / "pta" / "apex_build.py"


@cache
def apex_build() -> ModuleType:
    """images/pta/apex_build.py, the one parser of apex's build.sh (it also runs inside the image)."""
    spec = importlib.util.spec_from_file_location("apex_build", APEX_BUILD)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def show_file(repo: Path, commit: str, path: str) -> str | None:
    out = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def apex_build_facts(repo: Path, commit: str) -> dict[str, object] | None:
    """What scripts/build.sh of Ascend apex ``commit`` says (NVIDIA commit, setup.py options); None if absent."""
    text = show_file(repo, commit, "scripts/build.sh")
    if text is None:
        return None
    try:
        return dict(apex_build().read_build_script(text))
    except apex_build().BuildScriptError:
        return None


def _rev(repo: Path, spec: str) -> str | None:
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}"],
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout.strip() or None


def is_ancestor(repo: Path, commit: str, of: str) -> bool:
    out = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, of], capture_output=True)
    return out.returncode == 0


def local_repo(sources: Sources, name: str, url: str) -> Path | None:
    """A local repository for source ``name``: the --sources override, else the mirror cache; None if neither."""
    origin = sources.upstream(name, url)
    for candidate in ([Path(origin)] if is_local(origin) else []) + [sources.mirror(name)]:
        if (candidate / "HEAD").is_file() or (candidate / ".git").exists():
            return candidate
    return None


def pin_problems(m: Matrix, sources: Sources) -> tuple[list[Problem], int]:
    """Problems with the pins of shipped rows, for every source with a local repository; and how many were read."""
    problems: list[Problem] = []
    checked = 0
    for row in m.shipped_rows():
        for key, src in row.git_sources().items():
            name = key.replace("_", "-")
            repo = local_repo(sources, name, getattr(m.sources, key))
            if repo is None or src.commit is None:
                continue
            checked += 1
            problem = _pin_problem(repo, src.ref, src.commit)
            if problem:
                problems.append(Problem(row.key, f"{key}.commit", f"{problem} (in {repo})"))
                continue
            if key == "apex" and row.nvidia_apex and row.nvidia_apex.commit:
                facts = apex_build_facts(repo, src.commit)
                wants = facts and str(facts["nvidia_commit"])
                if wants and not row.nvidia_apex.commit.startswith(wants):
                    problems.append(
                        Problem(
                            row.key,
                            "nvidia_apex.commit",
                            f"Ascend apex {src.commit[:12]}'s scripts/build.sh builds NVIDIA apex {wants}, "
                            f"not {row.nvidia_apex.commit}: pin that one (the patch applies only there)",
                        )
                    )
    return problems, checked


def _pin_problem(repo: Path, ref: str, commit: str) -> str | None:
    """Why ``commit`` is not on ``ref`` in ``repo``; None when it is, or when this repository cannot tell."""
    head = resolve_ref(repo, ref)
    if head is None or head == commit:
        return None  # the mirror does not have the ref (e.g. a shallow clone of another one): nothing to say
    if _rev(repo, f"refs/tags/{ref}") == head:
        return f"tag {ref} is {head}, not the pinned {commit}"
    if has_commit(repo, commit) and is_ancestor(repo, commit, head):
        return None  # a branch that moved on after the pinned commit
    if is_shallow(str(repo)):
        return None
    return f"{commit} is not on {ref} (its head is {head})"
