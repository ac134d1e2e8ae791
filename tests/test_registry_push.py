"""``invoke build --push`` and ``invoke publish`` against a real registry (tests/local_registry.py), read by skopeo.

Real: the test chain (tests/chain.py) and, for the second architecture, an aarch64 base layer built
here under qemu-user emulation (the full aarch64 chain is the opt-in slow test's); the engine pushes
through its own TLS connection with the login ``docker login`` stored in a DOCKER_CONFIG that lives
only as long as the registry. Every result is checked from the registry's side with skopeo (TLS
verified against the test CA) and, for the manifest list, by the engine pulling it per platform.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from chain import Chain
from fakes.cann import make_cann_packages
from fakes.sources import add_commit, make_source_repos
from local_registry import LocalRegistry, local_registry, missing_tools, skopeo

from ascend_stack import render
from ascend_stack.baseimage import build_base_image
from ascend_stack.build import NetworkOptions
from ascend_stack.inputs import InputDirs
from ascend_stack.matrix import load_matrix
from ascend_stack.registry import DOCKER_LIST, Registry, goarch, pull_cost
from ascend_stack.target import resolve

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[1]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


@pytest.fixture(scope="module")
def registry(docker_client: Any) -> Iterator[LocalRegistry]:
    if reason := missing_tools():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}: .ci/run must install them")
        pytest.skip(reason)
    with local_registry(engine_login=True) as reg:
        yield reg


CHECKOUT: list[Path] = []  # set by the `checkout` fixture


@pytest.fixture(scope="module", autouse=True)
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of this checkout's files for the ``invoke`` processes: their default caches (``sources/``,
    ``wheelhouse/``) fill the copy, never the developer's own, where the stand-ins' branches would be
    force-fetched over a real mirror's."""
    dest = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    for rel in filter(None, listed.split("\0")):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    CHECKOUT[:] = [dest]
    return dest


