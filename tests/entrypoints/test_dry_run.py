"""Dry-runs of every stage for every preset, and the 14B commands flag by flag against upstream.

The expected 14B flags are MindSpeed-LLM 2.1.0's example scripts as the reference records them
(shared/reference/mindspeed-llm.md §1.2, §1.3, §2.1; LLM@2.1.0:examples/mcore/qwen3/*_14b_*.sh).
Every place where ascend-llm deliberately differs is listed in DELIBERATE with its reason; any
other difference fails the test.
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

SPEC = ["mindspeed_llm.tasks.models.spec.qwen3_spec", "layer_spec"]
TOK, DATA, LOAD, SAVE = "<TOK>", "<DATA>", "<LOAD>", "<SAVE>"

# -- the reference's Qwen3-14B flags (values as strings; [] for a bare switch) -------------------
REF_MODEL_14B: dict[str, list[str]] = {
    "--use-mcore-models": [],
    "--spec": SPEC,
    "--num-layers": ["40"],
    "--hidden-size": ["5120"],
    "--ffn-hidden-size": ["17408"],
    "--num-attention-heads": ["40"],
    "--group-query-attention": [],
    "--num-query-groups": ["8"],
    "--kv-channels": ["128"],
    "--qk-layernorm": [],
    "--max-position-embeddings": ["40960"],
    "--make-vocab-size-divisible-by": ["1"],
    "--padded-vocab-size": ["151936"],
    "--rotary-base": ["1000000"],
    "--position-embedding-type": ["rope"],
    "--use-rotary-position-embeddings": [],
    "--normalization": ["RMSNorm"],
    "--norm-epsilon": ["1e-6"],
    "--swiglu": [],
    "--disable-bias-linear": [],
    "--untie-embeddings-and-output-weights": [],
    "--tokenizer-type": ["PretrainedFromHF"],
    "--tokenizer-name-or-path": [TOK],
    "--attention-softmax-in-fp32": [],
    "--no-gradient-accumulation-fusion": [],
    "--no-masked-softmax-fusion": [],
    "--bf16": [],
    "--seed": ["42"],
    "--attention-dropout": ["0"],
    "--hidden-dropout": ["0"],
    "--seq-length": ["4096"],
}
OPTIMIZE = {
    "--use-flash-attn": [],
    "--use-fused-rotary-pos-emb": [],
    "--use-fused-swiglu": [],
    "--use-fused-rmsnorm": [],
    "--use-distributed-optimizer": [],
}
SCHEDULE = {
    "--min-lr": ["1.25e-7"],
    "--weight-decay": ["1e-1"],
    "--lr-warmup-fraction": ["0.01"],
    "--clip-grad": ["1.0"],
    "--adam-beta1": ["0.9"],
    "--adam-beta2": ["0.95"],
}
TRAIN_IO = {
    "--data-path": [DATA],
    "--split": ["100,0,0"],
    "--load": [LOAD],
    "--save": [SAVE],
    "--no-load-optim": [],
    "--no-load-rng": [],
    "--log-interval": ["1"],
    "--save-interval": ["2000"],
    "--eval-interval": ["2000"],
    "--eval-iters": ["0"],
    "--train-iters": ["2000"],
    "--distributed-backend": ["nccl"],
}
TUNE = {
    "--finetune": [],
    "--stage": ["sft"],
    "--is-instruction-dataset": [],
    "--prompt-type": ["qwen"],
    "--variable-seq-lengths": [],
}
LORA = {
    "--lora-r": ["16"],
    "--lora-alpha": ["32"],
    "--lora-fusion": [],
    "--lora-target-modules": ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"],
}

REFERENCE_14B: dict[str, dict[str, list[str]]] = {
    "pretrain": {  # pretrain_qwen3_14b_4K_ptd.sh
        **REF_MODEL_14B,
        **OPTIMIZE,
        **SCHEDULE,
        **TRAIN_IO,
        "--exit-on-missing-checkpoint": [],
        "--tensor-model-parallel-size": ["4"],
        "--pipeline-model-parallel-size": ["2"],
        "--context-parallel-size": ["1"],
        "--context-parallel-algo": ["ulysses_cp_algo"],
        "--sequence-parallel": [],
        "--micro-batch-size": ["1"],
        "--global-batch-size": ["128"],
        "--lr": ["1.25e-6"],
        "--log-throughput": [],
    },
    "sft": {  # tune_qwen3_14b_4K_full_ptd.sh
        **REF_MODEL_14B,
        **SCHEDULE,
        **TRAIN_IO,
        **TUNE,
        "--exit-on-missing-checkpoint": [],
        "--tensor-model-parallel-size": ["8"],
        "--pipeline-model-parallel-size": ["1"],
        "--use-flash-attn": [],
        "--sequence-parallel": [],
        "--micro-batch-size": ["1"],
        "--global-batch-size": ["16"],
        "--lr": ["1.25e-6"],
        "--log-throughput": [],
    },
    "lora": {  # tune_qwen3_14b_4K_lora_ptd.sh
        **{k: v for k, v in REF_MODEL_14B.items() if k != "--norm-epsilon"},
        "--max-position-embeddings": ["4096"],
        **OPTIMIZE,
        **SCHEDULE,
        **TRAIN_IO,
        **TUNE,
        **LORA,
        "--tensor-model-parallel-size": ["2"],
        "--pipeline-model-parallel-size": ["2"],
        "--micro-batch-size": ["4"],
        "--global-batch-size": ["64"],
        "--lr": ["1.25e-5"],
        "--lr-decay-style": ["cosine"],
        "--init-method-std": ["0.01"],
        "--initial-loss-scale": ["4096"],
        "--no-shared-storage": [],
        "--tokenizer-not-use-fast": [],
    },
    "generate": {  # generate_qwen3_14b_ptd.sh
        **REF_MODEL_14B,
        "--tensor-model-parallel-size": ["4"],
        "--pipeline-model-parallel-size": ["1"],
        "--load": [LOAD],
        "--micro-batch-size": ["1"],
        "--max-new-tokens": ["256"],
        "--exit-on-missing-checkpoint": [],
    },
    "evaluate": {  # evaluate_qwen3_14b_ptd.sh
        **REF_MODEL_14B,
        "--tensor-model-parallel-size": ["2"],
        "--pipeline-model-parallel-size": ["1"],
        "--load": [LOAD],
        "--micro-batch-size": ["1"],
        "--max-new-tokens": ["2"],
        "--use-flash-attn": [],
        "--exit-on-missing-checkpoint": [],
        "--no-chat-template": [],
        "--task": ["mmlu"],
        "--task-data-path": [DATA],
    },
    "convert hf2mcore": {  # ckpt_convert_qwen3_hf2mcore.sh
        "--use-mcore-models": [],
        "--model-type": ["GPT"],
        "--load-model-type": ["hf"],
        "--save-model-type": ["mg"],
        "--target-tensor-parallel-size": ["1"],
        "--target-pipeline-parallel-size": ["8"],
        "--spec": SPEC,
        "--load-dir": [LOAD],
        "--save-dir": [SAVE],
        "--tokenizer-model": [f"{LOAD}/tokenizer.json"],
        "--params-dtype": ["bf16"],
        "--model-type-hf": ["qwen3"],
    },
    "convert mcore2hf": {  # ckpt_convert_qwen3_mcore2hf.sh
        "--use-mcore-models": [],
        "--model-type": ["GPT"],
        "--load-model-type": ["mg"],
        "--save-model-type": ["hf"],
        "--target-tensor-parallel-size": ["1"],
        "--target-pipeline-parallel-size": ["1"],
        "--spec": SPEC,
        "--load-dir": [LOAD],
        "--save-dir": [SAVE],
        "--params-dtype": ["bf16"],
        "--model-type-hf": ["qwen3"],
    },
    "convert lora-merge": {  # ckpt_convert_qwen3_mcore2hf_lora.sh
        "--use-mcore-models": [],
        "--model-type": ["GPT"],
        "--load-model-type": ["mg"],
        "--save-model-type": ["hf"],
        "--target-tensor-parallel-size": ["1"],
        "--target-pipeline-parallel-size": ["1"],
        "--spec": SPEC,
        "--lora-r": ["8"],
        "--lora-alpha": ["16"],
        "--lora-target-modules": ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"],
        "--load-dir": [LOAD],
        "--lora-load": ["<LORA>"],
        "--save-dir": [SAVE],
        "--model-type-hf": ["qwen3"],
    },
    "preprocess alpaca": {  # data_convert_qwen3_instruction.sh
        "--input": ["<IN>"],
        "--tokenizer-name-or-path": [TOK],
        "--output-prefix": ["<OUT>"],
        "--handler-name": ["AlpacaStyleInstructionHandler"],
        "--tokenizer-type": ["PretrainedFromHF"],
        "--workers": ["4"],
        "--log-interval": ["1000"],
        "--prompt-type": ["qwen"],
    },
    "preprocess pretrain": {  # data_convert_qwen3_pretrain.sh
        "--input": ["<IN>"],
        "--tokenizer-name-or-path": [TOK],
        "--tokenizer-type": ["PretrainedFromHF"],
        "--handler-name": ["GeneralPretrainHandler"],
        "--output-prefix": ["<OUT>"],
        "--json-keys": ["text"],
        "--workers": ["4"],
        "--log-interval": ["1000"],
    },
}
REFERENCE_ENV_14B = {  # the exports of the same scripts
    "pretrain": {"CUDA_DEVICE_MAX_CONNECTIONS": "1", "PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True"},
    "sft": {"CUDA_DEVICE_MAX_CONNECTIONS": "1", "PYTORCH_NPU_ALLOC_CONF": "expandable_segments:True"},
    "lora": {"CUDA_DEVICE_MAX_CONNECTIONS": "1", "HCCL_CONNECT_TIMEOUT": "1800"},
    "generate": {"CUDA_DEVICE_MAX_CONNECTIONS": "1"},
    "evaluate": {"CUDA_DEVICE_MAX_CONNECTIONS": "1"},
    "convert hf2mcore": {"CUDA_DEVICE_MAX_CONNECTIONS": "1"},
}
REFERENCE_NPROC_14B = {"pretrain": "8", "sft": "8", "lora": "8", "generate": "4", "evaluate": "8"}

# -- what ascend-llm does differently on purpose: (added, removed, changed) ------------------------
TRAINING_ADDS = {
    "--exit-signal-handler": "docker stop / SIGTERM makes Megatron save a checkpoint before exiting",
    "--tensorboard-dir": "loss curves for `ascend-llm tensorboard` (the seed guide adds it by hand)",
}
DELIBERATE: dict[str, dict[str, dict[str, str]]] = {
    "pretrain": {"added": TRAINING_ADDS, "removed": {}, "changed": {}},
    "sft": {"added": TRAINING_ADDS, "removed": {}, "changed": {}},
    "lora": {
        "added": {
            **TRAINING_ADDS,
            "--norm-epsilon": "the model's 1e-6; upstream's LoRA script falls back to Megatron's 1e-5",
            "--exit-on-missing-checkpoint": "a wrong --load must stop the run, not train from random weights",
        },
        "removed": {},
        "changed": {
            "--max-position-embeddings": "the model's 40960 as in every other 14B script (upstream "
            "passes its seq length 4096 here)"
        },
    },
    "generate": {
        "added": {
            "--task": "non-interactive by default: upstream's default ends in an interactive "
            "chat that hangs a batch job"
        },
        "removed": {},
        "changed": {},
    },
    "evaluate": {"added": {}, "removed": {}, "changed": {}},
    "convert hf2mcore": {"added": {}, "removed": {}, "changed": {}},  # compared with --tp 1 --pp 8
    "convert mcore2hf": {"added": {}, "removed": {}, "changed": {}},
    "convert lora-merge": {
        "added": {
            "--params-dtype": "bf16 like every other conversion (upstream's merge example omits it and so writes fp16)"
        },
        "removed": {},
        "changed": {
            "--lora-r": "the value the LoRA run was trained with (16 in upstream's LoRA scripts; "
            "the merge example's 8 does not match them)",
            "--lora-alpha": "likewise 32, not the merge example's 16",
        },
    },
    "preprocess alpaca": {"added": {}, "removed": {}, "changed": {}},
    "preprocess pretrain": {"added": {}, "removed": {}, "changed": {}},
}


def same_value(a: list[str], b: list[str]) -> bool:
    """Equal as text, or as numbers (upstream writes 0 and 0.0, 1e-1 and 0.1 interchangeably)."""
    if a == b:
        return True
    if len(a) != len(b):
        return False
    try:
        return all(float(x) == float(y) for x, y in zip(a, b, strict=False))
    except ValueError:
        return False


def diff(ours: dict[str, list[str]], ref: dict[str, list[str]]) -> tuple[set, set, set]:
    added = set(ours) - set(ref)
    removed = set(ref) - set(ours)
    changed = {k for k in set(ours) & set(ref) if not same_value(ours[k], ref[k])}
    return added, removed, changed


def substitute(flags: dict[str, list[str]], mapping: dict[str, str]) -> dict[str, list[str]]:
    """Put the placeholders back in: real paths -> <LOAD>, <SAVE>, ..."""
    out = {}
    for flag, values in flags.items():
        new = []
        for value in values:
            for real, placeholder in mapping.items():
                value = value.replace(real, placeholder)
            new.append(value)
        out[flag] = new
    return out


def exports(script: str) -> dict[str, str]:
    """NAME -> default value of the script's ``export NAME="${NAME:-value}"`` lines."""
    import re

    return dict(re.findall(r'^export (\w+)="\$\{\w+:-([^}]*)\}"', script, re.M))


