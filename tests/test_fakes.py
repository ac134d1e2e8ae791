"""Tests for the stand-ins in ``tests/fakes``: they must behave like the real interfaces they replace.

CANN installers are run for real (bash) with ``--install-path`` under pytest's tmp directories; the only
run at a default path is as user ``nobody`` with ``HOME`` in a tmp directory, so nothing is written to
``/usr/local/Ascend``, ``/etc/Ascend`` or ``/var/log``. The git stand-ins are checked for branches, tags,
layout and deterministic ids, and the Ascend apex recipe of ``images/pta`` is run on them up to the wheel.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import add_commit, make_cann_packages, make_source_repos, package_file_names
from fakes.cann import ARCHES, uses_cann_layout
from fakes.sources import REPOS
from packaging.requirements import Requirement

VERSION = "8.2.RC1"
ARCH = platform.machine()
OTHER_ARCH = next(a for a in ARCHES if a != ARCH)
PAYLOAD = 256 * 1024
GLOBAL_RECORDS = (Path("/etc/Ascend/ascend_cann_install.info"), Path("/var/log/ascend_seclog"))

pytestmark = pytest.mark.skipif(ARCH not in ARCHES, reason=f"CANN stand-ins exist for {ARCHES}, not {ARCH}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """An environment without the host's CANN variables; TMPDIR and HOME inside ``tmp``."""
    (tmp / "tmpdir").mkdir(parents=True, exist_ok=True)
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp / "home"), "TMPDIR": str(tmp / "tmpdir"), "LC_ALL": "C"}
    env.update(extra)
    return env


def run_pkg(pkg: Path, *args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(pkg), *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


def sourced(script: Path, *args: str, env: dict[str, str]) -> dict[str, str]:
    """The environment after ``source script args`` (as images/cann/capture-env.py sources it)."""
    out = subprocess.run(
        ["bash", "-c", 'set -e; source "$0" "$@"; env -0', str(script), *args],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def toolkit_env(install: Path, tmp: Path) -> dict[str, str]:
    return sourced(install / "ascend-toolkit" / "set_env.sh", env=clean_env(tmp))


@pytest.fixture(scope="module")
def global_records() -> Iterator[None]:
    before = {p: p.exists() for p in GLOBAL_RECORDS}
    yield
    for p, existed in before.items():
        if not existed:
            assert not p.exists(), f"a stand-in installer wrote {p} outside the test's install path"


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_cann_packages(
        tmp_path_factory.mktemp("pkgs"), VERSION, ARCH, chips=("910b", "A3"), payload_bytes=PAYLOAD
    )


@pytest.fixture(scope="module")
def installed(pkgs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, global_records: None) -> Path:
    """toolkit -> 910b kernels -> NNAL (with the toolkit environment sourced), the images/cann order."""
    tmp = tmp_path_factory.mktemp("installed")
    install = tmp / "Ascend"
    env = clean_env(tmp)
    for key in ("toolkit", "kernels-910b"):
        r = run_pkg(pkgs[key], "--quiet", "--install", "--install-for-all", f"--install-path={install}", env=env)
        assert r.returncode == 0, r.stderr
        assert "install success" in r.stdout
    nnal_env = {**toolkit_env(install, tmp), "TMPDIR": env["TMPDIR"]}
    r = run_pkg(pkgs["nnal"], "--quiet", "--install", "--install-for-all", f"--install-path={install}", env=nnal_env)
    assert r.returncode == 0, r.stderr
    assert list((tmp / "tmpdir").iterdir()) == [], "the installers left their extraction directories behind"
    return install


def read_kv(path: Path, sep: str = "=") -> dict[str, str]:
    pairs = (line.split(sep, 1) for line in path.read_text().splitlines() if sep in line)
    return {k.strip(): v.strip() for k, v in pairs}


# ------------------------------------------------------------------------------------------------------
# CANN installers: files


def test_file_names_follow_the_matrix(pkgs: dict[str, Path], matrix_raw: dict[str, Any]) -> None:
    pk = matrix_raw["cann_layouts"][0]  # the layout up to 8.3; test_85_file_names_follow_the_matrix has 8.5's
    fmt = {"version": VERSION, "arch": ARCH}
    assert pkgs["toolkit"].name == pk["toolkit"].format(**fmt)
    assert pkgs["kernels-910b"].name == pk["kernels"]["910b"].format(**fmt)
    assert pkgs["kernels-A3"].name == pk["kernels"]["A3"].format(**fmt)
    assert pkgs["nnal"].name == pk["nnal"].format(**fmt)
    assert list(pkgs) == ["toolkit", "kernels-910b", "kernels-A3", "nnal"]
    assert {k: p.name for k, p in pkgs.items()} == package_file_names(VERSION, ARCH, ("910b", "A3"))


def test_85_file_names_follow_the_matrix(tmp_path: Path, matrix_raw: dict[str, Any]) -> None:
    """The stand-in's 8.5 package names are the ones matrix.yaml's 8.5.0+ layout renders."""
    layout = next(lay for lay in matrix_raw["cann_layouts"] if lay["since"] == "8.5.0")
    fmt = {"version": "8.5.0", "arch": ARCH}
    names = package_file_names("8.5.0", ARCH, ("910b", "A3"))
    assert names["toolkit"] == layout["toolkit"].format(**fmt) and names["nnal"] == layout["nnal"].format(**fmt)
    assert [names["ops-910b"], names["ops-A3"]] == [layout["kernels"][c].format(**fmt) for c in ("910b", "A3")]


def test_installers_are_deterministic_self_extracting_scripts(tmp_path: Path, pkgs: dict[str, Path]) -> None:
    again = make_cann_packages(tmp_path / "again", VERSION, ARCH, chips=("910b", "A3"), payload_bytes=PAYLOAD)
    assert {k: sha256(p) for k, p in again.items()} == {k: sha256(p) for k, p in pkgs.items()}
    other = make_cann_packages(tmp_path / "other", "8.1.RC1", ARCH, payload_bytes=PAYLOAD)
    assert sha256(other["toolkit"]) != sha256(pkgs["toolkit"])
    for pkg in pkgs.values():
        head = pkg.read_bytes()[:2000].decode(errors="replace")
        assert head.startswith("#!/bin/bash\n")
        assert "STAND-IN" in head and "NOT Huawei's" in head
        assert pkg.stat().st_size > PAYLOAD


def test_info_list_and_extract(tmp_path: Path, pkgs: dict[str, Path]) -> None:
    env = clean_env(tmp_path)
    info = run_pkg(pkgs["toolkit"], "--info", env=env)
    assert info.returncode == 0 and "stand-in" in info.stdout
    listing = run_pkg(pkgs["toolkit"], "--list", env=env)
    assert listing.returncode == 0 and "content/version.cfg" in listing.stdout.split()
    r = run_pkg(pkgs["nnal"], "--noexec", f"--extract={tmp_path / 'x'}", env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "x" / "content" / "version.info").read_text().startswith(f"Ascend-cann-atb : {VERSION}\n")


# ------------------------------------------------------------------------------------------------------
# CANN installers: command line


@pytest.mark.parametrize(
    ("key", "args"),
    [
        ("toolkit", ["--bogus"]),
        ("toolkit", ["--install", "--chip=Ascend910B"]),
        ("toolkit", ["--quiet", "install"]),
        ("kernels-910b", ["--quiet", "--full"]),
        ("nnal", ["--quiet", "--devel"]),
        ("nnal", ["--quiet", "--full"]),
    ],
)
def test_unknown_options_print_usage_and_fail(tmp_path: Path, pkgs: dict[str, Path], key: str, args: list[str]) -> None:
    r = run_pkg(pkgs[key], *args, f"--install-path={tmp_path / 'Ascend'}", env=clean_env(tmp_path))
    assert r.returncode == 1
    assert r.stderr.startswith(f"Usage: {pkgs[key]} [options]")
    assert not (tmp_path / "Ascend").exists()


@pytest.mark.parametrize(
    "args",
    [[], ["--quiet"], ["--install-for-all"], ["--quiet", "--install-path=/tmp/x"]],
)
def test_no_operation_prints_usage_and_fails(tmp_path: Path, pkgs: dict[str, Path], args: list[str]) -> None:
    r = run_pkg(pkgs["toolkit"], *args, env=clean_env(tmp_path))
    assert r.returncode != 0
    assert "Usage:" in r.stderr and "--install-path=<path>" in r.stderr


def test_help_lists_the_package_options(tmp_path: Path, pkgs: dict[str, Path]) -> None:
    env = clean_env(tmp_path)
    helps = {k: run_pkg(p, "--help", env=env) for k, p in pkgs.items()}
    assert all(h.returncode == 0 for h in helps.values())
    common = ("--install ", "--quiet", "--install-for-all", "--install-path=<path>", "--uninstall", "--check")
    for h in helps.values():
        assert all(opt in h.stdout for opt in common)
    assert "--full" in helps["toolkit"].stdout and "--devel" in helps["toolkit"].stdout
    assert "--full" not in helps["kernels-910b"].stdout and "--devel" in helps["kernels-910b"].stdout
    assert "--full" not in helps["nnal"].stdout and "--devel" not in helps["nnal"].stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--install", "--uninstall"],
        ["--full", "--devel"],
        ["--uninstall", "--install-for-all"],
        ["--quiet", "--install", "--install-path="],
        ["--quiet", "--install", "--install-path=/tmp/with space"],
    ],
)
def test_bad_combinations_are_refused(tmp_path: Path, pkgs: dict[str, Path], args: list[str]) -> None:
    r = run_pkg(pkgs["toolkit"], *args, env=clean_env(tmp_path))
    assert r.returncode == 1
    assert "[Toolkit] [ERROR]" in r.stderr


