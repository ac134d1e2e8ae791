"""The no-op fast path of ``invoke build``: replay the last build's answer when nothing it read has changed.

Why: a repeated ``invoke build`` makes no docker build, but finding that out the full way costs about
1.5 s on two cores (importing pydantic, Jinja2 and the Docker SDK, parsing the matrix, rendering,
verifying every input, asking the engine about each tag), most of it before any work. After a
successful build, :func:`save` records what the build read (every file by size, mtime and inode:
the code, templates, matrix, budgets, locks, each input file, the git mirrors' refs, the input
folders) and the images it left (every content and human tag, the base image, by ID). The next
``invoke build`` with the same options calls :func:`replay` before importing anything heavy: if every
recorded file is unchanged and one request to the engine shows every tag on its recorded image, it
prints the same summary, and no layer could have been rebuilt. Anything else (a file touched, a tag
moved, another engine, no record) falls through to the full build, which records afresh.

The trust model is the hash cache's (:class:`ascend_stack.lock.HashCache`): a file changed without
changing its size, mtime or inode is not noticed; ``invoke fetch`` and ``--no-cache`` always take
the full path. Standard library only: importing this module must stay cheap.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SCHEMA = 1
REPO = Path(__file__).resolve().parents[2]
RECORDS = REPO / "build" / ".noop"
# Environment the library or the Docker client reads: another engine, client or proxy is another build.
ENV_PREFIXES = ("DOCKER_", "BUILDKIT", "ASCEND", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "PIP_")
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", "build", "dist"}


def key(options: Mapping[str, object]) -> str:
    """What makes two ``invoke build`` commands the same: their options, the directory, the engine."""
    env = {k: v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIXES)}
    data = {"schema": SCHEMA, "options": dict(options), "cwd": os.getcwd(), "env": env}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _signature(path: Path) -> list[int] | None:
    """(kind, size, mtime, inode) of a file or directory (a directory's mtime moves when an entry comes or
    goes); None if it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [1 if path.is_dir() else 0, st.st_size if not path.is_dir() else 0, st.st_mtime_ns, st.st_ino]


def tree(root: Path) -> list[Path]:
    """``root`` and every file and folder under it (caches and build output left out)."""
    found = [root]
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        found += [Path(folder, d) for d in dirs] + [Path(folder, f) for f in files if not f.endswith(".pyc")]
    return found


def git_refs(repo: Path) -> list[Path]:
    """What names a repository's commits, bare or a clone: HEAD, packed-refs and refs/ (a moved branch
    rewrites one of them)."""
    git = repo / ".git" if (repo / ".git").is_dir() else repo
    return [repo, git / "HEAD", git / "packed-refs", *tree(git / "refs")]


def save(build_key: str, paths: Iterable[Path], images: Mapping[str, str], summary: list[str]) -> None:
    """Record a successful build: the files and folders it read, the tags it left (ref -> image ID), its summary."""
    record = {
        "schema": SCHEMA,
        "files": {str(p): _signature(p) for p in sorted(set(paths))},
        "images": dict(images),
        "summary": summary,
    }
    RECORDS.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=RECORDS, prefix=".record-", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(record, fh)
    os.replace(tmp, RECORDS / f"{build_key[:32]}.json")


def forget(build_key: str) -> None:
    """Drop the record (a build that did not finish must not be replayed)."""
    (RECORDS / f"{build_key[:32]}.json").unlink(missing_ok=True)


def replay(build_key: str, out: Any = None) -> bool:
    """Print the recorded summary and return True if nothing the last build read has changed."""
    try:
        record = json.loads((RECORDS / f"{build_key[:32]}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        return False
    for path, signature in record["files"].items():
        if _signature(Path(path)) != signature:
            return False
    tags = _engine_tags()
    if tags is None or any(tags.get(ref) != image for ref, image in record["images"].items()):
        return False
    print("\n".join(record["summary"]), file=out)
    return True


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.socket_path)


def _engine_tags() -> dict[str, str] | None:
    """Every ``repo:tag`` on the local engine -> image ID, in one request; None if the engine is not a local socket."""
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        return None
    conn = _UnixHTTPConnection(host[len("unix://") :])
    try:
        conn.request("GET", "/images/json")
        response = conn.getresponse()
        if response.status != 200:
            return None
        images = json.loads(response.read())
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return {tag: image["Id"] for image in images for tag in image.get("RepoTags") or ()}
