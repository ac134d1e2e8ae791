"""``ascend-llm evaluate``: benchmarks through evaluation.py, or exact-match accuracy on a
business data set through transformers (``--task accuracy``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ascend_llm import checkpoint, preflight
from ascend_llm.errors import UsageError
from ascend_llm.options import Option, common, opt, positive_int
from ascend_llm.script import Arg, LaunchScript
from ascend_llm.stages.base import Stage, StageRequest, base_script, log_dir_default, merge_extra, this_python
from ascend_llm.stages.inference import inference_args, inference_problems
from ascend_llm.stages.lora_args import lora_options, resolve_lora

BENCHMARKS: dict[str, int] = {
    # --max-new-tokens per task, from MindSpeed-LLM 2.1.0's example evaluation scripts; gsm8k from its
    # guide (docs/pytorch/solutions/evaluation/evaluation_datasets/gsm8k_evaluation.md: 512, so the
    # worked answers are not cut short; the examples' 256 cuts them)
    "mmlu": 2,
    "ceval": 3,
    "cmmlu": 5,
    "gsm8k": 512,
    "boolq": 1,
    "bbh": 32,
    "agieval": 1,
    "human_eval": 1024,
}
TASKS = (*BENCHMARKS, "accuracy")
ACCURACY_ONLY = ("output", "device", "limit", "enable_thinking")
BENCHMARK_ONLY = (
    "tp",
    "pp",
    "seq_length",
    "lora_load",
    "lora_r",
    "lora_alpha",
    "lora_target_modules",
    "nproc_per_node",
    "nnodes",
    "node_rank",
    "master_addr",
    "master_port",
)


class EvaluateStage(Stage):
    """Benchmarks go through MindSpeed-LLM; --task accuracy through transformers on HF weights."""

    name = "evaluate"
    summary = "Evaluate: benchmarks via evaluation.py, or --task accuracy on an OpenAI-messages jsonl."
    description = """\
--task mmlu|ceval|cmmlu|gsm8k|boolq|bbh|agieval|human_eval
    evaluation.py under torchrun on a Megatron checkpoint (--load, split as --tp/--pp);
    --data is the benchmark's data directory (e.g. mmlu/data/test).
--task accuracy
    a business data set like the seed's section 7: --data is a .jsonl of {"messages": [...]} whose last
    assistant turn is the expected answer. Generates greedily with transformers from HF weights
    (--load, e.g. <hf-dir>/mg2hf from `convert mcore2hf`) on an NPU when torch_npu sees one, else on
    the CPU; exact match after stripping <think>...</think> and normalising whitespace; per-label
    counts; writes a JSON report (--output)."""

    def options(self) -> list[Option]:
        return [
            opt(
                "task",
                help="benchmark, or accuracy",
                choices=TASKS,
                metavar="{" + ",".join(TASKS) + "}",
                default_text="required",
            ),
            *common(
                "model",
                "load",
                "data",
                "tokenizer",
                "tp",
                "pp",
                "seq_length",
                required=("load", "data"),
                model="model preset (not needed for --task accuracy)",
                load="Megatron checkpoint; for --task accuracy the HF model dir",
                data="benchmark data dir; for --task accuracy the .jsonl file",
                tokenizer="HF tokenizer dir (accuracy: default --load, or its parent for .../mg2hf)",
            ),
            opt(
                "max_new_tokens",
                help="tokens to generate per question",
                type=positive_int,
                metavar="N",
                default_text=", ".join(f"{k} {v}" for k, v in BENCHMARKS.items()) + ", accuracy 256",
            ),
            *lora_options(with_load=True),
            opt(
                "output",
                help="accuracy: the JSON report",
                metavar="FILE",
                default_text="<log-dir>/accuracy-<data file name>.json",
            ),
            opt("device", help="accuracy: where to generate", choices=("auto", "npu", "cpu"), default="auto"),
            opt("limit", help="accuracy: only the first N samples", type=positive_int, metavar="N"),
            opt(
                "enable_thinking",
                help="accuracy: pass enable_thinking to the chat template",
                choices=("true", "false"),
                metavar="{true,false}",
                default_text="the template's default",
            ),
            *common("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port"),
            *common("config", "dry_run", "no_preflight", "log_dir", "env", "release"),
        ]

    @staticmethod
    def is_accuracy(req_or_task: Any) -> bool:
        task = req_or_task if isinstance(req_or_task, str) or req_or_task is None else req_or_task.opts.get("task")
        return task == "accuracy"

    def needs_model(self, action: str | None) -> bool:
        return action != "accuracy"

    def uses_mindspeed(self, action: str | None) -> bool:
        return action != "accuracy"

    def uses_torchrun(self, action: str | None) -> bool:
        return action != "accuracy"

    def validate(self, req: StageRequest) -> None:
        self.require(req, "task")
        if self.is_accuracy(req):
            self.require(req, "load", "data", why=" (HF model dir and the .jsonl data set)")
            self.forbid(req, BENCHMARK_ONLY, "--task accuracy runs transformers on HF weights in one process")
            if req.opts.get("max_new_tokens") is None:
                req.opts["max_new_tokens"] = 256
            if not req.opts.get("tokenizer"):
                req.opts["tokenizer"] = default_tokenizer(req.opts["load"])
            if not req.opts.get("output"):
                log_dir = req.opts.get("log_dir") or log_dir_default(req)
                req.opts["output"] = os.path.join(log_dir, f"accuracy-{Path(req.opts['data']).stem}.json")
        else:
            self.require(req, "load", "data", "tokenizer")
            self.forbid(req, ACCURACY_ONLY, "it belongs to --task accuracy")
            if req.opts.get("max_new_tokens") is None:
                req.opts["max_new_tokens"] = BENCHMARKS[req.opts["task"]]
            if req.opts.get("lora_load"):
                req.opts.update(resolve_lora(req))

    def preflight(self, req: StageRequest) -> list[str]:
        if not self.is_accuracy(req):
            problems = preflight.path_exists(
                req.opts["data"], "--data", "file or directory", f"pass the {req.opts['task']} data directory"
            )
            return problems + inference_problems(req, self.name, self.command(req))
        return accuracy_problems(req)

    def compose(self, req: StageRequest) -> LaunchScript:
        """accuracy: this package's module in the venv python; benchmarks: evaluation.py under torchrun."""
        o = req.opts
        if self.is_accuracy(req):
            script = base_script(
                req,
                f"report in {o['output']}",
                [this_python(), "-m", "ascend_llm.accuracy"],
                distributed=False,
                mindspeed=False,
            )
            args = [
                Arg("--model-dir", (o["load"],)),
                Arg("--tokenizer", (o["tokenizer"],)),
                Arg("--data", (o["data"],)),
                Arg("--output", (o["output"],)),
                Arg("--max-new-tokens", (str(o["max_new_tokens"]),)),
                Arg("--device", (o["device"],)),
            ]
            if o.get("limit"):
                args.append(Arg("--limit", (str(o["limit"]),)))
            if o.get("enable_thinking"):
                args.append(Arg("--enable-thinking", (o["enable_thinking"],)))
            script.args = args
            if req.extra:
                raise UsageError("--task accuracy takes no `-- ...` arguments (it does not run MindSpeed-LLM)")
            script.make_dirs.append(str(Path(o["output"]).parent))
            return script
        rdzv = req.rdzv
        assert rdzv is not None
        args = [
            *inference_args(req, self.name),
            Arg("--task", (o["task"],)),
            Arg("--task-data-path", (o["data"],)),
            Arg("--no-chat-template"),
            Arg("--max-new-tokens", (str(o["max_new_tokens"]),)),
        ]
        command = self.command(req)
        script = base_script(
            req,
            f"{o['task']} on {rdzv.world_size} NPU(s), TP{o['tp']} PP{o['pp']}",
            ["torchrun"],
            distributed=True,
            entry=command.entry,
        )
        script.launcher_args = [Arg(flag, (value,)) for flag, value in rdzv.torchrun_args()]
        script.args = merge_extra(command.apply(args, o), req.extra)
        return script


