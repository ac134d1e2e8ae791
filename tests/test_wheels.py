"""Wheel matching by file name for the target (Python X.Y, arch, glibc), and fetching a missing one."""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback_http import LoopbackServer

from ascend_stack.download import ChecksumMismatch
from ascend_stack.errors import UserError
from ascend_stack.wheels import WheelTarget, fetch_wheel, find_wheel, pip_download_command

X86_311 = WheelTarget("3.11", "x86_64", (2, 36))  # debian-bookworm
ARM_310 = WheelTarget("3.10", "aarch64", (2, 35))  # ubuntu22.04


def make_wheel(folder: Path, filename: str) -> Path:
    """A minimal but valid wheel: pip can read its metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    name, version = filename.split("-")[:2]
    info = f"{name}-{version}.dist-info"
    path = folder / filename
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def names(folder: Path, *filenames: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in filenames:
        (folder / f).write_bytes(b"")


@pytest.mark.parametrize(
    ("req", "target", "filename", "fits"),
    [
        ("torch==2.13.0", X86_311, "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", True),  # local label ok
        ("torch==2.13.0", X86_311, "torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl", False),  # arch
        ("torch==2.13.0", X86_311, "torch-2.13.0-cp310-cp310-manylinux_2_28_x86_64.whl", False),  # python
        ("torch==2.13.0", X86_311, "torch-2.13.1-cp311-cp311-manylinux_2_28_x86_64.whl", False),  # version
        ("torch==2.13.0", X86_311, "torch-2.13.0-cp311-cp311-manylinux_2_39_x86_64.whl", False),  # glibc too new
        ("torch==2.13.0", X86_311, "torch-2.13.0-cp311-cp311-linux_x86_64.whl", True),  # built on a host
        ("torch==2.1.0", ARM_310, "torch-2.1.0-cp310-cp310-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", True),
        ("torch==2.1.0", ARM_310, "torch-2.1.0-cp310-cp310-win_amd64.whl", False),
        ("torch_npu==2.1.0.post12", ARM_310, "torch_npu-2.1.0.post12-cp310-cp310-manylinux_2_17_aarch64.whl", True),
        ("torch_npu==2.1.0", ARM_310, "torch_npu-2.1.0.post12-cp310-cp310-manylinux_2_17_aarch64.whl", False),
        ("torch_npu==2.6.0rc1", ARM_310, "torch_npu-2.6.0rc1-cp310-cp310-manylinux_2_28_aarch64.whl", True),
        ("torch-npu==2.6.0rc1", ARM_310, "torch_npu-2.6.0rc1-cp310-cp310-manylinux_2_28_aarch64.whl", True),
        ("demo==1.0", ARM_310, "demo-1.0-py3-none-any.whl", True),
        ("demo==1.0", X86_311, "demo-1.0-cp39-abi3-manylinux_2_17_x86_64.whl", True),
        ("demo==1.0", X86_311, "demo-1.0-cp312-abi3-manylinux_2_17_x86_64.whl", False),
        ("demo==1.0", X86_311, "not-a-wheel.whl", False),
    ],
)
def test_wheel_fits_the_target(req: str, target: WheelTarget, filename: str, fits: bool, tmp_path: Path) -> None:
    names(tmp_path, filename)
    found = find_wheel(req, target, [tmp_path])
    assert (found == tmp_path / filename) if fits else found is None


def test_earlier_wheelhouse_wins_then_best_tag(tmp_path: Path) -> None:
    user, cache = tmp_path / "user", tmp_path / "cache"
    names(cache, "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl")
    names(
        user, "torch-2.13.0+cpu-cp311-cp311-manylinux_2_17_x86_64.whl", "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl"
    )
    assert find_wheel("torch==2.13.0", X86_311, [user, cache]) == user / (
        "torch-2.13.0+cpu-cp311-cp311-manylinux_2_17_x86_64.whl"
    )
    assert find_wheel("torch==2.13.0", X86_311, [tmp_path / "missing", cache]) == cache / (
        "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl"
    )


def test_invalid_requirement_is_a_user_error() -> None:
    with pytest.raises(UserError, match="pinned requirement"):
        find_wheel("==2.13.0 torch", X86_311, [])


def test_pip_download_command_targets_the_image_not_this_host(tmp_path: Path) -> None:
    cmd = pip_download_command("torch==2.1.0", ARM_310, tmp_path, index="https://download.pytorch.org/whl/cpu")
    joined = " ".join(cmd)
    assert cmd[-1] == "torch==2.1.0" and "--no-deps --only-binary=:all:" in joined
    assert "--python-version 3.10 --implementation cp" in joined and "--abi cp310" in joined
    assert "--platform manylinux_2_35_aarch64" in joined and "--platform manylinux2014_aarch64" in joined
    assert "x86_64" not in joined and "linux_aarch64 " not in joined.replace("manylinux", "")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in joined
    # nothing that would drop the user's pip configuration (find-links /opt/wheels, certificates)
    assert not {"--isolated", "--no-index", "--index-url"} & set(cmd)


@pytest.fixture
def local_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip with no config files and no index: it may only use a local find-links folder."""
    links = tmp_path / "links"
    links.mkdir()
    for var in [v for v in os.environ if v.startswith("PIP_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links


def test_pip_download_picks_the_targets_wheel_into_the_wheelhouse(local_pip: Path, tmp_path: Path) -> None:
    make_wheel(local_pip, "demo-1.0-cp310-cp310-manylinux_2_17_aarch64.whl")
    make_wheel(local_pip, "demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl")  # this host's: not wanted
    house = tmp_path / "wheelhouse"
    got = fetch_wheel("demo==1.0", ARM_310, house, progress=False)
    assert got == house / "demo-1.0-cp310-cp310-manylinux_2_17_aarch64.whl"
    assert sorted(p.name for p in house.iterdir()) == [got.name]  # no temp folder left


def test_pip_download_failure_is_one_line(local_pip: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        fetch_wheel("demo==9.9", ARM_310, tmp_path / "wh", progress=False)
    assert "pip download demo==9.9" in str(err.value) and "\n" not in str(err.value)
    assert list((tmp_path / "wh").iterdir()) == []


def test_pip_download_with_a_locked_hash_mismatch_stays_out_of_the_wheelhouse(local_pip: Path, tmp_path: Path) -> None:
    wheel = make_wheel(local_pip, "demo-1.0-py3-none-any.whl")
    house = tmp_path / "wh"
    with pytest.raises(ChecksumMismatch) as err:
        fetch_wheel("demo==1.0", ARM_310, house, expected={wheel.name: ("0" * 64, "locks/x.yaml")}, progress=False)
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() in str(err.value)
    assert list(house.iterdir()) == []


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as srv:
        yield srv


def test_direct_url_is_downloaded_and_checked_against_the_target(server: LoopbackServer, tmp_path: Path) -> None:
    name = "torch_npu-2.6.0rc1-cp310-cp310-manylinux_2_28_aarch64.whl"
    server.files[f"/releases/{name}"] = b"wheel bytes"
    got = fetch_wheel("torch_npu==2.6.0rc1", ARM_310, tmp_path, url=server.url(f"/releases/{name}"), progress=False)
    assert got == tmp_path / name and got.read_bytes() == b"wheel bytes"
    with pytest.raises(UserError, match=r"is not a wheel for torch_npu==2\.6\.0rc1"):
        fetch_wheel("torch_npu==2.6.0rc1", X86_311, tmp_path, url=server.url(f"/releases/{name}"), progress=False)