@pytest.fixture
def flow(tmp_path: Path, roomy_disk: None):
    """The directories the seed's flow uses for Qwen3-14B."""
    root = tmp_path
    paths = {
        "hf": make_hf_dir(root / "Qwen3-14B"),
        "pre": make_pretrain_data(root / "data" / "enwiki"),
        "sft_data": make_packed_data(root / "data" / "alpaca"),
        "save": root / "out",
        "mmlu": root / "mmlu" / "test",
        "raw_alpaca": root / "raw" / "alpaca.jsonl",
        "raw_text": root / "raw" / "text.jsonl",
    }
    paths["mmlu"].mkdir(parents=True)
    (paths["mmlu"] / "abstract_algebra_test.csv").write_text("q,a,b,c,d,A\n")
    paths["raw_alpaca"].parent.mkdir(parents=True)
    paths["raw_alpaca"].write_text('{"instruction": "hi", "input": "", "output": "hello"}\n')
    paths["raw_text"].write_text('{"text": "hello world"}\n')
    for tp, pp in ((4, 2), (8, 1), (2, 2), (4, 1), (2, 1), (1, 8)):
        make_checkpoint(root / f"mcore_tp{tp}pp{pp}", tp, pp)
    lora = make_checkpoint(root / "lora_tp2pp2", 2, 2)
    (lora / "ascend_llm_lora.json").write_text(
        '{"lora_r": 16, "lora_alpha": 32, "lora_target_modules": '
        '["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]}'
    )
    return root, paths


