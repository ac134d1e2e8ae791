"""Size budgets (budgets.yaml): the file's rules, the README's table, and the build holding each layer of
the integration chain to its budget and failing one past 120 % with its size, budget and largest paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from chain import Chain

from ascend_stack import budgets, render
from ascend_stack.budgets import Measure, OverBudget
from ascend_stack.errors import UserError

REPO = Path(__file__).resolve().parents[1]
TEST_TARGET = "debian-bookworm-910b-torch2.13.0-x86_64"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / budgets.FILE
    path.write_text(text)
    return path


def test_sizes_parse_in_decimal_and_binary_units() -> None:
    assert [budgets.parse_size(s) for s in ("790 MB", "1.5GB", "6.9 kB", "512 MiB", 1234, "0")] == [
        790_000_000, 1_500_000_000, 6_900, 512 * 2**20, 1234, 0,
    ]  # fmt: skip
    assert budgets.parse_size("lots") is None and budgets.parse_size(True) is None
    assert budgets.fmt_size(788_606_366) == "788.6 MB" and budgets.fmt_size(2_041_948_378) == "2.04 GB"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("schema: 2\n", "schema: expected a mapping with schema: 1"),
        ("limit: 0.5\n", "limit: 0.5 is not a factor >= 1"),
        ("targets:\n  test:\n    t:\n      base: lots\n", "targets.test.t.base: 'lots' is not a size such as 790 MB"),
        ("targets:\n  test: [base]\n", "targets.test: expected target keys"),
        ("targets: {test: {t: {base: [1]}}}\n", "targets.test.t.base: [1] is not a size"),
    ],
)
def test_a_bad_budgets_file_is_one_line_naming_the_entry(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError) as info:
        budgets.load(write(tmp_path, text))
    assert str(info.value).startswith(f"{tmp_path / budgets.FILE}: {message}")
    assert "\n" not in str(info.value)


def test_the_repositorys_budgets_cover_every_layer_of_the_test_row() -> None:
    loaded = budgets.load(REPO / budgets.FILE)
    assert loaded is not None and loaded.limit == 1.2
    assert sorted(loaded.targets["test"][TEST_TARGET]) == sorted(s.name for s in render.LAYERS)


def test_the_readme_shows_each_layers_budget() -> None:
    loaded = budgets.load(REPO / budgets.FILE)
    assert loaded is not None
    readme = (REPO / "README.md").read_text()
    found = re.search(r"<!-- size-table[^\n]*-->\n(.*?)<!-- /size-table -->", readme, re.S)
    assert found, "README.md lost its size-table markers"
    rows = {line.split("|")[1].strip(" `"): line for line in found.group(1).splitlines() if line.startswith("| `")}
    for layer, budget in loaded.targets["test"][TEST_TARGET].items():
        assert layer in rows, f"README's size table has no row for {layer}"
        assert f"| {budgets.fmt_size(budget)} |" in rows[layer], f"README's budget for {layer} is stale"


def test_measure_reports_against_the_budget() -> None:
    assert Measure("pta", 930_000_000, 900_000_000).describe() == "930.0 MB of 900.0 MB (103 %)"
    assert not Measure("pta", 1_080_000_000, 900_000_000).over and Measure("pta", 1_080_000_001, 900_000_000).over
    assert Measure("pta", 5, None).describe() == "5 B (no budget)" and not Measure("pta", 5, None).over


# -- the integration chain -----------------------------------------------------------------------------


@pytest.mark.docker
def test_every_layer_of_the_chain_is_within_its_budget(chain: Chain) -> None:
    sizes = {r.name: r.size for r in chain.results}
    assert all(m is not None and m.budget for m in sizes.values()), sizes
    over = [f"{name} {m.describe()}" for name, m in sizes.items() if m is not None and m.over]
    assert not over, f"over 120 % of budgets.yaml: {', '.join(over)}"


@pytest.mark.docker
def test_a_layer_over_its_budget_fails_the_build_with_its_size_budget_and_largest_paths(
    chain: Chain, tmp_path: Path
) -> None:
    tight = budgets.load(write(tmp_path, f"schema: 1\ntargets:\n  test:\n    {TEST_TARGET}:\n      base: 100 MB\n"))
    with pytest.raises(OverBudget) as info:
        chain.rebuild(budgets=tight, enforce_budgets=True, until="base")
    message = str(info.value)
    size = next(r.size for r in chain.results if r.name == "base")
    assert size is not None
    assert message.startswith(
        f"layer base is {budgets.fmt_size(size.size)}, over 120 % of its budget 100.0 MB "
        f"({budgets.FILE} [test {TEST_TARGET} base]); the largest paths it added: /"
    )
    paths = re.findall(r"(/\S+) \((\d+(?:\.\d+)? [kMG]?B)\)", message.split("added: ", 1)[1])
    assert len(paths) == 5 and "\n" not in message, message
    assert all(not p.startswith("/usr/local/Ascend") for p, _ in paths)  # only what base added, nothing above it
    assert info.value.exit_code == 1