def invoke(env: dict[str, str], *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """``invoke ARGS`` in its own process group: on timeout, SIGINT to the group stops the docker build under
    it too (and lets invoke remove its secrets folder), where killing invoke alone would orphan the build."""
    argv = [sys.executable, "-m", "invoke", *args]
    [root] = CHECKOUT
    env = {
        **env,
        "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root / "entrypoints"), env.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def build_args(arch: str, dirs: InputDirs, network: NetworkOptions) -> list[str]:
    """``invoke build`` options naming the same inputs as a Builder's, so its content tags are the same."""
    args = ["--cann", "test", "--arch", arch, "--packages", str(dirs.packages), "--lock-dir", str(dirs.locks)]
    for wheels in dirs.wheelhouses:
        if wheels.is_dir():  # --wheelhouse names a folder that is there (the cache may not be yet)
            args += ["--wheelhouse", str(wheels)]
    if dirs.source_overrides:
        args += ["--sources", str(dirs.source_overrides)]
    return [*args, *(["--ca-cert", str(network.ca_cert)] if network.ca_cert else [])]


def built(stdout: str) -> dict[str, tuple[str, str]]:
    """``invoke build``'s summary lines: layer -> (status, content tag)."""
    rows = re.findall(r"^  (\w+)\s+(built|up to date)\s+(\S+)", stdout, re.M)
    return {name: (status, tag) for name, status, tag in rows}


def digest_of(raw: str) -> str:
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def assert_no_remote_tags_left(docker_client: Any, reg: LocalRegistry) -> None:
    tags = [t for image in docker_client.images.list() for t in image.tags]
    assert not [t for t in tags if t.startswith(reg.host)], "push left the registry's names on the engine"


def test_build_push_puts_every_layer_tag_and_the_final_image_in_the_registry(
    chain: Chain, registry: LocalRegistry, docker_client: Any
) -> None:
    target = f"{registry.host}/team"
    out = invoke(registry.env(), "build", *build_args("x86_64", chain.opts.dirs, chain.opts.network), "--push", target)
    assert out.returncode == 0, out.stderr[-3000:]
    assert ": 0 layer(s) built, 0 docker build call(s)" in out.stdout  # the chain's images, pushed as built
    assert registry.password not in out.stdout + out.stderr
    home_config = Path.home() / ".docker" / "config.json"  # docker login wrote only to the test's DOCKER_CONFIG
    assert not home_config.is_file() or registry.host not in home_config.read_text()
    human = {layer.name: layer.tag for layer in render.plan(chain.target)[0].layers}
    previous: list[str] = []
    for r in chain.results:
        local = docker_client.images.get(r.image_id)
        for ref in (r.content_tag, human[r.name]):
            remote = f"{target}/{ref}"
            raw = skopeo(registry, "inspect", "--raw", f"docker://{remote}")
            assert f"pushed {remote} {digest_of(raw)}\n" in out.stdout
            config = json.loads(skopeo(registry, "inspect", "--config", "--raw", f"docker://{remote}"))
            assert config["rootfs"]["diff_ids"] == local.attrs["RootFS"]["Layers"]  # the very image, layer by layer
            assert config["architecture"] == "amd64"
        # A layer's image starts with its parent's layers: a node holding base pulls only what cann adds.
        layers = [b["digest"] for b in json.loads(raw)["layers"]]
        assert layers[: len(previous)] == previous and len(layers) > len(previous)
        previous = layers
    final = f"{target}/{render.final_tag(chain.target)}"
    runtime = digest_of(skopeo(registry, "inspect", "--raw", f"docker://{target}/{chain.results[-1].content_tag}"))
    assert f"pushed {final} {runtime}\n" in out.stdout  # the final tag is the runtime layer's image
    tags = json.loads(skopeo(registry, "list-tags", f"docker://{target}/ascend-llm-stack/base"))["Tags"]
    assert set(tags) >= {chain.results[0].content_tag.rpartition(":")[2], human["base"].rpartition(":")[2]}
    assert_no_remote_tags_left(docker_client, registry)


def test_push_without_a_login_stops_before_anything_is_built(
    chain: Chain, registry: LocalRegistry, tmp_path: Path
) -> None:
    env = {**registry.env(), "DOCKER_CONFIG": str(tmp_path)}  # no docker login here
    out = invoke(env, "build", *build_args("x86_64", chain.opts.dirs, chain.opts.network), "--push",
                 f"{registry.host}/nologin", "--no-cache")  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"error: registry {registry.host} wants a login: run 'docker login {registry.host}' "
        "(this tool uses the login Docker stores)"
    )
    assert "docker build" not in out.stdout + out.stderr and "layer(s) built" not in out.stdout


@dataclass
class Arm64Inputs:
    dirs: InputDirs
    network: NetworkOptions


@pytest.fixture(scope="module")
def arm64_inputs(docker_client: Any, tmp_path_factory: pytest.TempPathFactory, megatron_core: Path) -> Arm64Inputs:
    """What an aarch64 build of the test row needs: the aarch64 OS image (debootstrap under qemu) and stand-ins."""
    if not BINFMT.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no arm64 emulation: .ci/run must run scripts/docker-engine.sh --arm64")
        pytest.skip("no arm64 emulation: run 'bash scripts/docker-engine.sh --arm64' first")
    root = tmp_path_factory.mktemp("arm64")
    build_base_image("debian-bookworm", "aarch64", docker_client=docker_client)
    target = resolve(load_matrix(REPO / "matrix.yaml"), "test", arch="aarch64")
    # invoke build verifies every layer's inputs before it builds any (even with --until base).
    make_cann_packages(root / "packages", target.cann, "aarch64")
    make_source_repos(root / "upstream", megatron_core)
    dirs = InputDirs.under(root, source_overrides=root / "upstream")
    return Arm64Inputs(dirs, NetworkOptions(ca_cert=HOST_CA if HOST_CA.is_file() else None))


def small_base_matrix(path: Path) -> Path:
    """matrix.yaml with CANN's Python deps cut to one: the base layer's pip step then takes seconds under
    qemu instead of ~10 minutes (pip byte-compiles sympy and scipy emulated). The full aarch64 base
    is built by the slow tests."""
    raw = yaml.safe_load((REPO / "matrix.yaml").read_text())
    raw["cann_packages"]["python_deps"] = ["pyyaml"]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_publish_writes_a_two_arch_manifest_list_that_the_engine_resolves_per_platform(
    chain: Chain, arm64_inputs: Arm64Inputs, registry: LocalRegistry, docker_client: Any, tmp_path: Path
) -> None:
    target = f"{registry.host}/team"
    matrix = str(small_base_matrix(tmp_path / "matrix.yaml"))
    inputs = {"aarch64": (arm64_inputs.dirs, arm64_inputs.network), "x86_64": (chain.opts.dirs, chain.opts.network)}
    local_ids = {}
    try:
        for arch, (dirs, network) in inputs.items():  # each arch built and pushed by itself, as on two hosts
            out = invoke(registry.env(), "build", *build_args(arch, dirs, network), "--matrix", matrix,
                         "--until", "base", "--push", target)  # fmt: skip
            assert out.returncode == 0, out.stderr[-3000:]
            local_ids[goarch(arch)] = docker_client.images.get(built(out.stdout)["base"][1]).id
    finally:
        chain.restore_tags()  # the x86_64 build moved the base layer's human tag
    out = invoke(registry.env(), "publish", "--registry", target, "--cann", "test", "--until", "base",
                 "--matrix", matrix)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    multi = f"{target}/ascend-llm-stack/base:debian-bookworm-py3.11"
    line = out.stdout.strip()
    assert line.startswith(f"{multi}: manifest list sha256:") and len(out.stdout.splitlines()) == 1

    # Read back by skopeo: a Docker manifest list of exactly the two per-arch images pushed.
    raw = skopeo(registry, "inspect", "--raw", f"docker://{multi}")
    listed = json.loads(raw)
    assert listed["mediaType"] == DOCKER_LIST and line.split()[3] == digest_of(raw)
    by_arch = {m["platform"]["architecture"]: m for m in listed["manifests"]}
    assert sorted(by_arch) == ["amd64", "arm64"]
    for arch in ("aarch64", "x86_64"):
        own = skopeo(registry, "inspect", "--raw", f"docker://{multi}-{arch}")
        entry = by_arch[goarch(arch)]
        assert (entry["digest"], entry["size"], entry["platform"]["os"]) == (digest_of(own), len(own.encode()), "linux")
        config = json.loads(skopeo(registry, "inspect", "--config", "--raw", f"docker://{multi}-{arch}"))
        assert config["architecture"] == goarch(arch)
        assert (
            config["rootfs"]["diff_ids"] == docker_client.images.get(local_ids[goarch(arch)]).attrs["RootFS"]["Layers"]
        )

    # And by the engine, as a cluster node pulls it: each platform gets its own arch's image.
    auth = {"username": registry.user, "password": registry.password}
    repo, _, tag = multi.rpartition(":")
    try:
        for platform, image_id in local_ids.items():
            assert (
                docker_client.images.pull(repo, tag=tag, platform=f"linux/{platform}", auth_config=auth).id == image_id
            )
    finally:
        docker_client.images.remove(multi, noprune=True)
    assert_no_remote_tags_left(docker_client, registry)


def test_pull_after_a_mindspeed_llm_ref_change_is_only_the_changed_layers(
    chain: Chain, registry: LocalRegistry, tmp_path: Path, docker_client: Any
) -> None:
    target = f"{registry.host}/team"
    args = build_args("x86_64", chain.opts.dirs, chain.opts.network)
    before = invoke(registry.env(), "build", *args, "--push", target)
    assert before.returncode == 0, before.stderr[-3000:]
    commit = add_commit(chain.repos["mindspeed-llm"], "2.1.0-pull", "HOTFIX.md", f"fix {uuid.uuid4()}\n")
    raw = yaml.safe_load((REPO / "matrix.yaml").read_text())
    next(r for r in raw["rows"] if r.get("id") == "test")["mindspeed_llm"]["ref"] = commit
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        after = invoke(registry.env(), "build", *args, "--matrix", str(matrix), "--push", target)
    finally:
        chain.restore_tags()
    assert after.returncode == 0, after.stderr[-3000:]
    old, new = built(before.stdout), built(after.stdout)
    assert [s for s, _ in new.values()] == ["up to date"] * 3 + ["built"] * 2

    client = Registry(registry.host, (registry.user, registry.password))
    cost = pull_cost(client, f"team/{new['runtime'][1]}", f"team/{old['runtime'][1]}")
    print(f"\npull after a MindSpeed-LLM ref change: {cost}")
    # The same figure from skopeo's reading of both manifests; nothing of pta (shared) is pulled.
    manifests = {
        "old": json.loads(skopeo(registry, "inspect", "--raw", f"docker://{target}/{old['runtime'][1]}")),
        "new": json.loads(skopeo(registry, "inspect", "--raw", f"docker://{target}/{new['runtime'][1]}")),
        "pta": json.loads(skopeo(registry, "inspect", "--raw", f"docker://{target}/{new['pta'][1]}")),
    }
    have = {b["digest"] for b in [manifests["old"]["config"], *manifests["old"]["layers"]]}
    wanted = [manifests["new"]["config"], *manifests["new"]["layers"]]
    missing = [b for b in wanted if b["digest"] not in have]
    assert cost.pull_bytes == sum(b["size"] for b in missing) > 0
    assert cost.image_bytes == sum(b["size"] for b in wanted)
    pta_layers = {b["digest"] for b in manifests["pta"]["layers"]}
    assert pta_layers <= have and not pta_layers & {b["digest"] for b in missing}
    assert 0 < cost.new_layers <= len(manifests["new"]["layers"]) - len(pta_layers)

    # The build ran with the registry login in its environment: none of it is in what was pushed.
    secrets = (registry.password.encode(), base64.b64encode(f"{registry.user}:{registry.password}".encode()))
    for blob in missing:
        data = client.blob(f"team/{new['runtime'][1].rpartition(':')[0]}", blob["digest"])
        data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        assert not any(s in data for s in secrets), f"the registry login is in blob {blob['digest']}"
    assert_no_remote_tags_left(docker_client, registry)


@pytest.mark.slow
def test_publish_the_whole_chain_for_both_arches(
    chain: Chain, arm64_inputs: Arm64Inputs, registry: LocalRegistry, docker_client: Any
) -> None:
    """Opt-in (``--run-slow``): the whole aarch64 chain under emulation, then a list for every tag."""
    target = f"{registry.host}/team"
    inputs = {"aarch64": (arm64_inputs.dirs, arm64_inputs.network), "x86_64": (chain.opts.dirs, chain.opts.network)}
    for arch, (dirs, network) in inputs.items():
        out = invoke(registry.env(), "build", *build_args(arch, dirs, network), "--push", target, timeout=3 * 3600)
        assert out.returncode == 0, out.stderr[-3000:]
    out = invoke(registry.env(), "publish", "--registry", target, "--cann", "test")
    assert out.returncode == 0, out.stderr[-3000:]
    final = f"{target}/{render.final_tag(chain.target).removesuffix('-x86_64')}"
    assert len(out.stdout.splitlines()) == 6 and f"{final}: manifest list sha256:" in out.stdout
    listed = json.loads(skopeo(registry, "inspect", "--raw", f"docker://{final}"))
    assert listed["mediaType"] == DOCKER_LIST
    assert sorted(e["platform"]["architecture"] for e in listed["manifests"]) == ["amd64", "arm64"]
    for arch in ("aarch64", "x86_64"):
        own = skopeo(registry, "inspect", "--raw", f"docker://{final}-{arch}")
        assert next(e for e in listed["manifests"] if e["platform"]["architecture"] == goarch(arch))["digest"] == (
            digest_of(own)
        )
