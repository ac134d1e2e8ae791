"""Git sources through bare mirrors: ref resolution, lock preference, offline, overrides, export."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from local_git import UpstreamRepo

from ascend_stack.errors import UserError
from ascend_stack.sources import GitError, Sources, SourceUnavailable, export, is_local, resolve_ref

UNREACHABLE = "http://127.0.0.1:1/unreachable/MindSpeed.git"  # refused at once; offline must never try it


@pytest.fixture
def upstream(tmp_path: Path) -> UpstreamRepo:
    repo = UpstreamRepo(tmp_path / "upstream" / "MindSpeed")
    repo.commit({"setup.py": "# v1\n", "mindspeed/__init__.py": ""}, "v1")
    repo.tag("2.1.0", "release 2.1.0")  # annotated, like upstream releases
    repo.commit({"setup.py": "# v2\n"}, "v2")
    repo.git("branch", "core_r0.8.0")
    return repo


@pytest.fixture
def sources(tmp_path: Path) -> Sources:
    return Sources(cache=tmp_path / "cache")


def test_resolves_branch_tag_short_and_full_commit(upstream: UpstreamRepo, sources: Sources) -> None:
    v1 = upstream.git("rev-parse", "2.1.0^{commit}")
    v2 = upstream.git("rev-parse", "main")
    for ref, want in (("main", v2), ("core_r0.8.0", v2), ("2.1.0", v1), (v1[:8], v1), (v1, v1)):
        mirror, commit = sources.resolve("mindspeed", upstream.url, ref)
        assert commit == want, ref
    assert mirror == sources.cache / "mindspeed.git"
    assert subprocess.run(["git", "-C", str(mirror), "rev-parse", "--is-bare-repository"],
                          capture_output=True, text=True).stdout.strip() == "true"  # fmt: skip


def test_unknown_ref_is_a_user_error(upstream: UpstreamRepo, sources: Sources) -> None:
    with pytest.raises(SourceUnavailable, match="'no-such-branch' is not a branch, a tag or a unique commit"):
        sources.resolve("mindspeed", upstream.url, "no-such-branch")


def test_lock_keeps_the_old_commit_of_a_moving_branch_until_update(upstream: UpstreamRepo, sources: Sources) -> None:
    _, old = sources.resolve("mindspeed", upstream.url, "main")
    new = upstream.commit({"setup.py": "# v3\n"}, "v3")
    assert sources.resolve("mindspeed", upstream.url, "main", locked=old) == (sources.mirror("mindspeed"), old)
    assert resolve_ref(sources.mirror("mindspeed"), "main") == old  # and the locked path did not even fetch
    assert sources.resolve("mindspeed", upstream.url, "main", locked=old, update=True)[1] == new


def test_locked_commit_no_branch_reaches_any_more_is_fetched_by_id(upstream: UpstreamRepo, sources: Sources) -> None:
    _, locked = sources.resolve("mindspeed", upstream.url, "main")
    upstream.git("reset", "--quiet", "--hard", "HEAD~1")
    upstream.commit({"setup.py": "# rewritten\n"}, "force-pushed")
    fresh = Sources(cache=sources.cache.parent / "fresh-cache")
    assert fresh.resolve("mindspeed", upstream.url, "main", locked=locked)[1] == locked


def test_offline_uses_the_cache_and_never_the_network(upstream: UpstreamRepo, sources: Sources) -> None:
    _, commit = sources.resolve("mindspeed", upstream.url, "main")  # populate the cache
    assert sources.resolve("mindspeed", UNREACHABLE, "main", offline=True)[1] == commit
    assert sources.resolve("mindspeed", UNREACHABLE, "main", locked=commit, offline=True)[1] == commit
    with pytest.raises(GitError):  # proof that the URL really is unreachable when not offline
        sources.resolve("mindspeed", UNREACHABLE, "main")


def test_offline_without_the_commit_says_what_to_mirror(upstream: UpstreamRepo, sources: Sources) -> None:
    with pytest.raises(SourceUnavailable) as err:
        sources.resolve("mindspeed", UNREACHABLE, "main", offline=True)
    msg = str(err.value)
    assert f"mirror {UNREACHABLE} into {sources.mirror('mindspeed')}" in msg and "offline" in msg
    sources.resolve("mindspeed", upstream.url, "main")
    with pytest.raises(SourceUnavailable, match=r"commit 0{40} of git source mindspeed"):
        sources.resolve("mindspeed", UNREACHABLE, "main", locked="0" * 40, offline=True)


@pytest.mark.parametrize("layout", ["mindspeed", "mindspeed.git"])
def test_sources_dir_override_replaces_the_upstream_url(upstream: UpstreamRepo, tmp_path: Path, layout: str) -> None:
    override = tmp_path / "airgap"
    override.mkdir()
    kind = ["--bare"] if layout.endswith(".git") else []
    subprocess.run(["git", "clone", "--quiet", *kind, str(upstream.path), str(override / layout)], check=True)
    src = Sources(cache=tmp_path / "cache", override_dir=override)
    assert src.upstream("mindspeed", UNREACHABLE) == str((override / layout).resolve())
    # a local override is not the network: it works offline, with an empty cache
    assert src.resolve("mindspeed", UNREACHABLE, "2.1.0", offline=True)[1] == upstream.git("rev-parse", "2.1.0^{}")


def test_mapping_wins_and_accepts_the_matrix_spelling(upstream: UpstreamRepo, tmp_path: Path) -> None:
    src = Sources(cache=tmp_path / "cache", override_dir=tmp_path, mapping={"nvidia_apex": str(upstream.path)})
    assert src.upstream("nvidia-apex", UNREACHABLE) == str(upstream.path)
    assert src.resolve("nvidia-apex", UNREACHABLE, "main")[1] == upstream.git("rev-parse", "main")
    assert src.upstream("megatron", "https://github.com/NVIDIA/Megatron-LM.git").startswith("https://")


def test_export_writes_the_commit_tree_without_git(upstream: UpstreamRepo, sources: Sources, tmp_path: Path) -> None:
    mirror, v1 = sources.resolve("mindspeed", upstream.url, "2.1.0")
    dest = tmp_path / "ctx" / "sources" / "mindspeed"
    export(mirror, v1, dest)
    assert (dest / "setup.py").read_text() == "# v1\n" and (dest / "mindspeed" / "__init__.py").exists()
    assert not (dest / ".git").exists()
    _, v2 = sources.resolve("mindspeed", upstream.url, "main")
    (dest / "stray.txt").write_text("left over")
    export(mirror, v2, dest)  # replaces the whole tree
    assert (dest / "setup.py").read_text() == "# v2\n" and not (dest / "stray.txt").exists()
    with pytest.raises(UserError, match="cannot export"):
        export(mirror, "f" * 40, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_locked_commits_are_pinned_against_gc(upstream: UpstreamRepo, sources: Sources) -> None:
    mirror, commit = sources.resolve("mindspeed", upstream.url, "main")
    refs = subprocess.run(["git", "-C", str(mirror), "for-each-ref", "--format=%(refname)"],
                          capture_output=True, text=True).stdout.split()  # fmt: skip
    assert f"refs/ascend-stack/locked/{commit}" in refs


def test_is_local() -> None:
    assert is_local("/srv/mirrors/apex") and is_local("file:///srv/apex.git") and is_local("relative/dir")
    assert not is_local("https://gitee.com/ascend/apex.git") and not is_local("git@github.com:NVIDIA/apex.git")


def test_a_shallow_clone_is_a_valid_source(upstream: UpstreamRepo, tmp_path: Path) -> None:
    """What an air-gapped user carries: `git clone --depth 1 --branch TAG`. It must work, offline too."""
    override = tmp_path / "airgap"
    override.mkdir()
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", "2.1.0", upstream.url,
                    str(override / "mindspeed")], check=True, capture_output=True)  # fmt: skip
    v1 = upstream.git("rev-parse", "2.1.0^{commit}")
    src = Sources(cache=tmp_path / "cache", override_dir=override)
    assert src.resolve("mindspeed", UNREACHABLE, "2.1.0", locked=v1, offline=True) == (src.mirror("mindspeed"), v1)
    dest = export(src.mirror("mindspeed"), v1, tmp_path / "tree")
    assert (dest / "setup.py").read_text() == "# v1\n"


def test_a_shallow_clone_feeds_a_full_mirror(upstream: UpstreamRepo, tmp_path: Path) -> None:
    """The mirror was made from the full upstream (a connected run); later the user brings a shallow clone
    of a newer commit. git refuses that fetch without --update-shallow ("shallow roots are not allowed
    to be updated")."""
    full = Sources(cache=tmp_path / "cache")
    full.resolve("mindspeed", upstream.url, "main")
    v3 = upstream.commit({"setup.py": "# v3\n"}, "v3")
    upstream.tag("v3.0.0", "release 3.0.0")
    override = tmp_path / "airgap"
    override.mkdir()
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", "v3.0.0", upstream.url,
                    str(override / "mindspeed")], check=True, capture_output=True)  # fmt: skip
    src = Sources(cache=tmp_path / "cache", override_dir=override)
    assert src.resolve("mindspeed", UNREACHABLE, "v3.0.0", offline=True)[1] == v3  # the tag itself arrived
    assert (export(src.mirror("mindspeed"), v3, tmp_path / "tree") / "setup.py").read_text() == "# v3\n"


def test_a_pinned_commit_missing_from_a_shallow_clone_says_how_to_add_it(upstream: UpstreamRepo,
                                                                         tmp_path: Path) -> None:  # fmt: skip
    override = tmp_path / "airgap"
    override.mkdir()
    subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", "2.1.0", upstream.url,
                    str(override / "mindspeed")], check=True, capture_output=True)  # fmt: skip
    v2 = upstream.git("rev-parse", "main")
    src = Sources(cache=tmp_path / "cache", override_dir=override)
    with pytest.raises(SourceUnavailable) as err:
        src.resolve("mindspeed", UNREACHABLE, "main", locked=v2, offline=True)
    message = str(err.value)
    assert "\n" not in message
    assert f"commit {v2} of git source mindspeed is not in {override / 'mindspeed'}, a shallow clone" in message
    assert f"git -C {override / 'mindspeed'} fetch --depth 1 origin {v2}" in message
