"""runtime layer: the OCI labels describe this image, and the row labels agree with stack.json."""

from __future__ import annotations

from typing import Any

from ascend_stack import render
from ascend_stack.target import Target

OCI = "org.opencontainers.image"


def test_oci_labels_are_present(labels: dict[str, str]) -> None:
    missing = [k for k in ("title", "description", "version", "created", "revision", "licenses", "vendor")
               if not labels.get(f"{OCI}.{k}")]  # fmt: skip
    assert not missing, f"missing OCI label(s): {', '.join(f'{OCI}.{k}' for k in missing)}"


def test_oci_version_is_the_targets_tag(labels: dict[str, str], target: Target) -> None:
    want = render.final_tag(target).split(":", 1)[1]
    got = labels.get(f"{OCI}.version")
    assert got == want, f"{OCI}.version is {got}, the target's tag is {want}"


def test_row_labels_agree_with_stack_json(labels: dict[str, str], stack: dict[str, Any]) -> None:
    pairs = {"row": "row", "cann": "cann", "chip": "chip", "hdk-min": "hdk_min", "python": "python", "os": "os",
             "arch": "arch", "torch": "torch", "torch-npu": "torch_npu", "transformers": "transformers"}  # fmt: skip
    wrong = [f"label {k}={labels.get(f'io.ascend-llm-stack.{k}')}, stack.json {s}={stack.get(s)}"
             for k, s in pairs.items() if labels.get(f"io.ascend-llm-stack.{k}") != stack.get(s)]  # fmt: skip
    assert not wrong, "; ".join(wrong)


def test_layer_label_is_runtime(labels: dict[str, str]) -> None:
    got = labels.get("io.ascend-llm-stack.layer")
    assert got == "runtime", f"io.ascend-llm-stack.layer is {got}, not runtime"
