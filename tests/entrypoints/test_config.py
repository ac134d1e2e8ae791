"""--config FILE.yaml: every option can come from the file, flags win, typos are errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from stagekit import parse_command, parse_launcher


@pytest.fixture
def sft_base(world, roomy_disk):
    return [
        "sft",
        "--dry-run",
        "--load",
        world.checkpoint(8, 1),
        "--save",
        world.out / "s",
        "--data",
        world.sft_data,
        "--tokenizer",
        world.hf,
    ]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_file_values_apply_and_flags_win(ascend, sft_base, tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "c.yaml",
        "model: qwen3-14b\ntrain_iters: 300\nlr: 2.0e-6\nseq-length: 2048\nextra_args: [--log-interval, '5']\n",
    )
    flags = parse_command(ascend(*sft_base, "--config", cfg).out)
    assert flags["--train-iters"] == ["300"] and flags["--lr"] == ["2e-06"] and flags["--seq-length"] == ["2048"]
    assert flags["--log-interval"] == ["5"], "extra_args are passed through and replace the composed value"
    assert flags["--save-interval"] == ["300"], "derived defaults follow the file's value"
    flags = parse_command(ascend(*sft_base, "--config", cfg, "--train-iters", "7", "--lr", "3e-6").out)
    assert flags["--train-iters"] == ["7"] and flags["--lr"] == ["3e-6"] and flags["--seq-length"] == ["2048"]


def test_precedence_is_flag_then_file_then_preset(ascend, sft_base, tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.yaml", "model: qwen3-14b\ngbs: 32\n")
    assert parse_command(ascend(*sft_base, "--model", "qwen3-14b").out)["--global-batch-size"] == ["16"]
    assert parse_command(ascend(*sft_base, "--config", cfg).out)["--global-batch-size"] == ["32"]
    assert parse_command(ascend(*sft_base, "--config", cfg, "--gbs", "64").out)["--global-batch-size"] == ["64"]


def test_stage_sections_override_the_top_level(ascend, sft_base, tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "c.yaml",
        "model: qwen3-14b\ngbs: 32\nmax_new_tokens: 9\nsft:\n  gbs: 48\ngenerate:\n  max_new_tokens: 5\n",
    )
    assert parse_command(ascend(*sft_base, "--config", cfg).out)["--global-batch-size"] == ["48"]


def test_one_file_serves_several_stages(ascend, world, tmp_path: Path, roomy_disk) -> None:
    """Keys of other stages (lora_r, max_new_tokens) are ignored where they do not apply."""
    cfg = write(
        tmp_path / "c.yaml",
        f"model: qwen3-14b\ntokenizer: {world.hf}\nlora_r: 8\nmax_new_tokens: 9\nnproc_per_node: 8\n",
    )
    result = ascend("generate", "--config", cfg, "--load", world.checkpoint(4, 1), "--dry-run")
    assert result.code == 0, result.err
    assert parse_command(result.out)["--max-new-tokens"] == ["9"]
    assert parse_launcher(result.out)["--nproc_per_node"] == "8"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("modle: qwen3-14b\n", "unknown option 'modle'"),
        ("sft:\n  max_new_tokens: 3\n", "unknown option 'max_new_tokens' for sft"),
        ("tp: eight\n", "'tp': 'eight' is not a valid integer >= 1"),
        ("tp: 0\n", "'tp': 0 is not a valid integer >= 1 (must be at least 1"),
        ("dry_run: yes please\n", "must be true or false"),
        ("extra_args: --foo\n", "'extra_args' must be a list"),
        ("- just\n- a list\n", "must be a mapping"),
        ("model: [unclosed\n", "not valid YAML at line"),
        ("config: other.yaml\n", "cannot name another config file"),
    ],
)
def test_bad_config_files_are_one_line(ascend, sft_base, tmp_path: Path, text: str, needle: str) -> None:
    result = ascend(*sft_base, "--model", "qwen3-14b", "--config", write(tmp_path / "bad.yaml", text))
    assert result.code == 2
    assert needle in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert "Traceback" not in result.err


def test_config_supplies_rendezvous_below_the_launcher_env(ascend, sft_base, tmp_path: Path, monkeypatch) -> None:
    cfg = write(tmp_path / "c.yaml", "model: qwen3-14b\nnnodes: 2\nnode_rank: 0\nmaster_addr: cfg-host\n")
    launcher = parse_launcher(ascend(*sft_base, "--config", cfg).out)
    assert (launcher["--nnodes"], launcher["--master_addr"]) == ("2", "cfg-host")
    monkeypatch.setenv("MASTER_ADDR", "env-host")
    monkeypatch.setenv("NNODES", "2")
    monkeypatch.setenv("NODE_RANK", "1")
    launcher = parse_launcher(ascend(*sft_base, "--config", cfg).out)
    assert (launcher["--node_rank"], launcher["--master_addr"]) == ("1", "env-host")
