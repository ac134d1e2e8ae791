"""matrix.yaml: the shipped file is valid, and each way of breaking it gives a precise message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ascend_stack.errors import UserError
from ascend_stack.matrix import MatrixError, load_matrix, parse_matrix

REPO = Path(__file__).resolve().parents[1]


def row(raw: dict[str, Any], key: str) -> dict[str, Any]:
    return next(r for r in raw["rows"] if (r.get("id") or r["cann"]) == key)


def test_shipped_matrix_is_valid() -> None:
    m = load_matrix(REPO / "matrix.yaml")
    assert [r.key for r in m.shipped_rows()] == ["9.0.0", "8.5.0", "8.1.RC1", "8.2.RC1", "8.3.RC1", "8.0.0"]
    assert [r.key for r in m.rows if r.test] == ["test", "test-85"]


def test_the_rows_teams_start_on_today() -> None:
    """MindSpeed-LLM 26.0.0 on CANN 9.0.0 and 2.3.0 on 8.5.0, as their release notes pair them."""
    rows = {r.key: r for r in load_matrix(REPO / "matrix.yaml").rows}
    for cann, release, torch_npu, mindspeed in (("9.0.0", "26.0.0", "2.7.1.post4", "v26.0.0_core_r0.12.1"),
                                                ("8.5.0", "2.3.0", "2.7.1.post2", "v2.3.0_core_r0.12.1")):  # fmt: skip
        r = rows[cann]
        assert r.mindspeed_llm.release == release and r.mindspeed.ref == mindspeed
        assert [(v.torch, v.torch_npu) for v in r.torch.variants] == [("2.7.1", torch_npu)]
        assert (r.python, r.megatron.ref, r.transformers) == ("3.10", "core_v0.12.1", "4.57.1")
        assert r.apex is None and r.nvidia_apex is None  # no apex step in their install guides
        assert set(r.chips) == {"910b", "A3"} and set(r.archs) == {"aarch64", "x86_64"}
        assert set(r.oses) == {"ubuntu22.04", "openeuler24.03"}


def test_cann_releases_are_ordered_and_take_their_layout() -> None:
    from ascend_stack.matrix import cann_release_key

    m = load_matrix(REPO / "matrix.yaml")
    order = ["8.0.0", "8.1.RC1", "8.3.RC1", "8.3.0", "8.5.0", "9.0.0"]
    assert sorted(reversed(order), key=cann_release_key) == order
    assert m.layout("8.3.RC1").since == "8.0.0" and m.layout("8.5.0").since == "8.5.0"
    assert m.layout("9.0.0").kernels["A3"] == "Ascend-cann-A3-ops_{version}_linux-{arch}.run"


def test_seed_row_carries_the_seed_stack() -> None:
    seed = next(r for r in load_matrix(REPO / "matrix.yaml").rows if r.key == "8.1.RC1")
    assert (seed.hdk_min, seed.python, seed.transformers) == ("25.0.RC1", "3.10", "4.51.0")
    # The commits the guide used in July 2025 ([seed] 1.4): MindSpeed 2c085cc9 on core_r0.8.0, tag v2.1.0.
    pins = {name: (src.ref, src.commit) for name, src in seed.git_sources().items()}
    assert pins == {
        "mindspeed": ("core_r0.8.0", "2c085cc9473f8476341e543dd902270b8469de0d"),
        "mindspeed_llm": ("v2.1.0", "7f128db1d7f31cc98106c77920ae0d2719417874"),
        "megatron": ("core_r0.8.0", "baf94af3c667248865f23df73b9fb8e2395e6fd0"),
        "apex": ("master", "49a7994e13cc70d155adbd7b25b7a6b86e38e58e"),
        "nvidia_apex": ("master", "4ef930c1c884fdca5f472ab2ce7cb9b505d26c1a"),
    }
    assert {(v.torch, v.torch_npu) for v in seed.torch.variants} == {("2.1.0", "2.1.0.post12"), ("2.6.0", "2.6.0rc1")}
    assert seed.torch.default == "2.1.0"


def test_every_shipped_source_is_pinned_to_a_full_commit() -> None:
    for r in load_matrix(REPO / "matrix.yaml").shipped_rows():
        for name, src in r.git_sources().items():
            assert src.commit and len(src.commit) == 40, f"row {r.key} {name}"


def test_a_shipped_row_on_a_bare_ref_is_refused_naming_row_and_field(raw: dict[str, Any], tmp_path: Path) -> None:
    row(raw, "8.2.RC1")["apex"] = {"ref": "master"}
    with pytest.raises(MatrixError) as info:
        parse_matrix(raw)
    message = str(info.value)
    assert message.startswith("matrix.yaml: row 8.2.RC1, field apex.commit: pin apex (master) to a full 40-hex commit")
    assert "\n" not in message


def test_test_rows_may_float(raw: dict[str, Any]) -> None:
    assert row(raw, "test")["mindspeed_llm"].get("commit") is None
    parse_matrix(raw)


Breaker = Callable[[dict[str, Any]], None]

# (what the test breaks, how, the row, the field, and words of the rule the message must carry)
SCHEMA_CASES: list[tuple[str, Breaker, str | None, str, str]] = [
    ("missing field", lambda r: row(r, "8.1.RC1").pop("hdk_min"), "8.1.RC1", "hdk_min", "required field is missing"),
    (
        "misspelt field",
        lambda r: row(r, "8.2.RC1").update(transformer="4.51.0"),
        "8.2.RC1",
        "transformer",
        "unknown field",
    ),
    (
        "bad CANN version",
        lambda r: row(r, "8.3.RC1").update(cann="8.3-rc1"),
        "8.3-rc1",
        "cann",
        "not a CANN/HDK version",
    ),
    (
        "unquoted Python",
        lambda r: row(r, "8.1.RC1").update(python=3.1),
        "8.1.RC1",
        "python",
        "write versions in quotes",
    ),
    (
        "Python not a minor",
        lambda r: row(r, "8.1.RC1").update(python="3.10.4"),
        "8.1.RC1",
        "python",
        "not a Python minor version",
    ),
    ("unknown arch", lambda r: row(r, "8.0.0").update(archs=["arm64"]), "8.0.0", "archs[0]", "'aarch64' or 'x86_64'"),
    ("empty OS list", lambda r: row(r, "8.0.0").update(oses=[]), "8.0.0", "oses", "at least 1 item"),
    (
        "default torch not a variant",
        lambda r: row(r, "8.2.RC1")["torch"].update(default="2.5.1"),
        "8.2.RC1",
        "torch",
        "default torch 2.5.1 is not one of the variants",
    ),
    (
        "bad torch_npu version",
        lambda r: row(r, "8.1.RC1")["torch"]["variants"][0].update(torch_npu="release v7.0.0"),
        "8.1.RC1",
        "torch.variants[0].torch_npu",
        "not a valid package version",
    ),
    (
        "bad git ref",
        lambda r: row(r, "8.1.RC1")["megatron"].update(ref="core r0.8.0"),
        "8.1.RC1",
        "megatron.ref",
        "not a git branch, tag or commit",
    ),
    (
        "short commit",
        lambda r: row(r, "8.1.RC1")["mindspeed"].update(commit="2c085cc9"),
        "8.1.RC1",
        "mindspeed.commit",
        "not a full commit id",
    ),
    (
        "apex without nvidia apex",
        lambda r: row(r, "8.1.RC1").pop("nvidia_apex"),
        "8.1.RC1",
        "(top level)",
        "apex and nvidia_apex go together",
    ),
    (
        "duplicate torch variant",
        lambda r: row(r, "8.2.RC1")["torch"]["variants"].append({"torch": "2.6.0", "torch_npu": "2.6.0"}),
        "8.2.RC1",
        "torch",
        "must be distinct",
    ),
    (
        "bad sha256",
        lambda r: row(r, "8.1.RC1").update(sha256={"x.run": "abc"}),
        "8.1.RC1",
        "sha256.x.run",
        "should match pattern",
    ),
    (
        "non-https CANN url",
        lambda r: r["cann_packages"].update(url="ftp://x/{file}"),
        None,
        "cann_packages.url",
        "should match pattern",
    ),
]


@pytest.mark.parametrize(
    ("name", "breaker", "row_name", "field", "rule"), SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES]
)
def test_schema_errors_name_row_field_and_rule(
    raw: dict[str, Any], name: str, breaker: Breaker, row_name: str | None, field: str, rule: str
) -> None:
    breaker(raw)
    with pytest.raises(MatrixError) as info:
        parse_matrix(raw)
    first = info.value.problems[0]
    assert (first.row, first.field) == (row_name, field), str(info.value)
    assert rule in first.rule
    message = str(info.value)
    assert message.startswith("matrix.yaml: ") and "\n" not in message
    if row_name:
        assert f"row {row_name}, field {field}:" in message


def test_several_problems_are_all_kept_and_counted(raw: dict[str, Any]) -> None:
    row(raw, "8.1.RC1").pop("hdk_min")
    row(raw, "8.2.RC1").update(python="3")
    with pytest.raises(MatrixError) as info:
        parse_matrix(raw)
    assert len(info.value.problems) == 2
    assert "(and 1 more: run 'invoke matrix --check')" in str(info.value)


def test_not_a_mapping() -> None:
    with pytest.raises(MatrixError, match="must be a YAML mapping"):
        parse_matrix(["rows"])


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "matrix.yaml"
    bad.write_text("schema_version: 1\nrows: [\n  - cann: 8.1.RC1\n")
    with pytest.raises(UserError, match=r"line \d+: not valid YAML"):
        load_matrix(bad)


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match="expected a file, found nothing; run from the repository root or pass --matrix"
    ):
        load_matrix(tmp_path / "nope.yaml")
