"""published.yaml is Huawei's data: it equals what the installed ascend-deployer says, and fetches obey it."""

from __future__ import annotations

from pathlib import Path

import yaml

from ascend_stack import published
from ascend_stack.matrix import Matrix

REPO = Path(__file__).resolve().parents[1]


def test_the_committed_file_is_the_installed_ascend_deployers_data(tmp_path: Path) -> None:
    """Regenerate from the installed package (a dev dependency), as `invoke published` writes it: equal, byte
    for byte."""
    raw = yaml.safe_load((REPO / "matrix.yaml").read_text())
    written, _, _ = published.write(Matrix.model_validate(raw), tmp_path / "published.yaml")
    assert written.read_text() == (REPO / "published.yaml").read_text(), (
        "published.yaml is stale: run `invoke published`"
    )
    committed = yaml.safe_load((REPO / "published.yaml").read_text())
    assert committed["source"] == "ascend-deployer 26.0.0"


def test_every_ops_and_toolkit_package_of_the_new_rows_has_a_published_sha256() -> None:
    pub = published.load()
    for cann in ("8.5.0", "9.0.0"):
        for arch in ("aarch64", "x86_64"):
            for kind in ("toolkit", "910b-ops", "A3-ops"):
                name = f"Ascend-cann-{kind}_{cann}_linux-{arch}.run"
                archive = pub.archive_of(name)
                assert archive is not None and len(archive.sha256) == 64, name
                assert archive.url.endswith(name.replace(".run", ".zip"))
    wheel = pub.file("torch_npu-2.7.1.post4-cp310-cp310-manylinux_2_28_aarch64.whl")
    assert wheel is not None and wheel.sha256.startswith("9d87039f3e796415")
    assert pub.cann_for("2.7.1.post4") == "9.0.0" and pub.cann_for("2.7.1.post2") == "8.5.0"
