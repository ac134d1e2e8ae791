"""The test row's whole chain (tests/chain.py), built for real through BuildKit on a local Docker engine.

Real: the debootstrapped Debian base, Python, apt and pip installs (torch 2.13.0 + torch_npu 2.13.0,
transformers, every pip dependency) through an authenticating proxy on loopback with the host's
CA, BuildKit, the layer/tag logic. Stand-ins (tests/fakes, generated here): the CANN installers and
the MindSpeed / MindSpeed-LLM / Megatron-LM / apex repositories.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from chain import PROXY_PASSWORD, Chain, run
from fakes.sources import add_commit

from ascend_stack.build import Builder, NetworkOptions
from ascend_stack.download import ChecksumMismatch
from ascend_stack.driver import Driver
from ascend_stack.inputs import MissingInputs
from ascend_stack.matrix import parse_matrix
from ascend_stack.target import resolve

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[1]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def test_chain_has_every_layer_with_content_and_human_tags(chain: Chain, docker_client: Any) -> None:
    assert [r.name for r in chain.results] == ["base", "cann", "pta", "mindspeed", "runtime"]
    assert {r.status for r in chain.results} <= {"built", "up to date"}
    final = "ascend-llm-stack:test-910b-torch2.13.0-mslm2.1.0-debian-bookworm-py3.11-x86_64"
    image = docker_client.images.get(final)
    assert image.id == chain.results[-1].image_id
    for r in chain.results:
        assert docker_client.images.get(r.content_tag).id == r.image_id
    labels = image.labels
    assert labels["io.ascend-llm-stack.cann"] == "8.2.RC1" and labels["io.ascend-llm-stack.torch-npu"] == "2.13.0"
    assert labels["io.ascend-llm-stack.mindspeed-llm"] == "v2.1.0" and labels["io.ascend-llm-stack.layer"] == "runtime"
    assert labels["io.ascend-llm-stack.content-hash"].startswith(chain.results[-1].content_tag.split("content-")[1])
    assert labels["org.opencontainers.image.title"] == "ascend-llm-stack"


def test_cann_environment_needs_no_sourcing(chain: Chain, docker_client: Any) -> None:
    """A plain run has every variable that sourcing both set_env.sh scripts in a clean shell gives."""

    def env_of(script: str) -> dict[str, str]:
        out = run(docker_client, chain.image, "-c", f"env -i HOME=/root PATH=/usr/bin:/bin bash -c '{script}env'",
                  entrypoint="bash")  # fmt: skip
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    plain = dict(line.split("=", 1) for line in run(docker_client, chain.image, "env", entrypoint="").splitlines())
    clean = env_of("")
    sourced = env_of(
        "source /usr/local/Ascend/ascend-toolkit/set_env.sh; source /usr/local/Ascend/nnal/atb/set_env.sh --cxx_abi=1; "
    )
    added = {k for k, v in sourced.items() if clean.get(k) != v and k not in ("_", "SHLVL", "PWD")}
    assert {"ASCEND_TOOLKIT_HOME", "ASCEND_OPP_PATH", "ATB_HOME_PATH", "LD_LIBRARY_PATH", "PYTHONPATH"} <= added
    for name in sorted(added):
        if name in ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH"):
            entries = plain[name].split(":")
            assert "" not in entries, f"{name} has an empty entry (the working directory)"
            assert {e for e in sourced[name].split(":") if e} <= set(entries), name
        else:
            assert plain.get(name) == sourced[name], name
    assert "/usr/local/Ascend/driver/lib64/driver" in plain["LD_LIBRARY_PATH"].split(":")


def test_pip_versions_match_the_matrix(chain: Chain, docker_client: Any) -> None:
    listed = json.loads(run(docker_client, chain.image, "-m", "pip", "list", "--format=json", entrypoint="python"))
    versions = {p["name"].lower().replace("_", "-"): p["version"] for p in listed}
    row = chain.target.row
    assert versions["torch"].split("+")[0] == chain.target.torch
    assert versions["torch-npu"] == chain.target.torch_npu
    assert versions["transformers"] == row.transformers
    assert versions["apex"] == "0.1-ascend"  # what Ascend apex 49a7994's build gives (the stand-in models it)
    assert versions["numpy"].split(".")[0] == "1"  # the row's numpy<2 pin held through every layer
    assert int(versions["setuptools"].split(".")[0]) < 82  # the release's sources import pkg_resources
    assert int(versions["pyarrow"].split(".")[0]) < 26  # datasets' pyarrow must still take numpy 1.x
    show = run(docker_client, chain.image, "-m", "pip", "show", "mindspeed", entrypoint="python")
    assert "Editable project location: /opt/MindSpeed" in show


def test_mindspeed_llm_holds_megatron_at_the_pinned_ref(chain: Chain, docker_client: Any) -> None:
    stack = json.loads(run(docker_client, chain.image, "/etc/ascend-llm-stack/stack.json", entrypoint="cat"))
    lock = yaml.safe_load((chain.opts.dirs.locks / "test.yaml").read_text())
    assert stack["megatron"]["ref"] == "core_r0.8.0"
    for name in ("megatron", "mindspeed", "mindspeed-llm"):
        ref = stack[name.replace("-", "_")]["ref"] + "^{commit}"  # v2.1.0 is an annotated tag, as upstream's
        head = subprocess.run(["git", "-C", str(chain.repos[name]), "rev-parse", ref],
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        assert stack[name.replace("-", "_")]["commit"] == head
        assert head in json.dumps(lock)
    files = run(docker_client, chain.image, "-c", "ls /opt/MindSpeed-LLM /opt/MindSpeed-LLM/megatron", entrypoint="sh")
    for expected in ("pretrain_gpt.py", "posttrain_gpt.py", "convert_ckpt.py", "core", "training", "legacy"):
        assert expected in files.split()


def _layer_files(docker_client: Any, image: str) -> Iterator[tuple[str, tarfile.TarFile, tarfile.TarInfo]]:
    """Every file of every layer of ``image``, from ``docker save``."""
    raw = b"".join(docker_client.images.get(image).save(named=False))
    with tarfile.open(fileobj=io.BytesIO(raw)) as outer:
        for member in outer.getmembers():
            if member.name.endswith("layer.tar"):
                blob = outer.extractfile(member)
                assert blob is not None
                with tarfile.open(fileobj=io.BytesIO(blob.read())) as layer:
                    for info in layer.getmembers():
                        yield member.name, layer, info


def test_no_installer_ca_or_proxy_secret_in_any_layer(chain: Chain, docker_client: Any) -> None:
    ca = HOST_CA.read_bytes() if HOST_CA.is_file() else None
    seen = 0
    for layer_name, layer, info in _layer_files(docker_client, chain.image):
        seen += 1
        assert not info.name.endswith(".run"), f"{info.name} in {layer_name}"
        # BuildKit leaves the empty mount points /run/secrets and /mnt/*; nothing may be in them.
        assert not info.name.startswith(("run/secrets/", "mnt/packages/", "mnt/wheelhouse/")), info.name
        assert not info.name.startswith("root/.cache/pip/") or info.isdir(), info.name
        assert not info.name.endswith(".deb"), f"{info.name} left in {layer_name}"
        if info.name.startswith("var/lib/apt/lists/") and info.isfile() and "/.wh." not in info.name:
            assert info.name.endswith("lock"), f"apt list {info.name} left in {layer_name}"
        if info.isfile() and info.size < 4_000_000:
            data = layer.extractfile(info).read()  # type: ignore[union-attr]
            assert PROXY_PASSWORD.encode() not in data, f"proxy password in {info.name} ({layer_name})"
            if ca is not None:
                assert data != ca, f"the build's CA bundle landed in {info.name}"
    assert seen > 1000
    history = json.dumps(docker_client.api.history(chain.image))
    assert PROXY_PASSWORD not in history and "proxy" not in history.lower()
    assert PROXY_PASSWORD not in json.dumps(docker_client.images.get(chain.image).attrs)


def test_second_build_makes_no_docker_build_call(chain: Chain) -> None:
    results, driver = chain.rebuild()
    assert driver.builds == []
    assert [r.status for r in results] == ["up to date"] * 5
    assert [r.image_id for r in results] == [r.image_id for r in chain.results]


def test_a_new_mindspeed_llm_ref_rebuilds_only_from_mindspeed_on(chain: Chain, docker_client: Any) -> None:
    commit = add_commit(chain.repos["mindspeed-llm"], "2.1.0-hotfix", "HOTFIX.md", f"fix {uuid.uuid4()}\n")
    raw = yaml.safe_load((REPO / "matrix.yaml").read_text())
    test_row = next(r for r in raw["rows"] if r.get("id") == "test")
    test_row["mindspeed_llm"]["ref"] = commit
    target = resolve(parse_matrix(raw), "test", arch="x86_64")
    try:
        results, driver = chain.rebuild(target, out_dir=chain.root / "build-hotfix")
        assert [(r.name, r.status) for r in results] == [
            ("base", "up to date"), ("cann", "up to date"), ("pta", "up to date"),
            ("mindspeed", "built"), ("runtime", "built"),
        ]  # fmt: skip
        assert len(driver.builds) == 2
        stack = json.loads(run(docker_client, results[-1].content_tag, "/etc/ascend-llm-stack/stack.json",
                               entrypoint="cat"))  # fmt: skip
        assert stack["mindspeed_llm"]["commit"] == commit
    finally:
        chain.restore_tags()


def test_a_tampered_package_stops_the_build_before_docker(chain: Chain) -> None:
    toolkit = next((chain.opts.dirs.packages).glob("Ascend-cann-toolkit_*.run"))
    original = toolkit.read_bytes()
    try:
        toolkit.write_bytes(original + b"\n# tampered\n")
        driver = Driver(chain.driver.client, chain.driver.docker)
        with pytest.raises(ChecksumMismatch) as info:
            Builder(chain.target, chain.opts, driver, log=lambda *_: None).run()
        assert driver.builds == []
        message = str(info.value)
        assert toolkit.name in message and "\n" not in message
    finally:
        toolkit.write_bytes(original)


def test_offline_with_a_missing_package_lists_it(chain: Chain, tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    shutil.copytree(chain.opts.dirs.packages, packages)
    nnal = next(packages.glob("Ascend-cann-nnal_*.run"))
    nnal.unlink()
    dirs = replace(chain.opts.dirs, packages=packages)
    driver = Driver(chain.driver.client, chain.driver.docker)
    with pytest.raises(MissingInputs) as info:
        Builder(chain.target, replace(chain.opts, dirs=dirs, network=NetworkOptions(offline=True)), driver).run()
    assert driver.builds == []
    assert nnal.name in str(info.value) and "obs.cn-east-2" in str(info.value)


def test_the_image_runs_stages_and_plain_commands(chain: Chain, docker_client: Any) -> None:
    """The entrypoint is the stage runner; anything that is not a stage runs as a command."""
    assert "sft" in run(docker_client, chain.image, "--help") and "pretrain" in run(docker_client, chain.image)
    script = run(
        docker_client, chain.image, "sft", "--dry-run", "--no-preflight", "--model", "qwen3-14b",
        "--load", "/ckpt", "--save", "/out", "--data", "/data/alpaca", "--tokenizer", "/hf",
    )  # fmt: skip
    assert script.startswith("#!/usr/bin/env bash") and "posttrain_gpt.py" in script and "--finetune" in script
    assert run(docker_client, chain.image, "bash", "-c", "echo ok").strip() == "ok"
    assert run(docker_client, chain.image, "python", "-c", "import tensorboard; print('tb')").strip() == "tb"