def dry_run_14b(ascend, root: Path, paths: dict, stage: str) -> tuple[str, dict[str, str]]:
    """Run the stage's 14B dry-run as a user would; return the script and the placeholder map."""
    hf, save = str(paths["hf"]), str(paths["save"])
    common = ["--model", "qwen3-14b", "--dry-run"]
    if stage in ("pretrain", "sft", "lora", "generate", "evaluate"):
        layout = {"pretrain": "tp4pp2", "sft": "tp8pp1", "lora": "tp2pp2", "generate": "tp4pp1", "evaluate": "tp2pp1"}[
            stage
        ]
        load = str(root / f"mcore_{layout}")
        argv = [stage, *common, "--load", load, "--tokenizer", hf]
        data = {
            "pretrain": paths["pre"],
            "sft": paths["sft_data"],
            "lora": paths["sft_data"],
            "evaluate": str(paths["mmlu"]),
        }.get(stage)
        if stage in ("pretrain", "sft", "lora"):
            argv += ["--save", save, "--data", data]
        if stage == "evaluate":
            argv += ["--task", "mmlu", "--data", data]
        mapping = {load: LOAD, save: SAVE, hf: TOK, **({data: DATA} if data else {})}
    elif stage == "convert hf2mcore":
        argv = ["convert", "hf2mcore", *common, "--load", hf, "--save", save, "--tp", "1", "--pp", "8"]
        mapping = {hf: LOAD, save: SAVE}
    elif stage == "convert mcore2hf":
        load = str(root / "mcore_tp1pp8")
        argv = ["convert", "mcore2hf", *common, "--load", load, "--hf-dir", hf]
        mapping = {load: LOAD, hf: SAVE}
    elif stage == "convert lora-merge":
        load, lora = str(root / "mcore_tp2pp2"), str(root / "lora_tp2pp2")
        argv = ["convert", "lora-merge", *common, "--load", load, "--lora-load", lora, "--to", "hf", "--hf-dir", hf]
        mapping = {lora: "<LORA>", load: LOAD, hf: SAVE}
    else:
        fmt = stage.split()[1]
        raw = str(paths["raw_alpaca"] if fmt == "alpaca" else paths["raw_text"])
        out = str(root / "prep" / fmt)
        argv = ["preprocess", "--format", fmt, "--input", raw, "--output-prefix", out, "--tokenizer", hf, "--dry-run"]
        mapping = {raw: "<IN>", out: "<OUT>", hf: TOK}
    result = ascend(*argv)
    assert result.code == 0, result.err
    return result.out, mapping


