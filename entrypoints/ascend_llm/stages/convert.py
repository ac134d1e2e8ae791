"""``ascend-llm convert``: checkpoint conversion through MindSpeed-LLM's convert_ckpt.py, or
convert_ckpt_v2.py where the release table says so (Qwen3 HF <-> mcore from 2.3.0)."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from ascend_llm import checkpoint, preflight
from ascend_llm.errors import UsageError
from ascend_llm.options import COMMON, Option, common, opt
from ascend_llm.presets import PRESET_STAGES
from ascend_llm.script import Arg, LaunchScript
from ascend_llm.stages.base import Stage, StageRequest, base_script, merge_extra, python
from ascend_llm.stages.lora_args import lora_cli_args, lora_options, lora_problems, resolve_lora

V1 = "convert_ckpt.py"
MG2HF = "mg2hf"
HF_CONFIG_FILES = ("config.json", "generation_config.json")


class ConvertStage(Stage):
    """convert_ckpt(_v2).py in four modes; the target layout follows the stage that loads it next."""

    name = "convert"
    summary = "Convert checkpoints: hf2mcore, mcore2hf, mcore2mcore (re-shard), lora-merge."
    description = """\
hf2mcore     HuggingFace weights (--load HF_DIR) -> Megatron mcore checkpoint (--save DIR), split for
             the stage you run next (--for, default sft) or for --tp/--pp.
