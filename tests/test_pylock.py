"""The full Python lock: committed, fresh, hashed; split by layer; stale sections resolved again, offline refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakes.sources import make_source_repos

from ascend_stack import pylock
from ascend_stack.errors import UserError
from ascend_stack.inputs import InputDirs, resolve_inputs
from ascend_stack.matrix import load_matrix, parse_matrix
from ascend_stack.render import plan as render_plan
from ascend_stack.target import Target, resolve

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted((REPO / "locks").glob("*/*.txt"))


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory, megatron_core: Path) -> Path:
    root = tmp_path_factory.mktemp("lock-sources")
    make_source_repos(root, megatron_core)
    return root


def git_sources(t: Target, standins: Path, tmp: Path) -> Any:
    plan, _ = render_plan(t)
    for layer in plan.layers:
        layer.inputs = [i for i in layer.inputs if i.kind == "git"]
    return resolve_inputs(plan, InputDirs.under(tmp, source_overrides=standins), download=False, offline=True,
                          progress=False)  # fmt: skip


def test_every_committed_lock_line_is_a_pinned_version_with_hashes() -> None:
    assert COMMITTED, "no lock is committed"
    for path in COMMITTED:
        lock = pylock.PyLock.load(path)
        assert lock is not None and lock.count() > 0, path
        for name, text in lock.sections.items():
            for block in pylock._blocks(text).values():
                first = block.splitlines()[0]
                assert "==" in first and "--hash=sha256:" in block, f"{path.name} [{name}]: {first}"


@pytest.mark.parametrize(("row", "arch"), [("test", "x86_64"), ("test", "aarch64"), ("test-85", "x86_64")])
def test_the_test_rows_committed_locks_are_fresh(row: str, arch: str, standins: Path, tmp_path: Path) -> None:
    """What the integration build installs: a stand-in or a pin changed without `invoke lock` fails here."""
    t = resolve(load_matrix(REPO / "matrix.yaml"), row, arch=arch)
    secs = pylock.sections(t, pylock.source_reader(git_sources(t, standins, tmp_path)))
    lock = pylock.PyLock.load(pylock.lock_path(t))
    assert pylock.stale(t, lock, secs) == [], f"run `{pylock.lock_command(t)} --sources build/standin-sources`"


def test_the_seed_rows_aarch64_lock_is_there() -> None:
    t = resolve(load_matrix(REPO / "matrix.yaml"), "8.1.RC1", arch="aarch64", os="ubuntu22.04")
    lock = pylock.PyLock.load(pylock.lock_path(t))
    assert lock is not None
    assert list(lock.sections) == ["base", "pta", "apex-build", "mindspeed", "runtime"]
    assert (lock.pins("pta")["torch"], lock.pins("pta")["torch-npu"]) == ("2.1.0", "2.1.0.post12")
    assert lock.pins("mindspeed")["transformers"] == "4.51.0"  # the row's pin wins over MindSpeed-LLM's 4.43.2
    assert lock.pins("mindspeed")["tokenizers"].startswith("0.21.")  # the row's lock_overrides
    image = {n: v for sec in ("base", "pta", "mindspeed", "runtime") for n, v in lock.pins(sec).items()}
    assert lock.pins("apex-build")["setuptools"] == "65.7.0" and int(image["setuptools"].split(".")[0]) < 82


def test_layers_split_by_what_their_requirements_pull_in() -> None:
    """One resolution, split: a package goes to the first layer whose requirements need it."""
    text = """\
torch==2.13.0 \\
    --hash=sha256:aa
    # via -r pta.in
fsspec==2026.6.0 \\
    --hash=sha256:bb
    # via
    #   datasets
    #   torch
datasets==5.0.1 \\
    --hash=sha256:cc
    # via -r mindspeed.in
dill==0.4.1 \\
    --hash=sha256:dd
    # via datasets
"""
    blocks, via = pylock._blocks_and_via(text)
    assert set(blocks) == {"torch", "fsspec", "datasets", "dill"}
    pta = pylock._closure({"-r pta.in"}, via)
    assert pta == {"torch", "fsspec"}
    assert pylock._closure({"-r pta.in", "-r mindspeed.in"}, via) - pta == {"datasets", "dill"}


@pytest.fixture
def repinned(raw: dict[str, Any]) -> Target:
    """The test row with one more pin (tqdm<4.69): what a maintainer's edit of matrix.yaml does to the lock."""
    row = next(r for r in raw["rows"] if r.get("id") == "test")
    row["pip_pins"] = ["numpy<2", "tqdm<4.69"]
    return resolve(parse_matrix(raw), "test", arch="x86_64")


def test_a_changed_pin_makes_sections_stale_and_offline_builds_refuse(
    repinned: Target, standins: Path, tmp_path: Path
) -> None:
    t = repinned
    resolved = git_sources(t, standins, tmp_path)
    secs = pylock.sections(t, pylock.source_reader(resolved))
    committed = pylock.PyLock.load(pylock.lock_path(t))
    assert pylock.stale(t, committed, secs) == ["pta", "apex-build", "mindspeed", "runtime"]  # base takes no row pin
    locks = tmp_path / "locks"
    (locks / "test").mkdir(parents=True)
    (locks / "test" / pylock.lock_path(t).name).write_bytes(pylock.lock_path(t).read_bytes())
    with pytest.raises(UserError) as err:
        pylock.ensure(t, resolved, ["base", "cann", "pta"], allow_network=False, root=locks)
    message = str(err.value)
    assert "stale or missing section(s) pta, apex-build" in message and "invoke lock --cann test" in message
    assert "\n" not in message
    # The base layer alone needs only its own (fresh) section: an offline `--until cann` build goes on.
    assert pylock.ensure(t, resolved, ["base", "cann"], allow_network=False, root=locks) is not None


def test_relocking_resolves_only_stale_sections_and_keeps_fitting_versions(
    repinned: Target, standins: Path, tmp_path: Path
) -> None:
    """A new pin re-resolves what it touches (uv, against PyPI); the rest of the lock stays byte for byte."""
    t = repinned
    secs = pylock.sections(t, pylock.source_reader(git_sources(t, standins, tmp_path)))
    committed = pylock.PyLock.load(pylock.lock_path(t))
    assert committed is not None
    text = pylock.compile_lock(t, secs, previous=committed, find_links=[Path("/opt/wheels")])
    path = tmp_path / "relocked.txt"
    path.write_text(text)
    again = pylock.PyLock.load(path)
    assert again is not None and pylock.stale(t, again, secs) == []
    assert again.sections["base"] == committed.sections["base"]
    assert again.pins("pta")["torch"] == committed.pins("pta")["torch"]
    assert again.pins("mindspeed")["transformers"] == "4.51.0"
    assert tuple(int(p) for p in again.pins("mindspeed")["tqdm"].split(".")[:2]) < (4, 69)
    # and re-running with nothing changed calls no resolver at all
    assert pylock.compile_lock(t, secs, previous=again) == text


def test_lock_file_per_target_ignores_the_chip() -> None:
    m = load_matrix(REPO / "matrix.yaml")
    a2 = resolve(m, "8.2.RC1", arch="aarch64", chip="910b")
    a3 = resolve(m, "8.2.RC1", arch="aarch64", chip="A3")
    assert (
        pylock.lock_path(a2) == pylock.lock_path(a3) == REPO / "locks/8.2.RC1/ubuntu22.04-torch2.6.0-py3.10-aarch64.txt"
    )
