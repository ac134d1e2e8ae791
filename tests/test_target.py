"""Resolution of command-line choices to one target: defaults, case, prefixes and each error."""

from __future__ import annotations

from pathlib import Path

import pytest

from ascend_stack import target as target_mod
from ascend_stack.errors import UserError
from ascend_stack.matrix import Matrix, load_matrix
from ascend_stack.target import resolve

REPO = Path(__file__).resolve().parents[1]
ROWS = "9.0.0, 8.5.0, 8.1.RC1, 8.2.RC1, 8.3.RC1, 8.0.0"


@pytest.fixture(scope="module")
def m() -> Matrix:
    return load_matrix(REPO / "matrix.yaml")


@pytest.fixture(autouse=True)
def arm_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Most users build on Kunpeng (aarch64) hosts; tests must not depend on the CI machine's arch."""
    monkeypatch.setattr(target_mod.platform, "machine", lambda: "aarch64")


@pytest.mark.parametrize("given", ["8.1.RC1", "8.1.rc1", "8.1.Rc1", "8.1"])
def test_cann_any_case_or_unique_prefix(m: Matrix, given: str) -> None:
    assert resolve(m, given).row.key == "8.1.RC1"


def test_defaults(m: Matrix) -> None:
    t = resolve(m, "8.2.rc1")
    assert (t.torch, t.torch_npu, t.arch, t.os_name, t.chip) == ("2.6.0", "2.6.0", "aarch64", "ubuntu22.04", "910b")
    assert t.platform == "linux/arm64"


def test_default_arch_is_the_hosts(m: Matrix, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target_mod.platform, "machine", lambda: "x86_64")
    assert resolve(m, "8.1.RC1").arch == "x86_64"


def test_explicit_choices(m: Matrix) -> None:
    t = resolve(m, "8.1.RC1", torch="2.6", arch="amd64", os="openeuler", chip="a3")
    assert (t.torch, t.torch_npu, t.arch, t.os_name, t.chip) == ("2.6.0", "2.6.0rc1", "x86_64", "openeuler22.03", "A3")
    assert not t.python_from_os and t.python_source and t.python_source.file == "Python-3.10.16.tgz"


def test_test_row_is_hidden_but_addressable(m: Matrix) -> None:
    t = resolve(m, "TEST", arch="x86_64")
    assert (t.row.test, t.os_name, t.python, t.torch) == (True, "debian-bookworm", "3.11", "2.13.0")
    assert t.base_image == "ascend-llm-stack/os:debian-bookworm-x86_64"
    with pytest.raises(UserError) as info:
        resolve(m, "tes")
    assert "test" not in str(info.value).split("choose one of")[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cann": None}, f"CANN version (--cann) is required: choose one of {ROWS}"),
        ({"cann": "9.1.0"}, f"unknown CANN version (--cann) '9.1.0': choose one of {ROWS}"),
        ({"cann": "8"}, "ambiguous CANN version (--cann) '8': choose one of 8.5.0, 8.1.RC1, 8.2.RC1, 8.3.RC1, 8.0.0"),
        (
            {"cann": "8.1.RC1", "torch": "2.5"},
            "unknown torch for CANN 8.1.RC1 (--torch) '2.5': choose one of 2.1.0, 2.6.0",
        ),
        (
            {"cann": "8.1.RC1", "os": "ubuntu"},
            "ambiguous OS for CANN 8.1.RC1 (--os) 'ubuntu': choose one of ubuntu22.04, ubuntu20.04",
        ),
        (
            {"cann": "8.1.RC1", "os": "centos7"},
            "unknown OS for CANN 8.1.RC1 (--os) 'centos7': choose one of ubuntu22.04, ubuntu20.04, openeuler22.03",
        ),
        ({"cann": "8.0.0", "chip": "A3"}, "unknown chip for CANN 8.0.0 (--chip) 'A3': choose one of 910b"),
        (
            {"cann": "8.1.RC1", "arch": "riscv64"},
            "unknown architecture 'riscv64' for --arch: choose one of aarch64, x86_64",
        ),
    ],
)
def test_each_bad_choice_is_one_line_listing_valid_values(
    m: Matrix, kwargs: dict[str, str | None], message: str
) -> None:
    with pytest.raises(UserError) as info:
        resolve(m, **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_host_arch_the_row_does_not_build(m: Matrix, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target_mod.platform, "machine", lambda: "ppc64le")
    with pytest.raises(UserError, match=r"CANN 8.1.RC1 is not built for ppc64le \(the host's; pass --arch\)"):
        resolve(m, "8.1.RC1")
