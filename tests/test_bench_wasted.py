"""ascend_stack/wasted.py: the wasted-bytes walker, on tiny hand-made ``docker save`` archives."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from ascend_stack import wasted

# One layer: (name, size) for a file, (name, None) for a directory, (name, "->target") for a hard link.
Layer = list[tuple[str, object]]


def _layer_tar(entries: Layer) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, what in entries:
            info = tarfile.TarInfo(name)
            data = None
            if what is None:
                info.type = tarfile.DIRTYPE
            elif isinstance(what, str):
                info.type, info.linkname = tarfile.LNKTYPE, what.removeprefix("->")
            else:
                info.size = int(what)  # type: ignore[call-overload]
                data = io.BytesIO(b"x" * info.size)
            tar.addfile(info, data)
    return buf.getvalue()


def _save_archive(path: Path, layers: list[Layer], history: list[dict[str, object]] | None = None) -> Path:
    """A ``docker save``-style archive (legacy layout): ``<id>/layer.tar`` files, config, ``manifest.json``."""
    names = [f"{i:064x}/layer.tar" for i in range(len(layers))]
    with tarfile.open(path, "w") as outer:
        members = [*zip(names, (_layer_tar(layer) for layer in layers), strict=True)]
        members.append(("c.json", json.dumps({"history": history or []}).encode()))
        members.append(("manifest.json", json.dumps([{"Config": "c.json", "Layers": names}]).encode()))
        for name, data in reversed(members):  # the walker must follow the manifest, not the tar order
            info = tarfile.TarInfo(name)
            info.size = len(data)
            outer.addfile(info, io.BytesIO(data))
    return path


def walk(tmp_path: Path, *layers: Layer) -> Any:  # a WasteReport of the loaded module
    return wasted.wasted_bytes(_save_archive(tmp_path / "image.tar", list(layers)))


def test_nothing_hidden_means_nothing_wasted(tmp_path: Path) -> None:
    report = walk(tmp_path, [("usr", None), ("usr/a", 10)], [("usr", None), ("usr/b", 5), ("./etc/c", 1)])
    assert report.wasted == 0 and report.hidden == []
    assert report.total == 16 and report.layer_bytes == [10, 6]
    assert report.fraction() == 0.0


def test_an_overwritten_file_wastes_its_earlier_copy(tmp_path: Path) -> None:
    report = walk(tmp_path, [("etc/app.conf", 100)], [("etc/app.conf", 30)], [("etc/app.conf", 7)])
    assert report.wasted == 130
    assert [(h.path, h.size, h.added_in, h.hidden_in, h.how) for h in report.hidden] == [
        ("etc/app.conf", 100, 0, 1, "overwrite"),
        ("etc/app.conf", 30, 1, 2, "overwrite"),
    ]
    assert report.fraction() == pytest.approx(130 / 137)


def test_a_copied_then_deleted_installer_is_wasted(tmp_path: Path) -> None:
    """The naive Dockerfile pattern: COPY the installers, install, rm them in a later RUN."""
    report = walk(
        tmp_path,
        [("tmp", None), ("tmp/cann", None), ("tmp/cann/toolkit.run", 4000), ("tmp/cann/nnal.run", 1000)],
        [("usr/local/Ascend/payload.bin", 3900)],
        [("tmp", None), ("tmp/.wh.cann", 0)],
    )
    assert report.wasted == 5000
    assert {h.path for h in report.hidden} == {"tmp/cann/toolkit.run", "tmp/cann/nnal.run"}
    assert all(h.how == "whiteout" and h.hidden_in == 2 for h in report.hidden)
    assert report.largest(1)[0].path == "tmp/cann/toolkit.run"


def test_a_whiteout_of_one_file_leaves_its_siblings(tmp_path: Path) -> None:
    report = walk(tmp_path, [("d/x", 5), ("d/y", 7)], [("d/.wh.x", 0)], [("d/y", 1)])
    assert [(h.path, h.size, h.how) for h in report.hidden] == [("d/x", 5, "whiteout"), ("d/y", 7, "overwrite")]


def test_an_opaque_directory_hides_only_the_lower_layers_contents(tmp_path: Path) -> None:
    # The marker comes after the layer's own new file in the tar: that file must survive.
    report = walk(
        tmp_path,
        [("d", None), ("d/x", 5), ("d/sub", None), ("d/sub/y", 7), ("e/z", 11)],
        [("d", None), ("d/new", 3), ("d/.wh..wh..opq", 0)],
        [("d/.wh.new", 0)],
    )
    assert sorted((h.path, h.size, h.how) for h in report.hidden) == [
        ("d/new", 3, "whiteout"),
        ("d/sub/y", 7, "opaque"),
        ("d/x", 5, "opaque"),
    ]
    assert report.wasted == 15


def test_a_file_over_a_directory_hides_the_whole_subtree_and_back(tmp_path: Path) -> None:
    report = walk(
        tmp_path,
        [("opt/tool", None), ("opt/tool/bin/a", 4), ("opt/tool/lib/b", 6)],
        [("opt/tool", 2)],  # a file where the directory was
        [("opt/tool", None), ("opt/tool/c", 1)],  # a directory where the file was
    )
    assert sorted((h.path, h.size, h.hidden_in) for h in report.hidden) == [
        ("opt/tool", 2, 2),
        ("opt/tool/bin/a", 4, 1),
        ("opt/tool/lib/b", 6, 1),
    ]


def test_hard_linked_data_is_wasted_only_when_every_name_is_gone(tmp_path: Path) -> None:
    report = walk(
        tmp_path,
        [("usr/bin/python3.11", 50), ("usr/bin/python3", "->usr/bin/python3.11")],
        [("usr/bin/.wh.python3.11", 0)],
    )
    assert report.wasted == 0 and report.total == 50
    report = walk(
        tmp_path,
        [("usr/bin/python3.11", 50), ("usr/bin/python3", "->usr/bin/python3.11")],
        [("usr/bin/.wh.python3.11", 0)],
        [("usr/.wh.bin", 0)],
    )
    assert [(h.size, h.added_in, h.hidden_in) for h in report.hidden] == [(50, 0, 2)]


def test_a_whiteout_of_something_absent_counts_nothing(tmp_path: Path) -> None:
    report = walk(tmp_path, [("a", 3)], [(".wh.b", 0), ("c/.wh..wh..opq", 0)])
    assert report.wasted == 0


def test_an_archive_without_a_manifest_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "not-an-image.tar"
    with tarfile.open(path, "w") as tar:
        tar.addfile(tarfile.TarInfo("hello"), io.BytesIO(b""))
    with pytest.raises(ValueError, match=r"no manifest\.json"):
        wasted.wasted_bytes(path)


def test_layer_commands_skip_the_empty_history_entries(tmp_path: Path) -> None:
    history = [
        {"created_by": "ADD rootfs"},
        {"created_by": "ENV A=1", "empty_layer": True},
        {"created_by": "RUN rm -rf /tmp/cann"},
    ]
    archive = _save_archive(tmp_path / "image.tar", [[("a", 1)], [("tmp/.wh.cann", 0)]], history)
    assert wasted.layer_commands(archive) == ["ADD rootfs", "RUN rm -rf /tmp/cann"]
    archive = _save_archive(tmp_path / "other.tar", [[("a", 1)]], history)  # does not line up: unknown
    assert wasted.layer_commands(archive) == [""]


def test_largest_added_lists_what_the_upper_layers_left_visible(tmp_path: Path) -> None:
    report = walk(
        tmp_path,
        [("usr/lib/base.so", 90)],  # the parent's: never counted
        [("opt/a.bin", 40), ("opt/b.bin", 70), ("opt/gone.bin", 500), ("usr/lib/base.so", 10)],
        [("opt/.wh.gone.bin", 0), ("opt/c.bin", 5)],
    )
    assert report.largest_added(1, n=5) == [("opt/b.bin", 70), ("opt/a.bin", 40), ("usr/lib/base.so", 10),
                                            ("opt/c.bin", 5)]  # fmt: skip
    assert report.largest_added(1, n=2) == [("opt/b.bin", 70), ("opt/a.bin", 40)]
    assert report.largest_added(2) == [("opt/c.bin", 5)]
