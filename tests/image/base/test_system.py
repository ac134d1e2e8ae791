"""Base layer: the OS, architecture and Python the matrix names, and a consistent virtual environment."""

from __future__ import annotations

from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from ascend_stack.matrix import Matrix
from ascend_stack.verify import Expected, os_problem, parse_key_values


def test_os_is_the_targets(host: Any, expected: Expected) -> None:
    release = parse_key_values(host.file("/etc/os-release").content_string)
    problem = os_problem(expected.os, release)
    assert problem is None, problem


def test_architecture_is_the_targets(host: Any, expected: Expected) -> None:
    machine = host.check_output("uname -m").strip()
    assert machine == expected.arch, f"the image runs on {machine}, the target is {expected.arch}"


def test_python_is_the_targets(host: Any, expected: Expected) -> None:
    version = host.check_output("python -c 'import platform; print(platform.python_version())'").strip()
    assert version.rsplit(".", 1)[0] == expected.python, f"python is {version}, the target says {expected.python}"


def test_venv_python_comes_first_on_path(host: Any) -> None:
    found = host.check_output("command -v python")
    assert found == "/opt/venv/bin/python", f"`python` is {found}, not the image's venv /opt/venv/bin/python"


def test_python_built_from_source_is_the_pinned_release(host: Any, expected: Expected, matrix: Matrix) -> None:
    os_python = matrix.oses[expected.os].python if expected.os in matrix.oses else expected.python
    if os_python == expected.python:
        pytest.skip(f"{expected.os} ships Python {expected.python}: none was built from source")
    version = host.check_output("python -c 'import platform; print(platform.python_version())'").strip()
    pinned = matrix.python_sources[expected.python].version
    assert version == pinned, f"python is {version}, the matrix pins the source release {pinned}"


def test_pip_check_is_clean(host: Any) -> None:
    out = host.run("python -m pip check --disable-pip-version-check")
    problems = "; ".join(line for line in out.stdout.splitlines() if line.strip())
    assert out.rc == 0, f"pip check: {problems or out.stderr.strip()}"


def test_cann_python_dependency_pins_hold(pip_versions: dict[str, str], matrix: Matrix) -> None:
    """The pinned ones of CANN's Python dependencies (protobuf==3.20.3, numpy<2) held through every layer."""
    problems = []
    for spec in matrix.cann_packages.python_deps:
        req = Requirement(spec)
        if not req.specifier:
            continue
        have = pip_versions.get(req.name.lower().replace("_", "-"))
        if have is None:
            problems.append(f"{req.name} is not installed ({spec})")
        elif not req.specifier.contains(Version(have), prereleases=True):
            problems.append(f"{req.name} {have} does not satisfy {spec}")
    assert not problems, "; ".join(problems)


def test_runtime_compilers_are_kept(host: Any) -> None:
    """gcc, g++, make and cmake stay on purpose: CANN and MindSpeed compile operators at run time."""
    missing = [tool for tool in ("gcc", "g++", "make", "cmake") if not host.exists(tool)]
    assert not missing, f"{', '.join(missing)} missing: CANN and MindSpeed compile operators at run time"


def test_python3_config_answers_for_the_venvs_python(host: Any) -> None:
    """Megatron builds megatron/core/datasets/helpers with `python3-config --extension-suffix` at first use."""
    out = host.run("python3-config --extension-suffix")
    assert out.rc == 0, "python3-config is missing: Megatron cannot compile its dataset helpers at run time"
    want = host.check_output("python -c 'import sysconfig; print(sysconfig.get_config_var(\"EXT_SUFFIX\"))'").strip()
    assert out.stdout.strip() == want, f"python3-config says {out.stdout.strip()}, the venv's Python uses {want}"