def default_tokenizer(load: str) -> str:
    """The HF dir itself, or its parent for convert's <hf-dir>/mg2hf output (no tokenizer there)."""
    path = Path(load)
    if not any((path / name).is_file() for name in preflight.TOKENIZER_FILES) and path.name == "mg2hf":
        return str(path.parent)
    return str(path)


def accuracy_problems(req: StageRequest) -> list[str]:
    """HF weights, a tokenizer, a well-formed messages jsonl and a writable report path."""
    o = req.opts
    problems: list[str] = []
    load = Path(o["load"])
    wrong = preflight.expect(load, "--load", "directory", "pass the HF model dir (e.g. <hf-dir>/mg2hf)")
    if wrong:
        problems += wrong
    elif (load / checkpoint.TRACKER).is_file():
        model = req.preset.name if req.preset else "MODEL"
        problems.append(
            f"--load {load} is a Megatron checkpoint; --task accuracy needs HF weights: "
            f"ascend-llm convert mcore2hf --model {model} --load {load} --hf-dir ORIGINAL_HF_DIR"
        )
    elif not checkpoint.is_hf_model_dir(load):
        problems.append(f"--load {load} has no config.json with *.safetensors/pytorch_model*.bin weights")
    else:
        model_type = read_model_type(load)
        if model_type:
            problems += preflight.transformers_knows(model_type, "evaluate")
    problems += preflight.tokenizer_dir(o["tokenizer"])
    problems += check_messages_file(o["data"], o.get("limit"))
    if os.path.lexists(o["output"]) and not os.path.isfile(o["output"]):
        problems += preflight.expect(
            o["output"], "--output", "file", f"name the report: --output {Path(o['output']) / 'accuracy.json'}"
        )
    problems += preflight.writable_dir(str(Path(o["output"]).parent), "--output")
    problems += preflight.writable_dir(o.get("log_dir"), "--log-dir")
    return problems


def read_model_type(model_dir: Path) -> str | None:
    try:
        value = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def check_messages_file(path: str, limit: int | None = None) -> list[str]:
    """Every line is {"messages": [...]} ending in an assistant turn (the expected answer)."""
    from ascend_llm.accuracy import DataError, load_samples

    wrong = preflight.expect(path, "--data", "file", "pass the .jsonl of OpenAI-style messages")
    if wrong:
        return wrong
    try:
        load_samples(Path(path), limit)
    except DataError as exc:
        return [str(exc)]
    return []
