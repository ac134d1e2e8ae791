"""What pretrain, sft and lora share: torchrun + MindSpeed-LLM, checkpointing, stop handling."""

from __future__ import annotations

import os
from pathlib import Path

from ascend_llm import checkpoint, preflight
from ascend_llm.errors import UsageError
from ascend_llm.options import Option, common, opt, positive_int
from ascend_llm.script import Arg, LaunchScript
from ascend_llm.stages.base import (
    Stage,
    StageRequest,
    base_script,
    flag_args,
    load_formats,
    merge_extra,
    model_args,
    tokenizer_args,
)


def split_ok(text: str) -> bool:
    """Megatron's --split as this stage passes it: ``A,B,C``, finite and non-negative, training share > 0."""
    try:
        shares = [float(part) for part in text.split(",")]
    except ValueError:
        return False
    return len(shares) == 3 and all(0 <= v < float("inf") for v in shares) and shares[0] > 0


class TrainingStage(Stage):
    """Base of the three training stages (see pretrain.py, sft.py, lora.py)."""

    load_required = True
    bytes_kind = "training"

    def options(self) -> list[Option]:
        return [
            *common(
                "model",
                "load",
                "save",
                "data",
                "tokenizer",
                required=("model", "save", "data", "tokenizer") + (("load",) if self.load_required else ()),
                load=self.load_help(),
                save="where checkpoints are saved (and logs/, tensorboard/)",
                data=self.data_help(),
                tokenizer="HuggingFace tokenizer dir (the original HF model dir)",
            ),
            *common("tp", "pp", "cp", "vpp", "seq_length", "mbs", "gbs", "train_iters", "lr"),
            opt(
                "save_interval",
                help="save a checkpoint every N iterations",
                preset_key="save_interval",
                type=positive_int,
                metavar="N",
                default_text="from --model, else --train-iters (one checkpoint at the end)",
            ),
            opt("split", help="train/valid/test split of the data", default="100,0,0", metavar="A,B,C"),
            opt(
                "tensorboard_dir",
                help="TensorBoard event directory; 'none' to disable",
                metavar="DIR",
                default_text="<save>/tensorboard",
            ),
            opt(
                "resume",
                help="continue from the last checkpoint in --save when there is one (weights, optimizer, RNG and "
                "iteration: no --finetune/--no-load-optim/--no-load-rng); without one, start from --load",
                action="store_true",
            ),
            opt(
                "no_exit_signal_handler",
                help="do not pass --exit-signal-handler (by default SIGTERM makes Megatron save a checkpoint and stop)",
                action="store_true",
            ),
            *self.stage_options(),
            *common("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port"),
            *common("config", "dry_run", "no_preflight", "log_dir", "env", "release"),
        ]

    def stage_options(self) -> list[Option]:
        return []

    def load_help(self) -> str:
        return "Megatron checkpoint to start from (from `ascend-llm convert hf2mcore`)"

    def data_help(self) -> str:
        return "data prefix from `ascend-llm preprocess`"

    def uses_torchrun(self, action: str | None) -> bool:
        return True

    def graceful_term(self, req: StageRequest) -> bool:
        return not req.opts.get("no_exit_signal_handler")

    def validate(self, req: StageRequest) -> None:
        """Required paths, and defaults derived from other options (save interval, TensorBoard dir)."""
        required = ["save", "data", "tokenizer"] + (["load"] if self.load_required else [])
        self.require(req, *required)
        if req.opts.get("save_interval") is None:
            req.opts["save_interval"] = req.opts["train_iters"]
        split = str(req.opts["split"])
        if not split_ok(split):
            raise UsageError(
                f"--split {split}: expected three non-negative numbers train,valid,test with a train share "
                f"above 0, e.g. --split 100,0,0 or --split 98,1,1"
            )
        tb = req.opts.get("tensorboard_dir")
        if tb is None:
            req.opts["tensorboard_dir"] = os.path.join(req.opts["save"], "tensorboard")
        elif str(tb).lower() == "none":
            req.opts["tensorboard_dir"] = None
        if req.opts.get("resume") and (Path(req.opts["save"]) / checkpoint.TRACKER).is_file():
            req.state["resume_from"] = req.opts["save"]
            req.notes.append(f"--resume: continuing from the last checkpoint in {req.opts['save']}")

    def resume_load(self, req: StageRequest) -> str | None:
        """The checkpoint this run continues from (its own --save), or None for a fresh start."""
        return req.state.get("resume_from")

    def loaded(self, req: StageRequest) -> str | None:
        """The checkpoint --load names in the command."""
        return self.resume_load(req) or req.opts.get("load")

    def sequence_parallel(self, req: StageRequest) -> bool:
        flags = req.preset.stage(self.name).flags if req.preset else {}
        return bool(flags.get("sequence-parallel")) or "--sequence-parallel" in req.extra

    def data_problems(self, req: StageRequest) -> list[str]:
        raise NotImplementedError

    def preflight(self, req: StageRequest) -> list[str]:
        """Everything that would otherwise fail after the NPUs were allocated."""
        o, preset, rdzv = req.opts, req.preset, req.rdzv
        assert preset is not None and rdzv is not None
        problems: list[str] = []
        problems += preflight.tokenizer_dir(o["tokenizer"])
        problems += self.data_problems(req)
        command = self.command(req)
        if preflight.layout_possible(preset, o["tp"], o["pp"]):  # else divisibility below says why
            problems += preflight.checkpoint_layout(
                self.loaded(req), o["tp"], o["pp"], preset, formats=load_formats(req, command)
            )
        saves = preflight.saves_count(o["train_iters"], o["save_interval"])
        need = preflight.checkpoint_bytes(preset, self.bytes_kind, saves)
        problems += preflight.writable_dir(o["save"], "--save", need)
        problems += preflight.writable_dir(o.get("log_dir"), "--log-dir")
        problems += preflight.divisibility(
            preset,
            o["tp"],
            o["pp"],
            o.get("cp") or 1,
            rdzv.world_size,
            vpp=o.get("vpp"),
            mbs=o["mbs"],
            gbs=o["gbs"],
            seq_length=o["seq_length"],
            sequence_parallel=self.sequence_parallel(req),
        )
        problems += preflight.seq_length_fits(preset, o["seq_length"], req.extra)
        problems += self.extra_problems(req)
        problems += preflight.devices(rdzv.nproc_per_node, rdzv.nnodes, req.dry_run)
        problems += preflight.transformers_knows(preset.hf_model_type, self.name)
        if not req.dry_run:
            problems += preflight.entry_script(command.entry)
        return problems

    def extra_problems(self, req: StageRequest) -> list[str]:
        return []

    def layout_args(self, req: StageRequest) -> list[Arg]:
        """--cp only when the preset or the user sets it, as upstream (only pretrain passes it)."""
        o = req.opts
        args = [
            Arg("--tensor-model-parallel-size", (str(o["tp"]),)),
            Arg("--pipeline-model-parallel-size", (str(o["pp"]),)),
        ]
        if o.get("cp") is not None:
            args.append(Arg("--context-parallel-size", (str(o["cp"]),)))
        if o.get("vpp"):
            args.append(Arg("--num-layers-per-virtual-pipeline-stage", (str(o["vpp"]),)))
        return args

    def load_args(self, req: StageRequest) -> list[Arg]:
        """A fresh start loads weights only (upstream's tune scripts); a resume loads everything, as
        MindSpeed-LLM's checkpoint-resume guide asks (no --no-load-optim/--no-load-rng/--finetune)."""
        resume, load = self.resume_load(req), req.opts.get("load")
        if resume:
            return [Arg("--load", (resume,)), Arg("--exit-on-missing-checkpoint")]
        if not load:
            return []
        return [
            Arg("--load", (load,)),
            Arg("--no-load-optim"),
            Arg("--no-load-rng"),
            Arg("--exit-on-missing-checkpoint"),
        ]

    def tune_args(self, req: StageRequest) -> list[Arg]:
        """sft/lora: the fine-tuning switches."""
        return []

    def data_path(self, req: StageRequest) -> str:
        return req.opts["data"]

    def compose(self, req: StageRequest) -> LaunchScript:
        """Upstream's GPT/DATA/OUTPUT/TRAIN args plus --exit-signal-handler and --tensorboard-dir."""
        o, preset, rdzv = req.opts, req.preset, req.rdzv
        assert preset is not None and rdzv is not None
        args = (
            model_args(preset)
            + self.layout_args(req)
            + [
                Arg("--seq-length", (str(o["seq_length"]),)),
                Arg("--micro-batch-size", (str(o["mbs"]),)),
                Arg("--global-batch-size", (str(o["gbs"]),)),
                Arg("--train-iters", (str(o["train_iters"]),)),
                Arg("--lr", (str(o["lr"]),)),
            ]
        )
        args += flag_args(preset.stage(self.name).flags)
        args += tokenizer_args(o["tokenizer"])
        args += [Arg("--data-path", (self.data_path(req),)), Arg("--split", (o["split"],))]
        args += self.load_args(req)
        args += [
            Arg("--save", (o["save"],)),
            Arg("--log-interval", ("1",)),
            Arg("--save-interval", (str(o["save_interval"]),)),
            Arg("--eval-interval", (str(o["train_iters"]),)),
            Arg("--eval-iters", ("0",)),
        ]
        if not o.get("no_exit_signal_handler"):
            args.append(Arg("--exit-signal-handler"))
        if o.get("tensorboard_dir"):
            args.append(Arg("--tensorboard-dir", (o["tensorboard_dir"],)))
        args += self.tune_args(req)
        args.append(Arg("--distributed-backend", ("nccl",)))
        command = self.command(req)
        script = base_script(
            req,
            f"{rdzv.world_size} NPU(s), TP{o['tp']} PP{o['pp']}, saves to {o['save']}",
            ["torchrun"],
            distributed=True,
            entry=command.entry,
        )
        script.launcher_args = [Arg(flag, (value,)) for flag, value in rdzv.torchrun_args()]
        script.args = merge_extra(command.apply(args, o), req.extra)
        script.make_dirs.append(o["save"])
        if rdzv.launcher != "none":
            script.notes.append(
                f"rendezvous from {rdzv.launcher}: " + ", ".join(f"{k}={v}" for k, v in rdzv.sources.items())
            )
        return script
