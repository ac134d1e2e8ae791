"""Cross-checks: real incompatibilities between matrix fields are refused before any build."""

from __future__ import annotations

from typing import Any

import pytest
from test_matrix import row

from ascend_stack.matrix import MatrixError, parse_matrix


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(MatrixError) as info:
        parse_matrix(raw)
    return [str(p) for p in info.value.problems]


def test_torch_npu_must_be_built_for_the_rows_torch(raw: dict[str, Any]) -> None:
    row(raw, "8.2.RC1")["torch"]["variants"][0]["torch_npu"] = "2.5.1.post1"
    assert problems(raw) == [
        "matrix.yaml: row 8.2.RC1, field torch.variants[0].torch_npu: torch_npu 2.5.1.post1 requires "
        "torch 2.5.1, but the variant pins torch 2.6.0"
    ]


def test_pairing_is_checked_on_test_rows_too(raw: dict[str, Any]) -> None:
    row(raw, "test")["torch"]["variants"][0]["torch_npu"] = "2.12.0"
    assert any(
        "row test, field torch.variants[0].torch_npu: torch_npu 2.12.0 requires torch 2.12.0" in p
        for p in problems(raw)
    )


def test_python_outside_what_cann_supports(raw: dict[str, Any]) -> None:
    row(raw, "8.1.RC1")["python"] = "3.9"
    assert "matrix.yaml: row 8.1.RC1, field python: CANN 8.1.RC1 supports Python 3.10-3.11" in problems(raw)


def test_python_outside_what_torch_supports(raw: dict[str, Any]) -> None:
    r = row(raw, "8.0.0")
    r["python"] = "3.8"
    assert "matrix.yaml: row 8.0.0, field python: CANN 8.0.0 supports Python 3.9-3.11" in problems(raw)
    raw["support"]["cann_python"]["8.0.0"] = ["3.7", "3.11"]
    raw["support"]["torch"]["2.1.0"]["python"] = ["3.9", "3.11"]
    assert "matrix.yaml: row 8.0.0, field python: torch 2.1.0 supports Python 3.9-3.11, not 3.8" in problems(raw)


def test_python_outside_what_mindspeed_llm_supports(raw: dict[str, Any]) -> None:
    row(raw, "8.2.RC1")["python"] = "3.11"
    assert "matrix.yaml: row 8.2.RC1, field python: MindSpeed-LLM 2.1.0 supports Python 3.8-3.10" in problems(raw)


def test_megatron_branch_must_be_the_one_the_release_names(raw: dict[str, Any]) -> None:
    row(raw, "8.3.RC1")["megatron"]["ref"] = "core_r0.8.0"
    assert problems(raw) == [
        "matrix.yaml: row 8.3.RC1, field megatron.ref: MindSpeed-LLM 2.2.0 names Megatron-LM core_v0.12.1, "
        "not core_r0.8.0"
    ]


def test_unknown_mindspeed_llm_release(raw: dict[str, Any]) -> None:
    row(raw, "8.3.RC1")["mindspeed_llm"]["release"] = "2.4.0"
    assert problems(raw) == [
        "matrix.yaml: row 8.3.RC1, field mindspeed_llm.release: 2.4.0 is not in support.mindspeed_llm "
        "(1.0.0, 2.0.0, 2.1.0, 2.2.0, 2.3.0, 26.0.0)"
    ]


def test_torch_npu_must_be_listed_for_the_cann_release_unless_explained(raw: dict[str, Any]) -> None:
    variant = row(raw, "8.1.RC1")["torch"]["variants"][1]
    assert variant["torch_npu"] == "2.6.0rc1"
    del variant["unlisted"]
    (only,) = problems(raw)
    assert only.startswith(
        "matrix.yaml: row 8.1.RC1, field torch.variants[1].torch_npu: torch_npu 2.6.0rc1 "
        "is not listed for CANN 8.1.RC1 (2.1.0.post12, 2.3.1.post6, 2.4.0.post4, 2.5.1)"
    )
    assert "set 'unlisted' with a reason" in only


def test_test_rows_are_exempt_from_upstream_tables(raw: dict[str, Any]) -> None:
    test = row(raw, "test")
    assert test["python"] == "3.11"  # MindSpeed-LLM 2.1.0 documents 3.8-3.10
    parse_matrix(raw)
    test["test"] = False
    assert any("MindSpeed-LLM 2.1.0 supports Python 3.8-3.10" in p for p in problems(raw))


def test_undefined_os_and_chip(raw: dict[str, Any]) -> None:
    r = row(raw, "8.0.0")
    r["oses"].append("centos7")
    r["chips"].append("310p")
    found = problems(raw)
    assert any("row 8.0.0, field oses: 'centos7' is not defined under oses" in p for p in found)
    assert (
        "matrix.yaml: row 8.0.0, field chips: '310p' has no package in the CANN 8.0.0+ layout (cann_layouts)" in found
    )


def test_python_must_come_from_the_os_or_a_source_release(raw: dict[str, Any]) -> None:
    del raw["python_sources"]["3.10"]
    assert (
        "matrix.yaml: row 8.1.RC1, field python: ubuntu20.04 ships Python 3.8 and python_sources has no 3.10"
        in problems(raw)
    )


def test_two_rows_for_one_cann_version_need_an_id(raw: dict[str, Any]) -> None:
    raw["rows"].append(dict(row(raw, "8.0.0")))
    assert "matrix.yaml: row 8.0.0, field cann: two rows have this CANN version; give one an 'id'" in problems(raw)


def test_python_source_must_be_of_its_minor(raw: dict[str, Any]) -> None:
    raw["python_sources"]["3.10"]["version"] = "3.11.1"
    assert "matrix.yaml: field python_sources.3.10.version: 3.11.1 is not a 3.10.x release" in problems(raw)


def test_a_pairing_huawei_does_not_publish_is_refused_citing_the_official_one(raw: dict[str, Any]) -> None:
    row(raw, "9.0.0")["torch"]["variants"][0]["torch_npu"] = "2.7.1"
    found = problems(raw)
    assert found == [
        "matrix.yaml: row 9.0.0, field torch.variants[0].torch_npu: torch_npu 2.7.1 pairs with CANN 8.3.RC1, not "
        "9.0.0, in Huawei's published pairing (ascend-deployer 26.0.0, version_match.json); CANN 9.0.0 pairs with "
        "2.10.0, 2.6.0.post6, 2.7.1.post4, 2.8.0.post4, 2.9.0.post2, or set 'unlisted' with a reason"
    ]
    row(raw, "9.0.0")["torch"]["variants"][0]["unlisted"] = "a test of the escape hatch"
    parse_matrix(raw)


def test_the_hand_table_may_not_contradict_the_published_pairing(raw: dict[str, Any]) -> None:
    raw["support"]["torch_npu"]["8.0.0"].append("2.7.1.post4")
    assert problems(raw) == [
        "matrix.yaml: field support.torch_npu.8.0.0: torch_npu 2.7.1.post4 is in Huawei's published pairing "
        "(ascend-deployer 26.0.0: CANN 9.0.0): remove it here, the published data is the source"
    ]
