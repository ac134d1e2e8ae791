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
from stagekit import QWEN3_14B_CONFIG, make_checkpoint, make_devices, make_hf_dir, make_mindspeed_home, parse_command
from standins import install
from test_accuracy import QUESTIONS, greedy_by_hand, tiny_model  # noqa: F401  (tiny_model is a fixture)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TIMEOUT = 120
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class Inputs:
    """The seed's /apps/hw layout, under a test directory, with stand-in weights and real small data."""

    def __init__(self, root: Path, tiny: Path | None = None) -> None:
        self.root = root
        self.hf = make_hf_dir(root / "weights" / "Qwen3-14B", QWEN3_14B_CONFIG)
        for name in TOKENIZER_FILES if tiny else ():  # the tiny model's real tokenizer: the accuracy step loads it
            shutil.copyfile(tiny / name, self.hf / name)
        self.hf_export = root / "outputs" / "Qwen3-14B-sft"
        shutil.copytree(self.hf, self.hf_export)
        self.train = root / "datasets" / "intent_train_10k.jsonl"
        self.train.parent.mkdir(parents=True)
        self.write_train(["cancel order", "refund query", "weather today"])
        self.test = root / "datasets" / "intent_test.jsonl"
        self.test.write_text(
            json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n"
        )
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


# -- refused before anything runs ---------------------------------------------------------------------
@pytest.fixture
def inputs(tmp_path: Path, sysroot: Path, roomy_disk) -> Inputs:
    """The seed's inputs (stand-in weights) on an 8-NPU machine with MindSpeed-LLM's entry scripts."""
    make_devices(sysroot, 8)
    make_mindspeed_home()
    return Inputs(tmp_path / "apps" / "hw")


def mismatched(data: dict) -> None:
    """The LoRA example with three classic mistakes: convert split for sft (TP8 PP1) while the LoRA
    step trains TP2 PP2, data preprocessed with another chat template, a merge with another alpha."""
    step_of(data, "convert")["for"] = "sft"
    step_of(data, "preprocess")["prompt_type"] = "qwen3"
    step_of(data, "merge")["lora_alpha"] = 64


def test_tp_prompt_type_and_lora_mismatches_are_refused_before_any_step_starts(ascend, inputs, tmp_path) -> None:
    file = example(tmp_path, "lora", mismatched)
    result = ascend("pipeline", file, *inputs.args().__iter__())
    assert result.code == 2, result.err
    lines = [line for line in result.err.splitlines() if line.startswith("ascend-llm: step ")]
    tp = [line for line in lines if line.startswith("ascend-llm: step lora: it runs TP2 PP2 but loads")]
    assert tp and "which step convert writes split TP8 PP1; give step convert `for: lora`" in tp[0]
    assert any(
        line.startswith("ascend-llm: step lora: it trains with prompt type qwen but step preprocess")
        and "prompt type qwen3" in line
        for line in lines
    ), lines
    assert any(
        line.startswith("ascend-llm: step merge: --lora-alpha 64 differs from step lora") and "--lora-alpha 32" in line
        for line in lines
    ), lines
    assert "problem(s) found; no step was started" in result.err.splitlines()[-1]
    assert "Traceback" not in result.err
    assert not (inputs.output / "pipeline").exists(), "a refused run writes nothing"


def test_each_mismatch_alone_is_refused_and_the_examples_pass_the_check(ascend, inputs, tmp_path) -> None:
    for example_name in ("sft", "lora"):
        result = ascend("pipeline", example(tmp_path, example_name), *inputs.args(), "--check")
        assert result.code == 0, result.err
        assert "check passed: 7 of 7 step(s) would run" in result.err or "of 8 step(s)" in result.err
    cases = {
        "tp": lambda d: step_of(d, "convert").update({"tp": 2, "pp": 2}),
        "prompt": lambda d: step_of(d, "sft").update({"prompt_type": "qwen3"}),
    }
    for name, change in cases.items():
        result = ascend("pipeline", example(tmp_path, "sft", change), *inputs.args(), "--check")
        assert result.code == 2, name
        assert "1 problem(s) found" in result.err, (name, result.err)


def test_the_check_defers_what_earlier_steps_write_and_lists_it(ascend, inputs, tmp_path) -> None:
    result = ascend("pipeline", example(tmp_path, "sft"), *inputs.args(), "--check")
    assert result.code == 0, result.err
    deferred = [line for line in result.err.splitlines() if "deferred:" in line]
    missing = f"--load {inputs.output / 'mcore-tp8pp1'}: expected a directory, found nothing"
    assert any(missing in line for line in deferred)
    assert all("checked when it starts" in line for line in deferred)


