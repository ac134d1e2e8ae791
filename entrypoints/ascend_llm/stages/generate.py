"""``ascend-llm generate``: MindSpeed-LLM's inference.py, non-interactive unless asked."""

from __future__ import annotations

import sys

from ascend_llm.errors import UsageError
from ascend_llm.options import Option, common, opt, positive_int
from ascend_llm.script import INPUT_DELIMITER, Arg, LaunchScript
from ascend_llm.stages.base import Stage, StageRequest, base_script, merge_extra
from ascend_llm.stages.inference import inference_args, inference_problems
from ascend_llm.stages.lora_args import lora_options, resolve_lora

TASKS = ("greedy", "do_sample", "beam_search", "beam_search_with_sampling")
CHAT_COMMANDS = {"q", "quit", "exit", "clear", "new"}


class GenerateStage(Stage):
    """inference.py, but never the interactive chat unless asked: a batch job must not wait for input."""

    name = "generate"
    summary = "Generate text from a Megatron checkpoint (inference.py); non-interactive by default."
    description = """\
Upstream's default runs every task, ending in an interactive chat that hangs a batch job. Here:
  ascend-llm generate ...                      greedy search on upstream's fixed prompt
  ascend-llm generate --prompt "TEXT" ...      answer each --prompt (sampled, as upstream's chat)
  ascend-llm generate --task beam_search ...   any of upstream's non-interactive tasks
  ascend-llm generate chat ...                 the interactive chat (docker run -it)
--lora-load loads LoRA weights on top of --load, with the arguments recorded at training time."""
    actions = ("chat",)
    action_required = False
    action_help = "'chat' for the interactive chat (needs a terminal: docker run -it)"

    def options(self) -> list[Option]:
        return [
            *common(
                "model",
                "load",
                "tokenizer",
                "tp",
                "pp",
                "seq_length",
                required=("model", "load", "tokenizer"),
                load="Megatron checkpoint (split as --tp/--pp)",
            ),
            opt(
                "max_new_tokens",
                help="tokens to generate",
                preset_key="max_new_tokens",
                type=positive_int,
                metavar="N",
                default_text="from --model, else 256",
            ),
            opt(
                "prompt",
                help="a prompt to answer (repeatable; one line each); upstream's chat task answers it, "
                "sampling with --temperature/--top-k/--top-p (--top-k 1 is greedy)",
                action="append",
                metavar="TEXT",
            ),
            opt(
                "task",
                help="upstream generation task (repeatable)",
                action="append",
                choices=TASKS,
                metavar="{" + ",".join(TASKS) + "}",
                default_text="greedy, or none with --prompt",
            ),
            opt(
                "temperature", help="sampling temperature of --prompt/chat", metavar="T", default_text="upstream's 0.7"
            ),
            opt("top_k", help="top-k of --prompt/chat", metavar="K", default_text="upstream's 50"),
            opt("top_p", help="top-p of --prompt/chat", metavar="P", default_text="upstream's 0.95"),
            *lora_options(with_load=True),
            *common("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port"),
            *common("config", "dry_run", "no_preflight", "log_dir", "env", "release"),
        ]

    def uses_torchrun(self, action: str | None) -> bool:
        return True

    def validate(self, req: StageRequest) -> None:
        """Prompts must be single lines (they are fed to upstream's chat on stdin); chat needs a terminal."""
        self.require(req, "load", "tokenizer")
        if req.opts.get("max_new_tokens") is None:
            req.opts["max_new_tokens"] = 256
        for prompt in req.opts.get("prompt") or []:
            if not prompt.strip() or "\n" in prompt or prompt.strip() in CHAT_COMMANDS | {INPUT_DELIMITER}:
                raise UsageError(
                    f"--prompt {prompt!r}: give one non-empty line that is not a chat "
                    f"command ({', '.join(sorted(CHAT_COMMANDS))})"
                )
        if req.action == "chat" and (req.opts.get("prompt") or req.opts.get("task")):
            raise UsageError("generate chat is the interactive chat; drop --prompt/--task or drop 'chat'")
        if req.action == "chat" and not req.dry_run and not sys.stdin.isatty():
            raise UsageError(
                "generate chat is interactive and needs a terminal: docker run -it IMAGE "
                "generate chat ...; for a batch job use --prompt"
            )
        if req.opts.get("lora_load"):
            req.opts.update(resolve_lora(req))

    def preflight(self, req: StageRequest) -> list[str]:
        return inference_problems(req, self.name, self.command(req))

    def compose(self, req: StageRequest) -> LaunchScript:
        """--prompt becomes upstream's chat task with the prompts and 'quit' on stdin (a heredoc)."""
        o, rdzv = req.opts, req.rdzv
        assert rdzv is not None
        args = inference_args(req, self.name)
        args.append(Arg("--max-new-tokens", (str(o["max_new_tokens"]),)))
        prompts = o.get("prompt") or []
        tasks = list(o.get("task") or ([] if prompts or req.action == "chat" else ["greedy"]))
        if prompts or req.action == "chat":
            tasks.append("chat")
            for key in ("temperature", "top_k", "top_p"):
                if o.get(key) is not None:
                    args.append(Arg("--" + key.replace("_", "-"), (str(o[key]),)))
        args.append(Arg("--task", tuple(tasks)))
        command = self.command(req)
        script = base_script(
            req,
            f"{rdzv.world_size} NPU(s), TP{o['tp']} PP{o['pp']}",
            ["torchrun"],
            distributed=True,
            entry=command.entry,
        )
        script.launcher_args = [Arg(flag, (value,)) for flag, value in rdzv.torchrun_args()]
        script.args = merge_extra(command.apply(args, o), req.extra)
        if prompts:
            script.stdin_lines = [*prompts, "quit"]
            script.notes.append("the prompts are fed to upstream's chat task on stdin, then 'quit'")
        return script
