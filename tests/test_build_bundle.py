"""The air-gapped build, proven: the test row's whole chain built from one bundle with the network off.

Real: `invoke bundle` on the "connected" side (CANN stand-ins and stand-in sources aside, everything
real: the OS packages collected by apt in a container of the debootstrapped Debian base from Debian's
mirror, the locked wheels from PyPI, word2number's sdist built into a wheel in the base layer), the
bundle file, and `invoke build --bundle` on the "far" side: the manifest checked, the base image
`docker load`ed (its tag is removed first), every layer built with ``--no-cache`` and ``--network none``
for every RUN step and ``--offline``, then `invoke verify`. Also the OS package folder's own proofs:
what apt would fetch is what was collected, nothing of it stays in a layer, a tampered .deb is refused
before Docker, a second collection downloads nothing.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from chain import HOST_CA, LOCAL_WHEELS, Chain

from ascend_stack import bundle as bundles
from ascend_stack import commands, ospackages, render
from ascend_stack.build import Builder, BuildOptions, LayerResult
from ascend_stack.download import ChecksumMismatch
from ascend_stack.driver import BuildFailed, BuildRequest, Driver
from ascend_stack.inputs import InputDirs, fetch
from ascend_stack.target import Target

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[1]
OS_IMAGE = "ascend-llm-stack/os:debian-bookworm-x86_64"
CHOICES = {"cann": "test", "torch": None, "arch": "x86_64", "os": None, "chip": None}


@dataclass
class Offline:
    target: Target
    dirs: InputDirs  # the connected side's
    folder: Path  # the OS package folder as the far side unpacked it
    manifest: ospackages.Manifest
    opts: BuildOptions
    driver: Driver
    results: list[LayerResult]
    bundle: Path
    said: str  # what invoke bundle printed
    seconds: dict[str, float]

    @property
    def result(self) -> LayerResult:
        return self.results[0]


@pytest.fixture(scope="module")
def offline(chain: Chain, docker_client: Any, tmp_path_factory: pytest.TempPathFactory,
            monkeypatch_module: pytest.MonkeyPatch) -> Iterator[Offline]:  # fmt: skip
    root = tmp_path_factory.mktemp("bundle")
    # The connected side: its own folders (the chain's CANN stand-ins and upstream stand-ins, read only).
    (root / "packages").mkdir()
    for run in chain.opts.dirs.packages.glob("*.run"):
        os.link(run, root / "packages" / run.name)
    dirs = InputDirs.under(
        root, source_overrides=chain.opts.dirs.source_overrides,
        extra_wheelhouses=(*((LOCAL_WHEELS,) if LOCAL_WHEELS.is_dir() else ()), chain.opts.dirs.wheelhouse),
    )  # fmt: skip
    seconds: dict[str, float] = {}
    said = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(said):
        path = commands.bundle(CHOICES, dirs, root / "out" / "test.tar", ca_cert=HOST_CA if HOST_CA.is_file() else None)
    seconds["bundle"] = time.monotonic() - started
    # The far side: no OS image yet (the bundle brings it), every layer from scratch, no network.
    drivers: list[Driver] = []
    real_driver = commands._driver

    def keep(dry_run: bool, verbose: bool) -> Driver:
        drivers.append(real_driver(dry_run, verbose))
        return drivers[-1]

    monkeypatch_module.setattr(commands, "_driver", keep)
    image_id = docker_client.images.get(OS_IMAGE).id
    docker_client.images.remove(OS_IMAGE, noprune=True)
    opts = BuildOptions(no_cache=True, out_dir=root / "far" / "render", enforce_budgets=False)
    started = time.monotonic()
    try:
        results = commands.build({k: None for k in CHOICES}, opts, bundle=path)
    finally:
        if not any(t == OS_IMAGE for i in docker_client.images.list() for t in i.tags):
            docker_client.images.get(image_id).tag(*OS_IMAGE.split(":"))
    seconds["build"] = time.monotonic() - started
    unpacked = bundles.unpack(path, progress=False)
    folder = unpacked.packages / "os" / "debian-bookworm-x86_64"
    manifest = ospackages.Manifest.load(folder)
    assert manifest is not None
    print(f"\nbundle {path.stat().st_size / 1e6:.1f} MB written in {seconds['bundle']:.0f} s; the chain built "
          f"from it cold, network off, in {seconds['build']:.0f} s")  # fmt: skip
    try:
        yield Offline(chain.target, dirs, folder, manifest, opts, drivers[-1], results, path, said.getvalue(), seconds)
    finally:
        chain.restore_tags()  # the chain's images keep their human tags: this build is a proof, not a release


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_the_whole_chain_built_from_the_bundle_with_the_network_off(offline: Offline, docker_client: Any) -> None:
    assert [(r.name, r.status) for r in offline.results] == [
        (name, "built") for name in ("base", "cann", "pta", "mindspeed", "runtime")
    ]
    assert offline.driver.builds and all(req.network == "none" and req.no_cache for req in offline.driver.builds)
    assert docker_client.images.get(OS_IMAGE)  # docker load gave the build its FROM image back
    assert f"invoke build --bundle {offline.bundle.name}" in offline.said


def test_verify_passes_on_the_image_built_from_the_bundle(offline: Offline) -> None:
    image = offline.results[-1].content_tag
    assert commands.verify(image, {k: None for k in CHOICES}, tier="1") == 0


def test_the_sdist_came_as_the_wheel_built_once_for_the_target(offline: Offline, docker_client: Any) -> None:
    names = {f["path"] for f in bundles.read_manifest(offline.bundle)["files"]}
    assert "wheelhouse/word2number-1.1-py3-none-any.whl" in names and "wheelhouse/built-wheels.json" in names
    assert not any(n.startswith("wheelhouse/word2number-1.1.") and not n.endswith(".whl") for n in names)
    lock = (offline.opts.out_dir / "mindspeed" / "requirements.lock").read_text()  # type: ignore[operator]
    assert lock.split("word2number==1.1")[1].split("#")[0].count("--hash=sha256:") == 2  # the sdist's and the wheel's
    out = docker_client.containers.run(offline.results[-1].content_tag, ["-c", "import word2number; print('ok')"],
                                       entrypoint="python", remove=True)  # fmt: skip
    assert out.decode().strip() == "ok"


def dpkg(docker_client: Any, image: str) -> set[str]:
    out = docker_client.containers.run(
        image, ["-W", "-f", "${Package} ${Version} ${Architecture}\\n"], entrypoint="dpkg-query", remove=True
    )
    return set(out.decode().splitlines())


def test_collection_gathers_what_apt_would_fetch_in_the_base_image(offline: Offline, docker_client: Any) -> None:
    m = offline.manifest
    [step] = next(i for i in render.plan(offline.target)[0].layer("base").inputs if i.kind == "os").steps
    assert ospackages.step_key(step) in m.steps and m.base_image == OS_IMAGE
    assert "collected " in offline.said
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
    collected = offline.dirs.os_packages("debian-bookworm-x86_64")
    inodes = {rel: (collected / rel).stat().st_ino for rel in offline.manifest.files()}
    plan, _ = render.plan(offline.target)
    base_plan = replace(plan, layers=[layer for layer in plan.layers if layer.name == "base"])
    again = fetch(base_plan, offline.dirs, progress=False, out=open(os.devnull, "w"))  # noqa: SIM115
    assert any(e.startswith("verified  ") and "OS packages" in e for e in again.events)
    assert {rel: (collected / rel).stat().st_ino for rel in offline.manifest.files()} == inodes


def test_the_build_network_was_off(offline: Offline, tmp_path: Path) -> None:
    """The proof is not vacuous: with these options, a RUN step that reaches for a mirror fails."""
    assert all(req.network == "none" and req.no_cache for req in offline.driver.builds)
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
    [step] = next(i for i in render.plan(offline.target)[0].layer("base").inputs if i.kind == "os").steps
    m = offline.manifest
    folder = {
        f"{e['package']} {e['version']} {e['architecture']}"
        for e in map(m.packages.get, m.steps[ospackages.step_key(step)])
    }
    assert added == folder  # every package the layer added or upgraded is a .deb of its step, at its version
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
        with pytest.raises(ChecksumMismatch) as err:  # offline.opts: the build from the bundle's folders
            Builder(offline.target, offline.opts, driver, log=lambda *_: None).run()
        assert driver.builds == []
        message = str(err.value)
        assert rel in message and entry["sha256"] in message and ospackages._sha256(path) in message
    finally:
        path.write_bytes(original)
