"""Dry-runs of every stage for every preset: valid bash, the preset's architecture and layout.

The command lines flag by flag against each release's own Qwen3 example scripts are in
test_upstream_examples.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from ascend_llm.presets import available_presets, load_preset
from stagekit import (
    make_checkpoint,
    make_hf_dir,
    make_packed_data,
    make_pretrain_data,
    parse_command,
    parse_launcher,
)


def split_of(result) -> tuple[list[str], list[str]]:
    assert result.code == 0, result.err
    flags = parse_command(result.out)
    return flags["--target-tensor-parallel-size"], flags["--target-pipeline-parallel-size"]


def test_hf2mcore_default_layout_is_the_next_stage(ascend, world, roomy_disk) -> None:
    """Deliberate: upstream's example converts to TP1 PP8, which no 14B training script uses; we
    convert for --for (default sft, TP8 PP1) so the checkpoint loads without a re-shard."""
    argv = ["convert", "hf2mcore", "--model", "qwen3-14b", "--load", world.hf, "--save", world.out, "--dry-run"]
    assert split_of(ascend(*argv)) == (["8"], ["1"])
    assert split_of(ascend(*argv, "--for", "lora")) == (["2"], ["2"])


def test_hf2mcore_for_pretrain_follows_the_releases_layout(ascend, world, roomy_disk) -> None:
    """2.2.0 changed the 14B pretrain layout (TP4 PP2 -> TP8 PP1) and the 32B VPP (4 -> 8)."""
    argv = ["convert", "hf2mcore", "--model", "qwen3-14b", "--load", world.hf, "--save", world.out, "--for", "pretrain"]
    assert split_of(ascend(*argv, "--dry-run", "--release", "2.1.0")) == (["4"], ["2"])
    assert split_of(ascend(*argv, "--dry-run", "--release", "2.2.0")) == (["8"], ["1"])
    hf32 = make_hf_dir(world.root / "Qwen3-32B", {"model_type": "qwen3", **load_preset("qwen3-32b").hf_config})
    argv = ["convert", "hf2mcore", "--model", "qwen3-32b", "--load", hf32, "--save", world.out, "--for", "pretrain"]
    for release, vpp in (("2.1.0", "4"), ("2.2.0", "8"), ("26.0.0", "8")):
        flags = parse_command(ascend(*argv, "--dry-run", "--release", release).out)
        assert flags["--num-layers-per-virtual-pipeline-stage"] == [vpp], release


# -- every stage x every preset ------------------------------------------------------------------
ARCH = {  # reference §2.2: layers, hidden, ffn, heads, tied embeddings
    "qwen3-0.6b": (28, 1024, 3072, 16, True),
    "qwen3-1.7b": (28, 2048, 6144, 16, True),
    "qwen3-4b": (36, 2560, 9728, 32, True),
    "qwen3-8b": (36, 4096, 12288, 32, False),
    "qwen3-14b": (40, 5120, 17408, 40, False),
    "qwen3-32b": (64, 5120, 25600, 64, False),
}
STAGE_CASES = [
    "convert hf2mcore",
    "convert mcore2mcore",
    "convert mcore2hf",
    "convert lora-merge",
    "preprocess pretrain",
    "preprocess alpaca",
    "preprocess sharegpt",
    "preprocess openai",
    "pretrain",
    "sft",
    "lora",
    "generate",
    "generate --prompt",
    "evaluate mmlu",
    "evaluate accuracy",
    "tensorboard",
]


def test_every_reference_size_has_a_preset() -> None:
    assert set(available_presets()) >= set(ARCH)


@pytest.fixture
def preset_world(tmp_path: Path, roomy_disk: None):
    """Build, per preset, the HF dir and a checkpoint in every stage's default layout."""

    def build(name: str):
        preset = load_preset(name)
        root = tmp_path / name
        hf = make_hf_dir(root / "hf", {"model_type": "qwen3", **preset.hf_config})
        layouts = {
            stage: (preset.stage(stage).get("tp"), preset.stage(stage).get("pp"))
            for stage in ("pretrain", "sft", "lora", "generate", "evaluate")
        }
        ckpts = {stage: make_checkpoint(root / f"ckpt_{stage}", tp, pp) for stage, (tp, pp) in layouts.items()}
        raw = root / "raw"
        raw.mkdir()
        (raw / "pretrain.jsonl").write_text('{"text": "a b c"}\n')
        (raw / "alpaca.jsonl").write_text('{"instruction": "i", "input": "", "output": "o"}\n')
        (raw / "sharegpt.jsonl").write_text(
            '{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}\n'
        )
        (raw / "openai.jsonl").write_text(
            '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
        )
        mmlu = root / "mmlu"
        mmlu.mkdir()
        (mmlu / "x_test.csv").write_text("q\n")
        hf_out = make_hf_dir(root / "hf_out", {"model_type": "qwen3", **preset.hf_config})
        (ckpts["lora"] / "ascend_llm_lora.json").write_text('{"lora_r": 16, "lora_alpha": 32}')
        return (
            preset,
            root,
            hf,
            ckpts,
            raw,
            mmlu,
            hf_out,
            {"pre": make_pretrain_data(root / "data" / "pre"), "sft": make_packed_data(root / "data" / "sft")},
        )

    return build


