"""ascend_stack.registry against a real registry (tests/local_registry.py: TLS, basic auth), no Docker engine.

Images here are uploaded through the registry's HTTP API (small gzip'd tar layers and a config that
names its architecture), so manifest lists and pull costs are checked on exact, known blobs; every
result is read back with a second tool, skopeo. tests/test_registry_push.py does the same with
images the engine built and pushed.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from local_registry import LocalRegistry, local_registry, missing_tools, skopeo

from ascend_stack.errors import UserError
from ascend_stack.registry import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    Manifest,
    Registry,
    RegistryRef,
    chain_images,
    goarch,
    manifest_list,
    multi_arch_tag,
    parse_registry,
    pull_cost,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    if reason := missing_tools():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}: .ci/run must install them")
        pytest.skip(reason)
    with local_registry() as reg:
        yield reg


@pytest.fixture
def client(registry: LocalRegistry) -> Registry:
    return Registry(registry.host, (registry.user, registry.password))


def _layer(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _upload_blob(client: Registry, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    scope = f"repository:{repo}:pull,push"
    status, headers, _ = client.request("POST", f"/v2/{repo}/blobs/uploads/", scope=scope)
    assert status == 202, status
    loc = urlsplit(headers["Location"])
    query = f"{loc.query}&" if loc.query else ""
    status, _, body = client.request("PUT", f"{loc.path}?{query}digest={digest}", scope=scope, body=data,
                                     headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    assert status == 201, body
    return digest


def upload_image(client: Registry, ref: str, arch: str, files: list[tuple[str, bytes]]) -> Manifest:
    """A single-platform image as ``docker push`` would leave it: gzip'd tar layers, a config, a v2 manifest."""
    repo, _, tag = ref.rpartition(":")
    tars = [_layer(name, data) for name, data in files]
    layers = [gzip.compress(t, mtime=0) for t in tars]
    config = json.dumps({
        "architecture": goarch(arch), "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest() for t in tars]},
    }).encode()  # fmt: skip
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                   "digest": _upload_blob(client, repo, config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(blob),
                    "digest": _upload_blob(client, repo, blob)} for blob in layers],
    }  # fmt: skip
    raw = json.dumps(manifest).encode()
    digest = client.put_manifest(repo, tag, raw, DOCKER_MANIFEST)
    return Manifest(digest, DOCKER_MANIFEST, raw)


def test_parse_registry_takes_host_port_namespace_and_refuses_hub_names() -> None:
    assert parse_registry("registry.local:5000/team/ml") == RegistryRef("registry.local:5000", "team/ml")
    assert parse_registry("127.0.0.1:5000/") == RegistryRef("127.0.0.1:5000", "")
    assert (
        parse_registry("localhost/x").remote("ascend-llm-stack/base:t-x86_64")
        == "localhost/x/ascend-llm-stack/base:t-x86_64"
    )
    for bad in ("team", "https://registry.local:5000", "registry.local:5000/Team", "reg.local/a b", ""):
        with pytest.raises(UserError) as info:
            parse_registry(bad)
        assert "HOST[:PORT][/NAMESPACE]" in str(info.value) and "\n" not in str(info.value)


def test_chain_images_pushes_each_layer_base_first_then_the_final_tag() -> None:
    plan = SimpleNamespace(
        image="ascend-llm-stack:t-x86_64",
        layers=[SimpleNamespace(name=n, tag=f"ascend-llm-stack/{n}:t-x86_64") for n in ("base", "cann", "runtime")],
    )
    results = [SimpleNamespace(name=n, image_id=f"sha256:{n}", content_tag=f"ascend-llm-stack/{n}:content-{n}")
               for n in ("base", "cann", "runtime")]  # fmt: skip
    refs = [ref for _, ref in chain_images(plan, results)]
    assert refs == [
        "ascend-llm-stack/base:content-base", "ascend-llm-stack/base:t-x86_64",
        "ascend-llm-stack/cann:content-cann", "ascend-llm-stack/cann:t-x86_64",
        "ascend-llm-stack/runtime:content-runtime", "ascend-llm-stack/runtime:t-x86_64", "ascend-llm-stack:t-x86_64",
    ]  # fmt: skip
    assert [ref for _, ref in chain_images(plan, results[:1])] == refs[:2]  # --until base: no final tag


def test_multi_arch_tag_drops_the_arch_suffix_only() -> None:
    assert multi_arch_tag("ascend-llm-stack/base:debian-bookworm-py3.11-aarch64", "aarch64") == (
        "ascend-llm-stack/base:debian-bookworm-py3.11"
    )
    with pytest.raises(UserError, match="does not end in -x86_64"):
        multi_arch_tag("ascend-llm-stack/base:debian-bookworm-py3.11-aarch64", "x86_64")


