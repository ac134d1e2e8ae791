"""The Docker side of a build: BuildKit through the CLI, everything else through the Docker SDK.

The SDK cannot drive BuildKit (docker/docker-py#2230), and only BuildKit has the secret and bind
mounts the templates rely on, so ``docker build`` runs as a subprocess whose progress streams to
the terminal. Queries (does a tag exist, what is its ID) and containers use the SDK.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError


class BuildFailed(UserError):
    """``docker build`` of a layer failed; the BuildKit log above says why."""

    exit_code = 1


@dataclass(frozen=True)
class BuildKitClient:
    """A docker CLI that can run BuildKit builds, and why it was picked."""

    path: str
    kind: str  # "buildx" or "builtin" (a pre-23 client: DOCKER_BUILDKIT=1 docker build)
    version: str
    reason: str

    def build_command(self) -> list[str]:
        return [self.path, "buildx", "build", "--load"] if self.kind == "buildx" else [self.path, "build"]


def _client_version(path: str) -> str:
    """The CLI's own version; it prints it even when no engine answers (and then exits 1)."""
    out = subprocess.run(
        [path, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip()


def docker_clis(search_path: str | None = None) -> list[str]:
    """Every executable ``docker`` on PATH, in PATH order: Debian's docker.io puts a 20.10 client at
    /usr/bin/docker, which a newer one earlier on PATH (say /usr/local/bin) hides from ``which``."""
    found: dict[str, str] = {}  # real file -> first path naming it (/bin is often a link to /usr/bin)
    for folder in (search_path if search_path is not None else os.environ.get("PATH", "")).split(os.pathsep):
        path = os.path.join(folder or ".", "docker")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            found.setdefault(os.path.realpath(path), path)
    return list(found.values())


NO_DOCKER = (
    "no docker client that can build with BuildKit: no docker command on PATH; install Docker Engine 23+ with "
    "its buildx plugin (Docker's packages docker-ce, docker-ce-cli, docker-buildx-plugin) or Debian/Ubuntu's "
    "docker.io (bash scripts/docker-engine.sh does that and starts the engine)"
)
NO_BUILDX = (
    "no docker client that can build with BuildKit: {clients} no buildx plugin, which Docker 23 and later need; "
    "install it: docker-buildx-plugin from Docker's repository, docker-buildx from Debian 13+/Ubuntu 24.04+, "
    "or a github.com/docker/buildx release saved as ~/.docker/cli-plugins/docker-buildx"
)


def find_buildkit_client(candidates: Sequence[str] | None = None) -> BuildKitClient:
    """Prefer ``docker buildx``; else a docker client older than 23, whose BuildKit is built in.

    ``candidates`` defaults to every ``docker`` on PATH (:func:`docker_clis`). Docker 23+ without the
    buildx plugin refuses ``DOCKER_BUILDKIT=1``; Debian's docker.io (20.10) is such an older client.
    Raises :class:`UserError`, one line saying what to install, when none can build.
    """
    paths = list(candidates) if candidates is not None else docker_clis()
    tried = []
    for path in dict.fromkeys(paths):
        if not os.access(path, os.X_OK):
            continue
        buildx = subprocess.run([path, "buildx", "version"], capture_output=True, text=True, timeout=30)
        version = _client_version(path)
        if buildx.returncode == 0:
            return BuildKitClient(path, "buildx", version, f"{path} has the buildx plugin ({buildx.stdout.strip()})")
        major = version.split(".", 1)[0]
        if major.isdigit() and int(major) < 23:
            return BuildKitClient(
                path, "builtin", version, f"{path} is docker {version}, with BuildKit built into the CLI"
            )
        tried.append(f"docker {version or '(version unknown)'} at {path}")
    if not tried:
        raise UserError(NO_DOCKER)
    has = " has" if len(tried) == 1 else " have"
    raise UserError(NO_BUILDX.format(clients=" and ".join(tried) + has))


#: What a dry run without a usable client shows its plan with: the command a Docker 23+ user runs.
ASSUMED_CLIENT = BuildKitClient("docker", "buildx", "", "no docker client that can build here: assuming docker buildx")


@dataclass
class BuildRequest:
    """One ``docker build`` of one layer."""

    context: Path
    tags: list[str]
    platform: str
    dockerfile: Path | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, Path] = field(default_factory=dict)
    network: str | None = "host"
    no_cache: bool = False

    def argv(self, client: BuildKitClient, iidfile: Path) -> list[str]:
        argv = [*client.build_command(), "--progress=plain", "--platform", self.platform, "--iidfile", str(iidfile)]
        if self.network:
            argv += ["--network", self.network]
        if self.no_cache:
            argv.append("--no-cache")
        if self.dockerfile:
            argv += ["--file", str(self.dockerfile)]
        for sid, src in sorted(self.secrets.items()):
            argv += ["--secret", f"id={sid},src={src}"]
        for k, v in self.build_args.items():
            argv += ["--build-arg", f"{k}={v}"]
        for k, v in self.labels.items():
            argv += ["--label", f"{k}={v}"]
        for tag in self.tags:
            argv += ["--tag", tag]
        return [*argv, str(self.context)]


@dataclass
class Driver:
    """Runs builds and answers questions about images. ``builds`` records every build it ran."""

    client: BuildKitClient
    docker: Any  # docker.DockerClient; None for a dry run without an engine
    builds: list[BuildRequest] = field(default_factory=list)

    def image_id(self, ref: str) -> str | None:
        import docker.errors

        if self.docker is None:
            return None
        try:
            return str(self.docker.images.get(ref).id)
        except docker.errors.ImageNotFound:
            return None

    def image_size(self, ref: str) -> tuple[int, int]:
        """(bytes, number of file-system layers) of an image, as ``docker image inspect`` gives them."""
        attrs = self.docker.images.get(ref).attrs
        return int(attrs.get("Size") or 0), len((attrs.get("RootFS") or {}).get("Layers") or [])

    def save(self, image_id: str, path: Path) -> Path:
        """``docker save`` one image (no tags) into ``path``."""
        with path.open("wb") as fh:
            for chunk in self.docker.images.get(image_id).save(chunk_size=1 << 20, named=False):
                fh.write(chunk)
        return path

    def tag(self, image_id: str, ref: str) -> None:
        repo, _, tag = ref.rpartition(":")
        self.docker.images.get(image_id).tag(repo, tag)

    def untag(self, ref: str) -> None:
        import docker.errors

        with contextlib.suppress(docker.errors.ImageNotFound):
            self.docker.images.remove(ref, noprune=True)

    def build(self, req: BuildRequest, log_name: str) -> str:
        """Run one BuildKit build, streaming its progress to stderr; return the image ID."""
        self.builds.append(req)
        with tempfile.TemporaryDirectory(prefix="ascend-build-") as tmp:
            iidfile = Path(tmp) / "iid"
            env = {**os.environ, "DOCKER_BUILDKIT": "1"}
            tail: deque[str] = deque(maxlen=15)
            proc = subprocess.Popen(
                req.argv(self.client, iidfile), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stderr.write(f"[{log_name}] {line}")
                tail.append(line.rstrip())
            code = proc.wait()
            if code != 0:
                last = next((line for line in reversed(tail) if line.strip()), "")
                raise BuildFailed(f"layer {log_name} failed to build (docker build exit {code}): {last.strip()}")
            return iidfile.read_text().strip()

    def run_capture(self, image: str, command: list[str], mounts: dict[Path, str], platform: str) -> str:
        """Run a throw-away container and return its stdout (stderr joins the error on failure).

        No network (what it runs reads only the image and its mounts; the engine's bridge is then not
        needed), and the container is removed whatever happens: one left behind would pin the image.
        """
        import docker.errors

        volumes = {str(src): {"bind": dst, "mode": "ro"} for src, dst in mounts.items()}
        what = " ".join(command[:2])
        try:
            container = self.docker.containers.create(
                image, command, volumes=volumes, platform=platform, entrypoint=[], network_mode="none"
            )
        except docker.errors.APIError as err:
            raise BuildFailed(f"{what} could not run in {image}: {err.explanation or err}") from None
        try:
            container.start()
            status = container.wait()["StatusCode"]
            if status != 0:
                stderr = container.logs(stdout=False, stderr=True).decode(errors="replace").strip()
                raise BuildFailed(f"{what} failed in {image} (exit {status}): {stderr}")
            return container.logs(stdout=True, stderr=False).decode()
        except docker.errors.APIError as err:
            raise BuildFailed(f"{what} could not run in {image}: {err.explanation or err}") from None
        finally:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
