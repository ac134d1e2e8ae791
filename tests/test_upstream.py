"""Pins against local mirrors: a commit off its ref, a moved tag and an apex/NVIDIA apex mismatch are named."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from local_git import UpstreamRepo
from test_matrix import row

from ascend_stack.matrix import parse_matrix
from ascend_stack.sources import Sources
from ascend_stack.upstream import apex_build_facts, pin_problems

BUILD_SH = """#!/bin/bash
git clone https://github.com/NVIDIA/apex.git
cd apex
git checkout {nvidia}
patch -p1 <npu.patch
python"${{PY_VERSION}}" setup.py --cpp_ext bdist_wheel
"""


@pytest.fixture
def mirrors(tmp_path: Path) -> dict[str, UpstreamRepo]:
    """One local repository per source: MindSpeed-LLM with a tag and a branch that moved on, apex's build.sh."""
    repos = {name: UpstreamRepo(tmp_path / "mirrors" / name) for name in ("mindspeed-llm", "apex", "nvidia-apex")}
    repos["nvidia-apex"].commit({"setup.py": "# nvidia\n"})
    nvidia = repos["nvidia-apex"].git("rev-parse", "HEAD")
    repos["apex"].commit({"scripts/build.sh": BUILD_SH.format(nvidia=nvidia)})
    llm = repos["mindspeed-llm"]
    llm.commit({"a": "1"})
    llm.tag("v2.1.0", "release")
    llm.git("branch", "2.1.0")
    llm.git("checkout", "--quiet", "2.1.0")
    llm.commit({"a": "2"})  # the branch went on after the tag
    return repos


def pinned(raw: dict[str, Any], mirrors: dict[str, UpstreamRepo], **commits: str) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    r = row(out, "8.2.RC1")
    r["mindspeed_llm"].update(ref="v2.1.0", commit=mirrors["mindspeed-llm"].git("rev-parse", "v2.1.0^{commit}"))
    r["apex"].update(ref="main", commit=mirrors["apex"].git("rev-parse", "main"))
    r["nvidia_apex"].update(ref="main", commit=mirrors["nvidia-apex"].git("rev-parse", "main"))
    for key, commit in commits.items():
        r[key]["commit"] = commit
    return out


def check(raw: dict[str, Any], tmp_path: Path) -> tuple[list[str], int]:
    problems, read = pin_problems(
        parse_matrix(raw), Sources(cache=tmp_path / "cache", override_dir=tmp_path / "mirrors")
    )
    return [str(p) for p in problems if "8.2.RC1" in str(p)], read


def test_pins_on_their_refs_pass(raw: dict[str, Any], mirrors: dict[str, UpstreamRepo], tmp_path: Path) -> None:
    problems, read = check(pinned(raw, mirrors), tmp_path)
    assert problems == [] and read >= 3


def test_an_older_commit_of_a_moving_branch_is_on_it(raw: dict[str, Any], mirrors: dict[str, UpstreamRepo],
                                                     tmp_path: Path) -> None:  # fmt: skip
    data = pinned(raw, mirrors)
    row(data, "8.2.RC1")["mindspeed_llm"]["ref"] = "2.1.0"  # the tag's commit is an ancestor of the branch head
    assert check(data, tmp_path)[0] == []


def test_a_commit_that_is_not_the_tag_is_named(raw: dict[str, Any], mirrors: dict[str, UpstreamRepo],
                                               tmp_path: Path) -> None:  # fmt: skip
    head = mirrors["mindspeed-llm"].git("rev-parse", "2.1.0")
    tag = mirrors["mindspeed-llm"].git("rev-parse", "v2.1.0^{commit}")
    problems, _ = check(pinned(raw, mirrors, mindspeed_llm=head), tmp_path)
    assert problems == [
        f"matrix.yaml: row 8.2.RC1, field mindspeed_llm.commit: tag v2.1.0 is {tag}, not the pinned {head} "
        f"(in {tmp_path / 'mirrors' / 'mindspeed-llm'})"
    ]


def test_nvidia_apex_must_be_what_apex_build_sh_checks_out(raw: dict[str, Any], mirrors: dict[str, UpstreamRepo],
                                                           tmp_path: Path) -> None:  # fmt: skip
    other = mirrors["nvidia-apex"].commit({"setup.py": "# later\n"})
    problems, _ = check(pinned(raw, mirrors, nvidia_apex=other), tmp_path)
    nvidia = mirrors["nvidia-apex"].git("rev-parse", "main~1")
    assert len(problems) == 1
    assert (
        "field nvidia_apex.commit: Ascend apex" in problems[0]
        and f"builds NVIDIA apex {nvidia}, not {other}" in problems[0]
    )


def test_apex_build_facts_follow_the_commit(mirrors: dict[str, UpstreamRepo]) -> None:
    apex = mirrors["apex"]
    first = apex.git("rev-parse", "HEAD")
    text = (apex.path / "scripts/build.sh").read_text()
    later = apex.commit({"scripts/build.sh": text.replace("--cpp_ext", "--cpp_ext --npu_float_status")})
    assert apex_build_facts(apex.path, first)["setup_options"] == ["--cpp_ext"]  # type: ignore[index]
    assert apex_build_facts(apex.path, later)["setup_options"] == ["--cpp_ext", "--npu_float_status"]  # type: ignore[index]


def test_without_mirrors_nothing_is_read(raw: dict[str, Any], tmp_path: Path) -> None:
    assert pin_problems(parse_matrix(raw), Sources(cache=tmp_path / "none")) == ([], 0)
