"""``invoke run``: the docker run line for Atlas A2, Atlas A3 and Ascend Docker Runtime, the refusals,
the checks a real run makes on the host, and one real run of the integration image."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ascend_stack.errors import UserError
from ascend_stack.run import RunOptions, check_host, device_list, docker_run

REPO = Path(__file__).resolve().parents[1]
MANAGEMENT = ["/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]
DRIVER = [
    "/usr/local/Ascend/driver:/usr/local/Ascend/driver:ro",
    "/usr/local/dcmi:/usr/local/dcmi:ro",
    "/usr/local/bin/npu-smi:/usr/local/bin/npu-smi:ro",
    "/etc/ascend_install.info:/etc/ascend_install.info:ro",
]
RUNTIME_MOUNTS = [
    "/usr/local/Ascend/driver/version.info:/usr/local/Ascend/driver/version.info:ro",
    "/etc/ascend_install.info:/etc/ascend_install.info:ro",
]


def invoke(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args], cwd=cwd, capture_output=True, text=True
    )


def printed(*args: str) -> list[str]:
    """``invoke run --print ARGS`` as the argv it shows."""
    out = invoke("run", "--print", *args)
    assert out.returncode == 0, out.stderr
    return shlex.split(out.stdout.replace("\\\n", " "))


def values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, token in enumerate(argv[:-1]) if token == flag]


def test_atlas_a2_gets_eight_npus_the_management_nodes_and_the_driver_read_only() -> None:
    argv = printed("--image", "img:1", "--", "pretrain", "--model", "qwen3-14b")
    assert argv[:2] == ["docker", "run"]
    assert values(argv, "--device") == [f"/dev/davinci{i}" for i in range(8)] + MANAGEMENT
    assert values(argv, "-v") == DRIVER
    assert values(argv, "--network") == ["host"]
    assert values(argv, "--shm-size") == ["64g"]
    assert values(argv, "--stop-timeout") == ["900"]
    assert "--init" in argv and "--rm" in argv
    assert "--privileged" not in argv and "--runtime" not in argv
    assert not [v for v in values(argv, "-e") if v.startswith("ASCEND_VISIBLE_DEVICES")]
    assert argv[-4:] == ["img:1", "pretrain", "--model", "qwen3-14b"]


def test_atlas_a3_gets_sixteen_npus() -> None:
    argv = printed("--image", "img:1", "--host-type", "a3", "--", "check")
    assert values(argv, "--device") == [f"/dev/davinci{i}" for i in range(16)] + MANAGEMENT
    assert values(argv, "-v") == DRIVER


@pytest.mark.parametrize(
    ("host", "npus", "visible"),
    [("a2", "all", "0-7"), ("a3", "all", "0-15"), ("a3", "8-15", "8-15"), ("a2", "0,2,3", "0,2-3")],
)
def test_ascend_docker_runtime_gets_visible_devices_instead_of_device_flags(host, npus, visible) -> None:
    argv = printed("--image", "img:1", "--host-type", host, "--npus", npus, "--runtime", "ascend", "--", "check")
    assert values(argv, "--runtime") == ["ascend"]
    assert values(argv, "-e") == [f"ASCEND_VISIBLE_DEVICES={visible}"]
    assert values(argv, "--device") == []
    assert values(argv, "-v") == RUNTIME_MOUNTS  # the runtime mounts lib64, dcmi and npu-smi itself
    assert "--privileged" not in argv


def test_a_subset_of_npus_data_mounts_env_and_options() -> None:
    argv = printed(
        "--image", "img:1", "--npus", "0-1,6", "--mount", "/data", "--mount", "/ckpt:/out:ro", "--mount", "rel",
        "--env", "HCCL_SOCKET_IFNAME=eth0", "--name", "train0", "--detach", "--ipc-host", "--keep",
        "--", "sft", "--data", "/data/a b",
    )  # fmt: skip
    assert values(argv, "--device") == ["/dev/davinci0", "/dev/davinci1", "/dev/davinci6", *MANAGEMENT]
    assert values(argv, "-v")[len(DRIVER) :] == ["/data:/data", "/ckpt:/out:ro", f"{REPO}/rel:{REPO}/rel"]
    assert values(argv, "-e") == ["HCCL_SOCKET_IFNAME=eth0"]
    assert values(argv, "--name") == ["train0"] and "--detach" in argv and "--rm" not in argv
    assert values(argv, "--ipc") == ["host"] and "--shm-size" not in argv
    assert argv[-3:] == ["sft", "--data", "/data/a b"]  # quoting survives the double dash


def test_cpu_only_stages_get_no_devices_and_privileged_only_when_asked() -> None:
    argv = printed("--image", "img:1", "--npus", "none", "--privileged", "--", "preprocess")
    assert values(argv, "--device") == [] and values(argv, "-v") == []
    assert "--privileged" in argv


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--npus", "8"], "--npus 8: an Atlas A2 (800T A2, 910B) host has NPUs 0-7; 8 do not exist"),
        (["--npus", "0-3,3"], "--npus 0-3,3: NPU(s) listed twice"),
        (["--npus", "5-2"], "--npus 5-2: the range 5-2 runs backwards"),
        (["--npus", "two"], "--npus two: expected all, none, N, N-M or a comma list"),
        (["--host-type", "a4"], "--host-type a4: choose a2 (8 NPUs) or a3 (16 NPUs)"),
        (["--runtime", "runc"], "--runtime runc: only 'ascend' (Ascend Docker Runtime) is supported"),
        (["--runtime", "ascend", "--npus", "none"], "--runtime ascend with --npus none"),
        (["--runtime", "ascend", "--privileged"], "--privileged with --runtime ascend"),
        (["--npus", "0,1", "--privileged"], "--privileged with --npus 0,1: a privileged container sees all 8 NPUs"),
        (["--ipc-host", "--shm-size", "8g"], "--ipc-host and --shm-size together"),
        (["--shm-size", "lots"], "--shm-size lots: a size such as 64g"),
        (["--mount", "/a:rel"], "--mount /a:rel: the path inside the container must be absolute"),
        (["--mount", "/a:/b:rx"], "--mount /a:/b:rx: the mode must be ro or rw"),
        (["--mount", "/a", "--mount", "/b:/a"], "--mount: /a is mounted twice"),
        (["--env", "NOEQUALS"], "--env 'NOEQUALS': expected NAME=VALUE"),
        (["--env", "ASCEND_VISIBLE_DEVICES=0"], "--env ASCEND_VISIBLE_DEVICES=...: choose the NPUs with --npus"),
        (["--name", "-x"], "--name -x: letters, digits"),
    ],
)
def test_bad_combinations_exit_2_with_one_line(args: list[str], message: str) -> None:
    out = invoke("run", "--image", "img:1", *args, "--print", "--", "check")
    assert out.returncode == 2
    assert out.stderr.startswith("error: " + message), out.stderr
    assert out.stderr.count("\n") == 1 and out.stdout == ""


def test_image_and_command_are_required() -> None:
    assert invoke("run", "--print", "--", "check").stderr.startswith("error: --image is required")
    out = invoke("run", "--image", "img:1", "--print")
    assert out.returncode == 2 and out.stderr.startswith("error: say what to run after --")


def test_help_explains_every_option() -> None:
    out = invoke("--help", "run")
    assert out.returncode == 0
    for option in ("--npus", "--host-type", "--runtime", "--mount", "--print", "--privileged", "--ipc-host"):
        assert option in out.stdout
    assert "Ascend Docker Runtime" in out.stdout


def test_device_list_syntax() -> None:
    assert device_list(range(16)) == "0-15"
    assert device_list([0, 2, 3, 4, 9]) == "0,2-4,9"


# -- what a real run checks on this host ----------------------------------------------------------


def atlas_host(root: Path, npus: int = 8) -> Path:
    """A fake Atlas host: device nodes and driver files under ``root``."""
    for i in range(npus):
        (root / f"dev/davinci{i}").parent.mkdir(parents=True, exist_ok=True)
        (root / f"dev/davinci{i}").write_text("")
    for path in [*MANAGEMENT, "/usr/local/bin/npu-smi", "/etc/ascend_install.info"]:
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text("")
    for path in ("usr/local/Ascend/driver", "usr/local/dcmi"):
        (root / path).mkdir(parents=True, exist_ok=True)
    (root / "usr/local/Ascend/driver/version.info").write_text("Version=25.0.rc1\n")
    return root


def fake_docker(tmp_path: Path, runtimes: str) -> str:
    exe = tmp_path / "docker"
    exe.write_text(f"#!/bin/sh\necho '{runtimes}'\n")
    exe.chmod(0o755)
    return str(exe)


def test_a_real_run_needs_the_devices_and_the_driver(tmp_path: Path) -> None:
    root = atlas_host(tmp_path / "host")
    docker = fake_docker(tmp_path, "{}")
    assert check_host(docker_run(RunOptions("img", ["check"])), root, docker) == docker
    with pytest.raises(UserError, match=r"this host lacks /dev/davinci8, /dev/davinci9, .* and 4 more: run on an"):
        check_host(docker_run(RunOptions("img", ["check"], host_type="a3")), root, docker)
    (root / "usr/local/dcmi").rmdir()
    with pytest.raises(UserError, match="this host lacks /usr/local/dcmi"):
        check_host(docker_run(RunOptions("img", ["check"])), root, docker)
    check_host(docker_run(RunOptions("img", ["preprocess"], npus="none")), root, docker)  # CPU-only: nothing needed


def test_a_real_run_needs_the_runtime_and_the_mounted_directories(tmp_path: Path) -> None:
    root = atlas_host(tmp_path / "host")
    with_runtime = RunOptions("img", ["check"], runtime="ascend")
    with pytest.raises(UserError, match="the Docker engine has no 'ascend' runtime: install Ascend Docker Runtime"):
        check_host(docker_run(with_runtime), root, fake_docker(tmp_path, '{"runc": {}}'))
    check_host(docker_run(with_runtime), root, fake_docker(tmp_path, '{"runc": {}, "ascend": {}}'))
    with pytest.raises(UserError, match="--mount /data: no such file or directory on this host"):
        check_host(docker_run(RunOptions("img", ["check"], mounts=["/data"])), root, fake_docker(tmp_path, "{}"))


def test_a_real_run_on_this_machine_is_refused_before_docker_starts() -> None:
    if Path("/dev/davinci0").exists():
        pytest.skip("this machine has an NPU")
    out = invoke("run", "--image", "img:1", "--", "check")
    assert out.returncode == 2
    assert out.stderr.startswith("error: this host lacks /dev/davinci0,") and out.stderr.count("\n") == 1


@pytest.mark.docker
def test_a_real_run_of_the_image_with_a_mounted_directory(chain: Any, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # the image runs as HwHiAiUser: data must be readable by others (pytest makes it 0700)
    (tmp_path / "data.txt").write_text("tokens\n")
    script = f"import pathlib; print(pathlib.Path('{tmp_path}/data.txt').read_text().strip())"
    out = invoke(
        "run", "--image", chain.image, "--npus", "none", "--mount", str(tmp_path), "--", "python3", "-c", script
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "tokens"
    failed = invoke("run", "--image", chain.image, "--npus", "none", "--", "python3", "-c", "raise SystemExit(7)")
    assert failed.returncode == 7  # the container's exit status is the command's


# -- the image's non-root user and the host's device groups ------------------------------------------


def owned(path: Path, mode: int, gid: int) -> None:
    os.chown(path, 0, gid)
    path.chmod(mode)


def test_the_device_and_driver_groups_are_added_for_the_non_root_user(tmp_path: Path) -> None:
    """As the driver installs it: davinciN HwHiAiUser (here gid 1100) 0660, the management nodes open to all,
    hisi_hdc and the driver folder group-only (gid 1200), dcmi readable by all."""
    root = atlas_host(tmp_path / "host")
    for i in range(8):
        owned(root / f"dev/davinci{i}", 0o660, 1100)
    for name in ("davinci_manager", "devmm_svm"):
        owned(root / "dev" / name, 0o666, 0)
    owned(root / "dev/hisi_hdc", 0o660, 1200)
    owned(root / "usr/local/Ascend/driver", 0o750, 1200)
    owned(root / "usr/local/dcmi", 0o755, 0)
    argv = docker_run(RunOptions("img", ["check"]), root=root).argv
    assert values(argv, "--group-add") == ["1100", "1200"]
    assert "--user" not in argv and "--privileged" not in argv and "--cap-add" not in argv
    runtime = docker_run(RunOptions("img", ["check"], runtime="ascend"), root=root).argv
    assert values(runtime, "--group-add") == ["1100", "1200"]  # the runtime's device nodes are the host's
    assert values(docker_run(RunOptions("img", ["preprocess"], npus="none"), root=root).argv, "--group-add") == []
    as_root = docker_run(RunOptions("img", ["check"], user="root"), root=root).argv
    assert values(as_root, "--user") == ["root"] and values(as_root, "--group-add") == []
    owned(root / "dev/davinci3", 0o600, 1100)  # only its owner may use it: a group cannot help
    owned(root / "usr/local/Ascend/driver", 0o755, 1200)
    assert values(docker_run(RunOptions("img", ["check"]), root=root).argv, "--group-add") == ["1100", "1200"]


def test_user_option_is_passed_and_checked() -> None:
    argv = printed("--image", "img:1", "--user", "1000:1000", "--npus", "none", "--", "check")
    assert values(argv, "--user") == ["1000:1000"]
    out = invoke("run", "--image", "img:1", "--user", "a b", "--print", "--", "check")
    assert out.returncode == 2 and out.stderr.startswith("error: --user a b: a user or uid")