def test_disk_space_for_every_checkpoint_of_the_run_together(ascend, inputs, tmp_path, monkeypatch) -> None:
    """220 GB free: the sft checkpoint (193 GB) fits alone, but not with the converted weights and the export."""
    usage = shutil.disk_usage("/")
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage._replace(free=220 * 1024**3))
    result = ascend("pipeline", example(tmp_path, "sft"), *inputs.args(), "--check")
    assert result.code == 2
    assert "the run writes about 248.1 GB of checkpoints to the volume of" in result.err
    assert "(convert 27.6 GB, sft 193.0 GB, export 27.6 GB) but only 220.0 GB are free" in result.err


def test_a_different_tokenizer_in_one_step_is_refused(ascend, inputs, tmp_path) -> None:
    big = json.dumps({"model": {"vocab": {f"t{i}": i for i in range(150_000)}}})  # > 1 MiB, like Qwen3's
    (inputs.hf / "tokenizer.json").write_text(big)
    copy = make_hf_dir(tmp_path / "a-copy", QWEN3_14B_CONFIG)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(inputs.hf / name, copy / name)  # new mtimes, same content: the same tokenizer
    file = example(tmp_path, "sft", lambda d: step_of(d, "accuracy").update({"tokenizer": str(copy)}))
    assert ascend("pipeline", file, *inputs.args(), "--check").code == 0
    other = make_hf_dir(tmp_path / "other-tokenizer", QWEN3_14B_CONFIG)
    (other / "tokenizer.json").write_text('{"model": "another"}')
    file = example(tmp_path, "sft", lambda d: step_of(d, "preprocess").update({"tokenizer": str(other)}))
    result = ascend("pipeline", file, *inputs.args(), "--check")
    assert result.code == 2
    assert "the steps use different tokenizers (their tokenizer files differ)" in result.err
    assert f"preprocess use {other}" in result.err


def test_file_mistakes_are_listed_together(ascend, inputs, tmp_path) -> None:
    def broken(data: dict) -> None:
        step_of(data, "sft")["train_itres"] = 10
        step_of(data, "sft")["data"] = "${steps.export.result}"
        step_of(data, "generate")["load"] = "${steps.nosuch.save}"
        step_of(data, "mmlu")["tp"] = "${inputs.missing}"

    result = ascend("pipeline", example(tmp_path, "sft", broken), *inputs.args(), "--check")
    assert result.code == 2
    err = result.err
    assert "step sft: unknown option 'train_itres' for sft; did you mean 'train_iters'?" in err
    assert "step sft: 'data': ${steps.export.result}: step export comes later" in err
    assert "step generate: 'load': ${steps.nosuch.save}: no step named nosuch" in err
    assert "step mmlu: 'tp': ${inputs.missing}: no input 'missing'" in err
    assert "Traceback" not in err


def test_a_key_given_twice_is_refused(ascend, inputs, tmp_path) -> None:
    text = (
        (EXAMPLES / "qwen3-14b-sft.yaml")
        .read_text()
        .replace("    train_iters: 1000\n", "    train_iters: 1000\n    train_iters: 10\n")
    )
    file = tmp_path / "twice.yaml"
    file.write_text(text)
    result = ascend("pipeline", file, *inputs.args(), "--check")
    assert result.code == 2 and "'train_iters' is given twice in one mapping" in result.err


# -- --dry-run, --help, examples ------------------------------------------------------------------------
def test_dry_run_prints_the_whole_run_as_one_bash_script(ascend, inputs, tmp_path) -> None:
    hostile = inputs.root / "datasets" / "a b'$(touch PWNED)\n#.jsonl"
    shutil.copyfile(inputs.train, hostile)
    result = ascend("pipeline", example(tmp_path, "sft"), *inputs.args(), "--input", f"train={hostile}", "--dry-run")
    assert result.code == 0, result.err
    script = result.out
    assert script.startswith("#!/usr/bin/env bash\n")
    assert script.count("\n(\n") == 7 and script.count("\nexec ") == 7
    for entry in ("convert_ckpt.py", "preprocess_data.py", "posttrain_gpt.py", "inference.py", "evaluation.py"):
        assert entry in script
    assert "ascend_llm.accuracy" in script
    check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr
    # run the preprocess step's part with a python3 that prints its argv: the hostile path arrives intact
    part = script[script.index("# ---- step 2/7 preprocess") :]
    part = part[part.index("\n(\n") + 1 : part.index("\n)\n") + 2]
    bin_dir = tmp_path / "argv-bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    (bin_dir / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", part], text=True, capture_output=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    argv = json.loads(done.stdout)
    assert argv[0] == "preprocess_data.py" and argv[argv.index("--input") + 1] == str(hostile)
    assert not list(tmp_path.rglob("PWNED")) and not (inputs.output / "pipeline").exists()


