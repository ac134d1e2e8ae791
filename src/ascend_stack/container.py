"""A throw-away container of a built image, for commands run inside it (``invoke verify``, ``invoke manifest``).

Through the docker CLI, as pytest-testinfra's ``docker://`` backend does: the container is started
detached with its entrypoint replaced by ``sleep infinity`` and is always removed afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import UserError


def docker_cli() -> str:
    path = shutil.which("docker")
    if path is None:
        raise UserError("the docker command is not installed: install the Docker CLI, or run scripts/docker-engine.sh")
    return path


def _docker(*args: str, timeout: float | None = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([docker_cli(), *args], capture_output=True, text=True, timeout=timeout, check=False)


def inspect_image(image: str) -> dict[str, Any] | None:
    """``docker image inspect`` of ``image``; ``None`` if no such image exists here."""
    out = _docker("image", "inspect", image)
    if out.returncode != 0:
        if "No such image" in out.stderr or "No such object" in out.stderr:
            return None
        last = (out.stderr.strip().splitlines() or ["no answer"])[-1]
        raise UserError(f"docker cannot inspect {image}: {last} (is the engine running? scripts/docker-engine.sh)")
    data: list[dict[str, Any]] = json.loads(out.stdout)
    return data[0]


def image_labels(image: str) -> dict[str, str]:
    info = inspect_image(image)
    return dict(((info or {}).get("Config") or {}).get("Labels") or {})


@dataclass
class Container:
    """A running container; :meth:`exec` runs a ``/bin/sh -c`` command in it."""

    id: str
    image: str

    def exec(self, command: str, timeout: float | None = 300) -> subprocess.CompletedProcess[str]:
        return _docker("exec", self.id, "/bin/sh", "-c", command, timeout=timeout)

    def output(self, command: str, timeout: float | None = 300) -> str:
        """stdout of ``command``; a non-zero exit is an error naming the command."""
        out = self.exec(command, timeout)
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"in {self.image}: `{command}` exited {out.returncode}: {last}")
        return out.stdout


def start(image: str, run_args: Sequence[str] = ()) -> Container:
    """Start ``image`` detached, kept alive by ``sleep infinity`` whatever its entrypoint is."""
    out = _docker("run", "--detach", *run_args, "--entrypoint", "sleep", image, "infinity")
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"cannot start a container of {image}: {last}")
    return Container(out.stdout.strip(), image)


def remove(container: Container) -> None:
    _docker("rm", "--force", "--volumes", container.id)


@contextmanager
def running(image: str, run_args: Sequence[str] = ()) -> Iterator[Container]:
    """A container of ``image`` for the duration of the ``with`` block; always removed."""
    container = start(image, run_args)
    try:
        yield container
    finally:
        remove(container)
