"""LoRA options shared by lora (training), convert lora-merge, generate and evaluate.

Merge and LoRA inference must use the --lora-r/--lora-alpha/--lora-target-modules of the training
run, or the weights come out wrong without any error. The lora stage records them next to the
checkpoint; the others read the record, adopt it, and refuse explicit values that disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ascend_llm import checkpoint, preflight
from ascend_llm.options import Option, opt, positive_int
from ascend_llm.script import Arg
from ascend_llm.stages.base import StageRequest

TARGET_CHOICES = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")
DEFAULTS: dict[str, Any] = {"lora_r": 16, "lora_alpha": 32, "lora_target_modules": list(TARGET_CHOICES)}


def lora_options(with_load: bool) -> list[Option]:
    """--lora-r/--lora-alpha/--lora-target-modules (and --lora-load for merge/inference)."""
    out = []
    if with_load:
        out.append(opt("lora_load", help="LoRA checkpoint written by `ascend-llm lora` (its --save)", metavar="DIR"))
    out += [
        opt(
            "lora_r",
            help="LoRA rank",
            type=positive_int,
            metavar="R",
            default_text=f"{'the recorded value, else ' if with_load else ''}16",
        ),
        opt(
            "lora_alpha",
            help="LoRA alpha",
            type=positive_int,
            metavar="A",
            default_text=f"{'the recorded value, else ' if with_load else ''}32",
        ),
        opt(
            "lora_target_modules",
            help="modules LoRA adapts",
            nargs="+",
            choices=TARGET_CHOICES,
            metavar="MODULE",
            default_text=f"{'the recorded value, else ' if with_load else ''}{' '.join(TARGET_CHOICES)}",
        ),
    ]
    return out


def resolve_lora(req: StageRequest) -> dict[str, Any]:
    """Explicit value > recorded value (next to --lora-load) > default."""
    recorded = checkpoint.read_lora_record(Path(req.opts["lora_load"])) if req.opts.get("lora_load") else None
    values: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        if req.opts.get(key) is not None:
            values[key] = req.opts[key]
        elif recorded and key in recorded and "unreadable" not in recorded:
            values[key] = recorded[key]
        else:
            values[key] = default
    if req.opts.get("lora_load") and recorded is None:
        req.notes.append(
            f"note: {req.opts['lora_load']} has no {checkpoint.LORA_RECORD} (not trained by "
            f"ascend-llm); using --lora-r {values['lora_r']} --lora-alpha {values['lora_alpha']}: "
            f"they must equal the training run's"
        )
    return values


def lora_problems(req: StageRequest) -> list[str]:
    """Recorded-vs-requested LoRA arguments, and the LoRA split vs the base split."""
    lora_load = req.opts.get("lora_load")
    if not lora_load:
        return []
    problems = preflight.path_exists(lora_load, "--lora-load", "directory")
    if problems:
        return problems
    recorded = checkpoint.read_lora_record(Path(lora_load))
    problems += preflight.lora_args_problems(req.opts, recorded, lora_load, sorted(req.explicit))
    problems += preflight.same_layout(req.opts.get("load"), lora_load)
    return problems


def lora_cli_args(values: dict[str, Any], lora_load: str = "") -> list[Arg]:
    """--lora-load/--lora-r/--lora-alpha/--lora-target-modules for the upstream command."""
    args = [Arg("--lora-load", (lora_load,))] if lora_load else []
    args += [
        Arg("--lora-r", (str(values["lora_r"]),)),
        Arg("--lora-alpha", (str(values["lora_alpha"]),)),
        Arg("--lora-target-modules", tuple(values["lora_target_modules"])),
    ]
    return args