mcore2mcore  Re-shard a Megatron checkpoint to another --tp/--pp (each stage's preset layout differs).
mcore2hf     Megatron checkpoint -> HuggingFace weights. Upstream writes the result into
             <hf-dir>/mg2hf/, where --hf-dir is the original HF model directory (config, tokenizer).
lora-merge   Merge a LoRA checkpoint (--lora-load) into its base (--load), --to mcore (--save) or
             --to hf (<hf-dir>/mg2hf/). The LoRA arguments come from the record the lora stage wrote.

Conversion runs on the CPU in one process (python convert_ckpt.py, or convert_ckpt_v2.py for Qwen3
HF <-> mcore from MindSpeed-LLM 2.3.0 and LoRA merges to HF from 26.1.0); the output is bf16."""
    actions = ("hf2mcore", "mcore2hf", "mcore2mcore", "lora-merge")
    action_help = "what to convert"

    def options(self) -> list[Option]:
        return [
            *common("model", required=("model",)),
            *common(
                "load",
                "save",
                required=("load",),
                load="source: the HF model dir (hf2mcore) or the Megatron checkpoint (others)",
                save="target directory (hf2mcore, mcore2mcore, lora-merge --to mcore)",
            ),
            replace(
                COMMON["tokenizer"],
                help="hf2mcore: tokenizer.json or its directory",
                default_text="<load>/tokenizer.json",
            ),
            replace(COMMON["tp"], preset_key=None, default_text="the --for stage's TP in the preset, else 1"),
            replace(COMMON["pp"], preset_key=None, default_text="the --for stage's PP in the preset, else 1"),
            replace(COMMON["vpp"], preset_key=None, default_text="the --for stage's VPP in the preset, else none"),
            opt(
                "for_stage",
                "--for",
                help="take the target --tp/--pp (and --vpp) from this stage of the preset; --tp/--pp win",
                choices=PRESET_STAGES,
                default="sft",
            ),
            opt(
                "hf_dir",
                help="mcore2hf / lora-merge --to hf: the original HF model directory; the result "
                "goes to <hf-dir>/mg2hf/",
                metavar="DIR",
            ),
            opt(
                "to",
                help="lora-merge: write a Megatron checkpoint (mcore) or HF weights (hf)",
                choices=("mcore", "hf"),
                default="mcore",
            ),
            *lora_options(with_load=True),
            opt("overwrite", help="allow writing into a target that already holds a checkpoint", action="store_true"),
            *common("config", "dry_run", "no_preflight", "log_dir", "env", "release"),
        ]

    def preset_stage(self, action: str | None) -> str | None:
        return None

    def command_key(self, req: StageRequest) -> str:
        if req.action == "lora-merge" and req.opts.get("to") != "hf":
            return "convert lora-merge --to mcore"
        return f"convert {req.action}"

    def validate(self, req: StageRequest) -> None:
        """Each mode takes different options; settle TP/PP (HF output is always TP1 PP1) and LoRA args."""
        action = req.action
        to_hf = action == "mcore2hf" or (action == "lora-merge" and req.opts.get("to") == "hf")
        self.require(req, "load")
        if to_hf:
            if req.opts.get("save"):
                raise UsageError(
                    f"{req.label} writes into <hf-dir>/mg2hf/ (upstream's choice): "
                    f"pass --hf-dir ORIGINAL_HF_DIR instead of --save"
                )
            self.require(req, "hf_dir", why=" (upstream writes <hf-dir>/mg2hf/)")
            self.forbid(req, ("tp", "pp", "vpp"), "HF weights are always written unsplit (TP1 PP1)")
        else:
            self.require(req, "save")
            self.forbid(req, ("hf_dir",), "only mcore2hf and lora-merge --to hf write HF weights")
        if action == "lora-merge":
            self.require(req, "lora_load", why=" (the LoRA checkpoint to merge)")
        else:
            self.forbid(
                req, ("lora_load", "lora_r", "lora_alpha", "lora_target_modules"), "LoRA arguments belong to lora-merge"
            )
        if action != "lora-merge" and "to" in req.explicit:
            raise UsageError(f"{req.label} does not take --to (only lora-merge does)")
        if to_hf:
            req.opts["tp"], req.opts["pp"], req.opts["vpp"] = 1, 1, None
        else:
            stage = req.preset.stage(req.opts.get("for_stage") or "sft") if req.preset else None
            for key in ("tp", "pp"):
                if req.opts.get(key) is None:
                    req.opts[key] = stage.get(key, 1) if stage else 1
            if req.opts.get("vpp") is None and stage and "tp" not in req.explicit and "pp" not in req.explicit:
                req.opts["vpp"] = stage.get("vpp")
        if action == "lora-merge":
            req.opts.update(resolve_lora(req))

    def target(self, req: StageRequest) -> str:
        """Where the result lands, as the user will look for it."""
        if req.opts.get("hf_dir"):
            return os.path.join(req.opts["hf_dir"], MG2HF)
        return req.opts["save"]

    def preflight(self, req: StageRequest) -> list[str]:
        """Source of the right kind, a target that has room and is not overwritten, a loadable layout."""
        o, preset, action = req.opts, req.preset, req.action
        assert preset is not None
        command = self.command(req)
        problems: list[str] = []
        weights = preflight.checkpoint_bytes(preset, "weights")
        if action == "hf2mcore":
            problems += preflight.path_exists(o["load"], "--load", "directory", "pass the HuggingFace model dir")
            if not problems:
                problems += preflight.hf_config_matches(o["load"], preset)
                if not checkpoint.is_hf_model_dir(Path(o["load"])) and not problems:
                    problems.append(f"--load {o['load']} has no *.safetensors / pytorch_model*.bin weights")
            tokenizer = self.tokenizer_model(req)
            if command.passes("--tokenizer-model") and not os.path.isfile(tokenizer):
                problems.append(
                    f"{tokenizer} not found: {command.entry}'s HF loader needs tokenizer.json; "
                    f"pass --tokenizer pointing at it"
                )
        else:
            hint = (
                "hf2mcore takes the HuggingFace dir; this action needs a Megatron checkpoint "
                f"(make one: ascend-llm convert hf2mcore --model {preset.name} --load HF_DIR --save DIR)"
            )
            problems += preflight.checkpoint_layout_any(o["load"], "--load", hint)
        if action == "mcore2mcore" and not problems:
            layout = checkpoint.read_layout(Path(o["load"]))
            if (layout.tp, layout.pp) == (o["tp"], o["pp"]) and not o.get("vpp"):
                problems.append(
                    f"--load {o['load']} is already {layout.describe()}; nothing to re-shard "
                    f"(pass another --tp/--pp or --for)"
                )
        if action == "lora-merge":
            problems += lora_problems(req)
        if o.get("save") and o.get("load") and os.path.realpath(o["save"]) == os.path.realpath(o["load"]):
            problems.append("--save must differ from --load: conversion does not work in place")
        if o.get("hf_dir"):
            problems += preflight.path_exists(
                o["hf_dir"], "--hf-dir", "directory", "pass the original HuggingFace model directory"
            )
            if os.path.isdir(o["hf_dir"]):
                problems += preflight.hf_config_matches(o["hf_dir"], preset, "--hf-dir")
                if command.entry == V1 and not checkpoint.is_hf_model_dir(Path(o["hf_dir"])):
                    problems.append(
                        f"--hf-dir {o['hf_dir']} has no weights; upstream loads the original HF "
                        f"model to build the output, so pass the full original model directory"
                    )
                problems += preflight.writable_dir(o["hf_dir"], "--hf-dir", weights)
        else:
            problems += preflight.writable_dir(o.get("save"), "--save", weights)
        problems += self.target_clean(req)
        if not problems:
            problems += preflight.divisibility(preset, o["tp"], o["pp"], 1, o["tp"] * o["pp"], vpp=o.get("vpp"))
        problems += preflight.transformers_knows(preset.hf_model_type, "convert")
        problems += preflight.writable_dir(o.get("log_dir"), "--log-dir")
        if not req.dry_run:
            problems += preflight.entry_script(command.entry)
        return problems

    def target_clean(self, req: StageRequest) -> list[str]:
        """Refuse to overwrite an existing result unless --overwrite."""
        if req.opts.get("overwrite"):
            return []
        target = Path(self.target(req))
        if req.opts.get("hf_dir"):
            if target.is_dir() and any(target.glob("*.safetensors")):
                return [f"{target} already holds HF weights; move them away or pass --overwrite"]
        elif (target / checkpoint.TRACKER).exists():
            return [f"--save {target} already holds a checkpoint; choose a new directory or pass --overwrite"]
        return []

    def tokenizer_model(self, req: StageRequest) -> str:
        tokenizer = req.opts.get("tokenizer") or req.opts["load"]
        return (
            os.path.join(tokenizer, "tokenizer.json")
            if os.path.isdir(tokenizer) or not tokenizer.endswith(".json")
            else tokenizer
        )

    def compose(self, req: StageRequest) -> LaunchScript:
        """The upstream command; --save-dir is <hf-dir> for convert_ckpt.py's HF output, because it appends
        mg2hf/ (the release table points convert_ckpt_v2.py, which does not, at <hf-dir>/mg2hf itself)."""
        o, preset, action = req.opts, req.preset, req.action
        assert preset is not None
        load_type, save_type = {
            "hf2mcore": ("hf", "mg"),
            "mcore2hf": ("mg", "hf"),
            "mcore2mcore": ("mg", "mg"),
            "lora-merge": ("mg", "hf" if o.get("to") == "hf" else "mg"),
        }[action or ""]
        args = [
            Arg("--use-mcore-models"),
            Arg("--model-type", ("GPT",)),
            Arg("--load-model-type", (load_type,)),
            Arg("--save-model-type", (save_type,)),
            Arg("--target-tensor-parallel-size", (str(o["tp"]),)),
            Arg("--target-pipeline-parallel-size", (str(o["pp"]),)),
        ]
        if o.get("vpp"):
            args.append(Arg("--num-layers-per-virtual-pipeline-stage", (str(o["vpp"]),)))
        spec = preset.model_flags.get("spec")
        if spec:
            args.append(Arg("--spec", tuple(str(s) for s in (spec if isinstance(spec, list) else [spec]))))
        args.append(Arg("--load-dir", (o["load"],)))
        if action == "lora-merge":
            args += lora_cli_args(o, o["lora_load"])
        args.append(Arg("--save-dir", (o.get("hf_dir") or o["save"],)))
        if action == "hf2mcore":
            args.append(Arg("--tokenizer-model", (self.tokenizer_model(req),)))
        args.append(Arg("--params-dtype", (preset.params_dtype,)))
        args.append(Arg("--model-type-hf", (preset.hf_model_type,)))
        command = self.command(req)
        script = base_script(req, f"result in {self.target(req)}", [python()], distributed=False, entry=command.entry)
        script.args = merge_extra(command.apply(args, {**o, "target": self.target(req)}), req.extra)
        if o.get("hf_dir"):
            script.notes.append(f"the HF weights go to <hf-dir>/{MG2HF}/: {self.target(req)}")
            if command.copy_hf_config:
                script.notes.append(
                    f"{command.entry} writes weights only; ascend-llm copies {', '.join(HF_CONFIG_FILES)} "
                    f"from --hf-dir when it succeeds"
                )
        else:
            script.make_dirs.append(o["save"])
        return script

    def after_run(self, req: StageRequest, code: int) -> None:
        if code == 0 and req.opts.get("hf_dir") and self.command(req).copy_hf_config:
            copy_hf_config(Path(req.opts["hf_dir"]), Path(self.target(req)))
        if code == 0:
            what = (
                "HF weights (config + safetensors; the tokenizer stays in --hf-dir)"
                if req.opts.get("hf_dir")
                else f"Megatron checkpoint, TP{req.opts['tp']} PP{req.opts['pp']}"
            )
            sys.stderr.write(f"ascend-llm: {what} written to {self.target(req)}\n")


def copy_hf_config(hf_dir: Path, target: Path) -> None:
    """Copy the model config next to HF weights written without one (what convert_ckpt.py writes)."""
    for name in HF_CONFIG_FILES:
        source = hf_dir / name
        if source.is_file() and not (target / name).exists():
            shutil.copyfile(source, target / name)