def preset_tp_pp(name: str, stage: str) -> tuple[int, int]:
    defaults = load_preset(name).stage(stage)
    return defaults.get("tp"), defaults.get("pp")


def stage_argv(
    case: str, name: str, root: Path, hf: Path, ckpts: dict, raw: Path, mmlu: Path, hf_out: Path, data: dict
) -> list[str]:
    base = ["--model", name, "--dry-run"]
    parts = case.split()
    if parts[0] == "convert":
        action = parts[1]
        if action == "hf2mcore":
            return ["convert", action, *base, "--load", hf, "--save", root / "conv"]
        if action == "mcore2mcore":
            tp, pp = (1, 2) if (preset_tp_pp(name, "sft")) == (1, 1) else (1, 1)
            return [
                "convert",
                action,
                *base,
                "--load",
                ckpts["sft"],
                "--save",
                root / "conv",
                "--tp",
                str(tp),
                "--pp",
                str(pp),
            ]
        if action == "mcore2hf":
            return ["convert", action, *base, "--load", ckpts["sft"], "--hf-dir", hf]
        return [
            "convert",
            action,
            *base,
            "--load",
            ckpts["lora"],
            "--lora-load",
            ckpts["lora"],
            "--save",
            root / "merged",
            "--for",
            "lora",
        ]
    if parts[0] == "preprocess":
        fmt = parts[1]
        return [
            "preprocess",
            "--format",
            fmt,
            "--input",
            raw / f"{fmt}.jsonl",
            "--output-prefix",
            root / "prep" / fmt,
            "--tokenizer",
            hf,
            "--model",
            name,
            "--dry-run",
        ]
    if parts[0] in ("pretrain", "sft", "lora"):
        d = data["pre"] if parts[0] == "pretrain" else data["sft"]
        return [
            parts[0],
            *base,
            "--load",
            ckpts[parts[0]],
            "--save",
            root / "out",
            "--data",
            d,
            "--tokenizer",
            hf,
            "--master-addr",
            "node0",
        ]
    if parts[0] == "generate":
        extra = ["--prompt", "hello there"] if len(parts) > 1 else []
        return ["generate", *base, "--load", ckpts["generate"], "--tokenizer", hf, *extra]
    if case == "evaluate mmlu":
        return ["evaluate", "--task", "mmlu", *base, "--load", ckpts["evaluate"], "--tokenizer", hf, "--data", mmlu]
    if case == "evaluate accuracy":
        return ["evaluate", "--task", "accuracy", "--dry-run", "--load", hf_out, "--data", raw / "openai.jsonl"]
    return ["tensorboard", "--logdir", root, "--dry-run"]


@pytest.mark.parametrize("name", sorted(ARCH))
def test_every_stage_dry_runs_for_every_preset(ascend, preset_world, name: str) -> None:
    preset, root, hf, ckpts, raw, mmlu, hf_out, data = preset_world(name)
    layers, hidden, ffn, heads, tied = ARCH[name]
    for case in STAGE_CASES:
        result = ascend(*stage_argv(case, name, root, hf, ckpts, raw, mmlu, hf_out, data))
        assert result.code == 0, f"{case}: {result.err}"
        script = result.out
        check = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
        assert check.returncode == 0, f"{case}: not valid bash: {check.stderr}"
        flags = parse_command(script)
        if "--num-layers" in flags:  # a command that builds the model: the preset's architecture
            assert flags["--num-layers"] == [str(layers)], case
            assert flags["--hidden-size"] == [str(hidden)], case
            assert flags["--ffn-hidden-size"] == [str(ffn)], case
            assert flags["--num-attention-heads"] == [str(heads)], case
            assert flags["--num-query-groups"] == ["8"], case
            assert flags["--norm-epsilon"] == ["1e-6"], f"{case}: norm epsilon must be the model's 1e-6"
            assert ("--untie-embeddings-and-output-weights" not in flags) == tied, case
            stage = case.split()[0]
            defaults = preset.stage(stage)
            assert flags["--tensor-model-parallel-size"] == [str(defaults.get("tp"))], case
            assert flags["--pipeline-model-parallel-size"] == [str(defaults.get("pp"))], case
        if case.split()[0] in ("pretrain", "sft", "lora", "generate", "evaluate") and case != "evaluate accuracy":
            assert "--exit-on-missing-checkpoint" in flags, case
            launcher = parse_launcher(script)
            assert launcher["--nproc_per_node"] == str(preset.stage(case.split()[0]).get("nproc_per_node"))
            assert launcher["--nnodes"] == str(preset.stage(case.split()[0]).get("nnodes"))
        if case.split()[0] in ("pretrain", "sft", "lora"):
            assert "--exit-signal-handler" in flags, case
        if case.startswith("generate"):
            assert "chat" not in flags["--task"] or "--prompt" in case, "generate must not start a chat by itself"