@pytest.mark.parametrize(
    ("answer", "accepted"), [("y\n", True), ("Y\n", True), ("n\n", False), ("", False), ("yes\n", False)]
)
def test_eula_is_asked_without_quiet(tmp_path: Path, pkgs: dict[str, Path], answer: str, accepted: bool) -> None:
    install = tmp_path / "Ascend"
    r = run_pkg(pkgs["toolkit"], "--install", f"--install-path={install}", env=clean_env(tmp_path), stdin=answer)
    assert "Do you accept the EULA to install Ascend-cann-toolkit? [y/n]" in r.stdout
    assert (r.returncode == 0) is accepted
    assert (install / "ascend-toolkit" / "latest").exists() is accepted
    if not accepted:
        assert "EULA was not accepted" in r.stderr


def test_quiet_does_not_read_stdin(tmp_path: Path, pkgs: dict[str, Path]) -> None:
    r = run_pkg(
        pkgs["toolkit"], "-q", "--install", f"--install-path={tmp_path / 'A'}", env=clean_env(tmp_path), stdin="n\n"
    )
    assert r.returncode == 0, r.stderr
    assert "EULA" not in r.stdout


def test_refuses_another_architecture(tmp_path: Path) -> None:
    other = make_cann_packages(tmp_path / "pk", VERSION, OTHER_ARCH)
    r = run_pkg(other["toolkit"], "-q", "--install", f"--install-path={tmp_path / 'A'}", env=clean_env(tmp_path))
    assert r.returncode == 1
    assert f"architecture of the package ({OTHER_ARCH})" in r.stderr
    assert not (tmp_path / "A").exists()


