"""The no-op fast path of ``invoke build`` (ascend_stack/plancache.py): it replays only when nothing changed."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ascend_stack import commands, plancache
from ascend_stack.build import LayerResult

SUMMARY = ["ascend-llm-stack:t: 0 layer(s) built, 0 docker build call(s)", "  base  up to date"]


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Records under tmp_path; the engine's tags are this dict (what one /images/json request returns)."""
    tags = {"img/base:content-1": "sha256:aa", "img/base:human": "sha256:aa"}
    monkeypatch.setattr(plancache, "RECORDS", tmp_path / "records")
    monkeypatch.setattr(plancache, "_engine_tags", lambda: dict(tags))
    return tags


def _inputs(tmp_path: Path) -> list[Path]:
    (tmp_path / "in" / "locks").mkdir(parents=True)
    (tmp_path / "in" / "matrix.yaml").write_text("rows: []\n")
    (tmp_path / "in" / "locks" / "a.lock").write_text("x==1\n")
    return [tmp_path / "in" / "matrix.yaml", *plancache.tree(tmp_path / "in" / "locks")]


def _replays(key: str) -> bool:
    out = io.StringIO()
    done = plancache.replay(key, out)
    assert out.getvalue() == ("\n".join(SUMMARY) + "\n" if done else "")
    return done


def test_an_unchanged_build_is_replayed_with_its_summary(tmp_path: Path, engine: dict[str, str]) -> None:
    key = plancache.key({"cann": "test"})
    assert not _replays(key)  # no record yet: the full build runs
    plancache.save(key, _inputs(tmp_path), engine, SUMMARY)
    assert _replays(key)
    assert not _replays(plancache.key({"cann": "8.1.RC1"}))  # other options, other record


@pytest.mark.parametrize(
    "change",
    [
        lambda p: (p / "matrix.yaml").write_text("rows: [1]\n"),  # edited (size, mtime)
        lambda p: os.utime(p / "locks" / "a.lock", ns=(1, 1)),  # touched only
        lambda p: (p / "locks" / "a.lock").unlink(),  # removed
        lambda p: (p / "locks" / "b.lock").write_text(""),  # a file added to a recorded folder
    ],
    ids=["edited", "touched", "removed", "added"],
)
def test_any_change_to_what_the_build_read_takes_the_full_path(tmp_path: Path, engine: dict[str, str], change) -> None:
    key = plancache.key({"cann": "test"})
    plancache.save(key, _inputs(tmp_path), engine, SUMMARY)
    change(tmp_path / "in")
    assert not _replays(key)


def test_a_moved_or_missing_tag_or_no_engine_takes_the_full_path(tmp_path: Path, engine: dict[str, str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    key = plancache.key({"cann": "test"})
    plancache.save(key, _inputs(tmp_path), dict(engine), SUMMARY)
    engine["img/base:human"] = "sha256:bb"  # e.g. a build of another MindSpeed-LLM ref moved the human tag
    assert not _replays(key)
    del engine["img/base:human"]
    assert not _replays(key)
    monkeypatch.setattr(plancache, "_engine_tags", lambda: None)
    assert not _replays(key)


def test_a_build_that_starts_forgets_the_record(tmp_path: Path, engine: dict[str, str]) -> None:
    key = plancache.key({"cann": "test"})
    plancache.save(key, _inputs(tmp_path), engine, SUMMARY)
    plancache.forget(key)
    assert not _replays(key)


def test_the_engine_and_the_proxy_are_part_of_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = plancache.key({"cann": "test"})
    monkeypatch.setenv("DOCKER_HOST", "unix:///elsewhere.sock")
    other_engine = plancache.key({"cann": "test"})
    monkeypatch.setenv("https_proxy", "http://proxy:3128")
    assert len({key, other_engine, plancache.key({"cann": "test"})}) == 3


def test_a_new_commit_on_a_mirror_changes_its_refs(tmp_path: Path) -> None:
    def git(*args: str, cwd: Path = tmp_path) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                       capture_output=True)  # fmt: skip

    git("init", "-q", "-b", "main", "work")
    git("commit", "-q", "--allow-empty", "-m", "one", cwd=tmp_path / "work")
    git("clone", "-q", "--bare", "work", "mirror.git")
    before = {str(p): plancache._signature(p) for p in plancache.git_refs(tmp_path / "mirror.git")}
    git("commit", "-q", "--allow-empty", "-m", "two", cwd=tmp_path / "work")
    git("push", "-q", str(tmp_path / "mirror.git"), "main", cwd=tmp_path / "work")
    after = {str(p): plancache._signature(p) for p in plancache.git_refs(tmp_path / "mirror.git")}
    assert before != after
    clone = {str(p): plancache._signature(p) for p in plancache.git_refs(tmp_path / "work")}  # not bare
    git("commit", "-q", "--allow-empty", "-m", "three", cwd=tmp_path / "work")
    assert clone != {str(p): plancache._signature(p) for p in plancache.git_refs(tmp_path / "work")}


def test_the_recorded_summary_is_what_a_no_op_prints() -> None:
    results = [LayerResult("base", "up to date", "img/base:content-1", "sha256:aa", 0.2, None),
               LayerResult("cann", "built", "img/cann:content-2", "sha256:bb", 80.0, None)]  # fmt: skip
    first = commands.summary("img:t", results, builds=2)
    again = commands.summary("img:t", results, builds=2, replayed=True)
    assert first[0] == "img:t: 1 layer(s) built, 2 docker build call(s)"
    assert again[0] == "img:t: 0 layer(s) built, 0 docker build call(s)"
    assert "built" not in again[2] and "up to date" in again[2] and "0.0s" in again[2]


def test_the_fast_path_imports_neither_the_builder_nor_its_libraries() -> None:
    """What makes the no-op command fast: a replay loads no Jinja2, pydantic or Docker SDK."""
    script = (
        "import sys, invoke, tasks\n"
        "from ascend_stack import plancache\n"
        "plancache.replay = lambda key, out=None: True\n"
        "tasks.build(invoke.Context(), cann='test')\n"
        "print(sorted(m for m in ('ascend_stack.build', 'ascend_stack.render', 'jinja2', 'pydantic', 'docker')"
        " if m in sys.modules))\n"
    )
    repo = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(repo), str(repo / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run([sys.executable, "-c", script], cwd=repo, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
