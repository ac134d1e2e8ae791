"""``ascend-llm lora``: LoRA fine-tuning; records its LoRA arguments next to the checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

from ascend_llm import __version__, checkpoint, preflight
from ascend_llm.options import Option, opt
from ascend_llm.script import Arg
from ascend_llm.stages.base import StageRequest
from ascend_llm.stages.lora_args import DEFAULTS, lora_cli_args, lora_options
from ascend_llm.stages.sft import SftStage


class LoraStage(SftStage):
    """sft plus LoRA; writes the LoRA arguments next to the checkpoint so merge/inference can match them."""

    name = "lora"
    summary = "LoRA instruction fine-tuning (posttrain_gpt.py --stage sft --lora-*) under torchrun."
    description = """\
Same data and checkpoint rules as sft. The LoRA arguments are written to <save>/ascend_llm_lora.json
when the run starts; `convert lora-merge`, `generate --lora-load` and `evaluate --lora-load` read
them back so merge and inference use the values the adapters were trained with."""
    bytes_kind = "weights"

    def stage_options(self) -> list[Option]:
        return [
            *super().stage_options(),
            *lora_options(with_load=False),
            opt("no_lora_fusion", help="do not pass --lora-fusion (CCLoRA)", action="store_true"),
        ]

    def validate(self, req: StageRequest) -> None:
        super().validate(req)
        for key, default in DEFAULTS.items():
            if req.opts.get(key) is None:
                req.opts[key] = default

    def record(self, req: StageRequest) -> dict:
        o = req.opts
        return {
            "lora_r": o["lora_r"],
            "lora_alpha": o["lora_alpha"],
            "lora_target_modules": list(o["lora_target_modules"]),
            "lora_fusion": not o.get("no_lora_fusion"),
            "base_checkpoint": o.get("load"),
            "tp": o["tp"],
            "pp": o["pp"],
            "model": req.preset.name if req.preset else None,
            "mindspeed_llm": req.release.version if req.release else None,
            "written_by": f"ascend-llm {__version__}",
        }

    def extra_problems(self, req: StageRequest) -> list[str]:
        """A save dir that already holds a LoRA run with other arguments would mix two runs."""
        existing = checkpoint.read_lora_record(Path(req.opts["save"]))
        if not existing or "unreadable" in existing:
            return []
        mine = self.record(req)
        keys = ("lora_r", "lora_alpha", "lora_target_modules")
        if any(existing.get(k) != mine[k] for k in keys):
            old = ", ".join(f"{k}={existing.get(k)}" for k in keys)
            return [
                f"--save {req.opts['save']} holds a LoRA run with {old}; use a new --save or the same LoRA arguments"
            ]
        return []

    def load_args(self, req: StageRequest) -> list[Arg]:
        """Resume: the base checkpoint again plus the adapters saved so far (upstream's --lora-load)."""
        resume = self.resume_load(req)
        if not resume:
            return super().load_args(req)
        return [Arg("--load", (req.opts["load"],)), Arg("--lora-load", (resume,)), Arg("--exit-on-missing-checkpoint")]

    def loaded(self, req: StageRequest) -> str | None:
        return req.opts.get("load")  # a resume loads the base again, and the adapters with --lora-load

    def preflight(self, req: StageRequest) -> list[str]:
        """A resumed run's adapters must be split like the base, as --tp/--pp."""
        problems = super().preflight(req)
        resume = self.resume_load(req)
        if resume and req.preset:
            problems += preflight.checkpoint_layout(resume, req.opts["tp"], req.opts["pp"], req.preset, "--save")
        return problems

    def tune_args(self, req: StageRequest) -> list[Arg]:
        args = super().tune_args(req) + lora_cli_args(req.opts)
        if not req.opts.get("no_lora_fusion"):
            args.insert(len(args) - 1, Arg("--lora-fusion"))
        return args

    def before_run(self, req: StageRequest) -> None:
        path = checkpoint.write_lora_record(Path(req.opts["save"]), self.record(req))
        sys.stderr.write(f"ascend-llm: LoRA arguments recorded in {path}\n")
