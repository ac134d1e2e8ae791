"""Path options and outputs: checked up front, written atomically, never deleting what the user made.

Every path option is checked before any work with :func:`expect`, which says in one line what was
expected and what is there (a file, a directory, nothing). Outputs go to a private temporary name
next to the target and are renamed into place, so a failure or Ctrl-C leaves the old file or
nothing, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import unicodedata
from pathlib import Path

from .errors import UserError


def found(path: Path) -> str:
    """What is at ``path``: a file, a directory, nothing, or something else."""
    if path.is_dir():
        return "a directory"
    if path.is_file():
        return "a file"
    if os.path.lexists(path):
        return "a broken link" if path.is_symlink() else "a special file"
    return "nothing"


def expect(path: Path, option: str, want: str, fix: str = "") -> None:
    """Refuse ``option PATH`` unless it names ``want`` (``file`` or ``directory``)."""
    there = found(path)
    if there != f"a {want}":
        raise UserError(f"{option} {path}: expected a {want}, found {there}" + (f"; {fix}" if fix else ""))


def expect_creatable(path: Path, option: str, want: str) -> None:
    """``path`` may be created as ``want``: it is one already or missing, and no parent is a file."""
    there = found(path)
    if there not in ("nothing", f"a {want}"):
        raise UserError(f"{option} {path}: expected a {want} (or nothing yet), found {there}")
    for parent in path.absolute().parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise UserError(f"{option} {path}: {parent} is {found(parent)}, so nothing can be created under it")
            break


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a private temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def one_line(text: str) -> str:
    """``text`` for a one-line message: control characters (a newline in a path) escaped, the rest as is."""
    out = []
    for char in text:
        if char in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        elif unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)
