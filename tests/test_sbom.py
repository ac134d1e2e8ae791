"""The CycloneDX SBOM of an image: valid against the CycloneDX 1.6 JSON schema, every package of the lock
with its hash, reproducible (same image -> same document but the timestamp). Here from what
``invoke manifest`` collects, written out by hand; tests/test_verify.py makes one from the chain's image."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from ascend_stack import sbom
from ascend_stack.lock import Lock

SHA = {name: f"{i:064x}" for i, name in enumerate(["torch-x86", "torch-arm", "npu-x86", "npu-arm", "toolkit"], 1)}
LOCK_FILES = {
    "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl": SHA["torch-x86"],
    "torch-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl": SHA["torch-arm"],
    "torch_npu-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl": SHA["npu-x86"],
    "torch_npu-2.13.0-cp311-cp311-manylinux_2_28_aarch64.whl": SHA["npu-arm"],
    "Ascend-cann-toolkit_8.2.RC1_linux-x86_64.run": SHA["toolkit"],
}
IMAGE_ID = "sha256:" + "ab" * 32


def manifest_data() -> dict[str, Any]:
    """The shape of ascend_stack.manifest.collect()'s result, trimmed to a few of each kind."""
    toolkit_info = "/usr/local/Ascend/ascend-toolkit/latest/x86_64-linux/ascend_toolkit_install.info"
    data = {
        "image": {"tag": "ascend-llm-stack:test-910b-x", "id": IMAGE_ID, "created": "2026-01-01T00:00:00Z",
                  "arch": "x86_64"},
        "matrix_row": {"row": "test"},
        "os": {"name": "Debian GNU/Linux 12 (bookworm)", "id": "debian", "version_id": "12", "manager": "dpkg",
               "packages": [{"name": "gcc-12", "version": "12.2.0-14", "arch": "amd64"},
                            {"name": "libc6", "version": "2.36-9+deb12u9", "arch": "amd64"}]},
        "python": {"version": "3.11.2",
                   "packages": [{"name": "torch", "version": "2.13.0+cpu"}, {"name": "torch_npu", "version": "2.13.0"},
                                {"name": "numpy", "version": "1.26.4"},
                                {"name": "mindspeed", "version": "0.8.0",
                                 "editable_project_location": "/opt/MindSpeed"}]},
        "cann": {"toolkit": "8.2.RC1", "toolkit_innerversion": "V100R001C24B100", "kernels": ["910b"],
                 "kernels_version": "7.9.0.1.100", "nnal_atb": "8.2.RC1",
                 "components": {"runtime": "8.2.RC1", "opp_kernel": "8.2.RC1"},
                 "version_files": {"toolkit": toolkit_info, "nnal": "/usr/local/Ascend/nnal/atb/latest/version.info"}},
        "sources": {"megatron": {"ref": "core_r0.8.0", "commit": "7d" * 20},
                    "mindspeed_llm": {"release": "2.1.0", "ref": "2.1.0", "commit": "61" * 20}},
    }  # fmt: skip
    return data


def make(data: dict[str, Any], tmp_path: Path, full_lock: str | None = None) -> dict[str, Any]:
    lock = Lock(tmp_path / "test.yaml", "test", dict(LOCK_FILES))
    path = None
    if full_lock is not None:
        path = tmp_path / "full.txt"
        path.write_text(full_lock)
    hashes = sbom.package_hashes(lock, data["image"]["arch"], path)
    installers = {"toolkit": "Ascend-cann-toolkit_8.2.RC1_linux-x86_64.run"}
    urls = {"megatron": "https://github.com/NVIDIA/Megatron-LM.git"}
    text = sbom.to_json(sbom.build(data, hashes, lock.files, installers, urls))
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    return json.loads(text)


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["components"]}


def hashes(component: dict[str, Any]) -> list[str]:
    return [h["content"] for h in component.get("hashes", [])]


def test_the_sbom_validates_and_lists_every_package_of_the_lock_with_its_hash(tmp_path: Path) -> None:
    doc = make(manifest_data(), tmp_path)
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    c = by_name(doc)
    assert c["torch"]["purl"] == "pkg:pypi/torch@2.13.0%2Bcpu" and hashes(c["torch"]) == [SHA["torch-x86"]]
    assert hashes(c["torch-npu"]) == [SHA["npu-x86"]]  # the image's arch only: not the aarch64 wheel's hash
    assert hashes(c["numpy"]) == []  # today's lock hashes only the big wheels
    assert c["gcc-12"]["purl"] == "pkg:deb/debian/gcc-12@12.2.0-14?arch=amd64&distro=debian-12"
    toolkit = c["cann-toolkit"]
    assert toolkit["version"] == "8.2.RC1" and hashes(toolkit) == [SHA["toolkit"]]
    props = {p["name"]: p["value"] for p in toolkit["properties"]}
    assert props["ascend-llm-stack:version_file"].endswith("x86_64-linux/ascend_toolkit_install.info")
    assert c["cann-kernels-910b"]["version"] == "8.2.RC1" and c["cann-nnal"]["version"] == "8.2.RC1"
    megatron = c["megatron"]
    assert megatron["version"] == "7d" * 20 and megatron["pedigree"]["commits"][0]["uid"] == "7d" * 20
    assert megatron["externalReferences"] == [{"type": "vcs", "url": "https://github.com/NVIDIA/Megatron-LM.git"}]
    assert doc["metadata"]["component"]["type"] == "container"
    assert doc["metadata"]["component"]["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]


def test_same_image_same_sbom_but_the_timestamp(tmp_path: Path) -> None:
    first, second = make(manifest_data(), tmp_path), make(manifest_data(), tmp_path)
    assert first["metadata"].pop("timestamp") and second["metadata"].pop("timestamp")
    assert first == second
    assert first["serialNumber"] == sbom.build(manifest_data(), {}).serial_number.urn
    other = copy.deepcopy(manifest_data())
    other["image"]["id"] = "sha256:" + "cd" * 32
    assert make(other, tmp_path)["serialNumber"] != first["serialNumber"]  # derived from the image ID


def test_the_full_per_target_lock_supplies_every_packages_hashes(tmp_path: Path) -> None:
    """What the full lock (locks/<row>/<target>.txt, pip's requirements format) plugs in."""
    full = (
        "# pip-compile --generate-hashes\n"
        "numpy==1.26.4 \\\n    --hash=sha256:" + "1" * 64 + " \\\n    --hash=sha256:" + "2" * 64 + "\n"
        "Torch==2.13.0+cpu ; python_version >= '3.10' \\\n    --hash=sha256:" + SHA["torch-x86"] + "\n"
    )  # fmt: skip
    assert sbom.requirements_hashes(full) == {("numpy", "1.26.4"): ["1" * 64, "2" * 64],
                                              ("torch", "2.13.0+cpu"): [SHA["torch-x86"]]}  # fmt: skip
    c = by_name(make(manifest_data(), tmp_path, full_lock=full))
    assert hashes(c["numpy"]) == ["1" * 64, "2" * 64] and hashes(c["torch"]) == [SHA["torch-x86"]]


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_lock_hashes_follow_the_images_architecture(tmp_path: Path, arch: str) -> None:
    lock = Lock(tmp_path / "test.yaml", "test", dict(LOCK_FILES))
    got = sbom.lock_package_hashes(lock, arch)
    want = "x86" if arch == "x86_64" else "arm"
    assert got[("torch-npu", "2.13.0")] == [SHA[f"npu-{want}"]]
    assert all(not k[0].startswith("ascend") for k in got)  # installers are not Python packages
