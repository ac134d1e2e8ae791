"""``invoke pipeline``: each step through the docker run line of ``invoke run``, the run checked inside
the image first, and every path of the file under a --mount."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = {
    "model_type": "qwen3",
    "num_hidden_layers": 40,
    "hidden_size": 5120,
    "intermediate_size": 17408,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "tie_word_embeddings": False,
}


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args], cwd=REPO, capture_output=True, text=True
    )


def commands(script: str) -> list[list[str]]:
    """The commands of a bash script without comments (each on one line)."""
    return [shlex.split(line) for line in script.splitlines() if line.strip() and not line.startswith(("#", "set "))]


@pytest.fixture
def apps(tmp_path: Path) -> Path:
    """The seed's /apps/hw layout with stand-in HF weights (config, tokenizer, empty shards) and small data."""
    root = tmp_path / "apps" / "hw"
    for hf in (root / "weights" / "Qwen3-14B", root / "outputs" / "Qwen3-14B-sft"):
        hf.mkdir(parents=True)
        (hf / "config.json").write_text(json.dumps(CONFIG))
        (hf / "tokenizer.json").write_text("{}")
        (hf / "model-00001-of-00001.safetensors").write_bytes(b"")
    data = root / "datasets"
    (data / "mmlu").mkdir(parents=True)
    record = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    for name in ("train.jsonl", "test.jsonl"):
        (data / name).write_text(json.dumps(record) + "\n")
    return root


def inputs(root: Path) -> list[str]:
    pairs = {
        "hf": root / "weights" / "Qwen3-14B",
        "hf_export": root / "outputs" / "Qwen3-14B-sft",
        "train": root / "datasets" / "train.jsonl",
        "test": root / "datasets" / "test.jsonl",
        "mmlu": root / "datasets" / "mmlu",
    }
    out = [arg for name, path in pairs.items() for arg in ("--input", f"{name}={path}")]
    return [*out, "--output", str(root / "outputs" / "run")]


def test_every_step_runs_through_the_docker_run_line_of_invoke_run(apps: Path) -> None:
    file = REPO / "examples" / "qwen3-14b-sft.yaml"
    mounts = ["--mount", str(apps), "--mount", str(REPO / "examples")]
    done = invoke("pipeline", "--image", "img:1", *mounts, "--file", str(file), "--dry-run", *inputs(apps))
    assert done.returncode == 0, done.stderr
    lines = commands(done.stdout)
    assert len(lines) == 8, done.stdout
    check, *steps = lines
    at = check.index("img:1")
    assert check[at + 1 :][:3] == ["pipeline", str(file), "--check"], "the whole run is checked in the image first"
    assert [s[s.index("img:1") + 1] for s in steps] == ["convert", "preprocess", "sft", "convert", "generate",
                                                       "evaluate", "evaluate"]  # fmt: skip
    for step in steps:
        stage_argv = step[step.index("img:1") + 1 :]
        printed = invoke("run", "--print", "--image", "img:1", *mounts, "--", *stage_argv)
        assert printed.returncode == 0, printed.stderr
        assert shlex.split(printed.stdout.replace("\\\n", " ")) == step, "the line invoke run writes"
    assert "--device" in steps[0] and "--stop-timeout" in steps[0]


def test_a_path_outside_every_mount_is_refused_in_one_line(apps: Path) -> None:
    file = REPO / "examples" / "qwen3-14b-sft.yaml"
    done = invoke("pipeline", "--image", "img:1", "--mount", str(apps), "--file", str(file), "--dry-run", *inputs(apps))
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {file}: not under any --mount")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
