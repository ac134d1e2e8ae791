"""Helpers for the stage runner's tests: real files of the kinds the stages read.

Data files are real Megatron indexed datasets written with megatron-core's writer; checkpoints are
real ``iter_*/mp_rank_*`` trees (with empty shard files: only the layout is read).
"""

from __future__ import annotations

import json
import os
import shlex
from collections import namedtuple
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LAUNCHER_VARS = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NNODES",
    "NODE_RANK",
    "NPUS_PER_NODE",
    "NPROC_PER_NODE",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "LOCAL_RANK",
    "MINDX_TASK_ID",
    "VC_TASK_INDEX",
    "VK_TASK_INDEX",
    "PET_NNODES",
    "PET_NPROC_PER_NODE",
    "PET_NODE_RANK",
    "ASCEND_RT_VISIBLE_DEVICES",
    "ASCEND_LLM_PRESET_PATH",
    "ASCEND_LLM_NO_LIBGOMP_PRELOAD",
    "LD_PRELOAD",
)

QWEN3_14B_CONFIG = {
    "model_type": "qwen3",
    "architectures": ["Qwen3ForCausalLM"],
    "num_hidden_layers": 40,
    "hidden_size": 5120,
    "intermediate_size": 17408,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "vocab_size": 151936,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000,
    "torch_dtype": "bfloat16",
}

Result = namedtuple("Result", "code out err")


def run_cli(capsys: Any, *argv: Any) -> Result:
    """Run ``ascend-llm ARGV`` in-process; return (exit code, stdout, stderr)."""
    from ascend_llm import cli

    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def write_indexed(prefix: str, sequences: Sequence[Sequence[int]]) -> None:
    """Write ``prefix.bin/.idx`` with Megatron's own indexed-dataset writer."""
    import warnings

    import numpy
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # megatron-core warns about missing Apex/TE on import
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=numpy.int32)
    for sequence in sequences:
        builder.add_item(torch.tensor(list(sequence), dtype=torch.int32))
        builder.end_document()
    builder.finalize(prefix + ".idx")


SAMPLES = [[1, 2, 3, 4], [5, 6, 7], [8, 9, 10, 11, 12]]


def make_pretrain_data(prefix: Path) -> str:
    """``<prefix>_text_document.{bin,idx}``; returns the --data value pretrain wants."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    write_indexed(f"{prefix}_text_document", SAMPLES)
    return f"{prefix}_text_document"


def make_packed_data(prefix: Path, counts: dict[str, int] | None = None) -> str:
    """``<prefix>_packed_{input_ids,attention_mask,labels}_document.{bin,idx}``; returns the prefix."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for key in ("input_ids", "attention_mask", "labels"):
        n = (counts or {}).get(key, len(SAMPLES))
        write_indexed(f"{prefix}_packed_{key}_document", (SAMPLES * 3)[:n])
    return str(prefix)


def make_checkpoint(path: Path, tp: int, pp: int, iteration: int = 1, skip: Sequence[str] = ()) -> Path:
    """Stand-in for a converted Megatron checkpoint: the real legacy tree (tracker +
    iter_NNNNNNN/mp_rank_TT[_PPP]/model_optim_rng.pt) with empty shard files; preflight reads only the layout."""
    it = path / f"iter_{iteration:07d}"
    for t in range(tp):
        for p in range(pp):
            name = f"mp_rank_{t:02d}" if pp == 1 else f"mp_rank_{t:02d}_{p:03d}"
            (it / name).mkdir(parents=True, exist_ok=True)
            if name not in skip:
                (it / name / "model_optim_rng.pt").write_bytes(b"")
    (path / "latest_checkpointed_iteration.txt").write_text(str(iteration))
    return path


def make_dist_checkpoint(path: Path, iteration: int = 10) -> Path:
    """Stand-in for a Megatron distributed (torch_dist) checkpoint: the tracker and iter_NNNNNNN/ with
    megatron.core.dist_checkpointing's metadata.json (its real content), an empty common.pt and one
    empty *.distcp shard; no mp_rank_* folders. Preflight reads only the names and metadata.json."""
    it = path / f"iter_{iteration:07d}"
    it.mkdir(parents=True, exist_ok=True)
    metadata = {"sharded_backend": "torch_dist", "sharded_backend_version": 1, "common_backend": "torch",
                "common_backend_version": 1}  # fmt: skip
    (it / "metadata.json").write_text(json.dumps(metadata))
    (it / "common.pt").write_bytes(b"")
    (it / "__0_0.distcp").write_bytes(b"")
    (path / "latest_checkpointed_iteration.txt").write_text(str(iteration))
    return path


