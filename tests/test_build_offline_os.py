"""The test row's OS packages, collected for real and built from with the build network off.

Real: `invoke fetch`'s collection (apt in a container of the debootstrapped Debian base, from
Debian's mirror, through the host's CA), the folder's signed indexes and .debs, and a BuildKit
build of the **base layer** with ``--network none`` for every RUN step and ``--offline``. The
base layer's pip step needs its locked wheels offline too: they are fetched here for the target
as ``invoke fetch --wheels`` fetches them. Only the base layer
is built, from scratch (``--no-cache``, so no step of it can come from an earlier online build).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from ascend_stack import ospackages, pylock, render
from ascend_stack.baseimage import build_base_image
from ascend_stack.build import Builder, BuildOptions, LayerResult, NetworkOptions
from ascend_stack.download import ChecksumMismatch
from ascend_stack.driver import BuildFailed, BuildRequest, Driver, find_buildkit_client
from ascend_stack.inputs import InputDirs, ResolvedInputs, fetch
from ascend_stack.matrix import load_matrix
from ascend_stack.target import Target, resolve

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[1]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
OS_IMAGE = "ascend-llm-stack/os:debian-bookworm-x86_64"


def base_wheels(cache: Path, t: Target) -> Path:
    """The locked files of the base layer's pip step for the target, fetched once into ``cache``
    (what ``invoke fetch --wheels`` does for every section)."""
    lock = pylock.PyLock.load(pylock.lock_path(t))
    assert lock is not None, "the test row's lock is committed"
    base_only = replace(lock, sections={"base": lock.sections["base"]})
    pylock.download_wheels(t, base_only, cache)
    return cache


@dataclass
class Offline:
    target: Target
    dirs: InputDirs
    folder: Path
    manifest: ospackages.Manifest
    opts: BuildOptions
    driver: Driver
    result: LayerResult
    fetched: ResolvedInputs
    seconds: dict[str, float]


@pytest.fixture(scope="module")
def offline(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Offline]:
    root = tmp_path_factory.mktemp("offline-os")
    build_base_image("debian-bookworm", "x86_64", docker_client=docker_client)
    t = resolve(load_matrix(REPO / "matrix.yaml"), "test", arch="x86_64")
    wheels = base_wheels(REPO / "build" / "test-cache" / "base-wheels-cp311-x86_64", t)
    dirs = InputDirs.under(root, extra_wheelhouses=(wheels,))
    plan, _ = render.plan(t)
    base_plan = replace(plan, layers=[layer for layer in plan.layers if layer.name == "base"])
    seconds = {}
    started = time.monotonic()
    fetched = fetch(base_plan, dirs, ca_cert=HOST_CA if HOST_CA.is_file() else None, progress=False)
    seconds["collect"] = time.monotonic() - started
    folder = dirs.os_packages("debian-bookworm-x86_64")
    manifest = ospackages.Manifest.load(folder)
    assert manifest is not None
    opts = BuildOptions(
        dirs=dirs, network=NetworkOptions(offline=True), until="base", out_dir=root / "build", no_cache=True,
        docker_network="none",
    )  # fmt: skip
    driver = Driver(find_buildkit_client(), docker_client)
    human = render.plan(t)[0].layer("base").tag
    before = driver.image_id(human)
    started = time.monotonic()
    try:
        [result] = Builder(t, opts, driver, log=lambda *_: None).run()
    finally:  # the chain's (or a user's) base keeps its human tag: this build is a proof, not a release
        if before:
            driver.tag(before, human)
        else:
            driver.untag(human)
    seconds["build"] = time.monotonic() - started
    print(f"\nOS packages: {len(manifest.packages)} .debs, {manifest.count()[1] / 1e6:.1f} MB; collected in "
          f"{seconds['collect']:.0f} s, base layer built offline in {seconds['build']:.0f} s")  # fmt: skip
    yield Offline(t, dirs, folder, manifest, opts, driver, result, fetched, seconds)
    if result.image_id:
        docker_client.images.remove(result.content_tag, noprune=False)


def dpkg(docker_client: Any, image: str) -> set[str]:
    out = docker_client.containers.run(
        image, ["-W", "-f", "${Package} ${Version} ${Architecture}\\n"], entrypoint="dpkg-query", remove=True
    )
    return set(out.decode().splitlines())


def test_collection_gathers_what_apt_would_fetch_in_the_base_image(offline: Offline, docker_client: Any) -> None:
    m = offline.manifest
    [step] = render.plan(offline.target)[0].layer("base").inputs[0].steps
    assert list(m.steps) == [ospackages.step_key(step)] and m.base_image == OS_IMAGE
    assert any(e.startswith("collected ") for e in offline.fetched.events)
    names = {e["package"] for e in m.packages.values()}
    assert {"gcc-12", "libc6-dev", "python3.11-minimal", "cmake-data"} <= names  # the dependency closure
    # what the base image already has at that version is not fetched again; every asked package is one or the other
    installed = dpkg(docker_client, OS_IMAGE)
    assert not {f"{e['package']} {e['version']} {e['architecture']}" for e in m.packages.values()} & installed
    assert set(step) <= names | {line.split()[0] for line in installed}
    for rel, entry in m.packages.items():  # each .deb at its pool path, as Debian's index lists it
        assert rel.startswith(("deb.debian.org_debian/pool/", "deb.debian.org_debian-security/pool/")), rel
        assert (offline.folder / rel).stat().st_size == entry["size"]
    assert "deb.debian.org_debian/dists/bookworm/InRelease" in m.index
    assert "deb.debian.org_debian/dists/bookworm/main/binary-amd64/Packages.xz" in m.index


def test_a_second_collection_downloads_nothing(offline: Offline, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the folder fits: no container, no download")

    monkeypatch.setattr(ospackages, "collect", refuse)
    inodes = {rel: (offline.folder / rel).stat().st_ino for rel in offline.manifest.files()}
    plan, _ = render.plan(offline.target)
    base_plan = replace(plan, layers=[layer for layer in plan.layers if layer.name == "base"])
    again = fetch(base_plan, offline.dirs, progress=False, out=open(os.devnull, "w"))  # noqa: SIM115
    assert any(e.startswith("verified  ") and "OS packages" in e for e in again.events)
    assert {rel: (offline.folder / rel).stat().st_ino for rel in offline.manifest.files()} == inodes


def test_the_build_network_was_off(offline: Offline, tmp_path: Path) -> None:
    """The proof is not vacuous: with these options, a RUN step that reaches for a mirror fails."""
    [req] = offline.driver.builds
    assert req.network == "none" and req.no_cache
    (tmp_path / "Dockerfile").write_text(f"FROM {OS_IMAGE}\nRUN apt-get update && getent hosts deb.debian.org\n")
    probe = BuildRequest(context=tmp_path, tags=[], platform="linux/amd64", network="none", no_cache=True)
    with pytest.raises(BuildFailed):
        Driver(offline.driver.client, offline.driver.docker).build(probe, "probe")


def test_the_base_layers_packages_came_from_the_folder(offline: Offline, docker_client: Any) -> None:
    assert offline.result.status == "built"
    dockerfile = (offline.opts.out_dir / "base" / "Dockerfile").read_text()  # type: ignore[operator]
    assert "--mount=type=bind,source=os-packages,target=/mnt/os-packages" in dockerfile
    assert "APT_MIRROR" not in dockerfile
    added = dpkg(docker_client, offline.result.content_tag) - dpkg(docker_client, OS_IMAGE)
    folder = {f"{e['package']} {e['version']} {e['architecture']}" for e in offline.manifest.packages.values()}
    assert added == folder  # every package the layer added or upgraded is a .deb of the folder, at its version
    assert len(added) > 50


def test_the_folder_is_in_no_layer(offline: Offline, docker_client: Any) -> None:
    out = docker_client.containers.run(
        offline.result.content_tag,
        ["-c", r"ls -A /mnt/os-packages; find / -xdev \( -name '*.deb' -o -name '*InRelease' \) -print; "
               "ls -A /var/lib/apt/lists"],
        entrypoint="bash", remove=True,
    )  # fmt: skip
    assert out.decode().split() == []
    # the only step that names the folder is the apt step that read it through its mount
    steps = [h["CreatedBy"] for h in docker_client.api.history(offline.result.content_tag)]
    uses = [s for s in steps if "os-packages" in s]
    assert len(uses) == 1 and "Dir::Etc::SourceParts=/mnt/os-packages/sources.list.d" in uses[0]
    assert not any(s.startswith(("COPY", "ADD")) for s in steps)


def test_a_tampered_deb_stops_the_offline_build_before_docker(offline: Offline) -> None:
    rel, entry = sorted(offline.manifest.packages.items())[0]
    path = offline.folder / rel
    original = path.read_bytes()
    tmp = path.with_name(path.name + ".tampered")
    tmp.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    os.replace(tmp, path)  # a new file: the hard links in earlier build contexts keep the original
    try:
        driver = Driver(offline.driver.client, offline.driver.docker)
        with pytest.raises(ChecksumMismatch) as err:
            Builder(offline.target, offline.opts, driver, log=lambda *_: None).run()
        assert driver.builds == []
        message = str(err.value)
        assert rel in message and entry["sha256"] in message and ospackages._sha256(path) in message
    finally:
        path.write_bytes(original)
