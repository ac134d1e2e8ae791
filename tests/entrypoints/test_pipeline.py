"""``ascend-llm pipeline``: the seed's full-SFT example end to end with stand-in MindSpeed-LLM entry
scripts and torchrun (tests/entrypoints/standins.py), a real stop and continue, reruns after a data
change, the checks that refuse a run before any step starts, and the report.

The accuracy step runs for real on the CPU with the tiny Qwen3 of test_accuracy.py; the loss curves
are drawn from TensorBoard event files the stand-in training writes with TensorBoard's writer.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from stagekit import QWEN3_14B_CONFIG, make_devices, make_hf_dir
from standins import install
from test_accuracy import QUESTIONS, greedy_by_hand, tiny_model  # noqa: F401  (tiny_model is a fixture)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TIMEOUT = 120
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class Inputs:
    """The seed's /apps/hw layout, under a test directory, with stand-in weights and real small data."""

    def __init__(self, root: Path, tiny: Path) -> None:
        self.root = root
        self.hf = make_hf_dir(root / "weights" / "Qwen3-14B", QWEN3_14B_CONFIG)
        for name in TOKENIZER_FILES:  # the tiny model's real tokenizer: the accuracy step loads it
            shutil.copyfile(tiny / name, self.hf / name)
        self.hf_export = root / "outputs" / "Qwen3-14B-sft"
        shutil.copytree(self.hf, self.hf_export)
        self.train = root / "datasets" / "intent_train_10k.jsonl"
        self.train.parent.mkdir(parents=True)
        self.write_train(["cancel order", "refund query", "weather today"])
        self.test = root / "datasets" / "intent_test.jsonl"
        self.mmlu = root / "datasets" / "mmlu" / "data" / "test"
        self.mmlu.mkdir(parents=True)
        (self.mmlu / "anatomy_test.csv").write_text("q1,a,b,c,d,A\nq2,a,b,c,d,B\nq3,a,b,c,d,A\n")
        (self.mmlu / "virology_test.csv").write_text("q4,a,b,c,d,C\nq5,a,b,c,d,A\n")
        self.output = root / "outputs" / "qwen3-14b-intent-sft"

    def write_train(self, questions: list[str]) -> None:
        with open(self.train, "w", encoding="utf-8") as handle:
            for q in questions:
                record = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "intent"}]}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def args(self) -> list[str]:
        pairs = {"hf": self.hf, "train": self.train, "test": self.test, "mmlu": self.mmlu, "hf_export": self.hf_export}
        out = [arg for name, path in pairs.items() for arg in ("--input", f"{name}={path}")]
        return [*out, "--output", str(self.output)]


def example(tmp_path: Path, name: str, change=None) -> Path:
    """A copy of an example pipeline, optionally changed by ``change(data)``."""
    data = yaml.safe_load((EXAMPLES / f"qwen3-14b-{name}.yaml").read_text())
    if change:
        change(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def step_of(data: dict, name: str) -> dict:
    return next(step for step in data["steps"] if step["name"] == name)


def short_answers(data: dict) -> None:
    """The accuracy step generates 5 tokens: what greedy_by_hand computes the expected answers with."""
    step_of(data, "accuracy")["max_new_tokens"] = 5


@pytest.fixture
def machine(tmp_path: Path, sysroot: Path, tiny_model: Path, monkeypatch) -> Inputs:  # noqa: F811
    """An 8-NPU machine with the stand-ins installed and the seed's inputs; answers are half right."""
    make_devices(sysroot, 8)
    env = install(Path(os.environ["MINDSPEED_LLM_HOME"]), tmp_path / "bin", tiny_model)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("STANDIN_HF_WEIGHTS", env["STANDIN_HF_WEIGHTS"])
    entrypoints = str(REPO / "entrypoints")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([env["PYTHONPATH_PREFIX"], entrypoints, os.environ.get("PYTHONPATH", "")])
    )
    usage = shutil.disk_usage("/")
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage._replace(free=100 * 1024**4))
    inputs = Inputs(tmp_path / "apps" / "hw", tiny_model)
    conversations = [[{"role": "system", "content": "answer"}, {"role": "user", "content": q}] for q in QUESTIONS]
    answers = greedy_by_hand(tiny_model, conversations)
    with open(inputs.test, "w", encoding="utf-8") as handle:
        for i, (conversation, answer) in enumerate(zip(conversations, answers, strict=True)):
            expected = answer if i % 2 else f"label | {i} *changed*"
            handle.write(json.dumps({"messages": [*conversation, {"role": "assistant", "content": expected}]}) + "\n")
    return inputs


def read_report(inputs: Inputs) -> dict:
    return json.loads((inputs.output / "pipeline" / "report.json").read_text())


def statuses(data: dict) -> dict[str, str]:
    return {step["name"]: step["status"] for step in data["steps"]}


