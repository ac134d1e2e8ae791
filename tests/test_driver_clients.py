"""Docker as users have it: which docker CLI builds, and what works with none.

Each case puts a different docker on PATH for a real ``invoke`` process: none at all; a Docker 23+ CLI
without the buildx plugin; one with it; Debian's docker.io 20.10 (the real /usr/bin/docker of this
machine, where it is one). The absent kinds are small stand-in ``docker`` scripts that answer the two
questions the client probe asks (``docker buildx version``, ``docker version --format``) with what the
real CLIs print, and log every call, so a test can see that nothing else was asked of them. No engine
answers (DOCKER_HOST names no socket): none of this may need one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ascend_stack.driver import docker_clis

REPO = Path(__file__).resolve().parents[1]
DEBIAN_DOCKER = Path("/usr/bin/docker")
NO_ENGINE = "unix:///nonexistent/docker.sock"

# What the real CLIs print (docker 28.2.2 without the plugin, 27.3.1 with buildx v0.17.1), with no engine.
FAKE = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls.log"
if [ "$1" = buildx ] && [ "$2" = version ]; then
    {buildx}
fi
if [ "$1" = version ]; then
    echo '{version}'
    echo 'Cannot connect to the Docker daemon at {socket}. Is the docker daemon running?' >&2
    exit 1
fi
echo "stand-in docker: only 'version' and 'buildx version' are answered here" >&2
exit 64
"""
WITH_BUILDX = "echo 'github.com/docker/buildx v0.17.1 257815a'; exit 0"
WITHOUT_BUILDX = (
    "printf \"docker: unknown command: docker buildx\\n\\nRun 'docker --help' for more information\\n\" >&2; exit 1"
)


def fake_docker(folder: Path, version: str, buildx: bool) -> Path:
    folder.mkdir(parents=True)
    path = folder / "docker"
    path.write_text(FAKE.format(buildx=WITH_BUILDX if buildx else WITHOUT_BUILDX, version=version, socket=NO_ENGINE))
    path.chmod(0o755)
    return path


def debian_docker(folder: Path) -> Path:
    """A folder whose only docker is the real /usr/bin/docker, when that is Debian's 20.10 client."""
    out = subprocess.run([str(DEBIAN_DOCKER), "version", "--format", "{{.Client.Version}}"],
                         capture_output=True, text=True, env={**os.environ, "DOCKER_HOST": NO_ENGINE}) if (
        DEBIAN_DOCKER.is_file()) else None  # fmt: skip
    if out is None or not out.stdout.startswith("20."):
        pytest.skip("no Debian docker.io 20.10 client at /usr/bin/docker")
    folder.mkdir(parents=True)
    (folder / "docker").symlink_to(DEBIAN_DOCKER)
    return folder / "docker"


@pytest.fixture
def bare_path(tmp_path: Path) -> list[str]:
    """This PATH without any docker: each folder that holds one is replaced by links to its other programs."""
    out = []
    for i, folder in enumerate(os.environ.get("PATH", "").split(os.pathsep)):
        if not os.path.isfile(os.path.join(folder, "docker")):
            out.append(folder)
            continue
        mirror = tmp_path / f"path-{i}"
        mirror.mkdir()
        for entry in os.scandir(folder):
            if entry.name != "docker":
                (mirror / entry.name).symlink_to(entry.path)
        out.append(str(mirror))
    return out


