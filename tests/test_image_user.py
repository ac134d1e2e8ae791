"""The integration image runs as HwHiAiUser (uid/gid 1000), as the NPU driver's hosts expect: its stages
work as that user, its caches are in that user's home, and a volume that user may not write is refused
in one line that says which uid/gid to give it to. Real containers of the chain's image (tests/chain.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from chain import Chain

from ascend_stack import render
from ascend_stack.container import docker_cli

pytestmark = pytest.mark.docker

USER = render.RuntimeUser()


def docker_run(image: str, *args: str, volumes: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``docker run --rm [-v ...] IMAGE ARGS`` through the CLI, as a user types it (the entrypoint stays)."""
    argv = [docker_cli(), "run", "--rm", *(f"--volume={v}" for v in volumes), image, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_docker_inspect_shows_the_user(chain: Chain, docker_client: Any) -> None:
    config = docker_client.images.get(chain.image).attrs["Config"]
    assert config["User"] == "HwHiAiUser"
    out = docker_run(chain.image, "id")
    assert out.returncode == 0 and out.stdout.split()[:2] == ["uid=1000(HwHiAiUser)", "gid=1000(HwHiAiUser)"]


def test_sft_dry_run_works_as_the_user(chain: Chain) -> None:
    out = docker_run(chain.image, "sft", "--dry-run", "--no-preflight", "--model", "qwen3-0.6b", "--load", "/ckpt",
                     "--save", "/out", "--data", "/data/alpaca", "--tokenizer", "/hf")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("#!/usr/bin/env bash") and "posttrain_gpt.py" in out.stdout


def test_pip_and_hf_caches_resolve_under_the_users_home(chain: Chain) -> None:
    code = "import huggingface_hub.constants as c; print(c.HF_HUB_CACHE)"
    script = f"set -e; python -m pip cache dir; python -c '{code}'; echo $ASCEND_CACHE_PATH"
    out = docker_run(chain.image, "bash", "-c", script)
    assert out.returncode == 0, out.stderr
    pip_cache, hf_cache, cann_cache = out.stdout.split()
    assert pip_cache == f"{USER.home}/.cache/pip"
    assert hf_cache == f"{USER.home}/.cache/huggingface/hub"
    assert cann_cache == f"{USER.home}/ascend/cache"


def test_a_stage_writing_to_a_root_owned_mount_says_which_uid_gid_to_give_it(chain: Chain, tmp_path: Path) -> None:
    """A host directory owned by root (0755), mounted at the same path: the stage refuses before it starts."""
    out_dir = tmp_path / "logs"
    out_dir.mkdir()
    os.chown(out_dir, 0, 0)
    out_dir.chmod(0o755)
    out = docker_run(chain.image, "selftest", "comm", "--log-dir", str(out_dir), volumes=(f"{out_dir}:{out_dir}",))
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    hint = [line for line in lines if "not writable" in line]
    assert len(hint) == 1, lines
    assert f"{out_dir} is not writable by this container's user (uid 1000, gid 1000; it is owned by 0:0" in hint[0]
    assert "sudo chown -R 1000:1000 HOST_DIR" in hint[0] and "Traceback" not in out.stderr
    assert not any(out_dir.iterdir())  # nothing half-written
    out_dir.chmod(0o777)  # the same volume, writable for uid 1000: the stage gets past its preflight
    ok = docker_run(chain.image, "selftest", "comm", "--dry-run", "--log-dir", str(out_dir),
                    volumes=(f"{out_dir}:{out_dir}",))  # fmt: skip
    assert ok.returncode == 0, ok.stderr


def test_root_remains_possible(chain: Chain) -> None:
    out = subprocess.run([docker_cli(), "run", "--rm", "--user", "root", chain.image, "id", "-u"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert (out.returncode, out.stdout.strip()) == (0, "0")