def test_manifest_list_names_both_arches_and_reads_back_with_skopeo(registry: LocalRegistry, client: Registry) -> None:
    ref = RegistryRef(registry.host, "team")
    per_arch = {}
    for arch in ("aarch64", "x86_64"):
        local = f"ascend-llm-stack/base:t1-{arch}"
        per_arch[arch] = local
        upload_image(client, ref.repo(local) + f":t1-{arch}", arch, [("etc/arch", arch.encode())])
    done = manifest_list(client, ref, "ascend-llm-stack/base:t1", per_arch)
    assert done.remote == f"{registry.host}/team/ascend-llm-stack/base:t1"

    raw = skopeo(registry, "inspect", "--raw", f"docker://{done.remote}")
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == done.digest
    listed = json.loads(raw)
    assert listed["mediaType"] == DOCKER_LIST
    platforms = {m["platform"]["architecture"]: m for m in listed["manifests"]}
    assert set(platforms) == {"arm64", "amd64"} and {m["platform"]["os"] for m in listed["manifests"]} == {"linux"}
    for arch, goname in (("aarch64", "arm64"), ("x86_64", "amd64")):
        own = skopeo(registry, "inspect", "--raw", f"docker://{registry.host}/team/ascend-llm-stack/base:t1-{arch}")
        assert platforms[goname]["digest"] == "sha256:" + hashlib.sha256(own.encode()).hexdigest() == done.entries[arch]
        assert platforms[goname]["size"] == len(own.encode())
        # What a node of that arch resolves the list to: skopeo picks by platform, as the engine does.
        picked = json.loads(skopeo(registry, "inspect", "--override-arch", goname, "--override-os", "linux",
                                   f"docker://{done.remote}"))  # fmt: skip
        assert picked["Architecture"] == goname
        assert picked["Layers"] == [layer["digest"] for layer in json.loads(own)["layers"]]


def test_manifest_list_refuses_a_missing_or_mislabelled_arch(registry: LocalRegistry, client: Registry) -> None:
    ref = RegistryRef(registry.host, "team")
    upload_image(client, "team/ascend-llm-stack/base:t2-x86_64", "x86_64", [("a", b"x86")])
    per_arch = {"aarch64": "ascend-llm-stack/base:t2-aarch64", "x86_64": "ascend-llm-stack/base:t2-x86_64"}
    with pytest.raises(UserError) as info:
        manifest_list(client, ref, "ascend-llm-stack/base:t2", per_arch)
    assert f"{registry.host}/team/ascend-llm-stack/base:t2-aarch64 is not in the registry" in str(info.value)
    assert "invoke build --arch aarch64 --push" in str(info.value)
    upload_image(client, "team/ascend-llm-stack/base:t2-aarch64", "x86_64", [("a", b"x86 under an arm tag")])
    with pytest.raises(UserError, match="t2-aarch64 is a linux/amd64 image, not linux/arm64"):
        manifest_list(client, ref, "ascend-llm-stack/base:t2", per_arch)
    assert client.manifest("team/ascend-llm-stack/base", "t2") is None  # nothing half-written


def test_pull_cost_is_the_blobs_the_old_image_lacks(registry: LocalRegistry, client: Registry) -> None:
    shared = [("base", os.urandom(20_000)), ("cann", os.urandom(30_000))]
    old = upload_image(client, "team/img:old", "x86_64", [*shared, ("mindspeed", os.urandom(5_000))])
    new = upload_image(client, "team/img:new", "x86_64", [*shared, ("mindspeed", os.urandom(7_000))])
    cost = pull_cost(client, "team/img:new", "team/img:old")

    # The same figure from skopeo's copy of both manifests.
    old_raw, new_raw = (json.loads(skopeo(registry, "inspect", "--raw", f"docker://{registry.host}/team/img:{t}"))
                        for t in ("old", "new"))  # fmt: skip
    have = {b["digest"] for b in [old_raw["config"], *old_raw["layers"]]}
    wanted = [new_raw["config"], *new_raw["layers"]]
    assert cost.pull_bytes == sum(b["size"] for b in wanted if b["digest"] not in have)
    assert cost.image_bytes == sum(b["size"] for b in wanted)
    assert (cost.layers, cost.new_layers) == (3, 1)
    assert new.blobs().keys() - old.blobs().keys() == {new_raw["config"]["digest"], new_raw["layers"][2]["digest"]}
    assert pull_cost(client, "team/img:old", "team/img:old").pull_bytes == 0
    assert pull_cost(client, "team/img:new", None).pull_bytes == cost.image_bytes
    assert f"{cost.new_layers}/{cost.layers} layers new" in str(cost)

    # Through manifest lists, per architecture: a list is resolved to the node's arch first.
    upload_image(client, "team/img:old-aarch64", "aarch64", shared)
    upload_image(client, "team/img:new-aarch64", "aarch64", shared)
    ref = RegistryRef(registry.host, "team")
    manifest_list(client, ref, "img:old-list", {"aarch64": "img:old-aarch64", "x86_64": "img:old"})
    manifest_list(client, ref, "img:new-list", {"aarch64": "img:new-aarch64", "x86_64": "img:new"})
    assert pull_cost(client, "team/img:new-list", "team/img:old-list", arch="x86_64") == cost
    assert pull_cost(client, "team/img:new-list", "team/img:old-list", arch="aarch64").new_layers == 0
    with pytest.raises(UserError, match="is a manifest list: say which architecture"):
        pull_cost(client, "team/img:new-list", None)


