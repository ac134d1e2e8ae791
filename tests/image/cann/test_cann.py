"""cann layer: the installed CANN toolkit, chip kernels and NNAL are the row's release."""

from __future__ import annotations

from typing import Any

from ascend_stack.target import Target
from ascend_stack.verify import KERNEL_DIRS, parse_key_values, version_cfg_versions

KERNELS = "opp/built-in/op_impl/ai_core/tbe/kernel"  # under ASCEND_TOOLKIT_HOME


def test_toolkit_install_info_shows_the_rows_cann(host: Any, target: Target, cann_home: str) -> None:
    path = f"{cann_home}/{target.arch}-linux/ascend_toolkit_install.info"
    f = host.file(path)
    assert f.exists, f"{path} is missing: no CANN toolkit for {target.arch} is installed"
    info = parse_key_values(f.content_string)
    assert info.get("version") == target.cann, f"{path} says version={info.get('version')}, the row is {target.cann}"


def test_version_cfg_shows_the_rows_cann(host: Any, target: Target, cann_home: str) -> None:
    path = f"{cann_home}/version.cfg"
    f = host.file(path)
    assert f.exists, f"{path} is missing"
    versions = version_cfg_versions(f.content_string)
    assert "runtime" in versions, f"{path} has no runtime_running_version line"
    wrong = {k: v for k, v in versions.items() if v != target.cann}
    assert not wrong, f"{path}: {', '.join(f'{k} {v}' for k, v in wrong.items())}; the row is CANN {target.cann}"


def test_nnal_version_info_shows_the_rows_cann(host: Any, target: Target) -> None:
    path = f"{target.cann_path('nnal_home')}/version.info"
    f = host.file(path)
    assert f.exists, f"{path} is missing: NNAL (ATB) is not installed"
    version = parse_key_values(f.content_string, ":").get("Ascend-cann-atb")
    assert version == target.cann, f"{path} says Ascend-cann-atb {version}, the row is CANN {target.cann}"


def test_kernels_for_the_chip_are_installed(host: Any, target: Target, cann_home: str) -> None:
    path = f"{cann_home}/{KERNELS}/{KERNEL_DIRS[target.chip]}"
    listing = host.run(f"ls -A {path}").stdout.split() if host.file(path).is_directory else []
    assert listing, f"no {target.chip} kernels: {path} is missing or empty"


def test_cann_install_record_is_kept(host: Any) -> None:
    """/etc/Ascend/ascend_cann_install.info tells later CANN installers (and upgrades) where CANN is."""
    path = "/etc/Ascend/ascend_cann_install.info"
    f = host.file(path)
    assert f.exists, f"{path} is missing"
    where = parse_key_values(f.content_string).get("Install_Path")
    assert where == "/usr/local/Ascend", f"{path} says Install_Path={where}, the image has CANN in /usr/local/Ascend"


def test_cann_label_is_the_installed_release(host: Any, labels: dict[str, str], target: Target, cann_home: str) -> None:
    info = parse_key_values(host.file(f"{cann_home}/{target.arch}-linux/ascend_toolkit_install.info").content_string)
    got = labels.get("io.ascend-llm-stack.cann")
    assert got == info.get("version"), f"label cann={got}, the installed toolkit is {info.get('version')}"


def test_chip_label_names_installed_kernels(host: Any, labels: dict[str, str], cann_home: str) -> None:
    chip = labels.get("io.ascend-llm-stack.chip", "")
    assert chip in KERNEL_DIRS, f"label chip={chip!r} is none of {', '.join(KERNEL_DIRS)}"
    path = f"{cann_home}/{KERNELS}/{KERNEL_DIRS[chip]}"
    assert host.file(path).is_directory, f"label chip={chip}, but no {chip} kernels ({path})"


def test_one_chip_per_tree(host: Any, target: Target, cann_home: str) -> None:
    """From CANN 8.5 a tree holds one chip's ops: an image for A2 must not carry A3's as well, or the reverse."""
    path = f"{cann_home}/{KERNELS}"
    present = [c for c, d in KERNEL_DIRS.items() if host.file(f"{path}/{d}").is_directory]
    held = ", ".join(present) or "no chip"
    assert present == [target.chip], f"{path} holds kernels for {held}, not {target.chip} alone"
