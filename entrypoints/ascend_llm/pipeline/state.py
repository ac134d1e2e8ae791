"""What a pipeline remembers between runs: one record per finished step, one marker per started one.

Records live in ``<output>/pipeline/state/<step>.json``. A step's record is written only after it
exited 0, and removed when it starts again, so a stopped or failed step has none and runs again.
The ``.started.json`` marker is written when a step starts and removed when it finishes; it tells
the next run that a stopped training step may continue from its own checkpoint.

Fingerprints are cheap on purpose (a 14B checkpoint is 200 GB): a file of at most ``HASH_LIMIT``
bytes is hashed (sha256 of its content), a larger one contributes its name, size and mtime. A
Megatron checkpoint directory contributes its ``latest_checkpointed_iteration.txt`` and the
iteration directory it names, not older iterations, logs or TensorBoard events; a data prefix the
files that start with it. The side directories stages write into (``logs/``, ``tensorboard/``,
convert's ``mg2hf/`` inside an HF input) are left out, so a later step writing there does not
make an earlier one look changed.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

from ascend_llm.checkpoint import TRACKER
from ascend_llm.errors import AscendLLMError

HASH_LIMIT = 1024 * 1024
SIDE_DIRS = {"logs", "tensorboard", "mg2hf"}
STATE_DIR = "pipeline"
RECORD_VERSION = 1


def hash_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def file_entry(path: str, name: str) -> list[Any]:
    """[name, size, content hash] for a small file, [name, size, mtime_ns] for a large one."""
    st = os.stat(path)
    if st.st_size <= HASH_LIMIT:
        return [name, st.st_size, hash_file(path)]
    return [name, st.st_size, st.st_mtime_ns]


def _walk(root: str, skip: set[str]) -> Iterator[tuple[str, str]]:
    for directory, dirs, files in os.walk(root):
        rel = os.path.relpath(directory, root)
        if rel == ".":
            dirs[:] = [d for d in dirs if d not in skip]
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(directory, name)
            yield full, os.path.normpath(os.path.join(rel, name))


def fingerprint(path: str | None, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """A cheap description of what is at ``path`` (see the module docstring); equal means unchanged."""
    if not path:
        return {"kind": "none"}
    entries: list[Any] = []
    try:
        if os.path.isfile(path):
            return {"kind": "file", "digest": _digest([file_entry(path, os.path.basename(path))])}
        if os.path.isdir(path):
            tracker = os.path.join(path, TRACKER)
            if os.path.isfile(tracker):
                entries.append(file_entry(tracker, TRACKER))
                text = Path(tracker).read_text(encoding="utf-8", errors="replace").strip()
                sub = "release" if text == "release" else f"iter_{int(text):07d}" if text.isdigit() else None
                if sub and os.path.isdir(os.path.join(path, sub)):
                    for full, rel in _walk(os.path.join(path, sub), set()):
                        entries.append(file_entry(full, os.path.join(sub, rel)))
                return {"kind": "checkpoint", "iteration": text, "digest": _digest(entries)}
            skip = set(SIDE_DIRS)
            for full, rel in _walk(path, skip):
                if not any(os.path.abspath(full).startswith(e + os.sep) for e in exclude):
                    entries.append(file_entry(full, rel))
            return {"kind": "directory", "files": len(entries), "digest": _digest(entries)}
        matches = sorted(glob.glob(glob.escape(path) + "_*"))
        files = [m for m in matches if os.path.isfile(m)]
        if files:
            return {
                "kind": "prefix",
                "files": len(files),
                "digest": _digest([file_entry(f, os.path.basename(f)) for f in files]),
            }
    except OSError as exc:
        return {"kind": "unreadable", "error": exc.strerror or str(exc)}
    return {"kind": "missing"}


def _digest(entries: list[Any]) -> str:
    return hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()


def combined(parts: dict[str, Any]) -> str:
    """One hash over a mapping of fingerprints and values."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class State:
    """The records and markers of one pipeline under ``<output>/pipeline``."""

    def __init__(self, output: str) -> None:
        self.root = Path(output) / STATE_DIR
        self.steps = self.root / "state"
        self.logs = self.root / "logs"

    def record_path(self, step: str) -> Path:
        return self.steps / f"{step}.json"

    def marker_path(self, step: str) -> Path:
        return self.steps / f"{step}.started.json"

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"unreadable": str(path)}
        return data if isinstance(data, dict) and data.get("version") == RECORD_VERSION else {"unreadable": str(path)}

    def record(self, step: str) -> dict[str, Any] | None:
        return self._read(self.record_path(step))

    def marker(self, step: str) -> dict[str, Any] | None:
        return self._read(self.marker_path(step))

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        """Atomically, so a stop never leaves half a record."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"version": RECORD_VERSION, **data}, indent=2, sort_keys=True) + "\n", "utf-8")
        os.replace(tmp, path)

    def start(self, step: str, marker: dict[str, Any]) -> None:
        """The step is about to run: its old record goes, the marker says what it started with."""
        with contextlib.suppress(FileNotFoundError):
            self.record_path(step).unlink()
        self._write(self.marker_path(step), marker)

    def finish(self, step: str, record: dict[str, Any]) -> None:
        self._write(self.record_path(step), record)
        with contextlib.suppress(FileNotFoundError):
            self.marker_path(step).unlink()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One pipeline process per output root at a time."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / "lock", "a+")  # noqa: SIM115 - closed below
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise AscendLLMError(
                    f"another ascend-llm pipeline is running on {self.root.parent} (it holds {self.root / 'lock'}); "
                    f"wait for it or stop it"
                ) from None
            yield
        finally:
            handle.close()