def test_a_blob_redirect_to_another_host_does_not_carry_the_login() -> None:
    from urllib.request import Request

    from ascend_stack.registry import _Redirect

    req = Request("https://registry.local:5000/v2/r/blobs/sha256:1", headers={"Authorization": "Basic c2VjcmV0"})
    elsewhere = _Redirect().redirect_request(req, None, 307, "", {}, "https://s3.local/bucket/blob?sig=1")
    same = _Redirect().redirect_request(req, None, 307, "", {}, "https://registry.local:5000/v2/other")
    assert elsewhere is not None and not elsewhere.has_header("Authorization")
    assert same is not None and same.get_header("Authorization") == "Basic c2VjcmV0"


def test_login_and_trust_problems_are_one_line_each(
    registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases: list[tuple[Registry, str]] = [
        (Registry(registry.host, None), f"wants a login: run 'docker login {registry.host}'"),
        (Registry(registry.host, (registry.user, "wrong")), "refused the credentials"),
        (Registry(registry.host, (registry.user, registry.password), certs_d=tmp_path),
         f"TLS certificate is not trusted (unable to get local issuer certificate); put its CA in {tmp_path}"),
    ]  # fmt: skip
    for bad, expected in cases:
        with pytest.raises(UserError) as info:
            bad.check()
        assert expected in str(info.value) and "\n" not in str(info.value)
    # What `docker login` stored (DOCKER_CONFIG) and the engine's certs.d CA are what this tool uses.
    monkeypatch.setenv("DOCKER_CONFIG", str(registry.docker_config))
    Registry.for_host(registry.host).check()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert Registry.for_host(registry.host).credentials is None


def invoke(reg: LocalRegistry, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, env=reg.env(), capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_invoke_publish_names_the_arch_that_was_never_pushed(registry: LocalRegistry, client: Registry) -> None:
    upload_image(client, "team/ascend-llm-stack/base:debian-bookworm-py3.11-x86_64", "x86_64", [("a", b"x")])
    out = invoke(registry, "publish", "--registry", f"{registry.host}/team", "--cann", "test", "--until", "base")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (
        f"error: {registry.host}/team/ascend-llm-stack/base:debian-bookworm-py3.11-aarch64 is not in the registry: "
        f"build and push it first (invoke build --arch aarch64 --push {registry.host}/team, on an aarch64 host "
        "or under emulation)"
    )
    assert client.manifest("team/ascend-llm-stack/base", "debian-bookworm-py3.11") is None


def test_the_registry_and_every_copy_of_its_login_go_with_the_fixture() -> None:
    if reason := missing_tools():
        pytest.skip(reason)
    with local_registry() as reg:
        root, certs = reg.storage.parent, Path("/etc/docker/certs.d") / reg.host
        login = base64.b64encode(f"{reg.user}:{reg.password}".encode()).decode()
        assert login in reg.authfile.read_text()  # what docker login writes, under root
        assert (certs / "ca.crt").read_bytes() == reg.ca.read_bytes()
        Registry(reg.host, (reg.user, reg.password)).check()
    assert not root.exists() and not certs.exists()
    with pytest.raises(UserError, match="no registry answers"):
        Registry(reg.host, (reg.user, reg.password), ca_files=()).check()


def test_a_token_registry_is_answered_with_bearer_tokens() -> None:
    """Harbor and GitLab answer 401 with ``Bearer realm=...``: the login buys a token per scope."""
    if reason := missing_tools():
        pytest.skip(reason)
    with local_registry(token_auth=True) as reg:
        client = Registry(reg.host, (reg.user, reg.password))
        client.check()
        ref = RegistryRef(reg.host, "team")
        for arch in ("aarch64", "x86_64"):
            upload_image(client, f"team/img:t-{arch}", arch, [("f", arch.encode() * 3000)])
        done = manifest_list(client, ref, "img:t", {"aarch64": "img:t-aarch64", "x86_64": "img:t-x86_64"})
        assert json.loads(skopeo(reg, "inspect", "--raw", f"docker://{done.remote}"))["mediaType"] == DOCKER_LIST
        assert pull_cost(client, "team/img:t", None, arch="aarch64").layers == 1
        with pytest.raises(UserError, match="token service refused the login"):
            Registry(reg.host, (reg.user, "wrong")).check()
