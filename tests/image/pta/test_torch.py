"""pta layer: torch, torch_npu and Ascend apex as the matrix row and its lock say, and they load."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from ascend_stack import render
from ascend_stack.lock import Lock
from ascend_stack.target import Target
from ascend_stack.verify import HOST_DRIVER_LIBS, apex_problem, ldd_missing

NO_AUTOLOAD = "TORCH_DEVICE_BACKEND_AUTOLOAD=0"  # torch >= 2.5 would load torch_npu, which needs the driver


def _public(version: str) -> str:
    return Version(version).public


def test_torch_is_the_rows(pip_versions: dict[str, str], target: Target) -> None:
    have = pip_versions.get("torch")
    assert have is not None, "torch is not installed"
    assert _public(have) == _public(target.torch), f"torch {have} is installed, the row says {target.torch}"


def test_torch_npu_is_the_rows(pip_versions: dict[str, str], target: Target) -> None:
    have = pip_versions.get("torch-npu")
    assert have is not None, "torch_npu is not installed"
    assert Version(have) == Version(target.torch_npu), f"torch_npu {have} is installed, the row says {target.torch_npu}"


def test_apex_is_ascend_apex(pip_versions: dict[str, str], target: Target) -> None:
    have = pip_versions.get("apex")
    if target.row.apex is None:
        assert have is None, f"apex {have} is installed, but row {target.row.key} builds none (MindSpeed provides it)"
        return
    problem = apex_problem(have)
    assert problem is None, problem


@pytest.mark.parametrize("name", ["torch", "torch_npu"])
def test_wheel_is_the_locked_file(name: str, pip_versions: dict[str, str], lock: Lock) -> None:
    locked = [f for f in lock.files if f.endswith(".whl") and f.split("-", 1)[0].lower() == name]
    if not locked:
        pytest.skip(f"the lock of row {lock.row} records no {name} wheel")
    versions = {f.split("-")[1] for f in locked}
    have = pip_versions.get(name.replace("_", "-"))
    assert have in versions, f"{name} {have} is installed, the lock records {', '.join(sorted(locked))}"


def test_pins_hold(pip_versions: dict[str, str], target: Target) -> None:
    """Every constraint of the row (CANN's, its MindSpeed-LLM release's, its own) holds where installed."""
    problems = []
    for spec in render.row_pins(target):
        req = Requirement(spec)
        have = pip_versions.get(req.name.lower().replace("_", "-"))
        if have is not None and not req.specifier.contains(Version(have), prereleases=True):
            problems.append(f"{req.name} {have} breaks the pin {spec}")
    assert not problems, "; ".join(problems)


def test_pkg_resources_imports_where_the_sources_need_it(host: Any, target: Target) -> None:
    """Megatron core_r0.8.0, MindSpeed 2c085cc9 and MindSpeed-LLM <= 2.2.0 import pkg_resources."""
    release = target.matrix.support.mindspeed_llm.get(target.row.mindspeed_llm.release)
    if not release or not any(Requirement(p).name == "setuptools" for p in release.pins):
        pytest.skip(f"MindSpeed-LLM {target.row.mindspeed_llm.release}'s sources do not import pkg_resources")
    out = host.run("python -c 'import pkg_resources' 2>&1")
    assert out.rc == 0, f"`import pkg_resources` fails: {(out.stdout.strip().splitlines() or ['?'])[-1]}"


def test_import_torch_without_device_autoload(host: Any) -> None:
    out = host.run(f"{NO_AUTOLOAD} python -c 'import torch; print(torch.__version__)'")
    assert out.rc == 0, f"import torch failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}"


def test_nnal_abi_matches_torch(host: Any, environment: dict[str, str]) -> None:
    """NNAL's set_env.sh picks atb/cxx_abi_0 or _1; it must be the C++ ABI torch was built with."""
    abi = host.check_output(f"{NO_AUTOLOAD} python -c 'import torch; print(int(torch.compiled_with_cxx11_abi()))'")
    atb = environment.get("ATB_HOME_PATH", "")
    assert atb.rstrip("/").endswith(f"cxx_abi_{abi.strip()}"), (
        f"ATB_HOME_PATH is {atb or 'unset'}, but torch is built with cxx11 ABI {abi.strip()}"
    )


def test_torch_npu_libraries_resolve_against_the_image_cann(host: Any, cann_standin: str | None) -> None:
    """`ldd` of every torch_npu library finds everything but the driver libraries the host mounts.

    torch's and torch_npu's own lib/ folders are on the search path, as they are in a process that
    imports torch_npu (they are loaded before torchair's modules ask for libtorch_npu.so).
    """
    if cann_standin:
        pytest.skip(f"nothing real to resolve against: {cann_standin}")
    site = host.check_output(f"{NO_AUTOLOAD} python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'")
    libs = host.check_output(f"find {site}/torch_npu -name '*.so*' -type f").split()
    assert libs, f"no shared libraries under {site}/torch_npu"
    problems: dict[str, list[str]] = {}
    for lib in libs:
        out = host.run(f"LD_LIBRARY_PATH={site}/torch/lib:{site}/torch_npu/lib:$LD_LIBRARY_PATH ldd {shlex.quote(lib)}")
        name = lib.rsplit("/", 1)[-1]
        if out.rc != 0:
            problems.setdefault((out.stderr.strip().splitlines() or ["ldd failed"])[-1], []).append(name)
            continue
        for soname in sorted(ldd_missing(out.stdout) - HOST_DRIVER_LIBS):
            problems.setdefault(f"{soname} not found", []).append(name)
    assert not problems, "; ".join(f"{what} (needed by {', '.join(sorted(by))})" for what, by in problems.items())


def test_torch_npu_links_the_images_cann(host: Any, cann_standin: str | None) -> None:
    """libascendcl.so and libhccl.so come from /usr/local/Ascend, not from a copy elsewhere."""
    if cann_standin:
        pytest.skip(f"nothing real to resolve against: {cann_standin}")
    site = host.check_output(f"{NO_AUTOLOAD} python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'")
    out = host.run(f"LD_LIBRARY_PATH={site}/torch/lib:$LD_LIBRARY_PATH ldd {site}/torch_npu/lib/libtorch_npu.so")
    where = {line.split()[0]: line.split()[2] for line in out.stdout.splitlines() if " => /" in line}
    wrong = {k: v for k, v in where.items() if k in ("libascendcl.so", "libhccl.so") and "/usr/local/Ascend/" not in v}
    assert not wrong, f"torch_npu loads CANN from outside the image's CANN: {wrong}"


def test_pta_labels_are_the_installed_versions(labels: dict[str, str], pip_versions: dict[str, str]) -> None:
    problems = []
    for key, dist in (("torch", "torch"), ("torch-npu", "torch-npu")):
        got, have = labels.get(f"io.ascend-llm-stack.{key}"), pip_versions.get(dist)
        if got is None or have is None or _public(got) != _public(have):
            problems.append(f"label {key}={got}, installed {have}")
    assert not problems, "; ".join(problems)


def test_apex_labels_are_the_rows_ref_and_commit(labels: dict[str, str], target: Target) -> None:
    apex = target.row.apex
    got = (labels.get("io.ascend-llm-stack.apex"), labels.get("io.ascend-llm-stack.apex-commit"))
    if apex is None:
        assert got == (None, None), f"labels say apex {got}, the row builds none"
        return
    assert got[0] == apex.ref, f"label apex={got[0]}, the row builds apex {apex.ref}"
    if apex.commit:
        assert got[1] == apex.commit, f"label apex-commit={got[1]}, matrix.yaml pins {apex.commit}"
