"""Wasted bytes of an image: file contents that a later layer deletes or overwrites.

Why measure this: a layer is immutable. Deleting or replacing a file in a later layer only hides it;
its bytes stay in the earlier layer, and every pull, push, registry and node cache carries them. The
classic case is a Dockerfile (or a ``docker commit`` workflow) that COPYs multi-GB CANN installers
in, runs them and ``rm``s them in a later step: the image ships the installers although no container
can ever see them. ascend-llm-stack bind-mounts installers and wheels into the one step that uses
them, so its target is at most 1 % of the image; ``bench/build_bench.py`` reports this figure for
its image and for a naive single Dockerfile. The same walk tells ``invoke build`` which paths a layer
over its size budget added (:meth:`WasteReport.largest_added`).

How: walk the layer tars of a ``docker save`` archive in the order of its ``manifest.json``,
keeping every visible path with the layer entry that provides it. A later layer hides an earlier
entry by

* a whiteout ``.wh.<name>``: deletes ``<name>``, and everything below it if it is a directory;
* an opaque whiteout ``<dir>/.wh..wh..opq``: deletes everything the lower layers had in ``<dir>``
  (not what the same layer adds there);
* writing the same path again: a file over a file, anything over a non-directory, or a
  non-directory over a directory (which hides the directory's whole subtree);

and the earlier entry's size then counts as wasted. Whiteouts of a layer only ever apply to lower
layers, so each layer's deletions are applied before its additions, whatever their order in the tar.
Only regular file contents count (tar ``size``; directories, symlinks and devices are 0 bytes), as
in ``docker image inspect``'s ``Size`` up to tar headers. Hard links inside a layer share one copy of
the data: it is wasted only once every name for it is gone.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Hidden", "WasteReport", "layer_commands", "walk_layers", "wasted_bytes"]

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class Hidden:
    """Bytes of one file that a later layer hid: they ship with the image but are never visible."""

    path: str
    size: int
    added_in: int  # index of the layer that holds the bytes (0 = the bottom layer)
    hidden_in: int  # index of the layer that deleted or overwrote them
    how: str  # "whiteout" | "opaque" | "overwrite"


@dataclass
class WasteReport:
    """What :func:`walk_layers` found. ``layer_bytes[i]``: file bytes layer ``i`` adds; ``visible``: every
    regular file of the final image, path -> (size, index of the layer that holds its bytes)."""

    layers: list[str] = field(default_factory=list)
    layer_bytes: list[int] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)
    visible: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def wasted(self) -> int:
        return sum(h.size for h in self.hidden)

    @property
    def total(self) -> int:
        """Bytes of file content over all layers: what the image ships."""
        return sum(self.layer_bytes)

    def fraction(self, of: int | None = None) -> float:
        """Wasted bytes as a fraction of ``of`` (default: :attr:`total`)."""
        whole = self.total if of is None else of
        return self.wasted / whole if whole else 0.0

    def largest(self, n: int = 10) -> list[Hidden]:
        return sorted(self.hidden, key=lambda h: (-h.size, h.path))[:n]

    def largest_added(self, first_layer: int, n: int = 5) -> list[tuple[str, int]]:
        """The ``n`` largest visible files whose bytes layers ``first_layer`` and above added."""
        added = [(p, size) for p, (size, layer) in self.visible.items() if layer >= first_layer and size > 0]
        return sorted(added, key=lambda item: (-item[1], item[0]))[:n]


@dataclass
class _Blob:
    """File data, possibly under several names (hard links)."""

    size: int
    layer: int
    names: int = 0


@dataclass
class _Entry:
    is_dir: bool
    blob: _Blob | None = None


class _Tree:
    """The visible file system after the layers so far: path -> entry, plus each directory's children."""

    def __init__(self, report: WasteReport) -> None:
        self.entries: dict[str, _Entry] = {}
        self.children: dict[str, set[str]] = {}
        self.report = report

    def _drop(self, path: str, layer: int, how: str) -> None:
        """Remove ``path`` and its subtree; record the data whose last name this was."""
        stack = [path]
        while stack:
            p = stack.pop()
            entry = self.entries.pop(p, None)
            stack.extend(self.children.pop(p, ()))
            if entry is None:
                continue
            self.children.get(posixpath.dirname(p), set()).discard(p)
            blob = entry.blob
            if blob is not None:
                blob.names -= 1
                if blob.names == 0 and blob.size > 0:
                    self.report.hidden.append(Hidden(p, blob.size, blob.layer, layer, how))

    def delete(self, path: str, layer: int, how: str) -> None:
        if path in self.entries or path in self.children:
            self._drop(path, layer, how)

    def delete_children(self, path: str, layer: int) -> None:
        for child in list(self.children.get(path, ())):
            self._drop(child, layer, "opaque")

    def _ensure_dir(self, path: str, layer: int) -> None:
        """``path`` and its ancestors as directories; a non-directory in the way is overwritten."""
        missing = []
        while path:
            entry = self.entries.get(path)
            if entry is not None and entry.is_dir:
                break
            if entry is not None:
                self._drop(path, layer, "overwrite")
            missing.append(path)
            path = posixpath.dirname(path)
        for p in reversed(missing):
            self.entries[p] = _Entry(is_dir=True)
            self.children.setdefault(posixpath.dirname(p), set()).add(p)

    def add(self, path: str, layer: int, is_dir: bool, blob: _Blob | None) -> None:
        old = self.entries.get(path)
        if is_dir:
            self._ensure_dir(path, layer)
            return
        if old is not None or path in self.children:
            self._drop(path, layer, "overwrite")
        self._ensure_dir(posixpath.dirname(path), layer)
        if blob is not None:
            blob.names += 1
        self.entries[path] = _Entry(is_dir=False, blob=blob)
        self.children.setdefault(posixpath.dirname(path), set()).add(path)