def start_pipeline(file: Path, inputs: Inputs, hold_at: int) -> subprocess.Popen:
    env = {**os.environ, "STANDIN_HOLD_AT": str(hold_at)}
    argv = [sys.executable, "-m", "ascend_llm", "pipeline", str(file), *inputs.args()]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_line(proc: subprocess.Popen, needle: str) -> list[str]:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"the pipeline ended before {needle!r}: {proc.wait()} {''.join(seen)} {proc.stderr.read()}")


def stop_during_sft(file: Path, inputs: Inputs, hold_at: int) -> str:
    """Run the pipeline as a process and SIGTERM it once the stand-in training holds at ``hold_at``."""
    proc = start_pipeline(file, inputs, hold_at)
    try:
        seen = wait_for_line(proc, f"holding at iteration {hold_at}")
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    out = "".join(seen) + rest
    assert f"saved a checkpoint at iteration {hold_at}" in out
    assert (inputs.output / "sft" / "latest_checkpointed_iteration.txt").read_text() == str(hold_at)
    return out


def test_full_sft_example_stopped_continued_and_rerun_after_a_data_change(ascend, machine: Inputs, tmp_path) -> None:
    inputs = machine
    file = example(tmp_path, "sft", short_answers)
    state = inputs.output / "pipeline" / "state"

    # 1. a real SIGTERM to the pipeline process while the sft step trains: no record for sft
    stop_during_sft(file, inputs, hold_at=3)
    first = read_report(inputs)
    assert first["status"] == "stopped" and first["exit_code"] == 143
    assert statuses(first) == {
        "convert": "ran", "preprocess": "ran", "sft": "stopped", "export": "not run", "generate": "not run",
        "mmlu": "not run", "accuracy": "not run",
    }  # fmt: skip
    assert (state / "convert.json").is_file() and not (state / "sft.json").exists(), "a stopped step has no record"

    # 2. rerun: the steps before are skipped, sft continues from its own checkpoint (stopped again at 6)
    out = stop_during_sft(file, inputs, hold_at=6)
    assert "standin convert_ckpt" not in out and "standin preprocess_data" not in out
    assert f"load {inputs.output / 'sft'} lora-load None finetune False from iteration 3 to 1000" in out
    second = read_report(inputs)
    assert [statuses(second)[s] for s in ("convert", "preprocess", "sft")] == ["skipped", "skipped", "stopped"]
    sft = next(s for s in second["steps"] if s["name"] == "sft")
    assert sft["resumed"] and "--resume" in sft["command"]
    curve = sft["loss_curve"]
    assert (curve["tag"], curve["points"], curve["continued_at"]) == ("lm loss", 6, [4]), "one curve, both attempts"

    # 3. a changed data file: preprocess and everything after it run, sft from scratch, to the end
    inputs.write_train(["cancel order please", "refund query"])
    result = ascend("pipeline", file, *inputs.args())
    assert result.code == 0, result.err
    third = read_report(inputs)
    assert statuses(third) == {
        "convert": "skipped", "preprocess": "ran", "sft": "ran", "export": "ran", "generate": "ran",
        "mmlu": "ran", "accuracy": "ran",
    }  # fmt: skip
    assert "standin preprocess_data: 2 records, prompt type qwen" in result.out
    assert "finetune True from iteration 0 to 1000" in result.out, "new data: the old checkpoint is not continued"

    # the report: both evaluation numbers, per-label counts, the loss curve of this run's events only
    accuracy = third["evaluation"]["accuracy"]
    assert (accuracy["correct"], accuracy["total"], accuracy["accuracy"]) == (4, 8, 0.5)
    assert accuracy["per_label"]["label | 0 *changed*"] == {"total": 1, "correct": 0, "accuracy": 0.0}
    mmlu = third["evaluation"]["mmlu"]
    assert (mmlu["task"], mmlu["correct"], mmlu["total"], mmlu["score"]) == ("mmlu", 3, 5, 0.6)
    sft = next(s for s in third["steps"] if s["name"] == "sft")
    curve = sft["loss_curve"]
    assert (curve["points"], curve["continued_at"], curve["first"][0], curve["last"][0]) == (1000, [], 1, 1000)
    png = Path(curve["png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    text = (inputs.output / "pipeline" / "report.md").read_text()
    assert "business accuracy **0.5000**" in text and "mmlu score **0.6000**" in text
    assert r"| label \| 0 \*changed\* | 0 | 1 | 0\.0000 |" in text, "labels are escaped, never raw Markdown"
    assert "![sft loss](loss-sft.png)" in text
    for step in third["steps"]:
        record = json.loads((state / f"{step['name']}.json").read_text())
        assert record["exit_code"] == 0 and record["started"] <= record["finished"]
        assert record["command"][0] == step["stage"].split()[0] and record["inputs"]["digest"]
        assert all(o["fingerprint"]["kind"] != "missing" for o in record["outputs"].values())

    # 4. nothing changed: nothing runs
    result = ascend("pipeline", file, *inputs.args())
    assert result.code == 0, result.err
    assert set(statuses(read_report(inputs)).values()) == {"skipped"}
    assert "standin" not in result.out and "nothing to run" in result.err
