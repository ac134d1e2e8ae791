"""The CANN 8.5+ layout built for real: the `test-85` row's base and cann layers, then `invoke verify` on them.

Stand-in 8.5.0 installers (tests/fakes/cann.py: toolkit + 910b ops package into cann-8.5.0, NNAL) go
through the same template and environment capture as every release; the image's ENV must be what
sourcing /usr/local/Ascend/cann/set_env.sh gives, and verify's cann checks read the new paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakes.cann import make_cann_packages

from ascend_stack.baseimage import build_base_image
from ascend_stack.build import Builder, BuildOptions, LayerResult
from ascend_stack.driver import Driver, find_buildkit_client
from ascend_stack.inputs import InputDirs
from ascend_stack.matrix import load_matrix
from ascend_stack.target import resolve
from ascend_stack.verify import run as verify

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def cann85(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> list[LayerResult]:
    root = tmp_path_factory.mktemp("cann85")
    build_base_image("debian-bookworm", "x86_64", docker_client=docker_client)
    target = resolve(load_matrix(REPO / "matrix.yaml"), "test-85", arch="x86_64")
    make_cann_packages(root / "packages", target.cann, "x86_64", chips=("910b",))
    opts = BuildOptions(dirs=InputDirs.under(root), until="cann", out_dir=root / "build" / "render")
    return Builder(target, opts, Driver(find_buildkit_client(), docker_client), log=lambda *_: None).run()


def test_the_85_layout_installs_into_cann_version(cann85: list[LayerResult], docker_client: Any) -> None:
    image = cann85[-1].content_tag
    out = docker_client.containers.run(
        image, ["-c", "readlink -f /usr/local/Ascend/cann; echo $ASCEND_TOOLKIT_HOME; echo $ASCEND_OPP_PATH; "
                      "ls /usr/local/Ascend/cann-8.5.0/opp/built-in/op_impl/ai_core/tbe/kernel"],
        entrypoint="bash", remove=True,
    ).decode().split()  # fmt: skip
    assert out[:3] == [
        "/usr/local/Ascend/cann-8.5.0",
        "/usr/local/Ascend/cann-8.5.0",
        "/usr/local/Ascend/cann-8.5.0/opp",
    ]
    assert "ascend910b" in out[3:] and "ascend910_93" not in out[3:]


def test_verify_passes_on_the_85_cann_layer(cann85: list[LayerResult], tmp_path: Path) -> None:
    verdict = verify(cann85[-1].content_tag, tier="1", log_dir=tmp_path)
    assert verdict.ok, verdict.summary()
    names = {r.name for r in verdict.results if r.outcome == "passed"}
    assert {"toolkit_install_info_shows_the_rows_cann", "plain_run_has_exactly_the_set_env_variables",
            "kernels_for_the_chip_are_installed", "one_chip_per_tree"} <= names  # fmt: skip