def make_hf_dir(path: Path, config: dict[str, Any] | None = None, weights: bool = True) -> Path:
    """Stand-in for a downloaded HuggingFace model dir: a real Qwen3 config.json, placeholder tokenizer
    files and empty weights (preflight checks presence and the config, never loads them)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config or QWEN3_14B_CONFIG))
    (path / "tokenizer.json").write_text("{}")
    (path / "tokenizer_config.json").write_text("{}")
    if weights:
        (path / "model-00001-of-00001.safetensors").write_bytes(b"")
    return path


class World:
    """The directories of the seed's flow for Qwen3-14B, laid out for the preset's default layouts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hf = make_hf_dir(root / "Qwen3-14B")
        self.ckpt = {}  # (tp, pp) -> path
        self.pretrain_data = make_pretrain_data(root / "data" / "enwiki")
        self.sft_data = make_packed_data(root / "data" / "alpaca")
        self.out = root / "out"

    def checkpoint(self, tp: int, pp: int) -> Path:
        if (tp, pp) not in self.ckpt:
            self.ckpt[(tp, pp)] = make_checkpoint(self.root / f"mcore_tp{tp}pp{pp}", tp, pp)
        return self.ckpt[(tp, pp)]

    def sft_args(self) -> list:
        """A valid Qwen3-14B ``sft`` command line for this world (the preset's TP8 PP1 split)."""
        return ["sft", "--model", "qwen3-14b", "--load", self.checkpoint(8, 1), "--save", self.out,
                "--data", self.sft_data, "--tokenizer", self.hf]  # fmt: skip


def make_devices(sysroot: Path, count: int) -> None:
    """Stand-in NPU device nodes: plain files /dev/davinci0..N-1 and the manager nodes under a test sysroot."""
    dev = sysroot / "dev"
    dev.mkdir(exist_ok=True)
    for i in range(count):
        (dev / f"davinci{i}").write_text("")
    for name in ("davinci_manager", "devmm_svm", "hisi_hdc"):
        (dev / name).write_text("")


def make_mindspeed_home(
    entries: Sequence[str] = (
        "pretrain_gpt.py",
        "posttrain_gpt.py",
        "inference.py",
        "evaluation.py",
        "convert_ckpt.py",
        "preprocess_data.py",
    ),
) -> Path:
    """Stand-in MindSpeed-LLM checkout at $MINDSPEED_LLM_HOME: its entry-script names and megatron/, no code."""
    home = Path(os.environ["MINDSPEED_LLM_HOME"])
    for name in entries:
        (home / name).write_text("# stand-in\n")
    (home / "megatron").mkdir(exist_ok=True)
    return home


def parse_command(script: str) -> dict[str, list[str]]:
    """The entry command's options of a rendered script, as {flag: [values]} (last one wins)."""
    command = script[script.index("\nexec ") + 1 :]
    heredoc = command.find(" <<'")
    if heredoc != -1:
        command = command[:heredoc]
    tokens = shlex.split(command.replace("\\\n", " "))[1:]
    entry = next((i for i, t in enumerate(tokens) if t.endswith(".py") or t == "ascend_llm.accuracy"), 0)
    flags: dict[str, list[str]] = {}
    key = None
    for token in tokens[entry + 1 :]:
        if token.startswith("--"):
            key = token
            flags[key] = []
        elif key is not None:
            flags[key].append(token)
    return flags


def parse_entry(script: str) -> str:
    """The entry script (``*.py``) a rendered script runs."""
    command = script[script.index("\nexec ") + 1 :].split(" <<'")[0]
    return next(t for t in shlex.split(command.replace("\\\n", " ")) if t.endswith(".py"))


def parse_launcher(script: str) -> dict[str, str]:
    """torchrun's own options of a rendered script."""
    command = script[script.index("\nexec ") + 1 :]
    tokens = shlex.split(command.replace("\\\n", " ").split(" <<'")[0])[1:]
    out: dict[str, str] = {}
    for flag, value in zip(tokens[1::2], tokens[2::2], strict=False):
        if not flag.startswith("--"):
            break
        out[flag] = value
    return out