def test_presets_note_the_norm_epsilon_choice() -> None:
    for name in ARCH:
        preset = load_preset(name)
        assert preset.model_flags["norm-epsilon"] == "1e-6"
        assert any("norm-epsilon" in note and "1e-5" in note for note in preset.notes), name


def test_a_new_model_is_one_data_file(ascend, tmp_path: Path, monkeypatch, roomy_disk: None) -> None:
    """Adding a model touches no code: drop a YAML file into ASCEND_LLM_PRESET_PATH."""
    text = (Path(load_preset("qwen3-0.6b").path)).read_text().replace("name: qwen3-0.6b", "name: my-qwen")
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "my-qwen.yaml").write_text(text)
    monkeypatch.setenv("ASCEND_LLM_PRESET_PATH", str(tmp_path / "presets"))
    assert "my-qwen" in ascend("--help").out
    hf = make_hf_dir(tmp_path / "hf", {"model_type": "qwen3", **load_preset("qwen3-0.6b").hf_config})
    result = ascend("convert", "hf2mcore", "--model", "my-qwen", "--load", hf, "--save", tmp_path / "o", "--dry-run")
    assert result.code == 0, result.err
    assert "(my-qwen)" in result.out


@pytest.mark.parametrize(("task", "tokens"), [("gsm8k", "512"), ("mmlu", "2"), ("human_eval", "1024")])
def test_benchmarks_generate_as_many_tokens_as_upstream_recommends(ascend, world, roomy_disk, task, tokens) -> None:
    """gsm8k: 512, as MindSpeed-LLM's gsm8k guide says (worked answers cut at 256 score as wrong)."""
    data = world.root / task
    data.mkdir()
    argv = ["evaluate", "--task", task, "--model", "qwen3-14b", "--load", world.checkpoint(2, 1),
            "--tokenizer", world.hf, "--data", data, "--dry-run"]  # fmt: skip
    assert parse_command(ascend(*argv).out)["--max-new-tokens"] == [tokens]
    assert parse_command(ascend(*argv, "--max-new-tokens", "64").out)["--max-new-tokens"] == ["64"]


# -- user text in the script ---------------------------------------------------------------------------
def test_a_newline_in_a_path_cannot_start_a_command(ascend, world, roomy_disk, tmp_path) -> None:
    """The issue's reproduction: `sft ... --save $'/tmp/s\\ntouch /tmp/PWNED\\n' --dry-run | bash` made
    /tmp/PWNED, because the path reached the script's comment lines unescaped. Run the script with the real
    PATH (touch exists) and a stand-in torchrun that writes down its arguments."""
    pwned = tmp_path / "PWNED"
    save = f"{tmp_path}/s\ntouch {pwned}\n"
    argv = world.sft_args()
    argv[argv.index("--save") + 1] = save
    result = ascend(*argv, "--dry-run")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    header = lines[1 : lines.index("set -eo pipefail")]
    assert len(header) == 2 and all(line.startswith("# ") for line in header), header  # title and log note
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "torchrun").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RECORD"\n')
    (bin_dir / "torchrun").chmod(0o755)
    home = Path(os.environ["MINDSPEED_LLM_HOME"])
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(tmp_path / "argv")}
    done = subprocess.run(["bash"], input=result.out, text=True, env=env, capture_output=True, cwd=home)
    assert done.returncode == 0, done.stderr
    assert not pwned.exists()
    recorded = (tmp_path / "argv").read_text()
    assert f"--save\n{save}\n" in recorded, "the path reached torchrun whole"
    assert Path(save).is_dir(), "the directory the user named, newlines and all, was made for the checkpoint"