def test_help_explains_the_file_and_the_examples_ship_with_it(ascend) -> None:
    result = ascend("pipeline", "--help")
    assert result.code == 0
    for needle in ("inputs:", "output:", "defaults:", "steps:", "${steps.convert.save}", "${steps.STEP.result}",
                   "--example sft", "--from", "--only", "--dry-run", "resum", "report.md"):  # fmt: skip
        assert needle in result.out, needle
    assert "pipeline" in ascend("--help").out
    for name, file in (("sft", "qwen3-14b-sft.yaml"), ("lora", "qwen3-14b-lora.yaml")):
        printed = ascend("pipeline", "--example", name).out
        assert printed == (EXAMPLES / file).read_text(), f"examples/{file} and the packaged copy differ"


# -- pieces ---------------------------------------------------------------------------------------------
def test_the_loss_reader_takes_what_torch_summarywriter_writes(tmp_path: Path) -> None:
    """Megatron logs with torch.utils.tensorboard; only `lm loss` is drawn, not loss-scale or 'vs samples'."""
    from ascend_llm.pipeline import curves
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    for step in range(1, 21):
        writer.add_scalar("lm loss", 3.0 / step, step)
        writer.add_scalar("lm loss vs samples", 3.0 / step, step * 16)
        writer.add_scalar("loss-scale", 4096.0, step)
    writer.close()
    (series,) = curves.read_losses(str(tmp_path / "tb"))
    assert series.tag == "lm loss" and sorted(series.points) == list(range(1, 21))
    assert series.points[4] == pytest.approx(0.75)
    assert curves.read_losses(str(tmp_path / "tb"), since=4_000_000_000) == []
    png = tmp_path / "loss.png"
    curves.draw([series], str(png), "a $title$ with dollars")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_markdown_text_cannot_become_markup() -> None:
    from ascend_llm.pipeline.report import md_code, md_text

    assert md_text("a|b *c* <script>\n# h") == r"a\|b \*c\* \<script\> \# h"
    assert md_code("x`y|z") == r"``x`y\|z``"
    assert md_code("`a`") == "`` `a` ``"


def test_sft_resume_loads_its_own_checkpoint_with_optimizer_and_iteration(ascend, world, roomy_disk) -> None:
    args = [*world.sft_args(), "--dry-run", "--resume"]
    fresh = ascend(*args)
    assert fresh.code == 0, fresh.err
    assert "--finetune" in fresh.out and "--no-load-optim" in fresh.out, "nothing saved yet: a fresh start"
    make_checkpoint(world.out, 8, 1, iteration=40)
    resumed = ascend(*args)
    assert resumed.code == 0, resumed.err
    flags = parse_command(resumed.out)
    assert flags["--load"] == [str(world.out)]
    assert "--finetune" not in flags and "--no-load-optim" not in flags and "--no-load-rng" not in flags
    assert "--resume: continuing from the last checkpoint" in resumed.err


def test_lora_resume_loads_the_base_and_its_adapters(ascend, world, roomy_disk) -> None:
    base = world.checkpoint(2, 2)
    save = world.out / "lora"
    make_checkpoint(save, 2, 2, iteration=7)
    argv = ["lora", "--model", "qwen3-14b", "--load", base, "--save", save, "--data", world.sft_data,
            "--tokenizer", world.hf, "--resume", "--dry-run"]  # fmt: skip
    result = ascend(*argv)
    assert result.code == 0, result.err
    flags = parse_command(result.out)
    assert flags["--load"] == [str(base)] and flags["--lora-load"] == [str(save)]
    assert "--finetune" not in flags and "--no-load-optim" not in flags


def test_docs_show_the_two_examples_as_they_ship() -> None:
    text = (REPO / "docs" / "pipeline.md").read_text()
    for file in ("qwen3-14b-sft.yaml", "qwen3-14b-lora.yaml"):
        assert f"```yaml\n{(EXAMPLES / file).read_text()}```" in text, f"docs/pipeline.md shows another {file}"