@pytest.mark.parametrize("stage", sorted(REFERENCE_14B))
def test_14b_matches_upstream_flag_by_flag(ascend, flow, stage: str) -> None:
    root, paths = flow
    script, mapping = dry_run_14b(ascend, root, paths, stage)
    ours = substitute(parse_command(script), mapping)
    ref = REFERENCE_14B[stage]
    added, removed, changed = diff(ours, ref)
    allowed = DELIBERATE[stage]
    assert added == set(allowed["added"]), f"unexpected additions {added - set(allowed['added'])}"
    assert removed == set(allowed["removed"]), f"flags upstream passes that we drop: {removed}"
    assert changed == set(allowed["changed"]), (
        f"values that differ: {[(k, ours[k], ref[k]) for k in changed - set(allowed['changed'])]}"
    )


@pytest.mark.parametrize("stage", sorted(REFERENCE_ENV_14B))
def test_14b_exports_what_upstream_exports(ascend, flow, stage: str) -> None:
    root, paths = flow
    script, _ = dry_run_14b(ascend, root, paths, stage)
    env = exports(script)
    for name, value in REFERENCE_ENV_14B[stage].items():
        assert env.get(name) == value, f"{name}: ours {env.get(name)!r}, upstream {value!r}"


@pytest.mark.parametrize("stage", sorted(REFERENCE_NPROC_14B))
def test_14b_launches_as_many_processes_as_upstream(ascend, flow, stage: str) -> None:
    root, paths = flow
    script, _ = dry_run_14b(ascend, root, paths, stage)
    launcher = parse_launcher(script)
    assert launcher["--nproc_per_node"] == REFERENCE_NPROC_14B[stage]
    assert (launcher["--nnodes"], launcher["--node_rank"]) == ("1", "0")