def invoke(path: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": os.pathsep.join(path), "DOCKER_HOST": NO_ENGINE}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, env=env, capture_output=True, text=True)


DRY_RUN = ("build", "--cann", "8.1.RC1", "--dry-run", "--verbose")


def plan_is_printed(out: subprocess.CompletedProcess[str], build: str) -> None:
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    for layer in ("base", "cann", "pta", "mindspeed", "runtime"):
        assert f"would build {layer}: DOCKER_BUILDKIT=1 {build} --progress=plain --platform linux/" in out.stdout
    assert "note: no Docker engine answers" in out.stdout
    assert "ascend-llm-stack:8.1.rc1-910b-torch2.1.0-mslm2.1.0-ubuntu22.04-py3.10-" in out.stdout


def test_no_docker_at_all_a_dry_run_prints_the_plan(bare_path: list[str]) -> None:
    out = invoke(bare_path, *DRY_RUN)
    plan_is_printed(out, "docker buildx build --load")
    [note] = [line for line in out.stdout.splitlines() if "no docker command on PATH" in line]
    assert "docker-buildx-plugin" in note and "docker.io" in note


def test_no_docker_at_all_a_build_says_what_to_install(bare_path: list[str]) -> None:
    out = invoke(bare_path, "build", "--cann", "8.1.RC1")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: no docker client that can build with BuildKit: no docker command on PATH")


@pytest.mark.parametrize(
    "task",
    [
        ["matrix"],
        ["matrix", "--check"],
        ["render", "--cann", "8.1.RC1", "--out", "{tmp}/render"],
        ["run", "--image", "img:1", "--print", "--", "sft", "--help"],
        ["k8s", "--image", "reg/img:1", "--nodes", "2", "--kind", "volcano", "--", "check"],
    ],
)
def test_tasks_that_build_nothing_need_no_docker(bare_path: list[str], tmp_path: Path, task: list[str]) -> None:
    out = invoke(bare_path, *[a.replace("{tmp}", str(tmp_path)) for a in task])
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""


def test_a_cli_without_buildx_gets_one_line_saying_what_to_install(tmp_path: Path, bare_path: list[str]) -> None:
    docker = fake_docker(tmp_path / "docker28", "28.2.2", buildx=False)
    path = [str(docker.parent), *bare_path]
    out = invoke(path, *DRY_RUN)
    plan_is_printed(out, "docker buildx build --load")
    [note] = [line for line in out.stdout.splitlines() if "buildx plugin" in line]
    assert f"docker 28.2.2 at {docker} has no buildx plugin" in note and "docker-buildx-plugin" in note
    build = invoke(path, "build", "--cann", "8.1.RC1")
    assert build.returncode == 2 and build.stderr.count("\n") == 1, build.stderr
    assert build.stderr.startswith(f"error: no docker client that can build with BuildKit: docker 28.2.2 at {docker}")
    assert "10 input(s) missing" not in build.stdout + build.stderr  # said before any input is looked for
    calls = (docker.parent / "calls.log").read_text().splitlines()
    assert set(calls) == {"buildx version", "version --format {{.Client.Version}}"}


def test_a_cli_with_buildx_is_used(tmp_path: Path, bare_path: list[str]) -> None:
    docker = fake_docker(tmp_path / "docker27", "27.3.1", buildx=True)
    old = fake_docker(tmp_path / "docker20", "20.10.24+dfsg1", buildx=False)
    out = invoke([str(docker.parent), str(old.parent), *bare_path], *DRY_RUN)
    plan_is_printed(out, f"{docker} buildx build --load")
    assert f"BuildKit client: {docker} has the buildx plugin (github.com/docker/buildx v0.17.1 257815a)" in out.stdout
    assert not (old.parent / "calls.log").exists()  # the first that can build is taken


def test_debian_docker_io_builds_with_its_builtin_buildkit(tmp_path: Path, bare_path: list[str]) -> None:
    """This machine's layout: a newer CLI without buildx first on PATH, Debian's 20.10 behind it."""
    debian = debian_docker(tmp_path / "debian")
    newer = fake_docker(tmp_path / "docker28", "28.2.2", buildx=False)
    out = invoke([str(newer.parent), str(debian.parent), *bare_path], *DRY_RUN)
    plan_is_printed(out, f"{debian} build")
    assert f"BuildKit client: {debian} is docker 20.10." in out.stdout and ": BuildKit built in" in out.stdout


def test_every_docker_on_path_is_a_candidate_once(tmp_path: Path) -> None:
    first = fake_docker(tmp_path / "a", "28.2.2", buildx=False)
    second = fake_docker(tmp_path / "b", "20.10.24", buildx=False)
    (tmp_path / "link").symlink_to(tmp_path / "b")  # as /bin -> /usr/bin
    (tmp_path / "none").mkdir()
    search = os.pathsep.join(str(tmp_path / d) for d in ("none", "a", "link", "b"))
    assert docker_clis(search) == [str(first), str(tmp_path / "link" / "docker")]
    assert str(second) not in docker_clis(search)
