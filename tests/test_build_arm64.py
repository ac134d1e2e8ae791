"""Opt-in (``--run-slow``): the test row's base and pta layers for aarch64, built on this host under qemu.

Real aarch64 torch 2.13.0 and torch_npu 2.13.0 wheels from PyPI; the CANN installers are the
stand-ins of tests/fakes (they check ``uname -m`` against their arch, so they also prove the build
really ran as aarch64). Needs ``scripts/docker-engine.sh --arm64`` (qemu-user-static + binfmt).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakes.cann import make_cann_packages
from fakes.sources import make_source_repos

from ascend_stack.baseimage import build_base_image
from ascend_stack.build import Builder, BuildOptions, NetworkOptions
from ascend_stack.driver import Driver, find_buildkit_client
from ascend_stack.inputs import InputDirs
from ascend_stack.matrix import load_matrix
from ascend_stack.target import resolve

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def test_arm64_base_and_pta_layers_under_emulation(docker_client: Any, tmp_path: Path, megatron_core: Path) -> None:
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        pytest.skip("no arm64 emulation: run 'bash scripts/docker-engine.sh --arm64' first")
    build_base_image("debian-bookworm", "aarch64", docker_client=docker_client)
    target = resolve(load_matrix(REPO / "matrix.yaml"), "test", arch="aarch64")
    make_cann_packages(tmp_path / "packages", target.cann, "aarch64")
    make_source_repos(tmp_path / "upstream", megatron_core)
    opts = BuildOptions(
        dirs=InputDirs.under(tmp_path, source_overrides=tmp_path / "upstream"),
        network=NetworkOptions(ca_cert=HOST_CA if HOST_CA.is_file() else None),
        until="pta",
        out_dir=tmp_path / "build" / "render",  # build/ also holds the hash cache
    )
    results = Builder(target, opts, Driver(find_buildkit_client(), docker_client)).run()
    assert [r.name for r in results] == ["base", "cann", "pta"]
    pta = docker_client.images.get(results[-1].content_tag)
    assert pta.attrs["Architecture"] == "arm64"
    # Not `import torch`: torch 2.13's aarch64 wheel segfaults under qemu-user at import (oneDNN's
    # xbyak_aarch64 reads MIDR_EL1 from sysfs, which qemu does not provide). What the image holds is
    # checked instead: aarch64 userland, the pinned wheels, and aarch64 machine code in their libraries.
    script = (
        "uname -m; python -m pip show torch torch_npu | sed -n 's/^Version: //p'; "
        "site=$(python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'); "
        "readelf -h $site/torch/lib/libtorch_cpu.so $site/torch_npu/lib/libtorch_npu.so | sed -n 's/ *Machine: *//p'"
    )
    out = docker_client.containers.run(pta.id, ["-c", script], entrypoint=["bash"], remove=True,
                                       platform="linux/arm64").decode().splitlines()  # fmt: skip
    assert out[0] == "aarch64"
    assert [v.split("+")[0] for v in out[1:3]] == ["2.13.0", "2.13.0"]
    assert out[3:] == ["AArch64", "AArch64"]
