"""The integration test image: the test row's whole chain, built once per session through BuildKit.

Real: the debootstrapped Debian base, Python, apt and pip installs (torch 2.13.0 + torch_npu 2.13.0,
transformers, every pip dependency) through an authenticating proxy on loopback with the host's
CA, BuildKit, the layer/tag logic. Stand-ins (tests/fakes, generated here): the CANN installers and
the MindSpeed / MindSpeed-LLM / Megatron-LM / apex repositories. Tests get it with the ``chain``
fixture (needs ``docker_client``: skipped without an engine, failed under CI=true).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from fakes.cann import make_cann_packages
from fakes.sources import make_source_repos
from netproxy import auth_proxy

from ascend_stack import budgets, render
from ascend_stack.baseimage import build_base_image
from ascend_stack.build import Builder, BuildOptions, LayerResult, NetworkOptions
from ascend_stack.driver import Driver, find_buildkit_client
from ascend_stack.inputs import InputDirs
from ascend_stack.matrix import Matrix, load_matrix
from ascend_stack.target import Target, resolve

REPO = Path(__file__).resolve().parents[1]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
LOCAL_WHEELS = Path("/opt/wheels")  # this machine's torch-2.13.0+cpu wheel (see docs/development.md)
PROXY_PASSWORD = "proxy-pass-4e1f"


@dataclass
class Chain:
    """The built test chain and everything needed to build it again."""

    matrix: Matrix
    target: Target
    opts: BuildOptions
    driver: Driver
    results: list[LayerResult]
    repos: dict[str, Path]
    root: Path

    @property
    def image(self) -> str:
        return next(r.content_tag for r in self.results if r.name == "runtime")

    def restore_tags(self) -> None:
        """Point the human tags back at this chain's images (a rebuild of a variant moves them)."""
        ids = {r.name: r.image_id for r in self.results}
        plan_layers = {layer.name: layer for layer in render.plan(self.target)[0].layers}
        for name, image_id in ids.items():
            assert image_id
            self.driver.tag(image_id, plan_layers[name].tag)
        self.driver.tag(ids["runtime"], render.final_tag(self.target))  # type: ignore[arg-type]

    def rebuild(self, target: Target | None = None, **changes: Any) -> tuple[list[LayerResult], Driver]:
        driver = Driver(self.driver.client, self.driver.docker)
        results = Builder(target or self.target, replace(self.opts, **changes), driver, log=lambda *_: None).run()
        return results, driver


@pytest.fixture(scope="session")
def chain(docker_client: Any, tmp_path_factory: pytest.TempPathFactory, megatron_core: Path) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("chain")
    build_base_image("debian-bookworm", "x86_64", docker_client=docker_client)
    matrix = load_matrix(REPO / "matrix.yaml")
    target = resolve(matrix, "test", arch="x86_64")
    make_cann_packages(root / "packages", target.cann, "x86_64", chips=("910b",))
    repos = make_source_repos(root / "upstream", megatron_core)
    dirs = InputDirs.under(
        root,
        extra_wheelhouses=(LOCAL_WHEELS,) if LOCAL_WHEELS.is_dir() else (),
        source_overrides=root / "upstream",
    )
    with auth_proxy("builder", PROXY_PASSWORD) as (proxy_url, proxy):
        opts = BuildOptions(
            dirs=dirs,
            network=NetworkOptions(ca_cert=HOST_CA if HOST_CA.is_file() else None, http_proxy=proxy_url),
            out_dir=root / "build" / "render",  # build/ also holds the hash cache, which a render must not replace
            # Every layer is measured against budgets.yaml; tests/test_build_integration.py holds them to it.
            budgets=budgets.load(REPO / budgets.FILE),
            enforce_budgets=False,
        )
        driver = Driver(find_buildkit_client(), docker_client)
        results = Builder(target, opts, driver).run()
        if any(r.status == "built" and r.name in ("base", "pta", "mindspeed") for r in results):
            # Layers that download were built (always so on a fresh CI machine): through the proxy.
            assert proxy.used > 0 and proxy.refused == 0, "the build's downloads did not use --http-proxy"
        yield Chain(matrix, target, opts, driver, results, repos, root)


def run(docker_client: Any, image: str, *command: str, entrypoint: str | None = None) -> str:
    kwargs = {"entrypoint": [entrypoint]} if entrypoint else {}
    return docker_client.containers.run(image, list(command), remove=True, **kwargs).decode()
