"""What generate and evaluate share: a torchrun MindSpeed-LLM command that loads a checkpoint."""

from __future__ import annotations

from ascend_llm import preflight
from ascend_llm.release import Command
from ascend_llm.script import Arg
from ascend_llm.stages.base import StageRequest, flag_args, load_formats, model_args, tokenizer_args
from ascend_llm.stages.lora_args import lora_cli_args, lora_problems


def inference_problems(req: StageRequest, stage: str, command: Command) -> list[str]:
    """The checks generate and evaluate share (tokenizer, checkpoint layout, LoRA record, devices)."""
    o, preset, rdzv = req.opts, req.preset, req.rdzv
    assert preset is not None and rdzv is not None
    problems: list[str] = []
    problems += preflight.tokenizer_dir(o["tokenizer"])
    if preflight.layout_possible(preset, o["tp"], o["pp"]):  # else divisibility below says why
        problems += preflight.checkpoint_layout(o["load"], o["tp"], o["pp"], preset, formats=load_formats(req, command))
    problems += lora_problems(req)
    problems += preflight.writable_dir(o.get("log_dir"), "--log-dir")
    problems += preflight.divisibility(preset, o["tp"], o["pp"], 1, rdzv.world_size)
    problems += preflight.seq_length_fits(preset, o.get("seq_length"), req.extra)
    problems += preflight.devices(rdzv.nproc_per_node, rdzv.nnodes, req.dry_run)
    problems += preflight.transformers_knows(preset.hf_model_type, stage)
    if not req.dry_run:
        problems += preflight.entry_script(command.entry)
    return problems


def inference_args(req: StageRequest, stage: str) -> list[Arg]:
    """Model, layout, checkpoint and tokenizer flags, as the upstream generate/evaluate scripts."""
    o, preset = req.opts, req.preset
    assert preset is not None
    args = [
        *model_args(preset),
        Arg("--tensor-model-parallel-size", (str(o["tp"]),)),
        Arg("--pipeline-model-parallel-size", (str(o["pp"]),)),
        Arg("--seq-length", (str(o["seq_length"]),)),
        Arg("--micro-batch-size", ("1",)),
    ]
    args += flag_args(preset.stage(stage).flags)
    args += tokenizer_args(o["tokenizer"])
    args += [Arg("--load", (o["load"],)), Arg("--exit-on-missing-checkpoint")]
    if o.get("lora_load"):
        args += lora_cli_args(o, o["lora_load"])
    return args