def test_deliberate_differences_are_explained() -> None:
    """Every listed difference carries its reason (the list is documentation, not a wildcard)."""
    for stage, kinds in DELIBERATE.items():
        for kind, flags in kinds.items():
            for flag, reason in flags.items():
                assert flag.startswith("--") and len(reason) > 20, (stage, kind, flag)


def test_hf2mcore_default_layout_is_the_next_stage(ascend, flow) -> None:
    """Deliberate: upstream's example converts to TP1 PP8, which no 14B training script uses; we
    convert for --for (default sft, TP8 PP1) so the checkpoint loads without a re-shard."""
    _root, paths = flow
    result = ascend(
        "convert", "hf2mcore", "--model", "qwen3-14b", "--load", paths["hf"], "--save", paths["save"], "--dry-run"
    )
    flags = parse_command(result.out)
    assert (flags["--target-tensor-parallel-size"], flags["--target-pipeline-parallel-size"]) == (["8"], ["1"])
    result = ascend(
        "convert",
        "hf2mcore",
        "--model",
        "qwen3-14b",
        "--load",
        paths["hf"],
        "--save",
        paths["save"],
        "--for",
        "lora",
        "--dry-run",
    )
    flags = parse_command(result.out)
    assert (flags["--target-tensor-parallel-size"], flags["--target-pipeline-parallel-size"]) == (["2"], ["2"])


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