def test_check_verifies_the_archive(tmp_path: Path, pkgs: dict[str, Path]) -> None:
    env = clean_env(tmp_path)
    ok = run_pkg(pkgs["toolkit"], "--check", env=env)
    assert ok.returncode == 0 and "SHA256 checksums are OK" in ok.stdout
    bad = tmp_path / pkgs["toolkit"].name
    data = bytearray(pkgs["toolkit"].read_bytes())
    data[-PAYLOAD // 2] ^= 0xFF  # inside the payload member
    bad.write_bytes(bytes(data))
    r = run_pkg(bad, "--check", env=env)
    assert r.returncode != 0 and "Error in SHA256 checksums" in r.stderr
    r = run_pkg(bad, "--quiet", "--install", f"--install-path={tmp_path / 'A'}", env=env)
    assert r.returncode != 0
    assert not (tmp_path / "A" / "ascend-toolkit").exists()


# ------------------------------------------------------------------------------------------------------
# CANN installers: toolkit


def test_toolkit_layout_and_version_files(installed: Path) -> None:
    root = installed / "ascend-toolkit"
    latest = root / "latest"
    assert latest.is_symlink() and os.readlink(latest) == VERSION
    info = read_kv(latest / f"{ARCH}-linux" / "ascend_toolkit_install.info")
    assert info["package_name"] == "Ascend-cann-toolkit"
    assert info["version"] == VERSION
    assert re.fullmatch(r"V100R001C\d+(SPC\d+)?B\d+", info["innerversion"])
    assert (info["arch"], info["os"]) == (ARCH, "linux")
    assert info["path"] == f"{root}/{VERSION}/{ARCH}-linux"
    cfg = (latest / "version.cfg").read_text().splitlines()
    assert cfg[0] == "# version: 1.0"
    running = [line for line in cfg if line.startswith("runtime_running_version=")]
    assert len(running) == 1 and re.fullmatch(
        rf"runtime_running_version=\[7\.\d+\.\d+\.\d+\.\d+:{VERSION}\]", running[0]
    )
    assert read_kv(latest / "toolkit" / "version.info")["version_dir"] == VERSION
    for rel in (
        "lib64/libascendcl.so",
        "lib64/libhccl.so",
        "lib64/plugin/opskernel/libfe.so",
        "include/acl/acl.h",
        "python/site-packages/te/__init__.py",
        f"opp/built-in/op_impl/ai_core/tbe/op_tiling/lib/linux/{ARCH}/liboptiling.so",
    ):
        assert (latest / rel).is_file(), rel
    assert "stand-in" in (latest / "lib64" / "libascendcl.so").read_text()


def test_toolkit_payload_is_incompressible(installed: Path) -> None:
    payload = (installed / "ascend-toolkit" / "latest" / "share" / "standin-payload.bin").read_bytes()
    assert len(payload) == PAYLOAD
    assert len(zlib.compress(payload, 9)) > 0.99 * PAYLOAD


def test_toolkit_set_env_exports_the_real_variables(installed: Path, tmp_path: Path) -> None:
    env = toolkit_env(installed, tmp_path)
    home = f"{installed}/ascend-toolkit/latest"
    assert env["ASCEND_TOOLKIT_HOME"] == home
    assert env["ASCEND_HOME_PATH"] == env["ASCEND_AICPU_PATH"] == home
    assert env["ASCEND_OPP_PATH"] == f"{home}/opp"
    assert env["TOOLCHAIN_HOME"] == f"{home}/toolkit"
    libs = env["LD_LIBRARY_PATH"].split(":")
    for sub in (
        "lib64",
        "lib64/plugin/opskernel",
        "lib64/plugin/nnengine",
        f"opp/built-in/op_impl/ai_core/tbe/op_tiling/lib/linux/{ARCH}",
        "tools/aml/lib64",
    ):
        assert f"{home}/{sub}" in libs, sub
    assert "/usr/local/Ascend/driver/lib64/driver" in libs
    assert env["PYTHONPATH"].split(":")[:2] == [
        f"{home}/python/site-packages",
        f"{home}/opp/built-in/op_impl/ai_core/tbe",
    ]
    path = env["PATH"].split(":")
    assert path[:2] == [f"{home}/bin", f"{home}/compiler/ccec_compiler/bin"]
    ccec = subprocess.run(["bash", "-c", "ccec --version"], env=env, capture_output=True, text=True)
    assert ccec.returncode == 0 and "stand-in" in ccec.stdout


def test_install_for_all_decides_what_other_users_see(installed: Path, pkgs: dict[str, Path], tmp_path: Path) -> None:
    shared = installed / "ascend-toolkit" / VERSION / "version.cfg"
    assert shared.stat().st_mode & 0o004
    assert (installed / "ascend-toolkit" / VERSION).stat().st_mode & 0o005 == 0o005
    private = tmp_path / "Ascend"
    r = run_pkg(pkgs["toolkit"], "-q", "--install", f"--install-path={private}", env=clean_env(tmp_path))
    assert r.returncode == 0, r.stderr
    for p in (private / "ascend-toolkit" / VERSION, private / "ascend-toolkit" / VERSION / "version.cfg"):
        assert p.stat().st_mode & 0o007 == 0, p


def test_toolkit_reinstall_upgrade_and_uninstall(tmp_path: Path, pkgs: dict[str, Path]) -> None:
    env = clean_env(tmp_path)
    install = tmp_path / "Ascend"
    up = run_pkg(pkgs["toolkit"], "-q", "--upgrade", f"--install-path={install}", env=env)
    assert up.returncode == 1 and "nothing to upgrade" in up.stderr
    for args in (["--full"], ["--install"], ["--upgrade"], ["--devel"]):
        r = run_pkg(pkgs["toolkit"], "-q", *args, f"--install-path={install}", env=env)
        assert r.returncode == 0, (args, r.stderr)
    r = run_pkg(pkgs["toolkit"], "-q", "--uninstall", f"--install-path={install}", env=env)
    assert r.returncode == 0, r.stderr
    assert "uninstall success" in r.stdout
    assert not (install / "ascend-toolkit").exists()
    again = run_pkg(pkgs["toolkit"], "-q", "--uninstall", f"--install-path={install}", env=env)
    assert again.returncode == 1 and "not installed" in again.stderr
    assert list((tmp_path / "tmpdir").iterdir()) == []


def test_relative_install_path_is_taken_from_the_working_directory(tmp_path: Path, pkgs: dict[str, Path]) -> None:
    r = subprocess.run(
        ["bash", str(pkgs["toolkit"]), "-q", "--install", "--install-path=rel/Ascend"],
        cwd=tmp_path,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    info = read_kv(tmp_path / "rel/Ascend/ascend-toolkit/latest" / f"{ARCH}-linux/ascend_toolkit_install.info")
    assert info["path"] == f"{tmp_path}/rel/Ascend/ascend-toolkit/{VERSION}/{ARCH}-linux"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_default_path_of_a_non_root_user(pkgs: dict[str, Path]) -> None:
    """Without --install-path a non-root user installs into $HOME/Ascend and records it there."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        home.chmod(0o777)
        pkg = home / pkgs["toolkit"].name
        shutil.copy(pkgs["toolkit"], pkg)
        pkg.chmod(0o755)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home)}
        r = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(pkg), "-q", "--install"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert (home / "Ascend" / "ascend-toolkit" / "latest" / "version.cfg").is_file()
        assert (home / "Ascend" / "ascend_cann_install.info").read_text() == f"Install_Path={home}/Ascend\n"
        assert "install success" in (home / "var/log/ascend_seclog/operation.log").read_text()


# ------------------------------------------------------------------------------------------------------
# CANN installers: kernels


def test_kernels_refuse_without_the_toolkit(tmp_path: Path, pkgs: dict[str, Path]) -> None:
    install = tmp_path / "Ascend"
    r = run_pkg(pkgs["kernels-910b"], "-q", "--install", f"--install-path={install}", env=clean_env(tmp_path))
    assert r.returncode == 1
    assert "Ascend-cann-toolkit 8.2.RC1 is not installed" in r.stderr
    assert not install.exists()


def test_kernels_refuse_another_toolkit_version(tmp_path: Path, pkgs: dict[str, Path]) -> None:
    other = make_cann_packages(tmp_path / "pk", "8.1.RC1", ARCH)
    env = clean_env(tmp_path)
    install = tmp_path / "Ascend"
    assert run_pkg(other["toolkit"], "-q", "--install", f"--install-path={install}", env=env).returncode == 0
    r = run_pkg(pkgs["kernels-910b"], "-q", "--install", f"--install-path={install}", env=env)
    assert r.returncode == 1 and "not installed" in r.stderr


def test_kernels_layout(installed: Path) -> None:
    latest = installed / "ascend-toolkit" / "latest"
    kernel = latest / "opp/built-in/op_impl/ai_core/tbe/kernel"
    assert sorted(p.name for p in kernel.iterdir()) == ["ascend910b", "config"]
    assert (kernel / "ascend910b" / "standin-payload.bin").stat().st_size == PAYLOAD
    assert not (kernel / "ascend910b" / "static").exists()  # only --devel installs static libraries
    assert read_kv(latest / "opp_kernel" / "version.info")["version_dir"] == VERSION
    cfg = (latest / "version.cfg").read_text()
    assert re.search(rf"^opp_kernel_running_version=\[7\.[0-9.]+:{VERSION}\]$", cfg, re.M)


def test_a3_kernels_devel_and_uninstall(tmp_path: Path, pkgs: dict[str, Path]) -> None:
    env = clean_env(tmp_path)
    install = tmp_path / "Ascend"
    assert run_pkg(pkgs["toolkit"], "-q", "--install", f"--install-path={install}", env=env).returncode == 0
    latest = install / "ascend-toolkit" / "latest"
    kernel = latest / "opp/built-in/op_impl/ai_core/tbe/kernel"
    assert not kernel.exists()  # the toolkit alone has no kernels directory
    r = run_pkg(pkgs["kernels-A3"], "-q", "--devel", f"--install-path={install}", env=env)
    assert r.returncode == 0, r.stderr
    assert (kernel / "ascend910_93" / "static").is_dir()
    r = run_pkg(pkgs["kernels-A3"], "-q", "--uninstall", f"--install-path={install}", env=env)
    assert r.returncode == 0, r.stderr
    assert not kernel.exists() and not (latest / "opp_kernel").exists()
    assert "opp_kernel" not in (latest / "version.cfg").read_text()
    assert (latest / "version.cfg").read_text().startswith("# version: 1.0\n")


# ------------------------------------------------------------------------------------------------------
# CANN installers: NNAL


@pytest.mark.parametrize("toolkit_home", [None, "/nonexistent/ascend-toolkit/latest"])
def test_nnal_refuses_without_the_sourced_toolkit(
    tmp_path: Path, pkgs: dict[str, Path], toolkit_home: str | None
) -> None:
    env = clean_env(tmp_path, **({"ASCEND_TOOLKIT_HOME": toolkit_home} if toolkit_home else {}))
    r = run_pkg(pkgs["nnal"], "-q", "--install", f"--install-path={tmp_path / 'A'}", env=env)
    assert r.returncode == 1
    assert "ascend-toolkit/set_env.sh" in r.stderr
    assert not (tmp_path / "A").exists()


def test_nnal_layout(installed: Path) -> None:
    atb = installed / "nnal" / "atb"
    assert os.readlink(atb / "latest") == VERSION
    assert f"Ascend-cann-atb : {VERSION}" in (atb / "latest" / "version.info").read_text().splitlines()
    for abi in (0, 1):
        assert (atb / "latest" / "atb" / f"cxx_abi_{abi}" / "lib" / "libatb.so").is_file()
    assert (atb / "set_env.sh").is_file()


def fake_torch(tmp: Path, body: str) -> str:
    (tmp / "fake_torch" / "torch").mkdir(parents=True)
    (tmp / "fake_torch" / "torch" / "__init__.py").write_text(body)
    return str(tmp / "fake_torch")


@pytest.mark.parametrize(
    ("args", "torch_body", "abi"),
    [
        (["--cxx_abi=0"], None, 0),
        (["--cxx_abi=1"], "def compiled_with_cxx11_abi():\n    return False\n", 1),
        ([], "def compiled_with_cxx11_abi():\n    return False\n", 0),
        ([], "def compiled_with_cxx11_abi():\n    return True\n", 1),
        ([], "raise ImportError('no torch here')\n", 1),
    ],
)
def test_nnal_set_env_chooses_the_cxx_abi(
    installed: Path, tmp_path: Path, args: list[str], torch_body: str | None, abi: int
) -> None:
    extra = {"PYTHONPATH": fake_torch(tmp_path, torch_body)} if torch_body else {}
    env = sourced(installed / "nnal" / "atb" / "set_env.sh", *args, env=clean_env(tmp_path, **extra))
    home = f"{installed}/nnal/atb/latest/atb/cxx_abi_{abi}"
    assert env["ATB_HOME_PATH"] == home
    assert env["LD_LIBRARY_PATH"].split(":")[:3] == [f"{home}/lib", f"{home}/examples", f"{home}/tests/atbopstest"]
    assert env["PATH"].split(":")[0] == f"{home}/bin"


# ------------------------------------------------------------------------------------------------------
# CANN 8.5.0 and later: ops packages, the cann-<version> root, the new set_env.sh

V85 = "8.5.0"
OPS_KERNEL = "opp/built-in/op_impl/ai_core/tbe/kernel"


def install_pkg(pkg: Path, install: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_pkg(pkg, "--quiet", *(args or ("--install",)), f"--install-path={install}", env=env)


@pytest.fixture(scope="module")
def pkgs85(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_cann_packages(tmp_path_factory.mktemp("pkgs85"), V85, ARCH, chips=("910b", "A3"), payload_bytes=PAYLOAD)


@pytest.fixture(scope="module")
def installed85(pkgs85: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, global_records: None) -> Path:
    """toolkit -> 910b ops -> NNAL (with cann/set_env.sh sourced), as the official 8.5.0 images install them."""
    tmp = tmp_path_factory.mktemp("installed85")
    install = tmp / "Ascend"
    env = clean_env(tmp)
    for key in ("toolkit", "ops-910b"):
        r = install_pkg(pkgs85[key], install, env, "--install", "--install-for-all")
        assert r.returncode == 0, r.stderr
        assert "install success" in r.stdout
    nnal_env = {**sourced(install / "cann" / "set_env.sh", env=clean_env(tmp)), "TMPDIR": env["TMPDIR"]}
    r = install_pkg(pkgs85["nnal"], install, nnal_env, "--install", "--install-for-all")
    assert r.returncode == 0, r.stderr
    assert list((tmp / "tmpdir").iterdir()) == [], "the installers left their extraction directories behind"
    return install


@pytest.mark.parametrize(
    ("version", "new"),
    [("8.2.RC1", False), ("8.3.RC1", False), ("8.5.RC1", False), ("8.5.0", True), ("8.10.0", True), ("9.0.0", True)],
)
def test_the_layout_changes_at_8_5_0(version: str, new: bool) -> None:
    assert uses_cann_layout(version) is new
    keys = list(package_file_names(version, ARCH, ("910b", "A3")))
    chip = "ops" if new else "kernels"
    assert keys == ["toolkit", f"{chip}-910b", f"{chip}-A3", "nnal"]


@pytest.mark.parametrize("version", ["8.5.0", "9.0.0"])
@pytest.mark.parametrize("arch", ARCHES)
def test_8_5_file_names_are_the_published_ones(version: str, arch: str) -> None:
    # as listed in ascend-deployer 26.0.0's downloader/software/CANN_<version>.json (there as .zip) and NNAL's
    names = package_file_names(version, arch, ("910b", "A3", "910", "310p"))
    assert names == {
        "toolkit": f"Ascend-cann-toolkit_{version}_linux-{arch}.run",
        "ops-910b": f"Ascend-cann-910b-ops_{version}_linux-{arch}.run",
        "ops-A3": f"Ascend-cann-A3-ops_{version}_linux-{arch}.run",
        "ops-910": f"Ascend-cann-910-ops_{version}_linux-{arch}.run",
        "ops-310p": f"Ascend-cann-310p-ops_{version}_linux-{arch}.run",
        "nnal": f"Ascend-cann-nnal_{version}_linux-{arch}.run",
    }


def test_8_5_installers_are_deterministic_and_carry_the_payload(tmp_path: Path, pkgs85: dict[str, Path]) -> None:
    assert {k: p.name for k, p in pkgs85.items()} == package_file_names(V85, ARCH, ("910b", "A3"))
    again = make_cann_packages(tmp_path / "again", V85, ARCH, chips=("910b", "A3"), payload_bytes=PAYLOAD)
    assert {k: sha256(p) for k, p in again.items()} == {k: sha256(p) for k, p in pkgs85.items()}
    other = make_cann_packages(tmp_path / "other", "9.0.0", ARCH, chips=("910b", "A3"), payload_bytes=PAYLOAD)
    assert not {sha256(p) for p in other.values()} & {sha256(p) for p in pkgs85.values()}
    for pkg in pkgs85.values():
        assert pkg.stat().st_size > PAYLOAD
        assert "NOT Huawei's" in pkg.read_bytes()[:2000].decode(errors="replace")
        assert run_pkg(pkg, "--check", env=clean_env(tmp_path)).returncode == 0


def test_8_5_toolkit_installs_into_cann_version(installed85: Path) -> None:
    root = installed85 / f"cann-{V85}"
    assert root.is_dir() and not root.is_symlink()
    assert (installed85 / "cann").is_symlink() and os.readlink(installed85 / "cann") == str(root)
    latest = installed85 / "ascend-toolkit" / "latest"
    assert latest.is_symlink() and os.readlink(latest) == str(installed85 / "cann")
    assert latest.resolve() == root
    assert (installed85 / "ascend-toolkit" / "set_env.sh").resolve() == root / "set_env.sh"
    assert sorted(p.name for p in (installed85 / "ascend-toolkit").iterdir()) == ["latest", "set_env.sh"]
    info_path = installed85 / "cann" / f"{ARCH}-linux" / "ascend_toolkit_install.info"
    info = read_kv(info_path)
    assert (info["package_name"], info["version"], info["arch"], info["os"]) == (
        "Ascend-cann-toolkit",
        V85,
        ARCH,
        "linux",
    )
    assert info["path"] == str(root)
    assert info["innerversion"] == "V100R001C25SPC001B232"  # seen on a real 8.5.0 install
    assert read_kv(latest / f"{ARCH}-linux" / "ascend_toolkit_install.info") == info  # the compatibility path
    assert (root / f"{ARCH}-linux" / "include" / "acl" / "acl.h").is_file()
    assert (root / "include" / "acl" / "acl.h").is_file() and (root / "lib64" / "libascendcl.so").is_file()
    assert (root / "share" / "standin-payload.bin").stat().st_size == PAYLOAD
    assert (root / "version.cfg").stat().st_mode & 0o004  # --install-for-all


@pytest.mark.parametrize("script", ["cann/set_env.sh", f"cann-{V85}/set_env.sh", "ascend-toolkit/set_env.sh"])
def test_8_5_set_env_exports_the_cann_version_tree(installed85: Path, tmp_path: Path, script: str) -> None:
    env = sourced(installed85 / script, env=clean_env(tmp_path))
    home = f"{installed85}/cann-{V85}"
    assert env["ASCEND_TOOLKIT_HOME"] == env["ASCEND_HOME_PATH"] == env["ASCEND_AICPU_PATH"] == home
    assert env["ASCEND_OPP_PATH"] == f"{home}/opp"
    assert env["TOOLCHAIN_HOME"] == f"{home}/toolkit"
    drv = "/usr/local/Ascend/driver/lib64"
    assert env["LD_LIBRARY_PATH"].split(":") == [
        f"{home}/lib64",
        f"{home}/lib64/plugin/opskernel",
        f"{home}/lib64/plugin/nnengine",
        f"{home}/opp/built-in/op_impl/ai_core/tbe/op_tiling/lib/linux/{ARCH}",
        f"{home}/tools/aml/lib64",
        f"{home}/tools/aml/lib64/plugin",
        drv,
        f"{drv}/common",
        f"{drv}/driver",
        "",  # the real script's trailing ':' when LD_LIBRARY_PATH was empty
    ]
    for lib in env["LD_LIBRARY_PATH"].split(":")[:4]:
        assert Path(lib).is_dir(), lib
    assert env["PYTHONPATH"].split(":")[:2] == [
        f"{home}/python/site-packages",
        f"{home}/opp/built-in/op_impl/ai_core/tbe",
    ]
    tools = ["ccec_compiler/bin", "profiler/bin", "ascend_system_advisor/asys", "show_kernel_debug_data", "msobjdump"]
    assert env["PATH"].split(":")[:6] == [f"{home}/bin", *(f"{home}/tools/{t}" for t in tools)]
    ccec = subprocess.run(["bash", "-c", "ccec --version"], env=env, capture_output=True, text=True)
    assert ccec.returncode == 0 and "stand-in" in ccec.stdout


def test_8_5_ops_install_the_chip_into_the_toolkit_tree(installed85: Path) -> None:
    root = installed85 / f"cann-{V85}"
    kernel = root / OPS_KERNEL
    assert sorted(p.name for p in kernel.iterdir()) == ["ascend910b", "config"]
    assert (kernel / "ascend910b" / "standin-payload.bin").stat().st_size == PAYLOAD
    assert not (kernel / "ascend910b" / "static").exists()  # only --devel installs static libraries
    info = read_kv(installed85 / "cann" / f"{ARCH}-linux" / "ascend_ops_install.info")
    assert (info["package_name"], info["version"]) == ("Ascend-cann-910b-ops", V85)
    assert (root / "lib64" / "libhccl.so").is_file()  # HCCL comes with the ops package from 8.5.0


def test_8_5_ops_refuse_without_the_toolkit(tmp_path: Path, pkgs85: dict[str, Path]) -> None:
    install = tmp_path / "Ascend"
    r = install_pkg(pkgs85["ops-910b"], install, clean_env(tmp_path))
    assert r.returncode == 1
    assert f"[Ops] [ERROR]: Ascend-cann-toolkit {V85} is not installed in {install}:" in r.stderr
    assert "toolkit -> ops -> nnal" in r.stderr
    assert not install.exists()


def test_8_5_ops_refuse_a_toolkit_of_another_version(tmp_path: Path, pkgs85: dict[str, Path]) -> None:
    other = make_cann_packages(tmp_path / "pk", "9.0.0", ARCH)
    env = clean_env(tmp_path)
    install = tmp_path / "Ascend"
    assert install_pkg(other["toolkit"], install, env).returncode == 0
    r = install_pkg(pkgs85["ops-910b"], install, env)
    assert r.returncode == 1
    assert f"Ascend-cann-toolkit {V85} is not installed in {install} (found: cann-9.0.0)" in r.stderr
    assert not (install / "cann-9.0.0" / OPS_KERNEL).exists()
    assert not (install / f"cann-{V85}").exists()


def test_8_5_one_chip_per_tree(installed85: Path, pkgs85: dict[str, Path], tmp_path: Path) -> None:
    root = installed85 / f"cann-{V85}"
    info = root / f"{ARCH}-linux" / "ascend_ops_install.info"
    before = info.read_text()
    r = install_pkg(pkgs85["ops-A3"], installed85, clean_env(tmp_path))
    assert r.returncode == 1
    assert (
        f"Ascend-cann-910b-ops is installed in {root}: one install path takes the ops package of one chip" in r.stderr
    )
    assert "Install the toolkit and Ascend-cann-A3-ops to another --install-path." in r.stderr
    assert sorted(p.name for p in (root / OPS_KERNEL).iterdir()) == ["ascend910b", "config"]
    assert info.read_text() == before


def test_8_5_a3_ops_devel_uninstall_then_another_chip(tmp_path: Path, pkgs85: dict[str, Path]) -> None:
    env = clean_env(tmp_path)
    install = tmp_path / "Ascend"
    root = install / f"cann-{V85}"
    assert install_pkg(pkgs85["toolkit"], install, env).returncode == 0
    assert not (root / OPS_KERNEL).exists() and not (root / "lib64" / "libhccl.so").exists()
    r = install_pkg(pkgs85["ops-A3"], install, env, "--devel")
    assert r.returncode == 0, r.stderr
    assert (root / OPS_KERNEL / "ascend910_93" / "static").is_dir()
    assert install_pkg(pkgs85["ops-A3"], install, env).returncode == 0  # the same chip again is fine
    up = install_pkg(pkgs85["ops-910b"], install, env, "--upgrade")
    assert up.returncode == 1 and "one install path takes the ops package of one chip" in up.stderr
    r = install_pkg(pkgs85["ops-A3"], install, env, "--uninstall")
    assert r.returncode == 0, r.stderr
    assert not (root / OPS_KERNEL).exists() and not (root / "lib64" / "libhccl.so").exists()
    assert not (root / f"{ARCH}-linux" / "ascend_ops_install.info").exists()
    again = install_pkg(pkgs85["ops-A3"], install, env, "--uninstall")
    assert again.returncode == 1 and "not installed" in again.stderr
    r = install_pkg(pkgs85["ops-910b"], install, env)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (root / OPS_KERNEL).iterdir()) == ["ascend910b", "config"]


def test_8_5_toolkit_upgrade_and_uninstall(tmp_path: Path, pkgs85: dict[str, Path]) -> None:
    env = clean_env(tmp_path)
    install = tmp_path / "Ascend"
    up = install_pkg(pkgs85["toolkit"], install, env, "--upgrade")
    assert up.returncode == 1 and "nothing to upgrade" in up.stderr
    for args in (["--full"], ["--install"], ["--upgrade"], ["--devel"]):
        r = install_pkg(pkgs85["toolkit"], install, env, *args)
        assert r.returncode == 0, (args, r.stderr)
    r = install_pkg(pkgs85["toolkit"], install, env, "--uninstall")
    assert r.returncode == 0 and "uninstall success" in r.stdout, r.stderr
    assert list(install.iterdir()) == []
    again = install_pkg(pkgs85["toolkit"], install, env, "--uninstall")
    assert again.returncode == 1 and "not installed" in again.stderr
    assert list((tmp_path / "tmpdir").iterdir()) == []


def test_8_5_toolkit_refuses_an_earlier_layout_in_the_same_path(
    tmp_path: Path, pkgs: dict[str, Path], pkgs85: dict[str, Path]
) -> None:
    env = clean_env(tmp_path)
    install = tmp_path / "Ascend"
    assert install_pkg(pkgs["toolkit"], install, env).returncode == 0  # 8.2.RC1: ascend-toolkit/8.2.RC1
    for action in ("--install", "--upgrade"):
        r = install_pkg(pkgs85["toolkit"], install, env, action)
        assert r.returncode == 1
        assert f"Ascend-cann-toolkit {VERSION} (the ascend-toolkit/<version> layout) is installed" in r.stderr
        assert "uninstall it" in r.stderr
    assert not (install / f"cann-{V85}").exists() and not (install / "cann").exists()
    assert os.readlink(install / "ascend-toolkit" / "latest") == VERSION


def test_8_5_ops_help_and_options(tmp_path: Path, pkgs85: dict[str, Path]) -> None:
    env = clean_env(tmp_path)
    h = run_pkg(pkgs85["ops-910b"], "--help", env=env)
    assert h.returncode == 0 and "--devel" in h.stdout and "--full" not in h.stdout
    assert "--full" in run_pkg(pkgs85["toolkit"], "--help", env=env).stdout
    r = install_pkg(pkgs85["ops-910b"], tmp_path / "Ascend", env, "--full")
    assert r.returncode == 1 and r.stderr.startswith(f"Usage: {pkgs85['ops-910b']} [options]")


@pytest.mark.parametrize(
    ("args", "torch_body", "abi"),
    [
        ([], None, 1),
        ([], "def compiled_with_cxx11_abi():\n    return False\n", 1),  # 8.5 does not follow torch
        (["--cxx_abi=0"], None, 0),
        (["--cxx_abi=0"], "def compiled_with_cxx11_abi():\n    return True\n", 0),
        (["--cxx_abi=1"], None, 1),
    ],
)
def test_8_5_nnal_defaults_to_cxx_abi_1(
    installed85: Path, tmp_path: Path, args: list[str], torch_body: str | None, abi: int
) -> None:
    atb = installed85 / "nnal" / "atb"
    assert os.readlink(atb / "latest") == V85
    assert f"Ascend-cann-atb : {V85}" in (atb / "latest" / "version.info").read_text().splitlines()
    extra = {"PYTHONPATH": fake_torch(tmp_path, torch_body)} if torch_body else {}
    env = sourced(atb / "set_env.sh", *args, env=clean_env(tmp_path, **extra))
    home = f"{installed85}/nnal/atb/latest/atb/cxx_abi_{abi}"
    assert env["ATB_HOME_PATH"] == home
    assert env["LD_LIBRARY_PATH"].split(":")[:3] == [f"{home}/lib", f"{home}/examples", f"{home}/tests/atbopstest"]
    assert (Path(home) / "lib" / "libatb.so").is_file()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_8_5_default_path_of_a_non_root_user(pkgs85: dict[str, Path]) -> None:
    """Without --install-path a non-root user installs into $HOME/Ascend: $HOME/Ascend/cann/set_env.sh."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        home.chmod(0o777)
        for key in ("toolkit", "ops-910b"):
            pkg = home / pkgs85[key].name
            shutil.copy(pkgs85[key], pkg)
            r = subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(pkg), "-q", "--install"],
                env={"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home)},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert r.returncode == 0, r.stderr
        assert os.readlink(home / "Ascend" / "cann") == f"{home}/Ascend/cann-{V85}"
        assert (home / "Ascend" / "cann" / f"{ARCH}-linux" / "ascend_ops_install.info").is_file()
        assert (home / "Ascend" / "ascend_cann_install.info").read_text() == f"Install_Path={home}/Ascend\n"


# ------------------------------------------------------------------------------------------------------
# git stand-ins


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory, megatron_core: Path) -> dict[str, Path]:
    return make_source_repos(tmp_path_factory.mktemp("sources"), megatron_core)


@pytest.fixture(scope="module")
def build_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python like the image's build steps have: this one's packages (torch), setuptools 65.7 (the apex
    builder's pin, which also still ships pkg_resources) and wheel."""
    venv = tmp_path_factory.mktemp("build-venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "setuptools==65.7.0", "wheel"], check=True)
    return python


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def refs(repo: Path) -> dict[str, str]:
    lines = git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
    return dict(line.split() for line in lines)


def files(repo: Path, ref: str = "HEAD") -> set[str]:
    return set(git(repo, "ls-tree", "-r", "--name-only", ref).splitlines())


def test_repos_branches_and_tags(repos: dict[str, Path]) -> None:
    assert list(repos) == list(REPOS)
    heads = {name: git(path, "symbolic-ref", "--short", "HEAD") for name, path in repos.items()}
    assert heads == {
        "mindspeed": "master",
        "mindspeed-llm": "2.1.0",
        "megatron": "core_r0.8.0",
        "apex": "master",
        "nvidia-apex": "master",
    }
    llm = repos["mindspeed-llm"]
    tag = git(llm, "rev-parse", "v2.1.0^{commit}")
    assert tag != git(llm, "rev-parse", "2.1.0")
    subprocess.run(["git", "merge-base", "--is-ancestor", tag, "2.1.0"], cwd=llm, check=True)
    for path in repos.values():
        assert git(path, "status", "--porcelain") == ""


def test_repos_are_deterministic(repos: dict[str, Path], tmp_path: Path, megatron_core: Path) -> None:
    again = make_source_repos(tmp_path, megatron_core)
    assert {n: refs(p) for n, p in again.items()} == {n: refs(p) for n, p in repos.items()}


def test_repos_layout(repos: dict[str, Path]) -> None:
    assert {"setup.py", "requirements.txt", "mindspeed/__init__.py", "mindspeed/megatron_adaptor.py"} <= files(
        repos["mindspeed"]
    )
    llm = files(repos["mindspeed-llm"])
    assert {
        "convert_ckpt.py",
        "preprocess_data.py",
        "pretrain_gpt.py",
        "posttrain_gpt.py",
        "inference.py",
        "evaluation.py",
        "mindspeed_llm/__init__.py",
        "requirements.txt",
    } <= llm
    assert any(f.startswith("configs/") for f in llm)
    assert any(f.startswith("examples/mcore/qwen3/") and f.endswith(".sh") for f in llm)
    assert {
        "megatron/core/__init__.py",
        "megatron/training/__init__.py",
        "megatron/legacy/__init__.py",
        "megatron/core/package_info.py",
    } <= files(repos["megatron"])
    apex = files(repos["apex"])
    assert {"patch/npu.patch", "scripts/build.sh"} <= apex
    assert any(f.startswith("src/apex/") for f in apex) and any(f.startswith("tests/") for f in apex)
    assert {"setup.py", "apex/__init__.py"} <= files(repos["nvidia-apex"])
    assert any(f.startswith("tests/") for f in files(repos["nvidia-apex"]))
    for path in repos.values():
        assert "stand-in" in (path / "README.md").read_text().lower()


def requirements(repo: Path) -> dict[str, str]:
    reqs = [Requirement(line) for line in (repo / "requirements.txt").read_text().splitlines() if line]
    return {r.name: str(r.specifier) for r in reqs}


def test_mindspeed_llm_requirements_carry_the_real_pins_that_decide_resolution(repos: dict[str, Path]) -> None:
    """MindSpeed-LLM v2.1.0's own pins: numpy<2 (hence the pyarrow trap), transformers 4.43.2, datasets."""
    reqs = requirements(repos["mindspeed-llm"])
    assert reqs["numpy"] == "<2.0.0,>=1.19.2" and reqs["transformers"] == "==4.43.2"
    assert reqs["datasets"] == ">=2.16.0"
    assert set(requirements(repos["mindspeed"])) == {"einops", "six"}


def fake_pip(tmp_path: Path) -> tuple[Path, Path]:
    """A ``pip`` module that records its argv and fails, first on PYTHONPATH: was pip run, and how?"""
    record = tmp_path / "pip-argv.json"
    package = tmp_path / "fakepip" / "pip"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        f"import json, sys\nopen({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\nsys.exit(3)\n"
    )
    return package.parent, record


@pytest.mark.parametrize("ci_build", [None, "1"])
def test_mindspeed_setup_py_runs_pip_unless_ci_build(
    repos: dict[str, Path], tmp_path: Path, ci_build: str | None
) -> None:
    """As MindSpeed 2c085cc9's setup.py: `pip install -r requirements.txt` at import time unless CI_BUILD=1."""
    pytest.importorskip("setuptools")
    path, record = fake_pip(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "CI_BUILD"}
    env["PYTHONPATH"] = str(path)
    if ci_build:
        env["CI_BUILD"] = ci_build
    r = subprocess.run([sys.executable, "setup.py", "--name", "--version"], cwd=repos["mindspeed"],
                       capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    if ci_build:
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[-2:] == ["mindspeed", "0.8.0"] and not record.exists()
    else:
        assert r.returncode != 0
        assert json.loads(record.read_text()) == ["install", "-r", "requirements.txt"]


def test_megatron_core_is_the_real_megatron_core_0_8_0(repos: dict[str, Path], megatron_core: Path) -> None:
    tree = repos["megatron"]
    with zipfile.ZipFile(megatron_core) as zf:
        random_py = zf.read("megatron/core/tensor_parallel/random.py")
    assert (tree / "megatron/core/tensor_parallel/random.py").read_bytes() == random_py
    assert b"from pkg_resources import packaging" in random_py  # why the release pins setuptools<82
    assert not list((tree / "megatron").rglob("*.so"))


def test_mindspeed_llm_entry_scripts_need_megatron_copied_in(
    repos: dict[str, Path], tmp_path: Path, build_python: Path
) -> None:
    llm = tmp_path / "MindSpeed-LLM"
    shutil.copytree(repos["mindspeed-llm"], llm, ignore=shutil.ignore_patterns(".git"))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(repos["mindspeed"]), "RANK": "3", "WORLD_SIZE": "8",
           "TORCH_DEVICE_BACKEND_AUTOLOAD": "0"}  # fmt: skip
    missing = subprocess.run(
        [str(build_python), str(llm / "pretrain_gpt.py")], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert missing.returncode != 0 and "ModuleNotFoundError" in missing.stderr
    shutil.copytree(repos["megatron"] / "megatron", llm / "megatron")  # as images/mindspeed does
    scripts = [
        "convert_ckpt.py",
        "preprocess_data.py",
        "pretrain_gpt.py",
        "posttrain_gpt.py",
        "inference.py",
        "evaluation.py",
    ]
    for script in scripts:
        r = subprocess.run(
            [str(build_python), str(llm / script), "--seq-length", "4096"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        record = json.loads(r.stdout)
        assert record["stand_in"] == "MindSpeed-LLM" and record["script"] == script
        assert record["argv"] == ["--seq-length", "4096"]
        assert (record["megatron"], record["mindspeed"]) == ("0.8.0", "0.8.0")
        assert record["megatron_dir"] == str(llm / "megatron")
        assert (record["rank"], record["world_size"]) == ("3", "8")


def apex_tree(repos: dict[str, Path], dest: Path, patched: bool = True) -> Path:
    """images/pta's recipe: nvidia-apex, then Ascend's patch, src/ and tests/ on top."""
    shutil.copytree(repos["nvidia-apex"], dest, ignore=shutil.ignore_patterns(".git"))
    if patched:
        patch = (repos["apex"] / "patch" / "npu.patch").read_text()
        subprocess.run(["patch", "-p1"], cwd=dest, input=patch, text=True, check=True, capture_output=True)
        shutil.copytree(repos["apex"] / "src", dest, dirs_exist_ok=True)
        shutil.copytree(repos["apex"] / "tests", dest / "tests", dirs_exist_ok=True)
    return dest


def build_wheel(python: Path, tree: Path, dist: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "setup.py", *options, "bdist_wheel", "--dist-dir", str(dist)],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(shutil.which("patch") is None, reason="needs patch(1)")
def test_ascend_apex_patch_applies_and_builds_the_wheel(repos: dict[str, Path], tmp_path: Path,
                                                        build_python: Path) -> None:  # fmt: skip
    tree = apex_tree(repos, tmp_path / "apex")
    r = build_wheel(build_python, tree, tmp_path / "dist", "--cpp_ext")
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp_path / "dist").iterdir()
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert re.fullmatch(rf"apex-0\.1_ascend-{tag}-{tag}-linux_{ARCH}\.whl", wheel.name), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read("apex-0.1_ascend.dist-info/METADATA").decode()
    assert {
        "apex/__init__.py",
        "apex/optimizers/npu_fused_adam.py",
        "apex/contrib/combine_tensors/__init__.py",
    } <= names
    assert "Version: 0.1-ascend" in metadata.splitlines()  # what the real 49a7994 build reports


@pytest.mark.skipif(shutil.which("patch") is None, reason="needs patch(1)")
def test_ascend_apex_rejects_a_flag_its_commit_does_not_know(repos: dict[str, Path], tmp_path: Path,
                                                             build_python: Path) -> None:  # fmt: skip
    """Ascend apex 49a7994 knows --cpp_ext only: the remembered --npu_float_status fails, as upstream."""
    r = build_wheel(build_python, apex_tree(repos, tmp_path / "apex"), tmp_path / "dist", "--cpp_ext",
                    "--npu_float_status")  # fmt: skip
    assert r.returncode != 0
    assert "option --npu_float_status not recognized" in r.stderr


@pytest.mark.skipif(shutil.which("patch") is None, reason="needs patch(1)")
def test_ascend_apex_build_script(repos: dict[str, Path], tmp_path: Path, build_python: Path) -> None:
    work = tmp_path / "ascend-apex"
    git(tmp_path, "clone", "-q", str(repos["apex"]), str(work))
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    env = {
        **os.environ,
        "NVIDIA_APEX_URL": str(repos["nvidia-apex"]),
        "PATH": f"{build_python.parent}:{os.environ['PATH']}",
    }
    r = subprocess.run(
        ["bash", "scripts/build.sh", f"--python={py}"], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert [p.name.split("-")[:2] for p in (work / "apex" / "dist").iterdir()] == [["apex", "0.1_ascend"]]
    assert git(work / "apex", "rev-parse", "HEAD") == git(repos["nvidia-apex"], "rev-parse", "master")


@pytest.mark.skipif(shutil.which("patch") is None, reason="needs patch(1)")
def test_apex_build_in_two_steps_builds_what_build_sh_builds(repos: dict[str, Path], tmp_path: Path,
                                                             build_python: Path) -> None:  # fmt: skip
    """images/pta: the patched tree in one stage (patch, no torch), the wheel in another (torch, setuptools)."""
    script = str(Path(__file__).resolve().parents[1] / "images" / "pta" / "apex_build.py")
    ascend, nvidia = _export(repos["apex"], tmp_path / "ascend"), _export(repos["nvidia-apex"], tmp_path / "nvidia")
    work, dist = tmp_path / "work", tmp_path / "dist"
    r = subprocess.run([sys.executable, script, "--tree", str(ascend), str(nvidia), str(work)], capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (work / "apex" / "optimizers" / "npu_fused_adam.py").is_file() and not dist.exists()
    r = subprocess.run([str(build_python), script, "--wheel", str(ascend), str(work), str(dist)], capture_output=True,
                       text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "setup.py --cpp_ext bdist_wheel" in r.stdout  # build.sh's options at this commit
    assert [p.name.split("-")[:2] for p in dist.iterdir()] == [["apex", "0.1_ascend"]]
    usage = subprocess.run([sys.executable, script, "--tree", str(ascend)], capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: apex_build.py")


def _export(repo: Path, dest: Path) -> Path:
    """The tree of ``repo``'s HEAD, without .git (what the build context gets)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", "HEAD"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def test_add_commit_moves_only_that_branch(tmp_path: Path, megatron_core: Path) -> None:
    repos = make_source_repos(tmp_path / "a", megatron_core)
    llm = repos["mindspeed-llm"]
    before = refs(llm)
    git(llm, "branch", "other", "v2.1.0")
    new = add_commit(llm, "2.1.0", "examples/mcore/qwen3/new.sh", "echo new\n")
    assert new == git(llm, "rev-parse", "2.1.0")
    assert git(llm, "rev-parse", f"{new}^") == before["refs/heads/2.1.0"]
    assert git(llm, "rev-parse", "v2.1.0") == before["refs/tags/v2.1.0"]
    assert (llm / "examples/mcore/qwen3/new.sh").read_text() == "echo new\n"  # checked out: work tree follows
    assert git(llm, "status", "--porcelain") == ""
    # an executable keeps its mode
    exe = "examples/mcore/qwen3/pretrain_qwen3_14b_4K_ptd.sh"
    add_commit(llm, "2.1.0", exe, "#!/bin/bash\necho changed\n")
    assert git(llm, "ls-tree", "2.1.0", "--", exe).split()[0] == "100755"
    # a branch that is not checked out moves without touching the work tree
    other = add_commit(llm, "other", "docs/x.md", "x\n")
    assert git(llm, "rev-parse", "other") == other
    assert git(llm, "rev-parse", f"{other}^") == git(llm, "rev-parse", "v2.1.0^{commit}")
    assert not (llm / "docs" / "x.md").exists()
    assert git(llm, "symbolic-ref", "--short", "HEAD") == "2.1.0"
    # a new branch starts at the checked-out commit
    head = git(llm, "rev-parse", "HEAD")
    hotfix = add_commit(llm, "2.1.0-hotfix", "HOTFIX.md", "a fix\n")
    assert git(llm, "rev-parse", f"{hotfix}^") == head and git(llm, "rev-parse", "HEAD") == head
    assert git(llm, "show", f"{hotfix}:HOTFIX.md") == "a fix"
    # deterministic: the same calls on a fresh generation give the same id
    again = make_source_repos(tmp_path / "b", megatron_core)
    assert add_commit(again["mindspeed-llm"], "2.1.0", "examples/mcore/qwen3/new.sh", "echo new\n") == new
