"""Small local git repositories standing in for upstream sources (MindSpeed, Megatron-LM, ...)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_ENV = {
    "GIT_AUTHOR_NAME": "fixture",
    "GIT_AUTHOR_EMAIL": "fixture@example.invalid",
    "GIT_COMMITTER_NAME": "fixture",
    "GIT_COMMITTER_EMAIL": "fixture@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


class UpstreamRepo:
    """A working repository with a ``main`` branch; ``commit`` returns the new full commit id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "--quiet", "--initial-branch=main")

    def git(self, *args: str) -> str:
        out = subprocess.run(
            ["git", *args], cwd=self.path, env={**os.environ, **_ENV}, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        for rel, text in files.items():
            target = self.path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self.git("add", "--all")
        self.git("commit", "--quiet", "-m", message)
        return self.git("rev-parse", "HEAD")

    def tag(self, name: str, message: str | None = None) -> None:
        self.git("tag", *(["-a", "-m", message] if message else []), name)

    @property
    def url(self) -> str:
        return self.path.as_uri()
