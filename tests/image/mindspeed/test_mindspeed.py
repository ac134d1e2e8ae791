"""mindspeed layer: MindSpeed (editable), MindSpeed-LLM with Megatron's megatron/, transformers, stack.json."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ascend_stack import render
from ascend_stack.lock import Lock
from ascend_stack.target import Target

HOME = "/opt/MindSpeed-LLM"
ENTRY_SCRIPTS = ("pretrain_gpt.py", "posttrain_gpt.py", "convert_ckpt.py", "preprocess_data.py", "inference.py",
                 "evaluation.py")  # fmt: skip
SOURCES = ("apex", "mindspeed", "mindspeed_llm", "megatron")  # stack.json keys; the lock says mindspeed-llm


def test_stack_json_is_the_matrix_row(stack: dict[str, Any], target: Target) -> None:
    want = json.loads(render.stack_json(target, {}))
    problems = []
    for key, value in want.items():
        if isinstance(value, dict):
            got = {k: v for k, v in (stack.get(key) or {}).items() if k != "commit"}
            value = {k: v for k, v in value.items() if k != "commit"}
        else:
            got = stack.get(key)
        if got != value:
            problems.append(f"{key} is {got!r}, the matrix says {value!r}")
    assert not problems, "stack.json: " + "; ".join(problems)


@pytest.mark.parametrize("source", SOURCES)
def test_source_commit_is_the_locked_one(source: str, stack: dict[str, Any], lock: Lock) -> None:
    entry = stack.get(source) or {}
    name = source.replace("_", "-")
    locked = lock.commit(name, entry.get("ref", ""))
    if locked is None:
        pytest.skip(f"the lock of row {lock.row} records no commit for {name} {entry.get('ref')}")
    assert entry.get("commit") == locked, (
        f"{name} {entry.get('ref')} is at {entry.get('commit')} in the image, the lock says {locked}"
    )


def test_mindspeed_is_an_editable_install_of_opt_mindspeed(host: Any) -> None:
    out = host.run("python -m pip show mindspeed --disable-pip-version-check")
    assert out.rc == 0, "MindSpeed is not installed (pip show mindspeed)"
    location = next((line.split(":", 1)[1].strip() for line in out.stdout.splitlines()
                     if line.startswith("Editable project location:")), None)  # fmt: skip
    assert location == "/opt/MindSpeed", f"MindSpeed is not an editable install of /opt/MindSpeed ({location})"


def test_mindspeed_is_importable_from_opt_mindspeed(host: Any) -> None:
    code = "import importlib.util as u; s = u.find_spec('mindspeed'); print(s.origin if s else '')"
    origin = host.check_output(f'python -c "{code}"').strip()
    assert origin.startswith("/opt/MindSpeed/"), f"`import mindspeed` finds {origin or 'nothing'}, not /opt/MindSpeed"


def test_mindspeed_llm_is_at_its_home(host: Any, environment: dict[str, str]) -> None:
    home = environment.get("MINDSPEED_LLM_HOME")
    assert home == HOME, f"MINDSPEED_LLM_HOME is {home}, not {HOME}"
    missing = [s for s in (*ENTRY_SCRIPTS, "mindspeed_llm") if not host.file(f"{HOME}/{s}").exists]
    assert not missing, f"MindSpeed-LLM in {HOME} lacks {', '.join(missing)}"


def test_megatron_tree_is_copied_in(host: Any, stack: dict[str, Any]) -> None:
    ref = (stack.get("megatron") or {}).get("ref")
    missing = [d for d in ("core", "training") if not host.file(f"{HOME}/megatron/{d}").is_directory]
    assert not missing, f"{HOME}/megatron lacks {', '.join(missing)}/ (Megatron-LM {ref}'s megatron/ tree)"


# Modules that import without torch_npu's device libraries (so on any host): a broken import here
# would otherwise first show when a stage starts on 8 NPUs. megatron.core and transformers must be there.
# Not peft: peft 0.7.1 imports torch_npu at import (through accelerate's is_npu_available), so it needs
# CANN's runtime libraries; the CPU smoke tier imports it (tests/test_real_sources.py).
REQUIRED_IMPORTS = ("megatron.core", "transformers")
OPTIONAL_IMPORTS = ("datasets", "accelerate", "sentencepiece", "einops")  # when installed


@pytest.mark.parametrize("module", REQUIRED_IMPORTS + OPTIONAL_IMPORTS)
def test_imports_as_a_stage_imports_it(module: str, host: Any, pip_versions: dict[str, str]) -> None:
    if module in OPTIONAL_IMPORTS and module not in pip_versions:
        pytest.skip(f"{module} is not installed in this image")
    # From MindSpeed-LLM's home, as the stages run: `megatron` is the tree copied in there.
    out = host.run(f"cd {HOME} && TORCH_DEVICE_BACKEND_AUTOLOAD=0 python -c 'import {module}' 2>&1")
    last = (out.stdout.strip().splitlines() or ["no output"])[-1]
    assert out.rc == 0, f"`import {module}` fails in {HOME}: {last}"


def test_megatron_core_is_the_copied_in_tree(host: Any) -> None:
    """Not a megatron-core wheel from some requirements file: the tree of the pinned Megatron-LM commit."""
    code = "import importlib.util as u; s = u.find_spec('megatron.core'); print(s.origin if s else '')"
    where = host.check_output(f'cd {HOME} && python -c "{code}"').strip()
    assert where == f"{HOME}/megatron/core/__init__.py", f"megatron.core comes from {where or 'nowhere'}"


def test_transformers_is_the_rows_pin(pip_versions: dict[str, str], target: Target) -> None:
    have = pip_versions.get("transformers")
    assert have == target.row.transformers, f"transformers {have} is installed, the row pins {target.row.transformers}"


def test_mindspeed_labels_are_the_installed_stack(labels: dict[str, str], stack: dict[str, Any],
                                                  pip_versions: dict[str, str]) -> None:  # fmt: skip
    installed = {"transformers": pip_versions.get("transformers")}
    for key in ("mindspeed", "mindspeed_llm", "megatron"):
        name = key.replace("_", "-")
        installed[name] = (stack.get(key) or {}).get("ref")
        installed[f"{name}-commit"] = (stack.get(key) or {}).get("commit")
    wrong = [f"label {k}={labels.get(f'io.ascend-llm-stack.{k}')}, installed {v}" for k, v in installed.items()
             if labels.get(f"io.ascend-llm-stack.{k}") != v]  # fmt: skip
    assert not wrong, "; ".join(wrong)