def test_from_the_host_each_step_runs_in_its_docker_run_line_after_the_check_in_the_image(
    inputs: Inputs, tmp_path: Path, monkeypatch
) -> None:
    """invoke pipeline's engine with the stand-in docker CLI (it runs the image's entrypoint here)."""
    from ascend_stack.pipeline import PipelineOptions, run_pipeline
    from ascend_stack.run import RunOptions, docker_run

    env = install(Path(os.environ["MINDSPEED_LLM_HOME"]), tmp_path / "bin", inputs.hf)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([env["PYTHONPATH_PREFIX"], str(REPO / "entrypoints")]))
    monkeypatch.setenv("STANDIN_DOCKER_LOG", str(tmp_path / "docker.log"))
    file = example(tmp_path, "sft")
    run = RunOptions(image="img:1", command=[], npus="none", mounts=[str(inputs.root), str(tmp_path)])
    overrides = inputs.args()
    pairs = [overrides[i + 1] for i in range(0, len(overrides) - 2, 2)]
    opts = PipelineOptions(str(file), run, only="preprocess", inputs=pairs, output=overrides[-1])
    assert run_pipeline(opts) == 0
    calls = [json.loads(line) for line in (tmp_path / "docker.log").read_text().splitlines()]
    assert [c[c.index("img:1") + 1] for c in calls] == ["pipeline", "preprocess"]
    assert calls[0][calls[0].index("img:1") + 1 :][:3] == ["pipeline", str(file), "--check"]
    record = json.loads((inputs.output / "pipeline" / "state" / "preprocess.json").read_text())
    assert record["launched"] == docker_run(RunOptions(**{**run.__dict__, "command": record["command"]})).argv
    assert (inputs.output / "data" / "intent_packed_input_ids_document.idx").is_file()
    assert statuses(read_report(inputs))["preprocess"] == "ran"


@pytest.fixture
def standin_run(inputs: Inputs, tmp_path: Path, monkeypatch) -> Inputs:
    """The inputs plus the stand-ins, on PATH and importable by the step processes."""
    env = install(Path(os.environ["MINDSPEED_LLM_HOME"]), tmp_path / "bin", inputs.hf)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([env["PYTHONPATH_PREFIX"], str(REPO / "entrypoints")]))
    return inputs


def test_a_failing_step_stops_the_run_with_its_status_and_a_report(ascend, standin_run, tmp_path, monkeypatch):
    inputs = standin_run
    monkeypatch.setenv("STANDIN_FAIL", "preprocess")
    result = ascend("pipeline", example(tmp_path, "sft"), *inputs.args())
    assert result.code == 1, result.err
    assert "step preprocess failed (exit status 1)" in result.err and "no record written" in result.err
    data = read_report(inputs)
    assert data["status"] == "failed" and data["exit_code"] == 1
    assert statuses(data) == {
        "convert": "ran", "preprocess": "failed", "sft": "not run", "export": "not run", "generate": "not run",
        "mmlu": "not run", "accuracy": "not run",
    }  # fmt: skip
    log = next(s["log"] for s in data["steps"] if s["name"] == "preprocess")
    assert "failing as asked" in Path(log).read_text()
    assert "Step preprocess failed with exit status 1; log: `" in (inputs.output / "pipeline" / "report.md").read_text()


def test_from_and_only_select_steps_whatever_the_records_say(ascend, standin_run, tmp_path) -> None:
    inputs = standin_run
    file = example(tmp_path, "sft")
    refused = ascend("pipeline", file, *inputs.args(), "--check", "--from", "sft")
    assert refused.code == 2, "nothing before sft runs, so its checkpoint must exist already"
    assert f"step sft: --load {inputs.output / 'mcore-tp8pp1'}: expected a directory, found nothing" in refused.err
    assert ascend("pipeline", file, *inputs.args(), "--only", "convert").code == 0
    assert ascend("pipeline", file, *inputs.args(), "--only", "convert").code == 0
    again = read_report(inputs)
    assert statuses(again)["convert"] == "ran" and statuses(again)["preprocess"] == "not selected"
    convert = next(s for s in again["steps"] if s["name"] == "convert")
    assert "--overwrite" in convert["command"], "a convert step may replace the result it wrote itself"
    planned = ascend("pipeline", file, *inputs.args(), "--dry-run")
    assert planned.code == 0, planned.err
    assert "# ---- step 1/7 convert (convert hf2mcore): skipped (finished " in planned.out
    assert ascend("pipeline", file, *inputs.args(), "--only", "nosuch").code == 2


def test_two_steps_writing_the_same_place_are_refused(ascend, inputs, tmp_path) -> None:
    file = example(tmp_path, "lora", lambda d: step_of(d, "merge").update({"save": "${steps.lora.save}"}))
    result = ascend("pipeline", file, *inputs.args(), "--check")
    assert result.code == 2
    assert f"step merge: it writes {inputs.output / 'lora'}, which step lora writes too; give it its own" in result.err


def test_a_check_step_first_is_planned_like_any_other(ascend, inputs, tmp_path) -> None:
    def check_first(data: dict) -> None:
        data["steps"].insert(0, {"name": "host", "stage": "check"})

    result = ascend("pipeline", example(tmp_path, "sft", check_first), *inputs.args(), "--dry-run")
    assert result.code == 0, result.err
    assert "# ---- step 1/8 host (check): runs" in result.out and " -m ascend_llm check" in result.out
