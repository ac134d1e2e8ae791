"""LoRA arguments: recorded next to the checkpoint at training time, read back at merge/inference."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from ascend_llm.checkpoint import LORA_RECORD
from stagekit import make_checkpoint, make_devices, make_mindspeed_home, parse_command

MERGE = ("convert", "lora-merge", "--model", "qwen3-14b")


@pytest.fixture
def trained_lora(ascend, world, sysroot, roomy_disk, tmp_path: Path, monkeypatch):
    """Run the lora stage for real (stand-in torchrun that writes the LoRA checkpoint)."""
    make_devices(sysroot, 8)
    make_mindspeed_home()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    save = world.out / "lora"
    torchrun = bin_dir / "torchrun"
    torchrun.write_text(
        '#!/usr/bin/env bash\nmkdir -p "$LORA_SAVE/iter_0000010/mp_rank_00_000" '
        '"$LORA_SAVE/iter_0000010/mp_rank_00_001" "$LORA_SAVE/iter_0000010/mp_rank_01_000" '
        '"$LORA_SAVE/iter_0000010/mp_rank_01_001"\n'
        'for d in "$LORA_SAVE"/iter_0000010/mp_rank_*; do : > "$d/model_optim_rng.pt"; done\n'
        'echo 10 > "$LORA_SAVE/latest_checkpointed_iteration.txt"\necho "$*"\n'
    )
    torchrun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("LORA_SAVE", str(save))
    base = world.checkpoint(2, 2)
    result = ascend(
        "lora",
        "--model",
        "qwen3-14b",
        "--load",
        base,
        "--save",
        save,
        "--data",
        world.sft_data,
        "--tokenizer",
        world.hf,
        "--lora-r",
        "8",
        "--lora-alpha",
        "16",
        "--lora-target-modules",
        "linear_qkv",
        "linear_proj",
    )
    assert result.code == 0, result.err
    assert "--lora-r 8 --lora-alpha 16 --lora-fusion --lora-target-modules linear_qkv linear_proj" in result.out
    return base, save


def test_lora_training_records_its_arguments(trained_lora) -> None:
    base, save = trained_lora
    record = json.loads((save / LORA_RECORD).read_text())
    assert record["lora_r"] == 8 and record["lora_alpha"] == 16
    assert record["lora_target_modules"] == ["linear_qkv", "linear_proj"]
    assert record["base_checkpoint"] == str(base) and (record["tp"], record["pp"]) == (2, 2)


def test_merge_adopts_the_recorded_arguments(ascend, trained_lora, world) -> None:
    base, save = trained_lora
    result = ascend(
        *MERGE,
        "--load",
        base,
        "--lora-load",
        save,
        "--save",
        world.root / "merged",
        "--dry-run",
    )
    assert result.code == 0, result.err
    flags = parse_command(result.out)
    assert flags["--lora-r"] == ["8"] and flags["--lora-alpha"] == ["16"]
    assert flags["--lora-target-modules"] == ["linear_qkv", "linear_proj"]


@pytest.mark.parametrize(
    ("flag", "value", "shown"),
    [
        ("--lora-r", ["16"], "--lora-r 8"),
        ("--lora-alpha", ["32"], "--lora-alpha 16"),
        ("--lora-target-modules", ["linear_qkv"], "--lora-target-modules linear_qkv linear_proj"),
    ],
)
def test_merge_refuses_other_lora_arguments(ascend, trained_lora, world, flag, value, shown) -> None:
    base, save = trained_lora
    result = ascend(
        *MERGE,
        "--load",
        base,
        "--lora-load",
        save,
        "--save",
        world.root / "merged",
        "--dry-run",
        flag,
        *value,
    )
    assert result.code == 2
    assert f"differs from the training run of {save} ({shown}" in result.err
    same = ascend(
        *MERGE,
        "--load",
        base,
        "--lora-load",
        save,
        "--save",
        world.root / "merged",
        "--dry-run",
        "--lora-target-modules",
        "linear_proj",
        "linear_qkv",
    )
    assert same.code == 0, "the same modules in another order are the same arguments"


def test_lora_inference_uses_and_checks_the_record(ascend, trained_lora, world) -> None:
    base, save = trained_lora
    argv = [
        "generate",
        "--model",
        "qwen3-14b",
        "--load",
        base,
        "--lora-load",
        save,
        "--tokenizer",
        world.hf,
        "--tp",
        "2",
        "--pp",
        "2",
        "--dry-run",
    ]
    flags = parse_command(ascend(*argv).out)
    assert (flags["--lora-load"], flags["--lora-r"], flags["--lora-alpha"]) == ([str(save)], ["8"], ["16"])
    assert ascend(*argv, "--lora-alpha", "64").code == 2
    evaluate = ascend(
        "evaluate",
        "--task",
        "mmlu",
        "--model",
        "qwen3-14b",
        "--load",
        base,
        "--lora-load",
        save,
        "--tokenizer",
        world.hf,
        "--data",
        world.root,
        "--tp",
        "2",
        "--pp",
        "2",
        "--dry-run",
        "--lora-r",
        "4",
    )
    assert evaluate.code == 2 and "--lora-r 4 differs" in evaluate.err


def test_lora_split_must_equal_the_base_split(ascend, trained_lora, world) -> None:
    _, save = trained_lora
    result = ascend(
        "convert",
        "lora-merge",
        "--model",
        "qwen3-14b",
        "--load",
        world.checkpoint(8, 1),
        "--lora-load",
        save,
        "--save",
        world.root / "merged",
        "--dry-run",
    )
    assert result.code == 2 and "is split TP2 PP2 but the base --load" in result.err


def test_retraining_into_a_save_dir_with_other_lora_arguments(ascend, trained_lora, world) -> None:
    base, save = trained_lora
    argv = [
        "lora",
        "--model",
        "qwen3-14b",
        "--load",
        base,
        "--save",
        save,
        "--data",
        world.sft_data,
        "--tokenizer",
        world.hf,
        "--dry-run",
    ]
    result = ascend(*argv)
    assert result.code == 2 and "holds a LoRA run with lora_r=8" in result.err
    assert (
        ascend(*argv, "--lora-r", "8", "--lora-alpha", "16", "--lora-target-modules", "linear_qkv", "linear_proj").code
        == 0
    )


def test_checkpoints_without_a_record(ascend, world, roomy_disk, tmp_path: Path) -> None:
    lora = make_checkpoint(tmp_path / "foreign_lora", 8, 1)
    argv = [
        "convert",
        "lora-merge",
        "--model",
        "qwen3-14b",
        "--load",
        world.checkpoint(8, 1),
        "--lora-load",
        lora,
        "--save",
        tmp_path / "m",
        "--dry-run",
    ]
    result = ascend(*argv)
    assert result.code == 0
    assert "has no ascend_llm_lora.json" in result.err and "--lora-r 16 --lora-alpha 32" in result.err
    (lora / LORA_RECORD).write_text("{not json")
    result = ascend(*argv)
    assert result.code == 2 and "unreadable" in result.err