def _norm(name: str) -> str:
    """A tar member name as a path relative to the image root: no ``./``, no trailing ``/``."""
    path = posixpath.normpath("/" + name).lstrip("/")
    return "" if path == "." else path


def walk_layers(layers: Iterable[tuple[str, Iterable[tarfile.TarInfo]]]) -> WasteReport:
    """Wasted bytes of layers given bottom first as ``(name, tar members)``; see the module docstring."""
    report = WasteReport()
    tree = _Tree(report)
    for index, (name, layer_members) in enumerate(layers):
        members = list(layer_members)
        report.layers.append(name)
        report.layer_bytes.append(sum(m.size for m in members if m.isreg()))
        additions = []
        for m in members:  # 1. deletions, against the lower layers only
            path = _norm(m.name)
            base = posixpath.basename(path)
            if base == OPAQUE:
                tree.delete_children(posixpath.dirname(path), index)
            elif base.startswith(WHITEOUT):
                tree.delete(posixpath.join(posixpath.dirname(path), base[len(WHITEOUT) :]), index, "whiteout")
            elif path:
                additions.append((path, m))
        for path, m in additions:  # 2. additions
            blob: _Blob | None = None
            if m.isreg():
                blob = _Blob(m.size, index)
            elif m.islnk():
                target = tree.entries.get(_norm(m.linkname))
                blob = target.blob if target is not None else None
            tree.add(path, index, m.isdir(), blob)
    report.visible = {p: (e.blob.size, e.blob.layer) for p, e in tree.entries.items() if e.blob is not None}
    return report


def _json(outer: tarfile.TarFile, name: str, archive: Path, what: str) -> Any:
    try:
        member = outer.extractfile(name)
    except KeyError:
        member = None
    if member is None:
        raise ValueError(f"{archive}: no {what}{' ' + name if what != name else ''} (not a docker save archive)")
    return json.load(member)


def _manifest(outer: tarfile.TarFile, archive: Path) -> dict[str, Any]:
    manifest = _json(outer, "manifest.json", archive, "manifest.json")
    if len(manifest) != 1:
        raise ValueError(f"{archive}: holds {len(manifest)} images; save exactly one")
    return manifest[0]


def _layer_members(archive: Path) -> Iterator[tuple[str, list[tarfile.TarInfo]]]:
    with tarfile.open(archive) as outer:
        for name in _manifest(outer, archive)["Layers"]:
            blob = outer.extractfile(name)
            if blob is None:
                raise ValueError(f"{archive}: layer {name} is missing")
            with tarfile.open(fileobj=blob, mode="r:*") as layer:
                yield name, layer.getmembers()


def wasted_bytes(archive: Path | str) -> WasteReport:
    """Walk the layers of a ``docker save`` archive of one image (legacy or OCI layout)."""
    return walk_layers(_layer_members(Path(archive)))


def layer_commands(archive: Path | str) -> list[str]:
    """What made each layer (bottom first): ``created_by`` of the image config's non-empty history
    entries; all ``""`` when the history does not line up with the layers."""
    archive = Path(archive)
    with tarfile.open(archive) as outer:
        manifest = _manifest(outer, archive)
        config = _json(outer, manifest["Config"], archive, "image config")
    commands = [h.get("created_by", "") for h in config.get("history", []) if not h.get("empty_layer")]
    return commands if len(commands) == len(manifest["Layers"]) else [""] * len(manifest["Layers"])
